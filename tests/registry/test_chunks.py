"""A chunk is all or nothing: a PATCH whose body does not arrive whole (the client disconnects, or the server
dies) leaves the upload session exactly as it was, and the client carries on from the session's ``Range``."""

from __future__ import annotations

import time

from tests.harness import AcrLocal
from tests.ocitools import sha256
from tests.registry.conftest import RegistryClient, StorageProbe
from tests.registry.test_persistence import MiB, open_request, wait_until


def open_session(registry: RegistryClient, repo: str, first: bytes) -> str:
    location = registry.post(f"/v2/{repo}/blobs/uploads/").headers["Location"]
    r = registry.patch(location, data=first, headers={"Content-Range": f"0-{len(first) - 1}"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(first) - 1}", r.text
    return str(location)


def cut_off_chunk(server: AcrLocal, registry: RegistryClient, repo: str, location: str, start: int, length: int,
                  sent: bytes) -> object:
    """A PATCH announcing ``length`` bytes from ``start`` (Content-Range and Content-Length) that sends only
    ``sent``; the open socket is returned for the caller to close."""
    auth = registry.authorization(f"repository:{repo}:pull,push")
    sock = open_request(server, f"PATCH {location} HTTP/1.1\r\nHost: {registry.login_server}\r\n"
                                f"Authorization: {auth}\r\nContent-Type: application/octet-stream\r\n"
                                f"Content-Length: {length}\r\nContent-Range: {start}-{start + length - 1}\r\n\r\n")
    sock.sendall(sent)
    return sock


def finish(registry: RegistryClient, location: str, data: bytes, start: int) -> None:
    r = registry.patch(location, data=data[start:], headers={"Content-Range": f"{start}-{len(data) - 1}"})
    assert r.status_code == 202 and r.headers["Range"] == f"0-{len(data) - 1}", r.text
    r = registry.put(f"{location}?digest={sha256(data)}")
    assert r.status_code == 201, r.text


def test_a_chunk_cut_off_by_a_disconnect_leaves_nothing(acrlocal: AcrLocal, registry: RegistryClient,
                                                        repo: str) -> None:
    data = bytes(range(110))
    location = open_session(registry, repo, data[:10])
    sock = cut_off_chunk(acrlocal, registry, repo, location, 10, 100, data[10:60])  # 50 of the 100 bytes
    time.sleep(0.2)  # let the server take the 50 bytes before the disconnect (the outcome must not depend on it)
    sock.close()  # type: ignore[attr-defined]
    status = registry.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-9"
    finish(registry, location, data, 10)  # the chunk sent again in full is taken
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_a_long_chunk_cut_off_mid_write_is_cut_back(acrlocal: AcrLocal, registry: RegistryClient,
                                                    storage: StorageProbe, repo: str) -> None:
    # 5 MiB of the chunk arrive: more than a block of the Azure store (4 MiB), so some of it reaches either store.
    data = bytes(range(256)) * (8 * MiB // 256) + b"0123456789"
    location = open_session(registry, repo, data[:10])
    upload_id = location.rsplit("/", 1)[1]
    sock = cut_off_chunk(acrlocal, registry, repo, location, 10, len(data) - 10, data[10:10 + 5 * MiB])
    wait_until(lambda: storage.upload_received(upload_id) > 10, "part of the chunk to reach the store")
    sock.close()  # type: ignore[attr-defined]
    status = registry.get(location)  # waits for the PATCH in progress to end
    assert status.status_code == 204 and status.headers["Range"] == "0-9"
    assert storage.upload_size(upload_id) == 10
    finish(registry, location, data, 10)
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data


def test_a_chunk_cut_off_by_a_crash_is_dropped_at_restart(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry, storage, repo = RegistryClient(fresh_acrlocal), StorageProbe(fresh_acrlocal), "crash/chunk"
    data = bytes(range(256)) * (8 * MiB // 256)
    location = open_session(registry, repo, data[:1000])
    upload_id = location.rsplit("/", 1)[1]
    sock = cut_off_chunk(fresh_acrlocal, registry, repo, location, 1000, len(data) - 1000, data[1000:5 * MiB])
    wait_until(lambda: storage.upload_received(upload_id) > 1000, "part of the chunk to reach the store")
    fresh_acrlocal.kill9()
    sock.close()  # type: ignore[attr-defined]
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    status = registry.get(location)
    assert status.status_code == 204 and status.headers["Range"] == "0-999"
    assert storage.upload_size(upload_id) == 1000
    finish(registry, location, data, 1000)
    assert registry.get(f"/v2/{repo}/blobs/{sha256(data)}").content == data
