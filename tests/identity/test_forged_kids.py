"""A token naming a signing key this server never published costs no database work while keys are unchanged.

An unauthenticated caller chooses both the tenant (``tid``) and the key id (``kid``) of a token it forges. Every
process keeps the ids of the published keys of every tenant, read once and again only after keys changed somewhere
(a tenant's first key, a rotation); a kid they do not name as the tenant's is refused from memory. The statements
the engine runs are counted (SQLAlchemy's ``before_cursor_execute``) while :meth:`KeyRing.find` is asked about
random kids of an existing tenant and of tenants that do not exist, and a verifier on the event loop refuses such
tokens without a hop to the SQL thread. Two key rings on one database and one generations file stand for two
processes of a server: a tenant's first key made by one, and a rotation by one, are found by the other.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy.engine import Engine

from acrlocal.generations import Generations
from acrlocal.identity.bootstrap import bootstrap
from acrlocal.identity.directory import Directory
from acrlocal.identity.keys import KeyRing, SigningKey
from acrlocal.identity.tokens import InvalidToken, TokenIssuer
from acrlocal.storage.sql import SqlThread, open_engine

AUTHORITY = "https://login.microsoftonline.com"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def _statements(engine: Engine) -> tuple[list[str], Callable[[], None]]:
    """Every statement ``engine`` runs from now on, and how to stop recording them."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        seen.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    return seen, lambda: sa.event.remove(engine, "before_cursor_execute", record)


def _kid() -> str:
    return uuid.uuid4().hex


def _kid_of(key: SigningKey | None) -> str | None:
    return None if key is None else key.kid


def test_unknown_kids_of_any_tenant_are_refused_from_memory(tmp_path: Path, engine: Engine) -> None:
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    tenant, other = (directory.create_tenant(name).id for name in ("kids", "other kids"))
    generations = Generations(tmp_path / "generations")
    keys = KeyRing(engine, generations)
    key, others = keys.active(tenant), keys.active(other)
    assert keys.find(tenant, _kid()) is None  # warm-up: the published key ids are read once
    seen, stop = _statements(engine)
    try:
        for _ in range(100):
            assert keys.find(tenant, _kid()) is None
            assert keys.find(str(uuid.uuid4()), _kid()) is None  # a tenant that does not exist
        assert keys.find(tenant, others.kid) is None  # another tenant's key
        assert keys.find(str(uuid.uuid4()), key.kid) is None
        assert _kid_of(keys.find(tenant, key.kid)) == key.kid
        assert _kid_of(keys.find(tenant.upper(), key.kid)) == key.kid
    finally:
        stop()
    assert seen == []
    # What a verifier on the event loop asks first: memory rules these out, and only these.
    assert keys.unpublished(tenant, _kid()) and keys.unpublished(str(uuid.uuid4()), _kid())
    assert keys.unpublished(tenant, others.kid) and not keys.unpublished(tenant, key.kid)
    generations.close()


def test_a_key_not_yet_in_memory_is_read_once(tmp_path: Path, engine: Engine) -> None:
    """A fresh process: its first look-up reads the key ids, a real key's tenant's keys are read once, and unknown
    kids cost nothing more."""
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    tenant = directory.create_tenant("read once").id
    key = KeyRing(engine).active(tenant)
    keys = KeyRing(engine)
    seen, stop = _statements(engine)
    try:
        assert _kid_of(keys.find(tenant, key.kid)) == key.kid
        first = len(seen)
        assert first == 2  # the key ids, then the tenant's keys
        for _ in range(50):
            assert _kid_of(keys.find(tenant, key.kid)) == key.kid
            assert keys.find(tenant, _kid()) is None
    finally:
        stop()
    assert len(seen) == first
    assert not KeyRing(engine).unpublished(tenant, _kid())  # nothing in memory yet: only find can say


