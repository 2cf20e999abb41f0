"""Push, from the OCI Distribution Spec v1.1: end-4a/4b (start an upload), end-5 (chunks), end-6 (close),
end-7 (manifests), end-11 (cross-repository mount), end-13 (upload status), end-14 (cancel)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import requests

from tests.ocitools import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Blob,
    Manifest,
    config_blob,
    image,
    index,
    sha256,
    sha512,
    tar_layer,
)
from tests.registry.conftest import (
    RegistryClient,
    StorageProbe,
    error_code,
    race_index_put_with_child_delete,
)

UPLOAD_LOCATION = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[A-Za-z0-9_-]{40,})$")


def start(registry: RegistryClient, repo: str) -> str:
    r = registry.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    return r.headers["Location"]


# -- end-4a / end-6: POST then PUT ---------------------------------------------------------------------------


def test_end4a_post_opens_a_session_with_location_and_range(registry: RegistryClient, repo: str) -> None:
    r = registry.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202
    match = UPLOAD_LOCATION.match(r.headers["Location"])
    assert match and match["name"] == repo
    assert r.headers["Docker-Upload-UUID"] == match["id"]
    assert r.headers["Range"] == "0-0"
    assert r.headers["Content-Length"] == "0"
    # Another session gets another, unguessable id.
    assert registry.post(f"/v2/{repo}/blobs/uploads/").headers["Docker-Upload-UUID"] != match["id"]


def test_end6_put_with_the_whole_blob_closes_the_session(registry: RegistryClient, repo: str,
                                                        storage: StorageProbe) -> None:
    data = b"monolithic after POST"
    location = start(registry, repo)
    upload_id = location.rsplit("/", 1)[1]
    r = registry.put(f"{location}?digest={sha256(data)}", data=data,
                     headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/{repo}/blobs/{sha256(data)}"
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert registry.get(r.headers["Location"]).content == data
    # The session is over.
    assert registry.get(location).status_code == 404
    assert upload_id not in storage.upload_files()
    assert storage.count("SELECT count(*) FROM upload_sessions WHERE id = ?", upload_id) == 0


def test_end4b_single_post_monolithic_upload(registry: RegistryClient, repo: str) -> None:
    data = b"single POST"
    r = registry.post(f"/v2/{repo}/blobs/uploads/?digest={sha256(data)}", data=data,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/{repo}/blobs/{sha256(data)}"
    assert r.headers["Docker-Content-Digest"] == sha256(data)
    assert registry.get(r.headers["Location"]).content == data


def test_end4b_digest_mismatch_is_400_and_stores_nothing(registry: RegistryClient, repo: str,
                                                        storage: StorageProbe) -> None:
    claimed = sha256(b"what the client says")
    before = storage.upload_files()
    r = registry.post(f"/v2/{repo}/blobs/uploads/?digest={claimed}", data=b"what it sends")
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert not storage.has_blob(sha256(b"what it sends"))
    assert not storage.has_blob(claimed)
    assert storage.upload_files() <= before
    assert storage.count("SELECT count(*) FROM blobs WHERE digest IN (?, ?)", claimed, sha256(b"what it sends")) == 0


def test_empty_blob(registry: RegistryClient, repo: str) -> None:
    location = start(registry, repo)
    r = registry.put(f"{location}?digest={sha256(b'')}")
    assert r.status_code == 201
    r = registry.get(f"/v2/{repo}/blobs/{sha256(b'')}")
    assert r.status_code == 200 and r.content == b""


# -- end-5: chunks -----------------------------------------------------------------------------------------


def test_end5_chunked_upload_with_content_range(registry: RegistryClient, repo: str) -> None:
    data = bytes(range(256)) * 100
    chunks = [data[:1000], data[1000:20000], data[20000:]]
    location = start(registry, repo)
    offset = 0
    for chunk in chunks:
        r = registry.patch(location, data=chunk, headers={
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(chunk) - 1}",
            "Content-Length": str(len(chunk)),
        })
        assert r.status_code == 202, r.text
        offset += len(chunk)
        assert r.headers["Range"] == f"0-{offset - 1}"
        assert UPLOAD_LOCATION.match(r.headers["Location"])
        assert r.headers["Content-Length"] == "0"
        location = r.headers["Location"]
    r = registry.put(f"{location}?digest={sha256(data)}")
    assert r.status_code == 201
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_end5_streamed_patch_without_content_range(registry: RegistryClient, repo: str) -> None:
    """Docker and containers/image stream a whole blob in one PATCH with no Content-Range."""
    data = b"streamed " * 50_000

    def body():  # chunked transfer encoding, no Content-Length
        for i in range(0, len(data), 65536):
            yield data[i:i + 65536]

    location = start(registry, repo)
    r = registry.patch(location, data=body())
    assert r.status_code == 202
    assert r.headers["Range"] == f"0-{len(data) - 1}"
    r = registry.put(f"{r.headers['Location']}?digest={sha256(data)}")
    assert r.status_code == 201
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


@pytest.mark.parametrize("content_range", ["5-9", "0-4", "2-20", "12-15"])
def test_end5_out_of_order_or_overlapping_chunk_is_416(registry: RegistryClient, repo: str,
                                                      content_range: str) -> None:
    location = start(registry, repo)
    r = registry.patch(location, data=b"0123456789", headers={"Content-Range": "0-9"})
    assert r.status_code == 202
    start_, end = (int(x) for x in content_range.split("-"))
    chunk = b"x" * (end - start_ + 1)
    r = registry.patch(location, data=chunk, headers={"Content-Range": content_range})
    assert r.status_code == 416
    assert error_code(r) == "RANGE_INVALID"
    assert r.headers["Range"] == "0-9"  # where the upload stands
    assert r.headers["Location"] == location
    # Nothing was written: the upload still ends at 10 bytes and can go on.
    status = registry.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-9"
    r = registry.patch(location, data=b"ab", headers={"Content-Range": "10-11"})
    assert r.status_code == 202
    r = registry.put(f"{location}?digest={sha256(b'0123456789ab')}")
    assert r.status_code == 201


def test_end5_malformed_content_range_is_416(registry: RegistryClient, repo: str) -> None:
    location = start(registry, repo)
    for bad in ("bytes", "9-3", "a-b", "-5"):
        r = registry.patch(location, data=b"abc", headers={"Content-Range": bad})
        assert r.status_code == 416, bad
        assert error_code(r) == "RANGE_INVALID"
    assert registry.get(location).headers["Range"] == "0-0"


def test_end5_chunk_shorter_than_its_range_is_discarded(registry: RegistryClient, repo: str) -> None:
    location = start(registry, repo)
    assert registry.patch(location, data=b"abc", headers={"Content-Range": "0-2"}).status_code == 202
    r = registry.patch(location, data=b"de", headers={"Content-Range": "3-9", "Content-Length": "2"})
    assert r.status_code == 400
    assert error_code(r) == "SIZE_INVALID"
    assert registry.get(location).headers["Range"] == "0-2"


def test_end6_final_chunk_in_the_put(registry: RegistryClient, repo: str) -> None:
    data = b"first part|last part"
    location = start(registry, repo)
    r = registry.patch(location, data=data[:11], headers={"Content-Range": "0-10"})
    assert r.status_code == 202
    r = registry.put(f"{r.headers['Location']}?digest={sha256(data)}", data=data[11:],
                     headers={"Content-Range": f"11-{len(data) - 1}", "Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_end6_put_without_digest_is_400(registry: RegistryClient, repo: str) -> None:
    location = start(registry, repo)
    r = registry.put(location, data=b"abc")
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"


def test_end6_digest_mismatch_discards_the_upload(registry: RegistryClient, repo: str,
                                                  storage: StorageProbe) -> None:
    location = start(registry, repo)
    upload_id = location.rsplit("/", 1)[1]
    assert registry.patch(location, data=b"actual bytes").status_code == 202
    claimed = sha256(b"other bytes")
    r = registry.put(f"{location}?digest={claimed}")
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert r.json()["errors"][0]["detail"] == {"expected": claimed, "actual": sha256(b"actual bytes")}
    assert registry.get(location).status_code == 404
    assert upload_id not in storage.upload_files()
    assert not storage.has_blob(sha256(b"actual bytes"))
    assert storage.count("SELECT count(*) FROM upload_sessions WHERE id = ?", upload_id) == 0
    assert storage.count("SELECT count(*) FROM blobs WHERE digest = ?", sha256(b"actual bytes")) == 0


# -- end-13, end-14: status and cancel ---------------------------------------------------------------------


def test_end13_upload_status(registry: RegistryClient, repo: str) -> None:
    location = start(registry, repo)
    r = registry.get(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-0"
    assert r.headers["Location"] == location
    registry.patch(location, data=b"12345", headers={"Content-Range": "0-4"})
    r = registry.get(location)
    assert r.status_code == 204
    assert r.headers["Range"] == "0-4"
    assert r.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]


def test_end14_cancel_upload(registry: RegistryClient, repo: str, storage: StorageProbe) -> None:
    location = start(registry, repo)
    upload_id = location.rsplit("/", 1)[1]
    registry.patch(location, data=b"to be thrown away")
    assert upload_id in storage.upload_files()
    r = registry.delete(location)
    assert r.status_code == 204
    assert upload_id not in storage.upload_files()
    r = registry.get(location)
    assert r.status_code == 404
    assert error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    assert registry.delete(location).status_code == 404


def test_upload_id_is_bound_to_its_repository(registry: RegistryClient, repo: str) -> None:
    location = start(registry, repo)
    upload_id = location.rsplit("/", 1)[1]
    elsewhere = f"/v2/{repo}-other/blobs/uploads/{upload_id}"
    for method in ("GET", "PATCH", "PUT", "DELETE"):
        r = registry.request(method, elsewhere + ("?digest=" + sha256(b"x") if method == "PUT" else ""), data=b"x")
        assert r.status_code == 404, method
        assert error_code(r) == "BLOB_UPLOAD_UNKNOWN"
    # Still open and untouched in its own repository.
    assert registry.get(location).headers["Range"] == "0-0"


@pytest.mark.parametrize("upload_id", ["nonexistent-upload-id-0123456789abcdef", "x", "%2E%2E", "a%2Fb"])
def test_unknown_upload_id_is_404(registry: RegistryClient, repo: str, upload_id: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        r = registry.request(method, f"/v2/{repo}/blobs/uploads/{upload_id}")
        assert r.status_code == 404
        assert error_code(r) == "BLOB_UPLOAD_UNKNOWN"


# -- end-11: mount -----------------------------------------------------------------------------------------


def test_end11_mount_from_a_repository_that_has_the_blob(registry: RegistryClient, repo: str,
                                                          storage: StorageProbe) -> None:
    source, target = repo + "/source", repo + "/target"
    digest = registry.push_blob(source, b"shared layer " + repo.encode())
    r = registry.post(f"/v2/{target}/blobs/uploads/?mount={digest}&from={source}")
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/{target}/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest
    assert registry.get(r.headers["Location"]).content == b"shared layer " + repo.encode()
    # Stored once.
    assert storage.count("SELECT count(*) FROM repository_blobs WHERE digest = ?", digest) == 2
    assert storage.count("SELECT count(*) FROM blobs WHERE digest = ?", digest) == 1


def test_end11_mount_of_a_blob_the_source_lacks_opens_a_session(registry: RegistryClient, repo: str) -> None:
    source, target = repo + "/source", repo + "/target"
    registry.push_blob(source, b"something else")
    elsewhere = registry.push_blob(repo + "/third", b"only in the third repository")
    for query in (f"mount={elsewhere}&from={source}", f"mount={elsewhere}&from={repo}/nonexistent",
                  f"mount={elsewhere}"):
        r = registry.post(f"/v2/{target}/blobs/uploads/?{query}")
        assert r.status_code == 202, query
        assert UPLOAD_LOCATION.match(r.headers["Location"])
        assert registry.head(f"/v2/{target}/blobs/{elsewhere}").status_code == 404


def test_end11_mount_checks_names_and_digest(registry: RegistryClient, repo: str) -> None:
    digest = registry.push_blob(repo, b"mountable")
    r = registry.post(f"/v2/{repo}-b/blobs/uploads/?mount={digest}&from=Bad/Name")
    assert r.status_code == 400 and error_code(r) == "NAME_INVALID"
    r = registry.post(f"/v2/{repo}-b/blobs/uploads/?mount=sha256:nothex&from={repo}")
    assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"


# -- end-7: manifests --------------------------------------------------------------------------------------


def test_end7_put_manifest_by_tag(registry: RegistryClient, repo: str) -> None:
    layer, config = tar_layer({"a": b"a"}), config_blob()
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    manifest = image(config, [layer])
    r = registry.push_manifest(repo, "v1", manifest)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/{repo}/manifests/{manifest.digest}"
    assert r.headers["Docker-Content-Digest"] == manifest.digest
    assert "OCI-Subject" not in r.headers
    assert registry.get(r.headers["Location"]).content == manifest.body


def test_end7_put_manifest_by_digest(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, None)
    r = registry.get(f"/v2/{repo}/manifests/{manifest.digest}")
    assert r.status_code == 200 and r.content == manifest.body
    assert registry.get(f"/v2/{repo}/tags/list").json()["tags"] == []


def test_end7_put_manifest_by_sha512_digest(registry: RegistryClient, repo: str) -> None:
    layer, config = tar_layer({"sha512": b"x"}), config_blob()
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    manifest = image(config, [layer])
    digest = sha512(manifest.body)
    r = registry.push_manifest(repo, digest, manifest)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == digest
    assert r.headers["Location"] == f"/v2/{repo}/manifests/{digest}"
    got = registry.get(f"/v2/{repo}/manifests/{digest}")
    assert got.content == manifest.body and got.headers["Docker-Content-Digest"] == digest


def test_end7_digest_in_url_must_match_body(registry: RegistryClient, repo: str, storage: StorageProbe) -> None:
    layer, config = tar_layer({"b": b"b"}), config_blob()
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    manifest = image(config, [layer])
    wrong = sha256(b"another document")
    r = registry.push_manifest(repo, wrong, manifest)
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert storage.count("SELECT count(*) FROM manifests WHERE digest IN (?, ?)", wrong, manifest.digest) == 0


def test_end7_missing_layer_is_manifest_blob_unknown(registry: RegistryClient, repo: str,
                                                     storage: StorageProbe) -> None:
    config, present, absent = config_blob(), tar_layer({"p": b"p"}), tar_layer({"absent": repo.encode()})
    registry.push_blob(repo, config)
    registry.push_blob(repo, present)
    registry.push_blob(repo + "-elsewhere", absent)  # in the registry, but not in this repository
    manifest = image(config, [present, absent])
    r = registry.push_manifest(repo, "broken", manifest)
    assert r.status_code == 404
    assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"] == [{"digest": absent.digest}]
    assert registry.get(f"/v2/{repo}/manifests/broken").status_code == 404
    assert storage.count("SELECT count(*) FROM manifests WHERE digest = ?", manifest.digest) == 0
    assert storage.count("SELECT count(*) FROM tags WHERE name = 'broken'") == 0


def test_end7_oci_index_of_manifests_in_the_repository(registry: RegistryClient, repo: str) -> None:
    amd = registry.push_image(repo, None)
    arm = registry.push_image(repo, None)
    idx = index([(amd, {"architecture": "amd64", "os": "linux"}), (arm, {"architecture": "arm64", "os": "linux"})])
    r = registry.push_manifest(repo, "multi", idx)
    assert r.status_code == 201, r.text
    got = registry.get(f"/v2/{repo}/manifests/multi")
    assert got.headers["Content-Type"] == OCI_INDEX
    assert got.content == idx.body


def test_end7_index_with_a_missing_child_is_manifest_blob_unknown(registry: RegistryClient, repo: str) -> None:
    present = registry.push_image(repo, None)
    missing = registry.push_image(repo + "-other", None)
    idx = index([(present, {"architecture": "amd64", "os": "linux"}), (missing, {"architecture": "arm", "os": "x"})])
    r = registry.push_manifest(repo, "multi", idx)
    assert r.status_code == 404
    assert error_code(r) == "MANIFEST_BLOB_UNKNOWN"
    assert r.json()["errors"][0]["detail"] == [{"digest": missing.digest}]


def test_a_manifest_an_index_names_is_deleted_only_after_the_index(registry: RegistryClient, repo: str) -> None:
    child = registry.push_image(repo, None)
    idx = index([(child, {"architecture": "amd64", "os": "linux"})])
    assert registry.push_manifest(repo, "multi", idx).status_code == 201
    for path in (f"/v2/{repo}/manifests/{child.digest}", f"/acr/v1/{repo}/_manifests/{child.digest}"):
        r = registry.delete(path)
        assert r.status_code == 405 and error_code(r) == "REGISTRY_DISALLOWED_OPERATION", r.text
        assert r.json()["errors"][0]["detail"] == {"manifest": child.digest, "referencedBy": idx.digest}
    assert registry.get(f"/v2/{repo}/manifests/{child.digest}").content == child.body
    assert registry.delete(f"/v2/{repo}/manifests/{idx.digest}").status_code == 202
    assert registry.delete(f"/v2/{repo}/manifests/{child.digest}").status_code == 202
    # and the other order: an index naming a deleted manifest is refused
    r = registry.push_manifest(repo, "multi", idx)
    assert r.status_code == 404 and error_code(r) == "MANIFEST_BLOB_UNKNOWN", r.text


def test_an_index_put_racing_the_delete_of_its_child_ends_in_one_serial_order(
        registry: RegistryClient, repo: str) -> None:
    """Never both: either the index commits and the delete is refused, or the delete commits and the index is."""
    def through(_side: int, method: str, path: str, **kw: Any) -> requests.Response:
        return registry.request(method, path, **kw)  # one server: both sides are its

    for round_ in range(10):
        child, idx, put = race_index_put_with_child_delete(registry, "", repo, {}, through, round_)
        if put.status_code == 201:
            assert registry.get(f"/v2/{repo}/manifests/{child.digest}").status_code == 200
        else:
            assert registry.get(f"/v2/{repo}/manifests/{idx.digest}").status_code == 404


def test_end7_docker_schema2_manifest_and_manifest_list(registry: RegistryClient, repo: str) -> None:
    layer, config = Blob(b"gzip? no, but typed so", DOCKER_LAYER), config_blob(media_type=DOCKER_CONFIG)
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    manifest = image(config, [layer], media_type=DOCKER_MANIFEST)
    assert registry.push_manifest(repo, "v2", manifest).status_code == 201
    mlist = index([(manifest, {"architecture": "amd64", "os": "linux"})], media_type=DOCKER_LIST)
    r = registry.push_manifest(repo, "list", mlist)
    assert r.status_code == 201, r.text
    got = registry.get(f"/v2/{repo}/manifests/list")
    assert got.headers["Content-Type"] == DOCKER_LIST
    assert got.content == mlist.body


def test_end7_artifact_with_subject_that_does_not_exist_yet(registry: RegistryClient, repo: str) -> None:
    """A registry must accept a subject it does not have (referrers may be pushed before their subject)."""
    future = Manifest(b'{"not":"pushed"}', OCI_MANIFEST)
    empty = Blob(b"{}", "application/vnd.oci.empty.v1+json")
    sbom = Blob(b'{"sbom": true}', "application/spdx+json")
    for blob in (empty, sbom):
        registry.push_blob(repo, blob)
    artifact = image(empty, [sbom], subject=future, artifact_type="application/spdx+json")
    r = registry.push_manifest(repo, artifact.digest, artifact)
    assert r.status_code == 201
    assert r.headers["OCI-Subject"] == future.digest


def test_end7_manifest_without_media_type_field_uses_content_type(registry: RegistryClient, repo: str) -> None:
    layer, config = tar_layer({"n": b"n"}), config_blob()
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    manifest = image(config, [layer], with_media_type=False)
    assert "mediaType" not in json.loads(manifest.body)
    assert registry.push_manifest(repo, "bare", manifest).status_code == 201
    assert registry.get(f"/v2/{repo}/manifests/bare").headers["Content-Type"] == OCI_MANIFEST


@pytest.mark.parametrize("case", ["type-mismatch", "both-manifests-and-layers", "not-json", "schema1",
                                  "bad-descriptor", "unsupported-type"])
def test_end7_invalid_manifests_are_400_manifest_invalid(registry: RegistryClient, repo: str,
                                                         storage: StorageProbe, case: str) -> None:
    layer, config = tar_layer({"i": b"i"}), config_blob()
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    good = json.loads(image(config, [layer]).body)
    content_type = OCI_MANIFEST
    if case == "type-mismatch":
        content_type = OCI_INDEX
        body = json.dumps(good).encode()
    elif case == "both-manifests-and-layers":
        good["manifests"] = []
        body = json.dumps(good).encode()
    elif case == "not-json":
        body = b"{not json"
    elif case == "schema1":
        body = json.dumps({"schemaVersion": 1, "name": repo, "tag": "x", "fsLayers": []}).encode()
    elif case == "bad-descriptor":
        good["layers"][0]["digest"] = "sha256:short"
        body = json.dumps(good).encode()
    else:
        good["mediaType"] = content_type = "application/vnd.example.unknown+json"
        body = json.dumps(good).encode()
    r = registry.put(f"/v2/{repo}/manifests/{case}", data=body, headers={"Content-Type": content_type})
    assert r.status_code == 400, r.text
    assert error_code(r) == "MANIFEST_INVALID"
    assert storage.count("SELECT count(*) FROM tags WHERE name = ?", case) == 0


def test_end7_manifest_larger_than_4_mib_is_413(registry: RegistryClient, repo: str, storage: StorageProbe) -> None:
    layer, config = tar_layer({"big": b"big"}), config_blob()
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    doc = json.loads(image(config, [layer]).body)
    doc["annotations"] = {"padding": "x" * (4 * 1024 * 1024)}
    body = json.dumps(doc).encode()
    r = registry.put(f"/v2/{repo}/manifests/huge", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413
    assert error_code(r) == "MANIFEST_TOO_LARGE"

    def streamed():  # no Content-Length: the cap holds while reading
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    r = registry.put(f"/v2/{repo}/manifests/huge", data=streamed(), headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 413
    assert storage.count("SELECT count(*) FROM tags WHERE name = 'huge'") == 0
    # Just under the limit is accepted.
    doc["annotations"] = {"padding": "x" * (4 * 1024 * 1024 - len(body) + len(doc["annotations"]["padding"]) - 64)}
    body = json.dumps(doc).encode()
    assert len(body) <= 4 * 1024 * 1024
    r = registry.put(f"/v2/{repo}/manifests/almost", data=body, headers={"Content-Type": OCI_MANIFEST})
    assert r.status_code == 201, r.text
