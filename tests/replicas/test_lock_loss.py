"""A replica whose advisory-lock connection is cut (the backend terminated, as a PostgreSQL restart or a network
cut does) does not go on as if it held its locks: the request that relied on one fails with 503 UNAVAILABLE and
Retry-After, commits nothing, and the replica takes its locks on a new connection for the next request."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
import sqlalchemy as sa

from tests.registry.conftest import registry_token
from tests.replicas.conftest import Replicas, on, pinned

UPLOAD_LOCKS = 0x41435201  # acrlocal.server.ADVISORY_NAMESPACES[0]


def _holder(engine: sa.Engine, namespace: int, within: float = 30.0) -> int:
    """The backend pid holding an advisory lock of ``namespace`` (waiting until one does)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                                       "AND classid = CAST(:ns AS bigint)::oid"), {"ns": namespace}).scalar()
        if pid is not None:
            return int(pid)
        time.sleep(0.05)
    raise AssertionError(f"nobody took an advisory lock of namespace {namespace:#x} within {within} s")


def test_an_upload_lock_lost_with_its_connection_fails_the_chunk_with_503_and_the_next_request_serves(
        replicas: Replicas) -> None:
    server = replicas.front
    base = f"https://{server.login_server()}"
    sessions = pinned(replicas, base)
    repo = "replicas/lockloss"
    token = registry_token(server, base, f"repository:{repo}:pull,push", server.registry_credentials())
    auth = {"Authorization": f"Bearer {token}"}
    r = on(sessions[0], replicas, 0, "POST", f"{base}/v2/{repo}/blobs/uploads/", headers=auth)
    assert r.status_code == 202, r.text
    location = base + r.headers["Location"] if r.headers["Location"].startswith("/") else r.headers["Location"]

    go_on = threading.Event()

    def body() -> Iterator[bytes]:
        yield os.urandom(64 * 1024)
        assert go_on.wait(60)
        yield os.urandom(64 * 1024)

    answer: dict[str, Any] = {}

    def patch() -> None:  # streamed: replica 0 holds the upload's lock until the body ends
        answer["r"] = sessions[0].patch(location, data=body(), timeout=120,
                                        headers={**auth, "Content-Type": "application/octet-stream"})

    streaming = threading.Thread(target=patch)
    streaming.start()
    engine = sa.create_engine(server._database_url)
    try:
        pid = _holder(engine, UPLOAD_LOCKS)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        # The lock is free for the other replica now: it takes it (its status read holds it) while the chunk streams.
        status = on(sessions[1], replicas, 1, "GET", location, headers=auth)
        assert status.status_code == 204, status.text
    finally:
        go_on.set()
        streaming.join(120)
        engine.dispose()
    cut = answer["r"]
    assert cut.status_code == 503, cut.text
    assert cut.json()["errors"][0]["code"] == "UNAVAILABLE" and int(cut.headers["Retry-After"]) > 0
    # Nothing of the chunk was acknowledged; the same replica serves the next requests on a new lock connection.
    status = on(sessions[0], replicas, 0, "GET", location, headers=auth)
    assert status.status_code == 204 and status.headers["Range"] == "0-0", status.headers
    data = os.urandom(100_000)
    r = on(sessions[0], replicas, 0, "PATCH", location, data=data,
           headers={**auth, "Content-Type": "application/octet-stream"})
    assert r.status_code == 202, r.text
    location = base + r.headers["Location"] if r.headers["Location"].startswith("/") else r.headers["Location"]
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    r = on(sessions[0], replicas, 0, "PUT", f"{location}{'&' if '?' in location else '?'}digest={digest}",
           headers=auth)
    assert r.status_code == 201, r.text
    got = on(sessions[1], replicas, 1, "GET", f"{base}/v2/{repo}/blobs/{digest}", headers=auth, allow_redirects=False)
    if got.status_code == 307:  # blobs in Blob Storage: to the storage's SAS URL, as ACR
        got = requests.get(got.headers["Location"], verify=server.ca, timeout=60)
    assert got.status_code == 200 and got.content == data
