"""Token issue and verification, against a real SQLite directory and real RSA keys."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from acrlocal.generations import Generations
from acrlocal.identity.bootstrap import bootstrap
from acrlocal.identity.directory import Directory, Principal
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.tokens import InvalidToken, TokenIssuer
from acrlocal.storage.sql import SqlThread, open_engine

AUD = "https://management.core.windows.net/"
World = tuple[Directory, KeyRing, TokenIssuer, Principal]


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> World:
    engine = open_engine(database_url)
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    keys = KeyRing(engine)
    issuer = TokenIssuer(keys, "https://localhost:8443")
    tenant = directory.default_tenant()
    mi = directory.create_managed_identity(
        tenant.id, f"/subscriptions/{directory.subscriptions()[0].id}/resourceGroups/rg/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/id1", "id1", "user")
    return directory, keys, issuer, mi


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_token_verifies_with_pyjwt_against_jwks(world: World) -> None:
    _, keys, issuer, mi = world
    tok = issuer.issue(mi, AUD, 3600)
    jwk = keys.jwks(mi.tenant_id)["keys"][0]
    public = jwt.PyJWK(jwk).key
    claims = jwt.decode(tok.token, public, algorithms=["RS256"], audience=AUD, issuer=issuer.issuer(mi.tenant_id))
    assert claims["tid"] == mi.tenant_id and claims["oid"] == mi.object_id and claims["appid"] == mi.app_id
    assert claims["xms_mirid"] == mi.resource_id and claims["idtyp"] == "app"
    assert issuer.verify(tok.token, [AUD])["oid"] == mi.object_id


def test_wrong_audience_tenant_and_expiry_are_refused(world: World) -> None:
    directory, _, issuer, mi = world
    tok = issuer.issue(mi, AUD, 3600)
    with pytest.raises(InvalidToken):
        issuer.verify(tok.token, ["https://containerregistry.azure.net"])
    other = directory.create_tenant("other")
    with pytest.raises(InvalidToken):
        issuer.verify(tok.token, [AUD], tenant_id=other.id)
    old = issuer.issue(mi, AUD, 60, now=time.time() - 3600)
    with pytest.raises(InvalidToken, match="expired"):
        issuer.verify(old.token, [AUD])


def test_forged_tokens_are_refused(world: World) -> None:
    _, keys, issuer, mi = world
    good = issuer.issue(mi, AUD, 3600)
    header, payload, sig = good.token.split(".")
    claims = good.claims | {"oid": "00000000-0000-0000-0000-000000000001"}
    tampered = f"{header}.{_b64(claims)}.{sig}"
    none_alg = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}."
    active = keys.active(mi.tenant_id)
    public_pem = active.public_key.public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    hs_header = _b64({"alg": "HS256", "typ": "JWT", "kid": active.kid})
    import hashlib
    import hmac

    hs_sig = base64.urlsafe_b64encode(
        hmac.new(public_pem, f"{hs_header}.{payload}".encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    hs256 = f"{hs_header}.{payload}.{hs_sig}"
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key(), as_dict=True)
    embedded = jwt.encode(good.claims, attacker, algorithm="RS256", headers={"kid": active.kid, "jwk": attacker_jwk})
    foreign = jwt.encode(good.claims, attacker, algorithm="RS256", headers={"kid": active.kid})
    for forged in (tampered, none_alg, hs256, embedded, foreign, "not-a-jwt"):
        with pytest.raises(InvalidToken):
            issuer.verify(forged, [AUD])


def test_rotation_keeps_previous_key_published_and_valid(world: World) -> None:
    _, keys, issuer, mi = world
    before = issuer.issue(mi, AUD, 3600)
    old_kid = keys.active(mi.tenant_id).kid
    new = keys.rotate(mi.tenant_id)
    assert new.kid != old_kid
    kids = [k["kid"] for k in keys.jwks(mi.tenant_id)["keys"]]
    assert kids == [new.kid, old_kid]
    assert issuer.verify(before.token, [AUD])["oid"] == mi.object_id
    after = issuer.issue(mi, AUD, 3600)
    assert jwt.get_unverified_header(after.token)["kid"] == new.kid


class _Recording:
    """A stand-in for the server's ``SqlThread`` that runs calls inline and remembers what it was given."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run(self, fn: Callable[..., Any], /, *args: Any) -> Any:
        self.calls.append(getattr(fn, "__name__", repr(fn)))
        return fn(*args)


def test_a_verifier_on_the_event_loop_reads_keys_through_the_sql_thread_only_when_they_are_not_in_memory(
        world: World) -> None:
    _, keys, issuer, mi = world
    generations = Generations()
    here, elsewhere = KeyRing(keys.engine, generations), KeyRing(keys.engine, generations)
    verifier = TokenIssuer(here, issuer.authority)
    token = issuer.issue(mi, AUD, 3600).token
    sql = _Recording()

    def verify() -> str:
        return str(asyncio.run(verifier.verify_async(cast(SqlThread, sql), token, [AUD]))["oid"])

    assert verify() == mi.object_id and sql.calls == ["find"]  # first use: read
    assert verify() == mi.object_id and sql.calls == ["find"]  # in memory: never asks
    elsewhere.rotate(mi.tenant_id)  # another process: its bump drops what this one keeps
    assert verify() == mi.object_id and sql.calls == ["find", "find"]


def test_a_token_naming_a_tenant_nobody_knows_costs_no_statement_once_the_key_ids_are_read(world: World) -> None:
    """The published key ids are read once (one statement, whatever the tenant and kid asked about); then a kid of a
    tenant nobody knows is refused from memory, and nothing is remembered for it."""
    _, keys, _, _ = world
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(keys.engine, "before_cursor_execute", record)
    try:
        for _ in range(3):
            assert keys.find(str(uuid.uuid4()), uuid.uuid4().hex) is None
    finally:
        sa.event.remove(keys.engine, "before_cursor_execute", record)
    (read,) = statements
    assert "signing_keys.kid" in read and "WHERE" not in read, read


def test_admin_credential_file_is_private_and_its_secret_checks(tmp_path: Path, database_url: str) -> None:
    engine = open_engine(database_url)
    directory = Directory(engine)
    cred = bootstrap(directory, tmp_path)
    assert (tmp_path / "admin.json").stat().st_mode & 0o077 == 0
    assert directory.check_secret(cred.objectId, cred.clientSecret)
    assert not directory.check_secret(cred.objectId, cred.clientSecret + "x")
    assert bootstrap(directory, tmp_path) == cred
    (tmp_path / "admin.json").unlink()
    again = bootstrap(directory, tmp_path)
    assert again.clientSecret != cred.clientSecret
    assert not directory.check_secret(cred.objectId, cred.clientSecret)


def test_replicas_creating_the_same_user_at_once_get_already_exists(world: World) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from acrlocal.errors import AlreadyExists

    directory = world[0]
    tenant = directory.default_tenant()
    writers = 6
    for round_ in range(4):
        barrier = threading.Barrier(writers)

        def create(_: int, upn: str = f"race{round_}@acrlocal.localhost", barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            try:
                directory.create_user(tenant.id, upn, "Racer", None)
                return "made"
            except AlreadyExists:
                return "exists"

        with ThreadPoolExecutor(writers) as pool:
            outcomes = sorted(pool.map(create, range(writers)))
        assert outcomes == ["exists"] * (writers - 1) + ["made"]
