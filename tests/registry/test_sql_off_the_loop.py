"""The registries' token service and authorizer wait for the database off the event loop (PostgreSQL, where a
statement waits for a round trip and, behind a lock, for as long as the lock is held).

Each case holds a lock on the table one step reads, in a transaction of the test's own, sends that step, and waits
until the server's statement is queued behind the lock (``pg_locks``). While it waits, a request that needs no SQL
must still be answered by the same (single) server process: with the statement on the event loop it could not be,
and the test would stop at its bound instead. Then the lock goes and the step completes with its usual answer.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
import sqlalchemy as sa

from tests.harness import REFRESH_TOKEN_USER, AcrLocal

#: How long the test waits for what must happen at once; reaching it is the failure, never a measurement.
BOUND_S = 30.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """One server process (so the probe meets the same event loop) on a private PostgreSQL database, its default
    registry's admin user enabled."""
    data = tmp_path_factory.mktemp("registry-sql-off-the-loop") / "data"
    acrlocal = AcrLocal(data, "--workers", "1", backend="postgresql")
    acrlocal.start()
    try:
        acrlocal.cli("acr", "update", "-n", "acrlocal", "--admin-enabled", "true")
        yield acrlocal
    finally:
        acrlocal.stop()


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def _token(server: AcrLocal, user: str, password: str) -> requests.Response:
    """``GET /oauth2/token`` with Basic credentials, for a repository no earlier request asked about."""
    scope = f"repository:off-the-loop-{uuid.uuid4().hex[:8]}:pull"
    return server.session().get(server.url("/oauth2/token"), params={"service": server.login_server(),
                                                                      "scope": scope},
                                headers=_basic(user, password), timeout=BOUND_S * 2)


def _exchange(server: AcrLocal) -> Callable[[], requests.Response]:
    aad_token = server.admin_token()
    return lambda: server.session().post(server.url("/oauth2/exchange"), data={
        "grant_type": "access_token", "service": server.login_server(), "access_token": aad_token},
        timeout=BOUND_S * 2)


def _refresh_grant(server: AcrLocal) -> Callable[[], requests.Response]:
    refresh = server.exchange(server.admin_token())
    return lambda: _token(server, REFRESH_TOKEN_USER, refresh)


def _client_secret(server: AcrLocal) -> Callable[[], requests.Response]:
    admin = server.admin_credential()
    return lambda: _token(server, admin["clientId"], admin["clientSecret"])


def _admin_password(server: AcrLocal) -> Callable[[], requests.Response]:
    shown = json.loads(server.cli("acr", "credential", "show", "-n", "acrlocal", "-o", "json").stdout)
    return lambda: _token(server, shown["username"], shown["passwords"][0]["value"])


def _admin_token_head(server: AcrLocal) -> Callable[[], requests.Response]:
    """A data-plane request with the admin user's access token, whose standing (admin user still enabled) the
    authorizer looks up in ``registries`` when the database has changed since it last did."""
    answer = _admin_password(server)()
    assert answer.status_code == 200, answer.text
    scope = answer.request.url.split("scope=")[1].split("%3A")[1]
    token = answer.json()["access_token"]
    return lambda: server.session().head(server.url(f"/v2/{scope}/manifests/latest"),
                                         headers={"Authorization": f"Bearer {token}"}, timeout=BOUND_S * 2)


def _waiting_on(conn: sa.Connection, table: str) -> bool:
    """Whether another session waits for a lock on ``table`` (the server's statement, queued behind ours)."""
    return bool(conn.execute(sa.text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = CAST(:t AS regclass) AND pid <> "
        "pg_backend_pid()"), {"t": table}).scalar_one())


@pytest.mark.parametrize(("table", "step", "status"), [
    ("principals", _exchange, 200),  # check_principal: the token's principal still exists, in the owner's tenant
    ("arm_role_assignments", _refresh_grant, 200),  # the grant: the principal's role assignments at the registry
    ("principal_secrets", _client_secret, 200),  # a service principal's client secret as the password
    ("arm_resources", _admin_password, 200),  # the admin user's passwords, kept with the registry's resource
    ("registries", _admin_token_head, 404),  # the admin user still enabled (the repository does not exist)
], ids=["exchange", "grant", "client-secret", "admin-password", "revocation"])
def test_a_step_waiting_for_the_database_leaves_the_loop_serving(
        server: AcrLocal, table: str, step: Callable[[AcrLocal], Callable[[], requests.Response]],
        status: int) -> None:
    send = step(server)
    engine = server.database()
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder = engine.connect()
    try:
        with ThreadPoolExecutor(1) as pool:
            lock = holder.begin()
            try:
                # A write first, so that nothing the server keeps while the database is unchanged answers for it.
                holder.execute(sa.text("CREATE TEMPORARY TABLE IF NOT EXISTS off_the_loop_bump (n int)"))
                holder.execute(sa.text("INSERT INTO off_the_loop_bump VALUES (1)"))
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
