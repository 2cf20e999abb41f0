"""Signing keys rotate through a real path (issue 8, item 17): ``acrlocal admin rotate-signing-keys`` (the CLI,
through the running server) and the ARM action it calls. Tokens issued before keep verifying, tokens issued after
carry the new key id, and the tenant's JWKS publishes both; the registries' token service rotates with the
default tenant."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest
import sqlalchemy as sa

from tests.arm.conftest import Arm, admin_of, new_principal, subscription_of
from tests.db_faults import failed, refused
from tests.harness import ACR_SCOPE, AcrLocal, running

ROTATE = "/providers/Microsoft.AcrLocal/rotateSigningKeys"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("rotation") / "data") as server:
        yield server


def kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def jwks_kids(server: AcrLocal, tenant: str) -> list[str]:
    r = server.session().get(f"{server.shared}/{tenant}/discovery/v2.0/keys")
    assert r.status_code == 200, r.text
    return [k["kid"] for k in r.json()["keys"]]


def test_rotate_with_the_cli_old_tokens_verify_new_ones_carry_the_new_kid(server: AcrLocal, tmp_path: Path) -> None:
    admin = admin_of(server)
    old_arm = admin.token(server)
    old_acr = server.admin_token(ACR_SCOPE)
    old_refresh = server.exchange(old_acr)
    login_server = server.login_server()
    http = server.session()

    def access_token(refresh: str) -> str:
        r = http.post(f"https://{login_server}/oauth2/token", data={
            "grant_type": "refresh_token", "service": login_server, "refresh_token": refresh,
            "scope": "repository:rotated/app:pull"})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    old_access = access_token(old_refresh)
    before = jwks_kids(server, admin.tenant_id)  # (more than one if the module's server rotated already)
    assert before[0] == kid(old_arm)

    out = json.loads(server.cli("admin", "rotate-signing-keys").stdout)
    assert out["tenantId"] == admin.tenant_id and out["activeKeyId"] not in before
    assert out["publishedKeyIds"] == [out["activeKeyId"], *before]
    assert out["registryTokens"]["activeKeyId"] != kid(old_access)
    assert kid(old_access) in out["registryTokens"]["publishedKeyIds"]

    # New tokens carry the new key; the JWKS lists both, newest first.
    new_arm = server.admin_token("https://management.azure.com/.default")
    assert kid(new_arm) == out["activeKeyId"]
    assert jwks_kids(server, admin.tenant_id) == [out["activeKeyId"], *before]
    new_access = access_token(server.exchange(server.admin_token(ACR_SCOPE)))
    assert kid(new_access) == out["registryTokens"]["activeKeyId"]
    # Old tokens still verify: at ARM, at the exchange, and their registry tokens on the data plane.
    sub = subscription_of(server)
    assert Arm(server, old_arm).call("GET", f"/subscriptions/{sub}/resourcegroups").status_code == 200
    assert Arm(server, new_arm).call("GET", f"/subscriptions/{sub}/resourcegroups").status_code == 200
    assert server.session().post(f"https://{login_server}/oauth2/exchange", data={
        "grant_type": "access_token", "service": login_server, "access_token": old_acr}).status_code == 200
    for token in (old_access, new_access):
        r = http.get(f"https://{login_server}/v2/rotated/app/tags/list", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN", r.text  # allowed
    assert access_token(old_refresh)  # an old refresh token still redeems


def test_rotation_needs_the_permission_at_the_subscription(server: AcrLocal) -> None:
    sub = subscription_of(server)
    nobody = new_principal(server, "no-roles")
    r = Arm(server, nobody.token(server)).call("POST", f"/subscriptions/{sub}{ROTATE}", api_version="2025-01-01")
    assert r.status_code == 403 and r.json()["error"]["code"] == "AuthorizationFailed", r.text
    assert "Microsoft.AcrLocal/rotateSigningKeys/action" in r.json()["error"]["message"]
    r = Arm(server, admin_of(server).token(server)).call("POST", f"/subscriptions/{sub}{ROTATE}",
                                                         api_version="2025-01-01")
    assert r.status_code == 200, r.text
    assert len(r.json()["publishedKeyIds"]) >= 2


def _signing(server: AcrLocal, table: str) -> list[str]:
    """The key ids of ``table`` that no rotation retired (the keys that may sign), newest first."""
    engine = server.database()
    try:
        with engine.connect() as conn:
            return list(conn.execute(sa.text(f"SELECT kid FROM {table} WHERE retired IS NULL ORDER BY created DESC"))
                        .scalars())
    finally:
        engine.dispose()


def test_a_rotation_whose_new_key_cannot_be_stored_leaves_the_old_key_signing(server: AcrLocal) -> None:
    """A rotation retires the signing key and stores a new one in one transaction: when the new one cannot be
    stored, the old one has not been retired (it would have gone on signing tokens that outlive its publication,
    and once its grace ended the tenant could have no key at all)."""
    sub = subscription_of(server)
    admin = Arm(server, admin_of(server).token(server))
    tenant_keys, registry_keys = _signing(server, "signing_keys"), _signing(server, "registry_token_keys")
    assert len(tenant_keys) == 1 and len(registry_keys) == 1
    with refused(server, "signing_keys", "INSERT", "1 = 1"):
        failed(admin.call("POST", f"/subscriptions/{sub}{ROTATE}", api_version="2025-01-01"))
    assert _signing(server, "signing_keys") == tenant_keys
    # The tenant's key rotates, the registries' new key is refused: the registries' old key still signs.
    with refused(server, "registry_token_keys", "INSERT", "1 = 1"):
        failed(admin.call("POST", f"/subscriptions/{sub}{ROTATE}", api_version="2025-01-01"))
    assert _signing(server, "registry_token_keys") == registry_keys
    assert kid(server.admin_token("https://management.azure.com/.default")) == _signing(server, "signing_keys")[0]
    rotated = admin.call("POST", f"/subscriptions/{sub}{ROTATE}", api_version="2025-01-01")
    assert rotated.status_code == 200, rotated.text
    assert len(_signing(server, "signing_keys")) == len(_signing(server, "registry_token_keys")) == 1


def test_keys_all_retired_by_an_earlier_version_are_replaced_by_the_next_token(tmp_path: Path) -> None:
    """A database where every key is retired and past its publication (what a rotation cut off between its two
    writes left before they were one transaction, a day later) gets new keys as tokens are issued: tokens are
    signed, verify, and are accepted, no 500."""
    data = tmp_path / "data"
    with running(data) as server:
        server.exchange(server.admin_token(ACR_SCOPE))  # the tenant's key and the registries' key exist
        engine = server.database()
    day_ago = time.time() - 30 * 3600
    try:
        with engine.begin() as conn:
            for table in ("signing_keys", "registry_token_keys"):
                conn.execute(sa.text(f"UPDATE {table} SET retired = :t"), {"t": day_ago})
    finally:
        engine.dispose()
    with running(data) as server:
        arm_token = server.admin_token("https://management.azure.com/.default")
        assert kid(arm_token) == _signing(server, "signing_keys")[0]
        r = Arm(server, arm_token).call("GET", f"/subscriptions/{subscription_of(server)}/resourcegroups")
        assert r.status_code == 200, r.text
        login_server = server.login_server()
        refresh = server.exchange(server.admin_token(ACR_SCOPE))
        r = server.session().post(f"https://{login_server}/oauth2/token", data={
            "grant_type": "refresh_token", "service": login_server, "refresh_token": refresh,
            "scope": "repository:healed/app:pull"})
        assert r.status_code == 200, r.text
        assert kid(r.json()["access_token"]) == _signing(server, "registry_token_keys")[0]
        r = server.session().get(f"https://{login_server}/v2/healed/app/tags/list",
                                 headers={"Authorization": f"Bearer {r.json()['access_token']}"})
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN", r.text
