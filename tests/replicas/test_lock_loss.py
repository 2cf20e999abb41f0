"""A replica whose advisory-lock connection is cut (the backend terminated, as a PostgreSQL restart or a network
cut does) does not go on as if it held its locks: the request that relied on one fails with 503 UNAVAILABLE and
Retry-After, commits nothing, and the replica takes its locks on a new connection for the next request. What the
control plane's write lock guarded without a key of the database's own holds without the lock too: a second
assignment of one role to one principal at one scope is ARM's 409 even when both writers checked first. And an ARM
write whose lock went while it waited inside its transaction does not commit: ARM's 503, nothing stored."""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import requests
import sqlalchemy as sa

from tests.arm import races
from tests.arm.conftest import admin_of, new_principal, subscription_of
from tests.registry.conftest import registry_token
from tests.replicas.conftest import Replicas, on, pinned
from tests.table_locks import own_transaction, wait_until

UPLOAD_LOCKS = 0x41435201  # acrlocal.server.ADVISORY_NAMESPACES[0]
ARM_WRITES = 0x41435203  # acrlocal.server.ADVISORY_NAMESPACES[2]


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


def _blocked_by(conn: sa.Connection, pid: int) -> int:
    """How many sessions wait for a lock the session ``pid`` holds."""
    return int(conn.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE CAST(:p AS integer) = "
                                    "ANY(pg_blocking_pids(pid))"), {"p": pid}).scalar_one())


def _past_a_lost_lock(engine: sa.Engine, row: str, values: dict[str, Any], first: Callable[[], requests.Response],
                      second: Callable[[], requests.Response]) -> tuple[requests.Response, requests.Response]:
    """Hold, uncommitted, the row that ``row`` inserts; send ``first`` (replica 0's write under the control plane's
    lock, which waits at its INSERT of the same key); terminate the lock's backend; send ``second`` (replica 1, which
    takes the lock); then let the test's row go. Returns what ``first`` and ``second`` got."""
    with own_transaction(engine) as (holder, pool, watcher):
        holder.execute(sa.text(row), values)
        me = int(holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())
        pending = pool.submit(first)
        wait_until(lambda: _blocked_by(watcher, me) > 0, "replica 0's INSERT waiting for the test's row", pending)
        pid = _holder(engine, ARM_WRITES)
        assert watcher.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()
        made = second()
        assert not pending.done()
    return pending.result(timeout=60), made


def test_a_role_assignment_checked_under_a_lost_write_lock_is_refused_by_the_database_with_arms_409(
        replicas: Replicas) -> None:
    """Replica 0 checks a role assignment under the control plane's write lock and is held at its INSERT (the test's
    own transaction holds, uncommitted, a row of the same name, so the INSERT waits for it); the lock's backend is
    terminated, and replica 1 takes the lock and makes the same grant under another name (201). When the test's
    transaction rolls back, replica 0's INSERT meets the grant's unique key: 409 ``RoleAssignmentExists``, naming the
    assignment that holds it, and one row. Before the key, both were stored."""
    server = replicas.front
    sessions = pinned(replicas, server.shared, "/healthz")
    auth = {"Authorization": f"Bearer {admin_of(server).token(server)}"}
    sub = subscription_of(server)
    group = f"/subscriptions/{sub}/resourceGroups/lockloss-assignments"

    def arm(side: int, method: str, path: str, body: Any = None) -> requests.Response:
        return on(sessions[side], replicas, side, method, server.shared + path,
                  params={"api-version": races.api_version(path)}, json=body, headers=auth)

    assert arm(0, "PUT", group, {"location": "westus"}).status_code in (200, 201)
    principal = new_principal(server, "lockloss-assignee").object_id
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/"
                           f"roleDefinitions/{races.ACR_PULL}", "principalId": principal,
                           "principalType": "ServicePrincipal"}}
    first, second = (str(uuid.uuid4()) for _ in range(2))
    paths = [f"{group}/providers/Microsoft.Authorization/roleAssignments/{name}" for name in (first, second)]
    engine = sa.create_engine(server._database_url)
    refused, made = _past_a_lost_lock(
        engine, "INSERT INTO arm_role_assignments (name, scope, scope_key, role_definition, principal_id, "
        "principal_type, created_on, updated_on) VALUES (:n, :s, :k, :r, :p, 'User', 't', 't')",
        {"n": first, "s": group, "k": group.lower(), "r": races.ACR_PULL, "p": str(uuid.uuid4())},
        lambda: arm(0, "PUT", paths[0], body),
        lambda: arm(1, "PUT", paths[1], body))  # the lock is free: replica 1 takes it, checks, inserts
    try:
        assert made.status_code == 201, made.text
        assert refused.status_code == 409, refused.text
        assert races.code(refused) == "RoleAssignmentExists"
        assert refused.json()["error"]["details"][0]["message"] == made.json()["id"]
        assert races.count(engine, "SELECT count(*) FROM arm_role_assignments WHERE principal_id = :p",
                           p=principal.lower()) == 1
        # Replica 0 writes again on a new lock connection.
        assert arm(0, "DELETE", paths[1]).status_code == 200
        assert arm(0, "PUT", paths[0], body).status_code == 201
        assert arm(1, "DELETE", paths[0]).status_code == 200
    finally:
        engine.dispose()


