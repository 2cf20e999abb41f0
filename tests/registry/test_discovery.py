"""Content discovery, from the OCI Distribution Spec v1.1: end-8a/8b (tags), end-12a/12b (referrers), and the
catalog every registry serves (``/v2/_catalog``)."""

from __future__ import annotations

import re

import pytest

from tests.ocitools import OCI_INDEX, OCI_MANIFEST, Blob, Manifest, image, index, sha256
from tests.registry.conftest import RegistryClient, error_code

LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


def follow(registry: RegistryClient, path: str, key: str) -> tuple[list[str], int]:
    """Every item of a paginated listing, following ``Link`` headers; also how many pages it took."""
    items: list[str] = []
    pages = 0
    while path:
        r = registry.get(path)
        assert r.status_code == 200, r.text
        items += r.json()[key]
        pages += 1
        link = r.headers.get("Link")
        path = LINK.match(link)["url"] if link else ""  # type: ignore[index]
    return items, pages


# -- end-8a / end-8b ---------------------------------------------------------------------------------------


def test_end8a_tags_in_lexical_order(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, "b")
    for tag in ("a", "C", "c", "1.0", "_x"):
        assert registry.push_manifest(repo, tag, manifest).status_code == 201
    r = registry.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {"name": repo, "tags": sorted(["a", "b", "C", "c", "1.0", "_x"])}
    assert "Link" not in r.headers


def test_end8a_unknown_repository_is_404_name_unknown(registry: RegistryClient, repo: str) -> None:
    r = registry.get(f"/v2/{repo}/tags/list")
    assert r.status_code == 404
    assert error_code(r) == "NAME_UNKNOWN"


def test_end8b_pagination_with_n_last_and_link(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, None)
    tags = [f"t{i:02d}" for i in range(7)]
    for tag in tags:
        registry.push_manifest(repo, tag, manifest)
    r = registry.get(f"/v2/{repo}/tags/list?n=3")
    assert r.json()["tags"] == tags[:3]
    assert LINK.match(r.headers["Link"])["url"] == f"/v2/{repo}/tags/list?n=3&last=t02"  # type: ignore[index]
    r = registry.get(f"/v2/{repo}/tags/list?n=3&last=t02")
    assert r.json()["tags"] == tags[3:6]
    r = registry.get(f"/v2/{repo}/tags/list?last=t04")
    assert r.json()["tags"] == tags[5:]
    assert "Link" not in r.headers
    r = registry.get(f"/v2/{repo}/tags/list?n=7")
    assert r.json()["tags"] == tags and "Link" not in r.headers
    assert follow(registry, f"/v2/{repo}/tags/list?n=2", "tags") == (tags, 4)


def test_end8b_n_zero_is_an_empty_list_without_link(registry: RegistryClient, repo: str) -> None:
    registry.push_image(repo, "only")
    r = registry.get(f"/v2/{repo}/tags/list?n=0")
    assert r.status_code == 200
    assert r.json() == {"name": repo, "tags": []}
    assert "Link" not in r.headers


def test_end8b_huge_n_is_clamped_not_allocated(registry: RegistryClient, repo: str) -> None:
    registry.push_image(repo, "one")
    r = registry.get(f"/v2/{repo}/tags/list?n=999999999999")
    assert r.status_code == 200
    assert r.json()["tags"] == ["one"]


@pytest.mark.parametrize("n", ["-1", "abc", "1e3", "99999999999999999999"])
def test_end8b_bad_n_is_400(registry: RegistryClient, repo: str, n: str) -> None:
    registry.push_image(repo, "one")
    r = registry.get(f"/v2/{repo}/tags/list?n={n}")
    assert r.status_code == 400
    assert error_code(r) == "PAGINATION_NUMBER_INVALID"


# -- catalog -----------------------------------------------------------------------------------------------


def test_catalog_lists_repositories_with_manifests_and_paginates(registry: RegistryClient, repo: str) -> None:
    names = [f"{repo}/r{i}" for i in range(5)]
    for name in names:
        registry.push_image(name, "v1")
    registry.push_blob(f"{repo}/blobs-only", b"no manifest here")
    everything, _ = follow(registry, "/v2/_catalog?n=3", "repositories")
    assert [n for n in everything if n.startswith(repo + "/")] == names
    assert everything == sorted(everything)
    assert len(everything) == len(set(everything))
    r = registry.get(f"/v2/_catalog?n=2&last={names[0]}")
    assert r.json()["repositories"] == names[1:3]
    assert LINK.match(r.headers["Link"])
    assert registry.get("/v2/_catalog?n=0").json() == {"repositories": []}
    assert registry.get("/v2/_catalog?n=99999999999").status_code == 200
    r = registry.get("/v2/_catalog?n=-5")
    assert r.status_code == 400 and error_code(r) == "PAGINATION_NUMBER_INVALID"


