"""Signing keys rotate through a real path (issue 8, item 17): ``acrlocal admin rotate-signing-keys`` (the CLI,
through the running server) and the ARM action it calls. Tokens issued before keep verifying, tokens issued after
carry the new key id, and the tenant's JWKS publishes both; the registries' token service rotates with the
default tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import jwt
import pytest

from tests.arm.conftest import Arm, admin_of, new_principal, subscription_of
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
