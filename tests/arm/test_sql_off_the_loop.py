"""The control plane (ARM and Microsoft Graph) waits for the database off the event loop (PostgreSQL, where a
statement waits for a round trip and, behind a lock, for as long as the lock is held).

Each case holds a lock on the table one request needs, in a transaction of the test's own, sends that request, and
waits until the server's statement is queued behind the lock (``pg_locks``). While it waits, a request that needs no
SQL must still be answered by the same (single) server process: with the statement on the event loop it could not
be, and the test would stop at its bound instead. Then the lock goes and the request completes with its usual answer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa

from tests.harness import AcrLocal

ARM_SCOPE = "https://management.azure.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
API = {"api-version": "2022-09-01"}
#: How long the test waits for what must happen at once; reaching it is the failure, never a measurement.
BOUND_S = 30.0


class Context:
    """The server, the administrator's ARM and Graph tokens, its subscription, and a group and an identity made
    before any table is locked."""

    def __init__(self, server: AcrLocal) -> None:
        self.server = server
        admin = json.loads((Path(server.data_dir) / "admin.json").read_text())
        self.subscription = str(admin["subscriptionId"])
        self.arm_token = server.entra_token(admin["tenantId"], admin["clientId"], admin["clientSecret"], ARM_SCOPE)
        self.graph_token = server.entra_token(admin["tenantId"], admin["clientId"], admin["clientSecret"],
                                              GRAPH_SCOPE)
        self.group = f"/subscriptions/{self.subscription}/resourceGroups/offloop"
        made = self.arm("PUT", self.group, {"location": "westus"})
        assert made.status_code in (200, 201), made.text
        self.identity = self.group + "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/offloop-id"
        made = self.arm("PUT", self.identity, {"location": "westus"}, api_version="2023-01-31")
        assert made.status_code in (200, 201), made.text

    def arm(self, method: str, path: str, body: Any = None, *, api_version: str = API["api-version"]
            ) -> requests.Response:
        return self.server.session().request(method, self.server.shared + path, params={"api-version": api_version},
                                             json=body, headers={"Authorization": f"Bearer {self.arm_token}"},
                                             timeout=BOUND_S * 2)

    def graph(self, path: str) -> requests.Response:
        return self.server.session().get(f"{self.server.shared}/v1.0{path}", timeout=BOUND_S * 2,
                                         headers={"Authorization": f"Bearer {self.graph_token}"})


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    """One server process (so the probe meets the same event loop) on a private PostgreSQL database."""
    data = tmp_path_factory.mktemp("arm-sql-off-the-loop") / "data"
    acrlocal = AcrLocal(data, "--workers", "1", backend="postgresql")
    acrlocal.start()
    try:
        yield Context(acrlocal)
    finally:
        acrlocal.stop()


def _waiting_on(conn: sa.Connection, table: str) -> bool:
    """Whether another session waits for a lock on ``table`` (the server's statement, queued behind ours)."""
    return bool(conn.execute(sa.text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = CAST(:t AS regclass) AND pid <> "
        "pg_backend_pid()"), {"t": table}).scalar_one())


Step = Callable[[Context], requests.Response]


def _get_group(c: Context) -> requests.Response:
    return c.arm("GET", c.group)


def _create_group(c: Context) -> requests.Response:
    return c.arm("PUT", f"/subscriptions/{c.subscription}/resourceGroups/offloop-{uuid.uuid4().hex[:8]}",
                 {"location": "westus"})


def _get_resource(c: Context) -> requests.Response:
    return c.arm("GET", c.identity, api_version="2023-01-31")


def _list_assignments(c: Context) -> requests.Response:
    return c.arm("GET", f"/subscriptions/{c.subscription}/providers/Microsoft.Authorization/roleAssignments")


def _list_subscriptions(c: Context) -> requests.Response:
    return c.arm("GET", "/subscriptions")


@pytest.mark.parametrize(("table", "step", "status"), [
    ("arm_resource_groups", _get_group, 200),  # ArmStore.group, after the caller is authenticated
    ("arm_resource_groups", _create_group, 201),  # ArmStore.group and put_group, under the write lock
    ("arm_resources", _get_resource, 200),  # ArmStore.resource of a provider's type
    ("arm_role_assignments", _list_assignments, 200),  # the caller's assignments, then the list
    ("principals", _list_subscriptions, 200),  # authenticate: Directory.find_principal of the token's oid
    ("users", lambda c: c.graph("/users"), 200),  # Graph: Directory.users
    ("applications", lambda c: c.graph("/applications"), 200),  # Graph: Directory.applications
], ids=["arm-get-group", "arm-put-group", "arm-get-resource", "arm-role-assignments", "arm-authentication",
        "graph-users", "graph-applications"])
def test_a_request_waiting_for_the_database_leaves_the_loop_serving(
        context: Context, table: str, step: Step, status: int) -> None:
    server = context.server
    engine = server.database()
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder = engine.connect()
    try:
        with ThreadPoolExecutor(1) as pool:
            lock = holder.begin()
            try:
                holder.execute(sa.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
                pending = pool.submit(step, context)
                deadline = time.monotonic() + BOUND_S
                while not _waiting_on(watcher, table):
                    assert not pending.done(), f"answered while {table} was locked: {pending.result().text}"
                    assert time.monotonic() < deadline, f"the server never queued behind the lock on {table}"
                    time.sleep(0.05)
                probe = server.session().get(f"{server.shared}/common/discovery/instance", timeout=BOUND_S)
                assert probe.status_code == 200
                assert not pending.done() and _waiting_on(watcher, table)
            finally:
                lock.rollback()  # the request goes on (and the pool can finish) whatever happened above
            answer = pending.result(timeout=BOUND_S)
        assert answer.status_code == status, answer.text
    finally:
        holder.close()
        watcher.close()
        engine.dispose()