# -- end-12a / end-12b -------------------------------------------------------------------------------------


def _artifact(registry: RegistryClient, repo: str, subject: Manifest, artifact_type: str | None,
              config_type: str, annotations: dict[str, str]) -> Manifest:
    config = Blob(b"{}", config_type)
    payload = Blob(f"payload {artifact_type} {config_type} {annotations}".encode(), "application/octet-stream")
    for blob in (config, payload):
        registry.push_blob(repo, blob)
    manifest = image(config, [payload], subject=subject, artifact_type=artifact_type, annotations=annotations)
    r = registry.push_manifest(repo, manifest.digest, manifest)
    assert r.status_code == 201, r.text
    assert r.headers["OCI-Subject"] == subject.digest
    return manifest


def test_end12a_referrers_lists_artifacts_with_type_and_annotations(registry: RegistryClient, repo: str) -> None:
    subject = registry.push_image(repo, "app")
    sbom = _artifact(registry, repo, subject, "application/spdx+json", "application/vnd.oci.empty.v1+json",
                     {"org.example.sbom": "spdx", "org.opencontainers.image.created": "2026-01-01T00:00:00Z"})
    # No artifactType: the descriptor reports the config's media type.
    sig = _artifact(registry, repo, subject, None, "application/vnd.example.signature.config",
                    {"org.example.signer": "me"})
    # An index referrer without artifactType: the descriptor has none.
    idx = index([(sbom, {"architecture": "none", "os": "none"})], subject=subject,
                annotations={"org.example.kind": "bundle"})
    assert registry.push_manifest(repo, idx.digest, idx).status_code == 201
    registry.push_image(repo, "unrelated")

    r = registry.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == OCI_INDEX
    assert "OCI-Filters-Applied" not in r.headers
    doc = r.json()
    assert doc["schemaVersion"] == 2 and doc["mediaType"] == OCI_INDEX
    by_digest = {d["digest"]: d for d in doc["manifests"]}
    assert set(by_digest) == {sbom.digest, sig.digest, idx.digest}
    assert by_digest[sbom.digest] == {
        "mediaType": OCI_MANIFEST, "digest": sbom.digest, "size": len(sbom.body),
        "artifactType": "application/spdx+json",
        "annotations": {"org.example.sbom": "spdx", "org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    }
    assert by_digest[sig.digest]["artifactType"] == "application/vnd.example.signature.config"
    assert by_digest[sig.digest]["annotations"] == {"org.example.signer": "me"}
    assert by_digest[idx.digest]["mediaType"] == OCI_INDEX
    assert "artifactType" not in by_digest[idx.digest]
    assert by_digest[idx.digest]["annotations"] == {"org.example.kind": "bundle"}


def test_end12b_artifact_type_filter(registry: RegistryClient, repo: str) -> None:
    subject = registry.push_image(repo, "app")
    sbom = _artifact(registry, repo, subject, "application/spdx+json", "application/vnd.oci.empty.v1+json", {})
    _artifact(registry, repo, subject, "application/vnd.example.sig", "application/vnd.oci.empty.v1+json", {})
    r = registry.get(f"/v2/{repo}/referrers/{subject.digest}?artifactType=application/spdx%2Bjson")
    assert r.status_code == 200
    assert r.headers["OCI-Filters-Applied"] == "artifactType"
    assert [d["digest"] for d in r.json()["manifests"]] == [sbom.digest]
    r = registry.get(f"/v2/{repo}/referrers/{subject.digest}?artifactType=application/none")
    assert r.json()["manifests"] == [] and r.headers["OCI-Filters-Applied"] == "artifactType"


def test_end12a_no_referrers_is_an_empty_index_never_404(registry: RegistryClient, repo: str) -> None:
    subject = registry.push_image(repo, "lonely")
    for path in (f"/v2/{repo}/referrers/{subject.digest}", f"/v2/{repo}/referrers/{sha256(b'unknown')}",
                 f"/v2/{repo}-nothing/referrers/{subject.digest}"):
        r = registry.get(path)
        assert r.status_code == 200, path
        assert r.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_end12a_invalid_digest_is_400(registry: RegistryClient, repo: str) -> None:
    r = registry.get(f"/v2/{repo}/referrers/sha256:notadigest")
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    r = registry.get(f"/v2/{repo}/referrers/latest")
    assert r.status_code == 400


def test_end12a_deleted_referrer_disappears(registry: RegistryClient, repo: str) -> None:
    subject = registry.push_image(repo, "app")
    sig = _artifact(registry, repo, subject, "application/vnd.example.sig", "application/vnd.oci.empty.v1+json", {})
    assert len(registry.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"]) == 1
    assert registry.delete(f"/v2/{repo}/manifests/{sig.digest}").status_code == 202
    assert registry.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"] == []
