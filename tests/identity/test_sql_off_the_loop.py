"""Entra's endpoints wait for the database off the event loop (PostgreSQL, where a statement waits for a round trip
and, behind a lock, for as long as the lock is held).

Each case holds a lock on the table one sign-in step needs, in a transaction of the test's own, sends that step, and
waits until the server's statement is queued behind the lock (``pg_locks``). While it waits, a request that needs no
SQL must still be answered by the same (single) server process: with the statement on the event loop it could not
be, and the test would stop at its bound instead. Then the lock goes and the step completes with its usual answer.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from tests.harness import AcrLocal

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM_SCOPE = "https://management.core.windows.net//.default openid profile offline_access"
#: How long the test waits for what must happen at once; reaching it is the failure, never a measurement.
BOUND_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """One server process (so the probe meets the same event loop) on a private PostgreSQL database."""
    data = tmp_path_factory.mktemp("sql-off-the-loop") / "data"
    acrlocal = AcrLocal(data, "--workers", "1", backend="postgresql")
    acrlocal.start()
    try:
        yield acrlocal
    finally:
        acrlocal.stop()


def _admin(server: AcrLocal) -> dict[str, str]:
    return dict(json.loads((Path(server.data_dir) / "admin.json").read_text()))


def _token(server: AcrLocal, tenant: str, **form: str) -> requests.Response:
    return server.session().post(f"{server.shared}/{tenant}/oauth2/v2.0/token", data=form, timeout=BOUND_S * 2)


def _password_grant(server: AcrLocal) -> requests.Response:
    a = _admin(server)
    return _token(server, "organizations", grant_type="password", client_id=AZ_CLI, username=a["userPrincipalName"],
                  password=a["userPassword"], scope=ARM_SCOPE)


def _device_code(server: AcrLocal) -> requests.Response:
    return server.session().post(f"{server.shared}/organizations/oauth2/v2.0/devicecode",
                                 data={"client_id": AZ_CLI, "scope": ARM_SCOPE}, timeout=BOUND_S * 2)


def _refresh(server: AcrLocal) -> Callable[[], requests.Response]:
    first = _password_grant(server)
    assert first.status_code == 200, first.text
    refresh_token = first.json()["refresh_token"]
    return lambda: _token(server, "organizations", grant_type="refresh_token", client_id=AZ_CLI,
                          refresh_token=refresh_token, scope=ARM_SCOPE)


def _unknown_tenant(server: AcrLocal) -> requests.Response:
    return server.session().get(f"{server.shared}/{uuid.uuid4()}/v2.0/.well-known/openid-configuration",
                                timeout=BOUND_S * 2)


def _waiting_on(conn: sa.Connection, table: str) -> bool:
    """Whether another session waits for a lock on ``table`` (the server's statement, queued behind ours)."""
    return bool(conn.execute(sa.text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = CAST(:t AS regclass) AND pid <> "
        "pg_backend_pid()"), {"t": table}).scalar_one())


@pytest.mark.parametrize(("table", "step", "status"), [
    ("sign_ins", _device_code, 200),  # PendingSignIns.start_device_flow
    ("users", _password_grant, 200),  # Directory.find_user before the password check
    ("user_refresh_tokens", None, 200),  # Directory.redeem_refresh_token
    ("tenants", _unknown_tenant, 400),  # DirectoryLookups.tenant: an unknown tenant is never kept
], ids=["device-code", "password", "refresh-token", "tenant"])
def test_a_step_waiting_for_the_database_leaves_the_loop_serving(
        server: AcrLocal, table: str, step: Callable[[AcrLocal], requests.Response] | None, status: int) -> None:
    send = _refresh(server) if step is None else (lambda: step(server))
    engine = server.database()
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder = engine.connect()
    try:
        with ThreadPoolExecutor(1) as pool:
            lock = holder.begin()
            try:
                holder.execute(sa.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
                pending = pool.submit(send)
                deadline = time.monotonic() + BOUND_S
                while not _waiting_on(watcher, table):
                    assert not pending.done(), f"answered while {table} was locked: {pending.result().text}"
                    assert time.monotonic() < deadline, f"the server never queued behind the lock on {table}"
                    time.sleep(0.05)
                probe = server.session().get(f"{server.shared}/common/discovery/instance", timeout=BOUND_S)
                assert probe.status_code == 200
                assert not pending.done() and _waiting_on(watcher, table)
            finally:
                lock.rollback()  # the step goes on (and the pool can finish) whatever happened above
            answer = pending.result(timeout=BOUND_S)
        assert answer.status_code == status, answer.text
    finally:
        holder.close()
        watcher.close()
        engine.dispose()
