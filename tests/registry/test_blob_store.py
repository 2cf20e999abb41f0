"""The registry on Azure Blob Storage (``acrlocal up --blob-store``, on a private Azurite), whatever
``--blob-backend`` says: blob GETs redirected to a short-lived SAS URL as ACR does, or streamed through the server
with ranges; HEAD from metadata; the credential never in the log; and storage that goes away and comes back (503
with Retry-After meanwhile, no restart of the server); and the storage requests a push makes.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests import azurite
from tests.harness import AcrLocal, acrlocal_cmd, child_env, running
from tests.ocitools import sha256
from tests.registry.conftest import RegistryClient, error_code


@pytest.fixture(scope="module")
def storage_server() -> Iterator[azurite.AzuriteServer]:
    with azurite.private(access_log=True) as server:
        yield server


@pytest.fixture(scope="module")
def redirecting(storage_server: azurite.AzuriteServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("redirect") / "data",
                 blob_store=storage_server.store()) as server:
        yield server


@pytest.fixture(scope="module")
def streaming(storage_server: azurite.AzuriteServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("stream") / "data", "--blob-downloads", "stream",
                 blob_store=storage_server.store()) as server:
        yield server


def test_a_blob_get_is_redirected_to_a_short_lived_read_only_sas(redirecting: AcrLocal,
                                                                storage_server: azurite.AzuriteServer) -> None:
    registry = RegistryClient(redirecting)
    registry.follow_storage_redirects = False
    data = os.urandom(100_000)
    digest = registry.push_blob("redirect/app", data)
    r = registry.get(f"/v2/redirect/app/blobs/{digest}")
    assert r.status_code == 307 and r.content == b""
    assert r.headers["Docker-Content-Digest"] == digest
    location = r.headers["Location"]
    url = urllib.parse.urlsplit(location)
    assert f"{url.scheme}://{url.netloc}" == f"https://127.0.0.1:{storage_server.port}"
    assert url.path.endswith("/sha256/" + digest.removeprefix("sha256:"))
    query = urllib.parse.parse_qs(url.query)
    assert query["sp"] == ["r"] and query["sr"] == ["b"] and query["spr"] == ["https"] and "sig" in query
    expiry = dt.datetime.fromisoformat(query["se"][0].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=5) < expiry - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=10, seconds=5)
    # The client follows it without the registry's token, and ranges work there.
    assert requests.get(location, timeout=30, verify=storage_server.ca).content == data
    ranged = requests.get(location, headers={"Range": "bytes=100-199"}, timeout=30, verify=storage_server.ca)
    assert ranged.status_code == 206 and ranged.content == data[100:200]
    # HEAD is answered by the registry from what it knows, not by storage.
    head = registry.head(f"/v2/redirect/app/blobs/{digest}")
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    # The redirect is only given to a caller allowed to pull, for a blob the repository has.
    registry.push_blob("redirect/other", b"something")
    denied = registry.get(f"/v2/redirect/other/blobs/{digest}")
    assert denied.status_code == 404 and error_code(denied) == "BLOB_UNKNOWN"
    anonymous = RegistryClient(redirecting, credentials=None)
    assert anonymous.get(f"/v2/redirect/app/blobs/{digest}").status_code == 401


def test_streamed_gets_read_only_the_range_asked_for(streaming: AcrLocal) -> None:
    registry = RegistryClient(streaming)
    data = bytes(range(256)) * 40_000  # 10 MB: more than one 4 MiB read from storage
    digest = registry.push_blob("stream/app", data)
    path = f"/v2/stream/app/blobs/{digest}"
    whole = registry.get(path)
    assert whole.status_code == 200 and whole.content == data and not whole.history
    assert whole.headers["Docker-Content-Digest"] == digest
    assert whole.headers["Content-Length"] == str(len(data))
    r = registry.get(path, headers={"Range": "bytes=5000000-5000009"})
    assert r.status_code == 206 and r.content == data[5_000_000:5_000_010]
    assert r.headers["Content-Range"] == f"bytes 5000000-5000009/{len(data)}"
    r = registry.get(path, headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == data[-10:]
    r = registry.get(path, headers={"Range": f"bytes={len(data) - 3}-{len(data) + 100}"})
    assert r.status_code == 206 and r.content == data[-3:]
    r = registry.get(path, headers={"Range": f"bytes={len(data)}-"})
    assert r.status_code == 416 and r.headers["Content-Range"] == f"bytes */{len(data)}"
    # If-Range naming another version, or several ranges: the whole blob.
    r = registry.get(path, headers={"Range": "bytes=0-9", "If-Range": '"sha256:other"'})
    assert r.status_code == 200 and len(r.content) == len(data)
    r = registry.get(path, headers={"Range": "bytes=0-9", "If-Range": f'"{digest}"'})
    assert r.status_code == 206 and r.content == data[:10]
    r = registry.get(path, headers={"Range": "bytes=0-1,5-6"})
    assert r.status_code == 200 and len(r.content) == len(data)


def test_a_sas_credential_streams_and_the_credentials_stay_out_of_the_log(
        storage_server: azurite.AzuriteServer, tmp_path: Path) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    from acrlocal.blob_location import parse_location

    url = storage_server.container_url()
    location = parse_location(url)
    # The first server makes the container.
    with running(tmp_path / "keyed", blob_store=(url, storage_server.key, storage_server.ca)) as keyed:
        RegistryClient(keyed).push_blob("sas/app", b"pushed with the key")
        log = keyed.log()
    assert storage_server.key not in log
    sas = generate_container_sas(location.account, location.container, account_key=storage_server.key,
                                 permission=ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                                                    delete=True, list=True),
                                 expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    server = AcrLocal(tmp_path / "sas", "--blob-store", url, "--blob-store-sas", sas, "--blob-store-ca",
                      storage_server.ca, blob_backend="files")
    server.start()
    try:
        registry = RegistryClient(server)
        registry.follow_storage_redirects = False
        digest = registry.push_blob("sas/app", b"pushed with a SAS")
        r = registry.get(f"/v2/sas/app/blobs/{digest}")
        assert r.status_code == 200 and r.content == b"pushed with a SAS"  # no key, no SAS of its own: streamed
        signature = urllib.parse.parse_qs(sas)["sig"][0]
        assert signature not in server.log() and urllib.parse.quote(signature, safe="") not in server.log()
        assert server.status["blobStore"] == url
    finally:
        server.stop()


def test_the_storage_requests_of_a_push(storage_server: azurite.AzuriteServer, tmp_path: Path) -> None:
    """What each request of a push sends to storage: the session's state is read once a request (its first look),
    never twice; the commit lists the blocks only if the request did not stage them all, copies without asking
    first whether the blob exists, and the upload is deleted once. A digest published already is not copied again
    (storage refuses the conditional copy), and still answers 201."""
    url, key, ca = storage_server.store()
    with running(tmp_path / "data", blob_store=(url, key, ca)) as server:
        registry = RegistryClient(server)
        seen = len(storage_server.answered(url))

        def sent() -> list[str]:
            nonlocal seen
            answered = [str(r) for r in storage_server.answered(url)]
            new, seen = answered[seen:], len(answered)
            return new

        data = b"a small layer"
        r = registry.post("/v2/count/app/blobs/uploads/")
        assert r.status_code == 202, r.text
        assert sent() == ["Put Blob upload 201"]
        location = r.headers["Location"]
        assert registry.patch(location, data=data).status_code == 202
        assert sent() == ["Get Blob Properties upload 200", "Put Block upload 201", "Set Blob Metadata upload 200"]
        r = registry.put(f"{location}?digest={sha256(data)}")
        assert r.status_code == 201, r.text
        assert sent() == ["Get Blob Properties upload 200", "Get Block List upload 200", "Put Block List upload 201",
                          "Copy Blob blob 202", "Delete Blob upload 202"]

        # A session opened empty, then the blob in the PUT (as containerd pushes): its blocks are not listed.
        body = b"a layer in the PUT"
        location = registry.post("/v2/count/app/blobs/uploads/").headers["Location"]
        assert sent() == ["Put Blob upload 201"]
        r = registry.put(f"{location}?digest={sha256(body)}", data=body)
        assert r.status_code == 201, r.text
        assert sent() == ["Get Blob Properties upload 200", "Put Block upload 201", "Set Blob Metadata upload 200",
                          "Put Block List upload 201", "Copy Blob blob 202", "Delete Blob upload 202"]

        whole = b"a whole blob in one request"
        r = registry.post(f"/v2/count/app/blobs/uploads/?digest={sha256(whole)}", data=whole)
        assert r.status_code == 201, r.text
        monolithic = ["Put Blob upload 201", "Put Block upload 201", "Set Blob Metadata upload 200",
                      "Put Block List upload 201"]
        assert sent() == [*monolithic, "Copy Blob blob 202", "Delete Blob upload 202"]
        r = registry.post(f"/v2/count/other/blobs/uploads/?digest={sha256(whole)}", data=whole)
        assert r.status_code == 201, r.text
        assert sent() == [*monolithic, "Copy Blob blob 409", "Delete Blob upload 202"]
        r = registry.get(f"/v2/count/other/blobs/{sha256(whole)}")
        assert r.status_code == 200 and r.content == whole
        assert sent() == ["Get Blob blob 200"]  # the client, redirected
        # Not published: the commit discards the upload, and the request discards it again (as on every failure).
        r = registry.post(f"/v2/count/app/blobs/uploads/?digest={sha256(b'claimed')}", data=b"sent")
        assert r.status_code == 400 and error_code(r) == "DIGEST_INVALID"
        assert sent() == ["Put Blob upload 201", "Put Block upload 201", "Set Blob Metadata upload 200",
                          "Delete Blob upload 202", "Delete Blob upload 404"]


def test_a_wrong_key_or_url_stops_up_with_a_clear_message(storage_server: azurite.AzuriteServer,
                                                          tmp_path: Path) -> None:
    wrong = "d3Jvbmcga2V5" * 8
    proc = subprocess.run(acrlocal_cmd("up", "--data-dir", str(tmp_path / "a"), "--port", "0",
                                       "--registry-port-base", "0", "--blob-store", storage_server.container_url(),
                                       "--blob-store-ca", storage_server.ca),
                          env=child_env(ACRLOCAL_BLOB_STORE_KEY=wrong), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "refused the credential" in proc.stderr + proc.stdout
    assert wrong not in proc.stderr + proc.stdout
    proc = subprocess.run(acrlocal_cmd("up", "--data-dir", str(tmp_path / "b"), "--port", "0",
                                       "--blob-store", "http://example.com/account/container"),
                          env=child_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "use https" in proc.stderr


def _wait(predicate, what: str, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_storage_down_is_503_with_retry_after_and_the_server_recovers(tmp_path: Path) -> None:
    storage = azurite.AzuriteServer()
    storage.start()
    try:
        with running(tmp_path / "data", "--blob-downloads", "stream",
                     blob_store=storage.store()) as server:
            registry = RegistryClient(server)
            digest = registry.push_blob("fault/app", b"stored before the outage")
            location = registry.post("/v2/fault/app/blobs/uploads/").headers["Location"]
            assert registry.patch(location, data=b"first half ").status_code == 202

            storage.stop_service()
            for r in (registry.get(f"/v2/fault/app/blobs/{digest}"),
                      registry.post("/v2/fault/app/blobs/uploads/"),
                      registry.patch(location, data=b"second half")):
                assert r.status_code == 503, r.text
                assert error_code(r) == "UNAVAILABLE"
                assert int(r.headers["Retry-After"]) > 0
            # What needs no storage still works: metadata reads.
            assert registry.head(f"/v2/fault/app/blobs/{digest}").status_code == 200
            assert registry.get("/v2/fault/app/tags/list").status_code == 200

            storage.start_service()
            _wait(lambda: registry.get(f"/v2/fault/app/blobs/{digest}").status_code == 200, "storage to be back")
            assert registry.get(f"/v2/fault/app/blobs/{digest}").content == b"stored before the outage"
            # The session opened before the outage goes on where it was.
            assert registry.get(location).headers["Range"] == "0-10"
            whole = b"first half second half"
            r = registry.put(f"{location}?digest={sha256(whole)}", data=b"second half")
            assert r.status_code == 201, r.text
            assert registry.get(f"/v2/fault/app/blobs/{sha256(whole)}").content == whole
            assert server.proc is not None and server.proc.poll() is None
            assert "Traceback" not in server.log()
    finally:
        storage.stop()


def test_storage_restarted_under_load_is_503_meanwhile_and_served_after_without_a_restart(tmp_path: Path) -> None:
    """Four clients push (POST, PATCH, PUT) and pull (streamed GET) fresh blobs in a loop while Azurite is stopped
    and started again on the same port: every answer is a success or ``503 UNAVAILABLE`` with ``Retry-After`` (a
    GET already sending may be cut short: the client sees fewer bytes than announced), never another status; every
    blob pulled whole is the blob pushed; after the restart every client pushes and pulls again, and the server is
    the same process with no traceback in its log."""
    storage = azurite.AzuriteServer()
    storage.start()
    try:
        with running(tmp_path / "data", "--blob-downloads", "stream", blob_store=storage.store()) as server:
            pid = server.proc.pid if server.proc is not None else None
            lock = threading.Lock()
            unexpected: list[str] = []
            unavailable = [0]
            cut_off = [0]
            after_restart: dict[int, int] = {}  # client -> whole push-and-pull rounds finished since the restart
            restarted = threading.Event()
            stop = threading.Event()

            def check(r: requests.Response, ok: int) -> bool:
                """True for ``ok``; counts a proper 503; records anything else."""
                if r.status_code == ok:
                    return True
                with lock:
                    if (r.status_code == 503 and error_code(r) == "UNAVAILABLE"
                            and int(r.headers.get("Retry-After", "0")) > 0):
                        unavailable[0] += 1
                    else:
                        unexpected.append(f"{r.request.method} {r.status_code} {r.text[:200]}")
                return False

            clients = [RegistryClient(server) for _ in range(4)]

            def client(n: int) -> None:
                registry = clients[n]
                while not stop.is_set():
                    began_after_restart = restarted.is_set()
                    data = os.urandom(200_000)
                    digest = sha256(data)
                    try:
                        r = registry.post(f"/v2/load/c{n}/blobs/uploads/")
                        if not check(r, 202):
                            continue
                        location = r.headers["Location"]
                        if not check(registry.patch(location, data=data[:100_000]), 202):
                            continue
                        if not check(registry.put(f"{location}?digest={digest}", data=data[100_000:]), 201):
                            continue
                        r = registry.get(f"/v2/load/c{n}/blobs/{digest}")
                        if not check(r, 200):
                            continue
                        if r.content != data:
                            with lock:
                                unexpected.append(f"GET {digest}: {len(r.content)} bytes, not the blob pushed")
                            continue
                    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                        with lock:
                            cut_off[0] += 1
                        continue
                    except Exception as exc:  # recorded for the test's thread to fail on
                        with lock:
                            unexpected.append(f"client {n}: {exc!r}")
                        continue
                    if began_after_restart:
                        with lock:
                            after_restart[n] = after_restart.get(n, 0) + 1

            threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(4)]
            for thread in threads:
                thread.start()
            try:
                time.sleep(2)
                storage.stop_service()
                _wait(lambda: unavailable[0] >= 4 or bool(unexpected), "clients to be told the storage is "
                      "unavailable", timeout=60)
                storage.start_service()
                restarted.set()
                _wait(lambda: (len(after_restart) == 4 and min(after_restart.values()) >= 2) or bool(unexpected),
                      "every client to push and pull again after the restart", timeout=120)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=120)
            assert not unexpected, unexpected[:5]
            assert unavailable[0] >= 4 and len(after_restart) == 4
            assert server.proc is not None and server.proc.poll() is None and server.proc.pid == pid
            assert "Traceback" not in server.log()
    finally:
        storage.stop()
