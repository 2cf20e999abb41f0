"""The registries' token service and authorizer, and the look-up of the registry a request is for, wait for the
database off the event loop (PostgreSQL, where a statement waits for a round trip and, behind a lock, for as long as
the lock is held).

Each case holds a lock on the table one step reads and checks that the same (single) server process answers another
request while the step waits behind it (:func:`tests.table_locks.served_while_waiting`); then the lock goes and the
step completes with its usual answer.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Iterator

import pytest
import requests

from acrlocal.generations import Generations
from acrlocal.registry import hosting
from tests.harness import REFRESH_TOKEN_USER, AcrLocal
from tests.table_locks import BOUND_S, one_process, served_while_waiting


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """One server process (so the probe meets the same event loop) on a private PostgreSQL database, its default
    registry's admin user enabled."""
    with one_process(tmp_path_factory.mktemp("registry-sql-off-the-loop") / "data") as acrlocal:
        acrlocal.cli("acr", "update", "-n", "acrlocal", "--admin-enabled", "true")
        yield acrlocal


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


def _after_registries_changed(server: AcrLocal, send: Callable[[], requests.Response]
                              ) -> Callable[[], requests.Response]:
    """``send()`` once another process of the server has said that the registries changed (a fresh value in their
    generation slot, in the file every process maps): the server reads ``registries`` again to know where it goes."""
    def step() -> requests.Response:
        generations = Generations(server.data_dir / "generations")
        try:
            generations.bump(hosting.GENERATION)
        finally:
            generations.close()
        return send()

    return step


def _by_port(server: AcrLocal) -> Callable[[], requests.Response]:
    """``GET /v2/`` on the registry's own port (anonymous: the challenge)."""
    return _after_registries_changed(server, lambda: server.session().get(server.url("/v2/"), timeout=BOUND_S * 2))


def _by_host(server: AcrLocal) -> Callable[[], requests.Response]:
    """``GET /v2/`` on the shared port by the registry's host name (anonymous: the challenge)."""
    port = server.shared.rsplit(":", 1)[1]
    return _after_registries_changed(server, lambda: server.session().get(
        f"{server.shared}/v2/", headers={"Host": f"acrlocal.localhost:{port}"}, timeout=BOUND_S * 2))


@pytest.mark.parametrize(("table", "step", "status"), [
    ("principals", _exchange, 200),  # check_principal: the token's principal still exists, in the owner's tenant
    ("arm_role_assignments", _refresh_grant, 200),  # the grant: the principal's role assignments at the registry
    ("principal_secrets", _client_secret, 200),  # a service principal's client secret as the password
    ("arm_resources", _admin_password, 200),  # the admin user's passwords, kept with the registry's resource
    ("registries", _admin_token_head, 404),  # the admin user still enabled (the repository does not exist)
    ("registries", _by_port, 401),  # the registry a port serves, after another process changed the registries
    ("registries", _by_host, 401),  # the registry a host name names, likewise
], ids=["exchange", "grant", "client-secret", "admin-password", "revocation", "registry-by-port",
        "registry-by-host"])
def test_a_step_waiting_for_the_database_leaves_the_loop_serving(
        server: AcrLocal, table: str, step: Callable[[AcrLocal], Callable[[], requests.Response]],
        status: int) -> None:
    answer = served_while_waiting(server, table, step(server), bump=True)
    assert answer.status_code == status, answer.text
