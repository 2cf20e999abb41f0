"""Entra's endpoints wait for the database off the event loop (PostgreSQL, where a statement waits for a round trip
and, behind a lock, for as long as the lock is held).

Each case holds a lock on the table one sign-in step needs and checks that the same (single) server process answers
another request while the step waits behind it (:func:`tests.table_locks.served_while_waiting`); then the lock goes
and the step completes with its usual answer.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from tests.harness import AcrLocal
from tests.table_locks import BOUND_S, one_process, served_while_waiting

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM_SCOPE = "https://management.core.windows.net//.default openid profile offline_access"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with one_process(tmp_path_factory.mktemp("sql-off-the-loop") / "data") as server:
        yield server


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


@pytest.mark.parametrize(("table", "step", "status"), [
    ("sign_ins", _device_code, 200),  # PendingSignIns.start_device_flow
    ("users", _password_grant, 200),  # Directory.find_user before the password check
    ("user_refresh_tokens", None, 200),  # Directory.redeem_refresh_token
    ("tenants", _unknown_tenant, 400),  # DirectoryLookups.tenant: an unknown tenant is never kept
], ids=["device-code", "password", "refresh-token", "tenant"])
def test_a_step_waiting_for_the_database_leaves_the_loop_serving(
        server: AcrLocal, table: str, step: Callable[[AcrLocal], requests.Response] | None, status: int) -> None:
    send = _refresh(server) if step is None else (lambda: step(server))
    answer = served_while_waiting(server, table, send)
    assert answer.status_code == status, answer.text
