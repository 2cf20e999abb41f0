"""Content management, from the OCI Distribution Spec v1.1: end-9 (delete tags and manifests), end-10 (delete
blobs)."""

from __future__ import annotations

from tests.ocitools import sha256
from tests.registry.conftest import RegistryClient, StorageProbe, error_code


def test_end9_delete_tag_keeps_the_manifest(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, "keep")
    registry.push_manifest(repo, "drop", manifest)
    r = registry.delete(f"/v2/{repo}/manifests/drop")
    assert r.status_code == 202
    assert registry.get(f"/v2/{repo}/manifests/drop").status_code == 404
    assert registry.get(f"/v2/{repo}/manifests/keep").content == manifest.body
    assert registry.get(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 200
    assert registry.get(f"/v2/{repo}/tags/list").json()["tags"] == ["keep"]


def test_end9_delete_manifest_by_digest_removes_its_tags(registry: RegistryClient, repo: str,
                                                         storage: StorageProbe) -> None:
    manifest = registry.push_image(repo, "a")
    registry.push_manifest(repo, "b", manifest)
    other = registry.push_image(repo, "c")
    r = registry.delete(f"/v2/{repo}/manifests/{manifest.digest}")
    assert r.status_code == 202
    for ref in ("a", "b", manifest.digest):
        r = registry.get(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code == 404 and error_code(r) == "MANIFEST_UNKNOWN"
    assert registry.get(f"/v2/{repo}/tags/list").json()["tags"] == ["c"]
    assert registry.get(f"/v2/{repo}/manifests/c").content == other.body
    assert storage.count(
        "SELECT count(*) FROM manifest_references r JOIN manifests m ON m.id = r.manifest_id WHERE m.digest = ?",
        manifest.digest,
    ) == 0


def test_end9_delete_unknown_is_404(registry: RegistryClient, repo: str) -> None:
    registry.push_image(repo, "x")
    for ref in ("nope", sha256(b"nope")):
        r = registry.delete(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code == 404
        assert error_code(r) == "MANIFEST_UNKNOWN"
    assert registry.delete(f"/v2/{repo}-missing/manifests/x").status_code == 404


def test_end9_head_after_delete_is_404_even_when_it_was_cached(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, "cached")
    for _ in range(3):
        assert registry.head(f"/v2/{repo}/manifests/cached").status_code == 200
        assert registry.head(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 200
    registry.delete(f"/v2/{repo}/manifests/{manifest.digest}")
    assert registry.head(f"/v2/{repo}/manifests/cached").status_code == 404
    assert registry.head(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 404


def test_end10_delete_blob(registry: RegistryClient, repo: str, storage: StorageProbe) -> None:
    digest = registry.push_blob(repo, b"delete me " + repo.encode())
    assert storage.has_blob(digest)
    r = registry.delete(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 202
    assert r.headers["Docker-Content-Digest"] == digest
    r = registry.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    # No repository links it any more: its bytes are gone.
    assert not storage.has_blob(digest)
    assert storage.count("SELECT count(*) FROM blobs WHERE digest = ?", digest) == 0


def test_end10_blob_shared_by_two_repositories_stays_for_the_other(registry: RegistryClient, repo: str,
                                                                   storage: StorageProbe) -> None:
    data = b"shared " + repo.encode()
    digest = registry.push_blob(repo + "/one", data)
    registry.push_blob(repo + "/two", data)
    assert storage.count("SELECT count(*) FROM blobs WHERE digest = ?", digest) == 1
    assert registry.delete(f"/v2/{repo}/one/blobs/{digest}").status_code == 202
    assert registry.get(f"/v2/{repo}/one/blobs/{digest}").status_code == 404
    assert registry.get(f"/v2/{repo}/two/blobs/{digest}").content == data
    assert storage.has_blob(digest)


def test_end10_delete_unknown_blob_is_404(registry: RegistryClient, repo: str) -> None:
    registry.push_blob(repo, b"exists")
    r = registry.delete(f"/v2/{repo}/blobs/{sha256(b'does not')}")
    assert r.status_code == 404
    assert error_code(r) == "BLOB_UNKNOWN"
    r = registry.delete(f"/v2/{repo}/blobs/notadigest")
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
