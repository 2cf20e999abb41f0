"""Pull, from the OCI Distribution Spec v1.1: end-1 (API version check), end-2 (blobs), end-3 (manifests)."""

from __future__ import annotations

import hashlib
import os
import socket
import ssl

from tests.ocitools import DOCKER_MANIFEST, OCI_MANIFEST, Blob, config_blob, image, sha256, sha512, tar_layer
from tests.registry.conftest import RegistryClient, error_code, registry_headers

# -- end-1 -------------------------------------------------------------------------------------------------


def test_end1_api_version_check(registry: RegistryClient) -> None:
    r = registry.get("/v2/")
    assert r.status_code == 200
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert r.headers["Content-Type"].startswith("application/json")
    assert r.json() == {}
    assert registry.get("/v2").status_code == 200


# -- end-2 -------------------------------------------------------------------------------------------------


def test_end2_get_blob_returns_bytes_digest_and_length(registry: RegistryClient, repo: str) -> None:
    data = b"a blob of bytes\n" * 1000
    digest = registry.push_blob(repo, data)
    r = registry.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == data
    assert registry_headers(r)["Docker-Content-Digest"] == digest
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Content-Type"] == "application/octet-stream"


def test_end2_get_blob_of_many_read_pieces_is_exact(registry: RegistryClient, repo: str) -> None:
    # Over TLS a blob is streamed in 256 KiB pieces; an odd size checks the last, short piece.
    data = os.urandom(3 * 256 * 1024 + 12345)
    digest = registry.push_blob(repo, data)
    r = registry.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.headers["Content-Length"] == str(len(data))
    assert hashlib.sha256(r.content).hexdigest() == digest.removeprefix("sha256:")


