"""Signing keys are read from the database off the event loop (PostgreSQL, where a statement waits for a round trip
and, behind a lock, for as long as the lock is held).

A process reads a tenant's Entra keys (``signing_keys``) or the registries' token keys (``registry_token_keys``) on
first use and again after another process rotated them (signalled through the shared generations file, which the
test bumps as that process would). Each case makes a request that needs such a read while the test holds a lock on
the table, and checks that the same (single) server process answers another request meanwhile
(:func:`tests.table_locks.served_while_waiting`); then the lock goes and the request completes with its usual answer.
A forged token naming a tenant that does not exist is refused from memory while keys are unchanged (even while the
table is locked), and after keys changed elsewhere once the published key ids are read again, also off the loop.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import jwt
import pytest
import requests
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa

from acrlocal.generations import Generations
from acrlocal.identity import keys as entra_keys
from acrlocal.registry import token_keys
from tests.harness import ACR_SCOPE, REFRESH_TOKEN_USER, AcrLocal
from tests.table_locks import BOUND_S, one_process, own_transaction, served_while_waiting, wait_until, waiters

ARM_SCOPE = "https://management.azure.com/.default"
GRAPH_SCOPE = "https://graph.microsoft.com/.default"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with one_process(tmp_path_factory.mktemp("keys-off-the-loop") / "data") as server:
        yield server


def _rotated_elsewhere(server: AcrLocal, generation: str) -> None:
    """What another process of the server does after it rotated keys: bump their slot in the generations file, so
    that this process reads the keys again at their next use."""
    generations = Generations(Path(server.data_dir) / "generations")
    try:
        generations.bump(generation)
    finally:
        generations.close()


def _forged(audience: str, tenant: str | None = None) -> str:
    """A token in the shape of an Entra token, signed with a key of its own (a kid of its own), naming ``tenant``
    (``None``: a tenant that does not exist)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now, tenant = int(time.time()), tenant or str(uuid.uuid4())
    return jwt.encode({"aud": audience, "iss": f"https://login.microsoftonline.com/{tenant}/v2.0", "iat": now,
                       "nbf": now, "exp": now + 3600, "tid": tenant, "oid": str(uuid.uuid4()),
                       "sub": str(uuid.uuid4())}, key, algorithm="RS256", headers={"kid": uuid.uuid4().hex})


def _arm(server: AcrLocal, token: str) -> requests.Response:
    return server.session().get(f"{server.shared}/subscriptions", params={"api-version": "2022-09-01"},
                                headers={"Authorization": f"Bearer {token}"}, timeout=BOUND_S * 2)


def _exchange(server: AcrLocal, aad_token: str) -> requests.Response:
    return server.session().post(server.url("/oauth2/exchange"), data={
        "grant_type": "access_token", "service": server.login_server(), "access_token": aad_token},
        timeout=BOUND_S * 2)


def _registry_token(server: AcrLocal, user: str, password: str) -> requests.Response:
    """``GET /oauth2/token`` with Basic credentials, for a repository no earlier request asked about."""
    scope = f"repository:keys-off-the-loop-{uuid.uuid4().hex[:8]}:pull"
    return server.session().get(server.url("/oauth2/token"), params={"service": server.login_server(),
                                                                      "scope": scope},
                                auth=(user, password), timeout=BOUND_S * 2)


def _arm_rotated(server: AcrLocal) -> Callable[[], requests.Response]:
    """KeyRing.find after a rotation elsewhere: the tenant's keys are read again (ARM's authentication)."""
    token = server.admin_token(ARM_SCOPE)
    _rotated_elsewhere(server, entra_keys.GENERATION)
    return lambda: _arm(server, token)


def _arm_forged(server: AcrLocal) -> Callable[[], requests.Response]:
    """KeyRing.find of a tenant that does not exist after keys changed elsewhere: the published key ids are read
    again (ARM's authentication)."""
    token = _forged("https://management.azure.com/")
    _rotated_elsewhere(server, entra_keys.GENERATION)
    return lambda: _arm(server, token)


def _graph_rotated(server: AcrLocal) -> Callable[[], requests.Response]:
    token = server.admin_token(GRAPH_SCOPE)
    _rotated_elsewhere(server, entra_keys.GENERATION)
    return lambda: server.session().get(f"{server.shared}/v1.0/users", timeout=BOUND_S * 2,
                                        headers={"Authorization": f"Bearer {token}"})


