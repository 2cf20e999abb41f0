"""Forged, expired and misused tokens at /oauth2/exchange (Entra tokens) and on /v2/ (access tokens): each is
refused with 401 and nothing is stored.

Properly signed but expired tokens are made with the server's own keys, read from its database, the way a
token that simply outlived its lifetime would look."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from acrlocal.identity import store as identity_store
from tests.arm.conftest import Arm, subscription_of
from tests.harness import AcrLocal
from tests.tokens.conftest import (
    TokenClient,
    claims,
    make_principal,
    other_tenant_principal,
    principal_token,
    registry_properties,
)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _key(server: AcrLocal, sql: str, **params: str) -> rsa.RSAPrivateKey:
    engine = server.database()
    try:
        with engine.connect() as conn:
            pem = conn.execute(sa.text(sql), params).scalar_one()
    finally:
        engine.dispose()
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def forgeries(good: str, key: rsa.RSAPrivateKey) -> dict[str, str]:
    """Ways to get a token past a careless verifier, made from a valid ``good`` token signed with ``key``."""
    header = jwt.get_unverified_header(good)
    body = claims(good)
    now = int(time.time())
    expired = jwt.encode({**body, "iat": now - 7200, "nbf": now - 7200, "exp": now - 3600}, key, algorithm="RS256",
                         headers={"kid": header["kid"]})
    h, p, s = good.split(".")
    tampered_body = dict(body)
    tampered_body["sub" if "access" in body else "oid"] = "00000000-0000-0000-0000-0000000000ff"
    tampered = f"{h}.{_b64(tampered_body)}.{s}"
    none = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': header['kid']})}.{p}."
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = _b64({"alg": "HS256", "typ": "JWT", "kid": header["kid"]})
    import hashlib
    import hmac
    signature = hmac.new(public_pem, f"{hs_header}.{p}".encode(), hashlib.sha256).digest()
    hs256 = f"{hs_header}.{p}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    embedded = jwt.encode(body, attacker, algorithm="RS256", headers={"kid": header["kid"], "jwk": jwk})
    foreign = jwt.encode(body, attacker, algorithm="RS256", headers={"kid": header["kid"]})
    return {"expired": expired, "tampered": tampered, "alg none": none, "HS256 with the public key": hs256,
            "header jwk": embedded, "another key, same kid": foreign}


def test_forged_entra_tokens_are_refused_at_the_exchange(server: AcrLocal, tokens: TokenClient) -> None:
    cred = server.admin_credential()
    good = server.admin_token()
    assert tokens.exchange(good).status_code == 200
    kid = jwt.get_unverified_header(good)["kid"]
    key = _key(server, "SELECT private_pem FROM signing_keys WHERE kid = :kid AND tenant_id = :tenant", kid=kid,
               tenant=cred["tenantId"])
    for name, forged in forgeries(good, key).items():
        r = tokens.exchange(forged)
        assert r.status_code == 401, name
        assert r.json()["errors"][0]["code"] == "UNAUTHORIZED", name
    # An Entra token for another audience (Key Vault) is not one for the registry.
    vault = server.admin_token("https://vault.azure.net/.default")
    assert tokens.exchange(vault).status_code == 401


def test_forged_access_tokens_are_refused_on_v2_and_nothing_is_stored(server: AcrLocal, tokens: TokenClient) -> None:
    refresh = tokens.refresh_token(server.admin_token())
    good = tokens.access_token(refresh, "repository:forged/app:pull,push")
    assert tokens.v2("POST", "/v2/forged/app/blobs/uploads/", good).status_code == 202
    kid = jwt.get_unverified_header(good)["kid"]
    key = _key(server, "SELECT private_pem FROM registry_token_keys WHERE kid = :kid", kid=kid)
    for name, forged in forgeries(good, key).items():
        r = tokens.v2("PUT", "/v2/forged/app/manifests/v1", forged, data=b"{}",
                      headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
        assert r.status_code == 401, name
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"], name
    # A refresh token is not an access token, and an access token is not a refresh token.
    assert tokens.v2("GET", "/v2/", refresh).status_code == 401
    assert tokens.token(good, "repository:forged/app:pull").status_code == 401
    assert tokens.v2("GET", "/v2/forged/app/tags/list", good).status_code == 404  # nothing was stored


@pytest.fixture
def second_registry(server: AcrLocal, arm: Arm) -> Callable[[], TokenClient]:
    def make() -> TokenClient:
        sub = json.loads((server.data_dir / "admin.json").read_text())["subscriptionId"]
        group = f"/subscriptions/{sub}/resourceGroups/tokens"
        arm.call("PUT", group, {"location": "westus"})
        name = f"second{int(time.time() * 1000) % 10**8}"
        r = arm.call("PUT", f"{group}/providers/Microsoft.ContainerRegistry/registries/{name}",
                     {"location": "westus", "sku": {"name": "Standard"}})
        assert r.status_code in (200, 201), r.text
        return TokenClient(server, r.json()["properties"]["loginServer"])
    return make


def test_a_token_for_registry_a_is_refused_at_registry_b(server: AcrLocal, tokens: TokenClient,
                                                         second_registry: Callable[[], TokenClient]) -> None:
    other = second_registry()
    refresh = tokens.refresh_token(server.admin_token())
    token = tokens.access_token(refresh, "repository:x/app:pull,push")
    r = other.v2("POST", "/v2/x/app/blobs/uploads/", token)
    assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"]
    # Nor is registry A's refresh token redeemed at registry B.
    assert other.token(refresh, "repository:x/app:pull").status_code == 401
    # B's own refresh token works at B.
    own = other.refresh_token(server.admin_token())
    assert other.v2("POST", "/v2/x/app/blobs/uploads/", other.access_token(own, "repository:x/app:push,pull"))\
        .status_code == 202


def test_an_identity_of_another_tenant_is_refused(server: AcrLocal, tokens: TokenClient) -> None:
    stranger = other_tenant_principal(server, "stranger")
    token = principal_token(server, stranger)
    assert claims(token)["tid"] == stranger.tenant_id
    r = tokens.exchange(token)
    assert r.status_code == 401 and "tenant" in r.json()["errors"][0]["message"]
    # Naming a tenant other than the token's is refused too.
    mine = server.admin_token()
    assert tokens.exchange(mine, tenant=stranger.tenant_id).status_code == 401


def test_deleted_principal_refresh_token_stops_working(server: AcrLocal, tokens: TokenClient) -> None:
    sp = make_principal(server, "doomed")
    refresh = tokens.refresh_token(principal_token(server, sp))
    assert tokens.token(refresh, "repository:a:pull").status_code == 200

    from acrlocal.identity.directory import Directory

    engine = server.database()
    try:
        Directory(engine).delete_principal(sp.object_id)
    finally:
        engine.dispose()
    r = tokens.token(refresh, "repository:a:pull")
    assert r.status_code == 401 and "does not exist" in r.json()["errors"][0]["message"]


def test_arm_audience_tokens_follow_the_registry_policy(server: AcrLocal, arm: Arm, tokens: TokenClient) -> None:
    arm_token = server.admin_token("https://management.azure.com/.default")
    assert tokens.exchange(arm_token).status_code == 200
    registry_properties(arm, "acrlocal", policies={"azureADAuthenticationAsArmPolicy": {"status": "disabled"}})
    try:
        assert tokens.exchange(arm_token).status_code == 401
        assert tokens.exchange(server.admin_token()).status_code == 200
    finally:
        registry_properties(arm, "acrlocal", policies={"azureADAuthenticationAsArmPolicy": {"status": "enabled"}})
    assert tokens.exchange(arm_token).status_code == 200


def _stored_signing_keys(server: AcrLocal) -> int:
    engine = server.database()
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(identity_store.signing_keys)).scalar_one())
    finally:
        engine.dispose()


def test_an_unsigned_token_of_an_unknown_tenant_costs_no_key_and_gets_401(server: AcrLocal, tokens: TokenClient,
                                                                           arm: Arm) -> None:
    """Issue 8, item 1: looking up a signing key never creates one. A token naming a tenant that does not exist
    (or a kid no tenant has) is refused with 401 in each protocol's own shape, and no key row is written."""
    good = server.admin_token()
    body = claims(good)
    kid = jwt.get_unverified_header(good)["kid"]
    keyless = other_tenant_principal(server, "keyless").tenant_id  # a tenant that has signed nothing yet
    forged = {
        "unknown tenant": {**body, "tid": str(uuid.uuid4())},
        "not a tenant id": {**body, "tid": "x" * 300},
        "a tenant with no keys yet": {**body, "tid": keyless, "iss": body["iss"].replace(body["tid"], keyless)},
    }
    tokens_to_try = [f"{_b64({'alg': 'RS256', 'typ': 'JWT', 'kid': kid})}.{_b64(c)}.AAAA" for c in forged.values()]
    tokens_to_try.append(f"{_b64({'alg': 'RS256', 'typ': 'JWT', 'kid': 'no-such-kid'})}.{_b64(body)}.AAAA")
    before = _stored_signing_keys(server)
    for forgery in tokens_to_try:
        r = tokens.exchange(forgery)
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED", r.text
        r = Arm(server, forgery).call("GET", f"/subscriptions/{subscription_of(server)}/resourcegroups")
        assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken", r.text
        assert r.headers["WWW-Authenticate"].startswith("Bearer ")
        r = Arm(server, forgery).call("GET", "/v1.0/applications", api_version=None)
        assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken", r.text
    assert _stored_signing_keys(server) == before
    # The server kept serving, and real tokens still work everywhere.
    assert tokens.exchange(good).status_code == 200
    assert arm.call("GET", f"/subscriptions/{subscription_of(server)}/resourcegroups").status_code == 200