def test_end2_head_blob_has_length_and_digest_but_no_body(registry: RegistryClient, repo: str) -> None:
    data = b"head me"
    digest = registry.push_blob(repo, data)
    r = registry.head(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == str(len(data))
    assert r.headers["Docker-Content-Digest"] == digest


def test_end2_range_requests_answer_206_with_content_range(registry: RegistryClient, repo: str) -> None:
    data = bytes(range(256)) * 40
    digest = registry.push_blob(repo, data)
    path = f"/v2/{repo}/blobs/{digest}"
    r = registry.get(path, headers={"Range": "bytes=10-19"})
    assert r.status_code == 206
    assert r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    assert r.headers["Content-Length"] == "10"
    r = registry.get(path, headers={"Range": "bytes=10000-"})
    assert r.status_code == 206
    assert r.content == data[10000:]
    assert r.headers["Content-Range"] == f"bytes 10000-{len(data) - 1}/{len(data)}"
    r = registry.get(path, headers={"Range": f"bytes={len(data)}-"})
    if not r.history:  # the registry's answer (Azurite, behind a redirect, answers this one 206 where Azure 416s)
        assert r.status_code == 416
        assert r.headers["Content-Range"] == f"bytes */{len(data)}"


def test_end2_unknown_blob_is_404_blob_unknown(registry: RegistryClient, repo: str) -> None:
    registry.push_blob(repo, b"something so the repository exists")
    for method in ("GET", "HEAD"):
        r = registry.request(method, f"/v2/{repo}/blobs/{sha256(b'never pushed')}")
        assert r.status_code == 404
    assert error_code(registry.get(f"/v2/{repo}/blobs/{sha256(b'never pushed')}")) == "BLOB_UNKNOWN"


def test_end2_blob_of_another_repository_is_not_served(registry: RegistryClient, repo: str) -> None:
    """Content addressing is not access control: knowing a digest does not make a blob readable elsewhere."""
    digest = registry.push_blob(repo, b"secret layer of " + repo.encode())
    other = repo + "-other"
    registry.push_blob(other, b"an unrelated blob")
    r = registry.get(f"/v2/{other}/blobs/{digest}")
    assert r.status_code == 404
    assert error_code(r) == "BLOB_UNKNOWN"
    assert registry.head(f"/v2/{other}/blobs/{digest}").status_code == 404


def test_end2_sha512_blob(registry: RegistryClient, repo: str) -> None:
    data = b"hashed with sha512"
    digest = sha512(data)
    r = registry.post(f"/v2/{repo}/blobs/uploads/?digest={digest}", data=data)
    assert r.status_code == 201, r.text
    r = registry.get(f"/v2/{repo}/blobs/{digest}")
    assert r.status_code == 200
    assert r.content == data
    assert registry_headers(r)["Docker-Content-Digest"] == digest
    assert hashlib.sha512(r.content).hexdigest() == digest.split(":")[1]


def test_end2_percent_encoded_name_and_digest(registry: RegistryClient, repo: str) -> None:
    """azure-containerregistry sends ``library%2Fhello`` and ``sha256%3A...``; they mean the raw forms."""
    digest = registry.push_blob(repo, b"encoded")
    r = registry.get(f"/v2/{repo.replace('/', '%2F')}/blobs/{digest.replace(':', '%3A')}")
    assert r.status_code == 200
    assert r.content == b"encoded"


# -- end-3 -------------------------------------------------------------------------------------------------


def test_end3_get_manifest_by_tag_and_by_digest(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, "v1")
    for ref in ("v1", manifest.digest):
        r = registry.get(f"/v2/{repo}/manifests/{ref}", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200
        assert r.content == manifest.body  # byte for byte as pushed
        assert r.headers["Content-Type"] == OCI_MANIFEST
        assert r.headers["Docker-Content-Digest"] == manifest.digest
        assert r.headers["Content-Length"] == str(len(manifest.body))


def test_end3_head_manifest(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, "latest")
    r = registry.head(f"/v2/{repo}/manifests/latest")
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Length"] == str(len(manifest.body))
    assert r.headers["Docker-Content-Digest"] == manifest.digest
    assert r.headers["Content-Type"] == OCI_MANIFEST


def test_end3_content_type_is_what_was_pushed(registry: RegistryClient, repo: str) -> None:
    layer = Blob(b"docker layer", "application/vnd.docker.image.rootfs.diff.tar.gzip")
    config = config_blob(media_type="application/vnd.docker.container.image.v1+json")
    for blob in (layer, config):
        registry.push_blob(repo, blob)
    manifest = image(config, [layer], media_type=DOCKER_MANIFEST)
    assert registry.push_manifest(repo, "docker", manifest).status_code == 201
    r = registry.get(f"/v2/{repo}/manifests/docker")
    assert r.headers["Content-Type"] == DOCKER_MANIFEST
    assert r.content == manifest.body


def test_end3_unknown_manifest_is_404_manifest_unknown(registry: RegistryClient, repo: str) -> None:
    registry.push_image(repo, "exists")
    for ref in ("missing", sha256(b"no such manifest")):
        r = registry.get(f"/v2/{repo}/manifests/{ref}")
        assert r.status_code == 404
        assert error_code(r) == "MANIFEST_UNKNOWN"
        assert registry.head(f"/v2/{repo}/manifests/{ref}").status_code == 404
    r = registry.get(f"/v2/{repo}-never/manifests/exists")
    assert r.status_code == 404


def test_end3_percent_encoded_name_and_digest(registry: RegistryClient, repo: str) -> None:
    manifest = registry.push_image(repo, "enc")
    r = registry.get(f"/v2/{repo.replace('/', '%2F')}/manifests/{manifest.digest.replace(':', '%3A')}")
    assert r.status_code == 200
    assert r.content == manifest.body


def test_end3_tag_overwrite_serves_the_new_manifest(registry: RegistryClient, repo: str) -> None:
    first = registry.push_image(repo, "moving")
    assert registry.head(f"/v2/{repo}/manifests/moving").headers["Docker-Content-Digest"] == first.digest
    second = registry.push_image(repo, "moving")
    r = registry.get(f"/v2/{repo}/manifests/moving")
    assert r.headers["Docker-Content-Digest"] == second.digest
    assert r.content == second.body
    # The first manifest is still there by digest.
    assert registry.get(f"/v2/{repo}/manifests/{first.digest}").content == first.body


def test_blob_pulled_through_a_layer_tar(registry: RegistryClient, repo: str) -> None:
    layer = tar_layer({"etc/hello": b"hi\n"})
    registry.push_blob(repo, layer)
    assert registry.get(f"/v2/{repo}/blobs/{layer.digest}").content == layer.data


def test_same_registry_by_host_name_on_the_shared_port(registry: RegistryClient, repo: str) -> None:
    """``<name>.localhost:<shared port>`` reaches the same registry as its own port."""
    manifest = registry.push_image(repo, "shared")
    # A token from the registry's own port is valid on every login server of the registry.
    auth = registry.authorization(f"repository:{repo}:pull")
    port = int(registry.server.shared.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=registry.server.ca)
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(
        raw, server_hostname="acrlocal.localhost"
    ) as tls:
        tls.sendall(f"GET /v2/{repo.replace('/', '%2F')}/manifests/shared HTTP/1.1\r\n"
                    f"Host: acrlocal.localhost:{port}\r\nAuthorization: {auth}\r\nConnection: close\r\n\r\n"
                    .encode())
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert f"Docker-Content-Digest: {manifest.digest}".encode() in head
    assert body == manifest.body
