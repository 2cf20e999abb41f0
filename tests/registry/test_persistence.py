"""State survives restarts and crashes: pushed content, open upload sessions; a ``kill -9`` in the middle of a
push leaves no corrupt blob and no half-visible manifest, and the client can push again."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from pathlib import Path

from acrlocal.storage.sql import NamedLock
from tests.harness import AcrLocal
from tests.interop.tools import Containers
from tests.ocitools import (
    OCI_MANIFEST,
    Manifest,
    big_tar_layer,
    config_blob,
    image,
    layout_index,
    sha256,
    tar_layer,
    write_layout,
)
from tests.registry.conftest import RegistryClient, StorageProbe, files_only

MiB = 1024 * 1024


def wait_until(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it holds (a bound on waiting, not an assertion about speed)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


def open_request(server: AcrLocal, head: str) -> ssl.SSLSocket:
    """A TLS connection to the registry with a request's head sent and its body still to come."""
    host, port = server.login_server().rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=server.ca)
    sock = ctx.wrap_socket(socket.create_connection((host, int(port))), server_hostname=host)
    sock.sendall(head.encode())
    return sock


def test_pushed_content_survives_a_restart(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    manifest = registry.push_image("persist/app", "v1")
    layers = [layer["digest"] for layer in json.loads(manifest.body)["layers"]]
    blobs = {d: registry.get(f"/v2/persist/app/blobs/{d}").content for d in layers}
    fresh_acrlocal.restart()
    registry = RegistryClient(fresh_acrlocal)
    r = registry.get("/v2/persist/app/manifests/v1")
    assert r.status_code == 200 and r.content == manifest.body
    for digest, data in blobs.items():
        assert registry.get(f"/v2/persist/app/blobs/{digest}").content == data
    assert registry.get("/v2/persist/app/tags/list").json()["tags"] == ["v1"]
    assert "persist/app" in registry.get("/v2/_catalog").json()["repositories"]


def test_upload_session_survives_restart_and_kill(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    data = bytes(range(256)) * 3000
    location = registry.post("/v2/persist/upload/blobs/uploads/").headers["Location"]
    assert registry.patch(location, data=data[:1000], headers={"Content-Range": "0-999"}).status_code == 202

    fresh_acrlocal.restart()
    registry = RegistryClient(fresh_acrlocal)
    status = registry.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-999"
    r = registry.patch(location, data=data[1000:500_000], headers={"Content-Range": f"1000-{500_000 - 1}"})
    assert r.status_code == 202

    fresh_acrlocal.kill9()
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    assert registry.get(location).headers["Range"] == f"0-{500_000 - 1}"
    r = registry.put(f"{location}?digest={sha256(data)}", data=data[500_000:],
                     headers={"Content-Range": f"500000-{len(data) - 1}"})
    assert r.status_code == 201, r.text
    assert registry.get(f"/v2/persist/upload/blobs/{sha256(data)}").content == data


def test_kill9_during_blob_upload_leaves_no_blob_and_client_can_push_again(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    storage = StorageProbe(fresh_acrlocal)
    data = bytes(range(256)) * (8 * 4096)  # 8 MiB
    digest = sha256(data)
    location = registry.post("/v2/crash/blob/blobs/uploads/").headers["Location"]
    upload_id = location.rsplit("/", 1)[1]
    # A PATCH that announces 8 MiB and sends half of it, then the server dies.
    auth = registry.authorization("repository:crash/blob:pull,push")
    sock = open_request(fresh_acrlocal, f"PATCH {location} HTTP/1.1\r\nHost: {registry.login_server}\r\n"
                                        f"Authorization: {auth}\r\nContent-Length: {len(data)}\r\n"
                                        f"Content-Range: 0-{len(data) - 1}\r\n\r\n")
    sock.sendall(data[: len(data) // 2])
    wait_until(lambda: storage.upload_received(upload_id) > 0,
               "part of the chunk to reach the upload file")
    fresh_acrlocal.kill9()
    sock.close()

    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    assert not storage.has_blob(digest)
    assert storage.count("SELECT count(*) FROM blobs WHERE digest = ?", digest) == 0
    assert registry.head(f"/v2/crash/blob/blobs/{digest}").status_code == 404
    # The half-received chunk is dropped (the session is as it was before it: empty); starting over works:
    assert registry.get(location).headers["Range"] == "0-0"
    assert storage.upload_size(upload_id) == 0
    assert registry.push_blob("crash/blob", data) == digest
    assert registry.get(f"/v2/crash/blob/blobs/{digest}").content == data


def test_kill9_during_manifest_push_leaves_nothing_visible(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    storage = StorageProbe(fresh_acrlocal)
    layer, config = tar_layer({"f": b"f"}), config_blob()
    registry.push_blob("crash/manifest", layer)
    registry.push_blob("crash/manifest", config)
    doc = json.loads(image(config, [layer]).body)
    doc["annotations"] = {"padding": "p" * (3 * MiB)}
    body = json.dumps(doc).encode()
    auth = registry.authorization("repository:crash/manifest:pull,push")
    sock = open_request(fresh_acrlocal, f"PUT /v2/crash/manifest/manifests/v1 HTTP/1.1\r\n"
                                        f"Host: {registry.login_server}\r\nAuthorization: {auth}\r\n"
                                        f"Content-Type: {OCI_MANIFEST}\r\n"
                                        f"Content-Length: {len(body)}\r\n\r\n")
    sock.sendall(body[: len(body) - 1000])
    time.sleep(0.2)  # let the server read what was sent (correctness does not depend on it)
    fresh_acrlocal.kill9()
    sock.close()

    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    assert registry.get("/v2/crash/manifest/manifests/v1").status_code == 404
    assert registry.get("/v2/crash/manifest/tags/list").json()["tags"] == []
    assert storage.count("SELECT count(*) FROM manifests") == 0
    assert "crash/manifest" not in registry.get("/v2/_catalog").json()["repositories"]
    # Pushed again in full, it is there.
    manifest = Manifest(body, OCI_MANIFEST)
    assert registry.push_manifest("crash/manifest", "v1", manifest).status_code == 201
    assert registry.get("/v2/crash/manifest/manifests/v1").content == body


def test_kill9_in_the_middle_of_a_skopeo_push(fresh_acrlocal: AcrLocal, tmp_path: Path) -> None:
    fresh_acrlocal.start()
    storage = StorageProbe(fresh_acrlocal)
    layout = tmp_path / "layout"
    big = big_tar_layer(layout, 200 * MiB)
    small = tar_layer({"small": b"small"})
    config = config_blob(diff_ids=[small.digest, big["digest"]])
    doc = json.loads(image(config, [small]).body)
    doc["layers"].append(big)
    manifest = Manifest(json.dumps(doc).encode(), OCI_MANIFEST)
    write_layout(layout, {"v1": manifest}, [config, small])
    with Containers(tmp_path, fresh_acrlocal) as tools:
        cmd = ["skopeo", "--policy", str(tools.policy), "copy", "--preserve-digests", "--dest-cert-dir",
               str(tools.cert_dir), f"oci:{layout}:v1", f"docker://{tools.ref('crash/skopeo')}:v1"]
        push = subprocess.Popen(cmd, env=tools.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_until(lambda: any(storage.upload_received(u) > 4 * MiB for u in storage.upload_files())
                       or push.poll() is not None, "skopeo to be half-way through the big layer")
            fresh_acrlocal.kill9()
        finally:
            push.wait(timeout=120)
        assert push.returncode != 0, "the push was cut off by the crash"

        fresh_acrlocal.start()
        registry = RegistryClient(fresh_acrlocal)
        assert not storage.has_blob(big["digest"])
        assert registry.get("/v2/crash/skopeo/manifests/v1").status_code == 404
        # Every blob stored is whole: it hashes to its name.
        for digest in storage.stored_digests():
            assert sha256(storage.blob_bytes(digest)) == digest

        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1",
                     f"docker://{tools.ref('crash/skopeo')}:v1")
        assert registry.get("/v2/crash/skopeo/manifests/v1").content == manifest.body
        out = tmp_path / "pulled"
        tools.skopeo("copy", "--dest-oci-accept-uncompressed-layers", "--src-cert-dir", str(tools.cert_dir),
                     f"docker://{tools.ref('crash/skopeo')}:v1", f"oci:{out}:v1")
        assert layout_index(out)["manifests"][0]["digest"] == manifest.digest


def test_abandoned_upload_sessions_expire(tmp_path: Path) -> None:
    # A sweep a second; the TTL leaves the session seconds to be written and seen before it may expire.
    server = AcrLocal(tmp_path / "data", "--upload-session-ttl", "4")
    server.start()
    try:
        registry = RegistryClient(server)
        storage = StorageProbe(server)
        location = registry.post("/v2/expire/me/blobs/uploads/").headers["Location"]
        upload_id = location.rsplit("/", 1)[1]
        registry.patch(location, data=b"abandoned")
        assert upload_id in storage.upload_files()
        wait_until(lambda: registry.get(location).status_code == 404, "the session to expire")
        # The row goes first, then the bytes (a request to the blob store, on Azure): both go.
        wait_until(lambda: upload_id not in storage.upload_files(), "the upload's bytes to be discarded")
        assert storage.count("SELECT count(*) FROM upload_sessions WHERE id = ?", upload_id) == 0
    finally:
        server.stop()


def test_upload_sessions_are_expired_by_one_process_or_replica_at_a_time(tmp_path: Path) -> None:
    """While another process or replica holds the database's upload-expiry lock (here the test, as another replica
    in the middle of its sweep would), this server's sweeper skips its turns; once released, it expires the session."""
    server = AcrLocal(tmp_path / "data", "--upload-session-ttl", "1")  # a sweep a second
    server.start()
    engine = server.database()
    other = NamedLock(engine, "upload-expiry")
    try:
        registry = RegistryClient(server)
        # Taken between two of the server's sweeps (each holds it a moment), before the session is made.
        wait_until(other.acquire, "the upload-expiry lock free between two sweeps")
        try:
            location = registry.post("/v2/expire/once/blobs/uploads/").headers["Location"]
            assert registry.patch(location, data=b"abandoned").status_code == 202
            time.sleep(4)  # three sweeps' turns and more past the TTL: none may expire it while the lock is held
            assert registry.get(location).status_code == 204
        finally:
            other.release()
        wait_until(lambda: registry.get(location).status_code == 404, "the session to expire")
    finally:
        engine.dispose()
        server.stop()


@files_only
def test_start_removes_orphan_upload_files_and_sessions_without_files(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    storage = StorageProbe(fresh_acrlocal)
    kept = registry.post("/v2/orphans/x/blobs/uploads/").headers["Location"]
    lost = registry.post("/v2/orphans/x/blobs/uploads/").headers["Location"]
    fresh_acrlocal.stop()
    uploads = fresh_acrlocal.data_dir / "blobs" / "_uploads"
    (uploads / "orphan-left-by-a-crash").write_bytes(b"junk")
    (uploads / lost.rsplit("/", 1)[1]).unlink()
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    assert storage.upload_files() == {kept.rsplit("/", 1)[1]}
    assert registry.get(kept).status_code == 204
    assert registry.get(lost).status_code == 404
    assert storage.count("SELECT count(*) FROM upload_sessions") == 1