def test_a_write_whose_lock_went_before_its_commit_is_rolled_back_with_arms_503(replicas: Replicas) -> None:
    """Replica 0 creates a resource group under the control plane's write lock and is held at its INSERT (the test's
    own transaction holds, uncommitted, a row of the same key); the lock's backend is terminated, and replica 1 takes
    the lock and writes (another group, 201). When the test's transaction rolls back, replica 0's INSERT goes through,
    but its commit finds the lock gone: the write is rolled back and the answer is ARM's 503 ``ServiceUnavailable``
    with Retry-After; no row of the group is stored, and replica 0 serves the next write. Before the check at
    commit, it answered 201 and stored the group written without the lock."""
    server = replicas.front
    sessions = pinned(replicas, server.shared, "/healthz")
    auth = {"Authorization": f"Bearer {admin_of(server).token(server)}"}
    sub = subscription_of(server)
    name, other = (f"lockloss-commit-{uuid.uuid4().hex[:8]}" for _ in range(2))
    paths = [f"/subscriptions/{sub}/resourceGroups/{n}" for n in (name, other)]

    def arm(side: int, method: str, path: str, body: Any = None) -> requests.Response:
        return on(sessions[side], replicas, side, method, server.shared + path,
                  params={"api-version": races.api_version(path)}, json=body, headers=auth)

    def stored(group: str) -> int:
        return races.count(engine, "SELECT count(*) FROM arm_resource_groups WHERE subscription_id = :s AND "
                           "name_key = :n", s=sub.lower(), n=group.lower())

    engine = sa.create_engine(server._database_url)
    cut, made = _past_a_lost_lock(
        engine, "INSERT INTO arm_resource_groups (subscription_id, name_key, name, location, tags, system_data, "
        "created) VALUES (:s, :k, :n, 'westus', '{}', '{}', 0)", {"s": sub.lower(), "k": name.lower(), "n": name},
        lambda: arm(0, "PUT", paths[0], {"location": "westus"}),
        lambda: arm(1, "PUT", paths[1], {"location": "westus"}))  # the lock is free: replica 1 takes it
    try:
        assert made.status_code == 201, made.text
        assert cut.status_code == 503, cut.text
        assert races.code(cut) == "ServiceUnavailable" and cut.json()["error"]["message"]
        assert int(cut.headers["Retry-After"]) > 0
        assert stored(name) == 0 and stored(other) == 1
        assert arm(1, "GET", paths[0]).status_code == 404
        # Replica 0 writes again on a new lock connection.
        assert arm(0, "PUT", paths[0], {"location": "westus"}).status_code == 201
        assert stored(name) == 1
        for path in paths:
            assert arm(0, "DELETE", path).status_code == 200
    finally:
        engine.dispose()