def _exchange_rotated(server: AcrLocal) -> Callable[[], requests.Response]:
    """/oauth2/exchange verifies the Entra token after a rotation elsewhere."""
    token = server.admin_token(ACR_SCOPE)
    _rotated_elsewhere(server, entra_keys.GENERATION)
    return lambda: _exchange(server, token)


def _exchange_forged(server: AcrLocal) -> Callable[[], requests.Response]:
    """As :func:`_arm_forged`, the key ids read again after a tenant's first key was made elsewhere."""
    token = _forged("https://containerregistry.azure.net")
    _rotated_elsewhere(server, entra_keys.KIDS_GENERATION)
    return lambda: _exchange(server, token)


def _refresh_grant_rotated(server: AcrLocal) -> Callable[[], requests.Response]:
    """The token service verifies a refresh token after the registries' keys were rotated elsewhere."""
    refresh = server.exchange(server.admin_token())
    _rotated_elsewhere(server, token_keys.GENERATION)
    return lambda: _registry_token(server, REFRESH_TOKEN_USER, refresh)


def _signing_rotated(server: AcrLocal) -> Callable[[], requests.Response]:
    """The token service signs an access token (its key first) after the registries' keys were rotated elsewhere."""
    admin = server.admin_credential()
    _rotated_elsewhere(server, token_keys.GENERATION)
    return lambda: _registry_token(server, admin["clientId"], admin["clientSecret"])


def _access_token_rotated(server: AcrLocal) -> Callable[[], requests.Response]:
    """The registry's authorizer verifies an access token it has not seen after a rotation elsewhere."""
    admin = server.admin_credential()
    answer = _registry_token(server, admin["clientId"], admin["clientSecret"])
    assert answer.status_code == 200, answer.text
    repository = answer.request.url.split("scope=")[1].split("%3A")[1]
    token = answer.json()["access_token"]
    _rotated_elsewhere(server, token_keys.GENERATION)
    return lambda: server.session().head(server.url(f"/v2/{repository}/manifests/latest"),
                                         headers={"Authorization": f"Bearer {token}"}, timeout=BOUND_S * 2)


@pytest.mark.parametrize(("table", "step", "status"), [
    ("signing_keys", _arm_rotated, 200),
    ("signing_keys", _arm_forged, 401),
    ("signing_keys", _graph_rotated, 200),
    ("signing_keys", _exchange_rotated, 200),
    ("signing_keys", _exchange_forged, 401),
    ("registry_token_keys", _refresh_grant_rotated, 200),
    ("registry_token_keys", _signing_rotated, 200),
    ("registry_token_keys", _access_token_rotated, 404),  # the repository does not exist
], ids=["arm-rotated", "arm-unknown-tenant", "graph-rotated", "exchange-rotated", "exchange-unknown-tenant",
        "registry-refresh-token", "registry-signing", "registry-access-token"])
def test_a_key_load_leaves_the_loop_serving(
        server: AcrLocal, table: str, step: Callable[[AcrLocal], Callable[[], requests.Response]],
        status: int) -> None:
    answer = served_while_waiting(server, table, step(server))
    assert answer.status_code == status, answer.text


def test_a_forged_token_is_refused_from_memory_while_the_keys_table_is_locked(server: AcrLocal) -> None:
    """Once this process has read the published key ids, a token naming a kid none of them is (of a tenant that
    exists, or of one that does not) is refused without a statement: it answers while the test holds
    ``signing_keys``, and no statement of the server's queues behind that lock."""
    admin = server.admin_credential()
    assert _arm(server, _forged("https://management.azure.com/")).status_code == 401  # the key ids read
    tokens = [_forged("https://management.azure.com/"), _forged("https://management.azure.com/", admin["tenantId"])]
    engine = server.database()
    try:
        with own_transaction(engine) as (holder, pool, watcher):
            holder.execute(sa.text("LOCK TABLE signing_keys IN ACCESS EXCLUSIVE MODE"))
            for token in tokens:
                pending = pool.submit(_arm, server, token)

                def settled(pending: Future[requests.Response] = pending) -> bool:
                    return pending.done() or waiters(watcher, "signing_keys") > 0

                wait_until(settled, "an answer or a statement queued behind the lock on signing_keys")
                assert not waiters(watcher, "signing_keys"), "a forged token's look-up waits for the table"
                answer = pending.result(timeout=BOUND_S)
                assert answer.status_code == 401, answer.text
    finally:
        engine.dispose()