def _forged(tenant: str, kid: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return jwt.encode({"aud": "https://management.azure.com/", "iss": f"{AUTHORITY}/{tenant}/v2.0", "iat": now,
                       "nbf": now, "exp": now + 3600, "tid": tenant, "oid": str(uuid.uuid4()),
                       "sub": str(uuid.uuid4())}, key, algorithm="RS256", headers={"kid": kid})


class _CountingSql(SqlThread):
    """A ``SqlThread`` that counts the calls handed to it."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.calls = 0

    async def run(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return await super().run(fn, *args, **kwargs)


def test_a_forged_token_is_refused_on_the_event_loop_without_the_sql_thread(tmp_path: Path, engine: Engine) -> None:
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    tenant = directory.create_tenant("forged").id
    keys = KeyRing(engine)
    real = keys.active(tenant)
    issuer = TokenIssuer(keys, AUTHORITY)
    sql = _CountingSql(engine)

    async def refused(token: str, reason: str = "is not a key of tenant") -> None:
        with pytest.raises(InvalidToken, match=reason):
            await issuer.verify_async(sql, token, None)

    async def run() -> None:
        await refused(_forged(tenant, _kid()))  # the key ids are read (through the SQL thread) once
        before = sql.calls
        seen, stop = _statements(engine)
        try:
            for _ in range(20):
                await refused(_forged(tenant, _kid()))
                await refused(_forged(str(uuid.uuid4()), _kid()))
            await refused(_forged(tenant, real.kid), "Signature verification failed")  # the real kid, another key
        finally:
            stop()
        assert sql.calls == before and seen == []

    asyncio.run(run())


def test_a_first_key_and_a_rotation_made_by_another_process_are_found(tmp_path: Path, engine: Engine) -> None:
    """Two key rings on one database and one generations file: ``here`` has read the key ids before ``elsewhere``
    makes a tenant's first key, then rotates it; ``here`` finds both keys at once, and still refuses unknown kids
    from memory afterwards."""
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    tenant = directory.create_tenant("elsewhere").id
    here_generations, elsewhere_generations = (Generations(tmp_path / "generations") for _ in range(2))
    here, elsewhere = KeyRing(engine, here_generations), KeyRing(engine, elsewhere_generations)
    assert here.find(tenant, _kid()) is None  # the ids are read: none of this tenant's yet
    first = elsewhere.active(tenant)
    assert _kid_of(here.find(tenant, first.kid)) == first.kid
    rotated = elsewhere.rotate(tenant)
    assert rotated.kid != first.kid
    assert _kid_of(here.find(tenant, rotated.kid)) == rotated.kid
    assert here.find(tenant, first.kid) is not None  # retired, still published
    assert here.find(tenant, _kid()) is None
    seen, stop = _statements(engine)
    try:
        assert here.find(tenant, _kid()) is None and _kid_of(here.find(tenant, rotated.kid)) == rotated.kid
    finally:
        stop()
    assert seen == []
    here_generations.close()
    elsewhere_generations.close()


def test_the_keys_of_a_tenant_that_has_none_are_known_from_memory(tmp_path: Path, engine: Engine) -> None:
    """A tenant that exists but has signed nothing yet has no keys: its JWKS (``KeyRing.keys``, which anyone may
    ask for) reads nothing while keys are unchanged, and its first key made by another process is listed at once."""
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    tenant = directory.create_tenant("no keys yet").id
    here_generations, elsewhere_generations = (Generations(tmp_path / "generations") for _ in range(2))
    here, elsewhere = KeyRing(engine, here_generations), KeyRing(engine, elsewhere_generations)
    assert here.keys(tenant) == []  # warm-up: the published key ids are read once
    seen, stop = _statements(engine)
    try:
        for _ in range(50):
            assert here.keys(tenant) == [] and here.jwks(tenant) == {"keys": []}
            assert here.keys(str(uuid.uuid4())) == []
    finally:
        stop()
    assert seen == []
    first = elsewhere.active(tenant)
    assert [k.kid for k in here.keys(tenant)] == [first.kid]
    here_generations.close()
    elsewhere_generations.close()


def test_a_first_key_whose_maker_died_before_announcing_it_is_announced_by_the_next_signer(
    tmp_path: Path, engine: Engine
) -> None:
    """``dead`` makes a tenant's first key and stops before its announcement (its generations are its own, so the
    bump reaches nobody). ``signer`` and ``verifier`` had read the key ids before: ``signer`` finds the key
    unannounced when it first signs for the tenant and announces it, so ``verifier`` accepts what it signed. Then
    a process that starts (``Generations.bump_all``) makes every process read the key ids again as well."""
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    tenant, other = (directory.create_tenant(name).id for name in ("dead maker", "dead maker again"))
    signer_generations, verifier_generations = (Generations(tmp_path / "generations") for _ in range(2))
    signer, verifier = KeyRing(engine, signer_generations), KeyRing(engine, verifier_generations)
    for ring in (signer, verifier):
        assert ring.find(tenant, _kid()) is None and ring.find(other, _kid()) is None  # the key ids are read
    made = KeyRing(engine, Generations()).active(tenant)  # committed; announced to no one
    assert verifier.unpublished(tenant, made.kid)  # the verifier does not know it yet
    assert signer.active(tenant).kid == made.kid
    assert _kid_of(verifier.find(tenant, made.kid)) == made.kid

    made = KeyRing(engine, Generations()).active(other)
    assert verifier.unpublished(other, made.kid)
    Generations(tmp_path / "generations").bump_all()  # a process starts
    assert not verifier.unpublished(other, made.kid)
    assert _kid_of(verifier.find(other, made.kid)) == made.kid
    signer_generations.close()
    verifier_generations.close()
