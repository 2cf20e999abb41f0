"""Bad input gets the spec's error in the spec's JSON, touches no storage, and the server keeps serving."""

from __future__ import annotations

import http.client
import json
import ssl

import pytest

from tests.ocitools import OCI_MANIFEST, config_blob, image, sha256
from tests.registry.conftest import RegistryClient, StorageProbe, error_code


def raw(registry: RegistryClient, method: str, target: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send ``target`` byte for byte (``requests`` would normalise ``..`` away)."""
    host, port = registry.login_server.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=registry.server.ca)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx)
    try:
        conn.request(method, target, body=body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


BAD_NAMES = [
    "../etc",
    "a/../../b",
    "%2E%2E/escape",
    "..%2F..%2Fescape",
    "Upper/case",
    "a//b",
    "a/",
    "-leading",
    "trailing-",
    "a..b",
    "a___b",
    "sp%20ace",
    "nul%00byte",
    "new%0Aline",
    "x" * 256,
    "/".join(["abcdefghij"] * 24),  # 263 characters
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("endpoint", ["manifests/latest", "blobs/uploads/", "tags/list", "blobs/" + sha256(b"x")])
def test_bad_repository_names_are_400_name_invalid(registry: RegistryClient, storage: StorageProbe,
                                                   name: str, endpoint: str) -> None:
    before = storage.count("SELECT count(*) FROM repositories")
    method = "POST" if endpoint.startswith("blobs/uploads") else "GET"
    status, headers, body = raw(registry, method, f"/v2/{name}/{endpoint}")
    assert status == 400, (name, endpoint, body)
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    assert storage.count("SELECT count(*) FROM repositories") == before


def test_bad_name_in_manifest_put_stores_nothing(registry: RegistryClient, storage: StorageProbe) -> None:
    before = (storage.count("SELECT count(*) FROM manifests"), storage.count("SELECT count(*) FROM repositories"))
    status, _, body = raw(registry, "PUT", "/v2/../../x/manifests/v1", b'{"schemaVersion": 2}')
    assert status == 400 and json.loads(body)["errors"][0]["code"] == "NAME_INVALID"
    after = (storage.count("SELECT count(*) FROM manifests"), storage.count("SELECT count(*) FROM repositories"))
    assert after == before


@pytest.mark.parametrize("tag", ["-starts-with-dash", ".dot", "x" * 129, "has%2Fslash", "sp%20ace", "caf%C3%A9"])
def test_bad_tags_are_400_or_unknown(registry: RegistryClient, repo: str, storage: StorageProbe, tag: str) -> None:
    registry.push_image(repo, "good")
    for method in ("GET", "HEAD", "DELETE", "PUT"):
        status, _, body = raw(registry, method, f"/v2/{repo}/manifests/{tag}", b"{}" if method == "PUT" else b"")
        if method in ("GET", "HEAD"):  # nothing is there (as the OCI conformance suite expects)
            assert status == 404, (method, tag)
            assert method == "HEAD" or json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN"
            continue
        assert status == 400, (method, tag)
        assert json.loads(body)["errors"][0]["code"] == "MANIFEST_INVALID"
    assert storage.count("SELECT count(*) FROM tags t JOIN repositories r ON r.id = t.repository_id "
                         "WHERE r.name = ?", repo) == 1


@pytest.mark.parametrize("digest", ["sha256:abc", "sha256:" + "A" * 64, "md5:" + "a" * 32, "sha256:" + "g" * 64,
                                    "sha512:" + "a" * 64, "sha256%3A" + "z" * 64])
def test_bad_digests_are_400_digest_invalid_or_unknown(registry: RegistryClient, repo: str, storage: StorageProbe,
                                            digest: str) -> None:
    registry.push_blob(repo, b"exists")
    before = storage.upload_files()
    for method, target in [("GET", f"/v2/{repo}/blobs/{digest}"), ("HEAD", f"/v2/{repo}/blobs/{digest}"),
                           ("DELETE", f"/v2/{repo}/blobs/{digest}"),
                           ("POST", f"/v2/{repo}/blobs/uploads/?digest={digest}"),
                           ("GET", f"/v2/{repo}/referrers/{digest}")]:
        status, _, body = raw(registry, method, target, b"data" if method == "POST" else b"")
        assert status == 400, (method, target)
        if method != "HEAD":
            assert json.loads(body)["errors"][0]["code"] == "DIGEST_INVALID", (method, target)
    for method in ("GET", "HEAD"):  # a manifest by such a name is unknown, as the OCI conformance suite expects
        status, _, body = raw(registry, method, f"/v2/{repo}/manifests/{digest}", b"")
        assert status == 404 and (method == "HEAD" or json.loads(body)["errors"][0]["code"] == "MANIFEST_UNKNOWN")
    assert storage.upload_files() == before


def test_put_upload_with_bad_digest_keeps_the_session(registry: RegistryClient, repo: str) -> None:
    location = registry.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    registry.patch(location, data=b"abc")
    r = registry.put(f"{location}?digest=sha256:short")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
    assert registry.get(location).headers["Range"] == "0-2"


def test_unsupported_methods_are_405(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, "v")
    for method, path in [("POST", f"/v2/{repo}/manifests/v"), ("PUT", f"/v2/{repo}/blobs/{manifest.digest}"),
                         ("DELETE", f"/v2/{repo}/tags/list"), ("PATCH", "/v2/"), ("POST", "/v2/_catalog"),
                         ("GET", f"/v2/{repo}/blobs/uploads/")]:
        r = registry.request(method, path)
        assert r.status_code == 405, (method, path)
        assert error_code(r) == "UNSUPPORTED"


def test_paths_that_are_no_endpoint_are_404(registry: RegistryClient) -> None:
    for path in ("/v2/foo", "/v2/foo/bar", "/v3/", "/v2/_catalog/extra", "/v2/x/tags/other"):
        r = registry.get(path)
        assert r.status_code == 404, path
        assert error_code(r) == "NAME_UNKNOWN"


def test_server_keeps_serving_after_bad_input(registry: RegistryClient, repo: str) -> None:
    for target in ("/v2/%ff%fe/manifests/x", "/v2/a/manifests/%ff", "/v2/" + "a/" * 2000 + "tags/list"):
        status, _, _ = raw(registry, "GET", target)
        assert status in (400, 404, 414)
    manifest = registry.push_image(repo, "alive")
    assert registry.get(f"/v2/{repo}/manifests/alive").content == manifest.body


@pytest.mark.parametrize("artifact_type", ["application/" + "x" * 300, "not a media type", "application/",
                                           "a" * 128 + "/json", "application/json; charset=utf-8", ""])
def test_an_artifact_type_that_is_no_media_type_is_400_manifest_invalid(
        registry: RegistryClient, repo: str, storage: StorageProbe, artifact_type: str) -> None:
    """The OCI image spec: artifactType MUST comply with RFC 6838 (each part at most 127 characters)."""
    manifest = image(config_blob(), [], artifact_type=artifact_type or None)
    doc = json.loads(manifest.body)
    doc["artifactType"] = artifact_type
    r = registry.put(f"/v2/{repo}/manifests/v1", data=json.dumps(doc).encode(),
                     headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 400, r.text
    assert error_code(r) == "MANIFEST_INVALID" and "artifactType" in r.json()["errors"][0]["message"]
    assert storage.count("SELECT count(*) FROM manifests m JOIN repositories r ON r.id = m.repository_id "
                         "WHERE r.name = ?", repo) == 0


def test_an_artifact_type_of_127_and_127_characters_is_kept(registry: RegistryClient, repo: str) -> None:
    longest = "a" * 127 + "/" + "b" * 127
    config = config_blob()
    registry.push_blob(repo, config)
    manifest = image(config, [], artifact_type=longest)
    assert registry.push_manifest(repo, "v1", manifest).status_code == 201
    subject = registry.push_image(repo, "base")
    referrer = image(config, [], artifact_type=longest, subject=subject)
    assert registry.push_manifest(repo, referrer.digest, referrer).status_code == 201
    found = registry.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"]
    assert [m["artifactType"] for m in found] == [longest]


def test_a_config_media_type_longer_than_a_media_type_is_400(registry: RegistryClient, repo: str) -> None:
    """An image's config media type is what the referrers API reports as its artifactType: it is kept, so bounded."""
    config = config_blob(media_type="application/" + "c" * 300)
    registry.push_blob(repo, config)
    r = registry.push_manifest(repo, "v1", image(config, []))
    assert r.status_code == 400 and error_code(r) == "MANIFEST_INVALID", r.text
