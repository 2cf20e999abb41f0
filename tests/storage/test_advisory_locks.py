"""The advisory locks replicas hold per upload and per digest, on a real PostgreSQL: a lock lost with its
connection (the backend terminated, as a restart or a network cut does) is free for another replica at once, and
its former holder is told so at its next check instead of going on as if it held it."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from acrlocal.storage.shared import AdvisoryLocks, LockLost
from acrlocal.storage.sql import database_unavailable, open_engine
from tests import postgres

NAMESPACE = 0x41435202  # the digest locks' (acrlocal.server.ADVISORY_NAMESPACES)
KEY = 4242


def _terminate_holder(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        pid = conn.execute(sa.text(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = :ns AND objid = :key "
            "AND objsubid = 2"), {"ns": NAMESPACE, "key": KEY}).scalar_one()
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()


async def _lose_and_recover(one: AdvisoryLocks, other: AdvisoryLocks, engine: sa.Engine) -> None:
    await one.acquire(KEY)
    await one.verify(KEY)
    await asyncio.get_running_loop().run_in_executor(None, _terminate_holder, engine)
    await asyncio.wait_for(other.acquire(KEY), 30)  # another replica takes it while the first still "holds" it
    with pytest.raises(LockLost) as lost:
        await one.verify(KEY)
    assert database_unavailable(lost.value)  # the protocols' 503, with Retry-After
    one.release(KEY)
    await other.verify(KEY)  # the new holder's is sound
    other.release(KEY)
    await asyncio.wait_for(one.acquire(KEY), 30)  # on a new connection
    await one.verify(KEY)
    one.release(KEY)


def test_a_lock_lost_with_its_connection_fails_its_holders_check_and_is_taken_again_on_a_new_one() -> None:
    if postgres.binaries() is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql); scripts/test installs it")
    url = postgres.shared().create_database("locks")
    engines = [open_engine(url) for _ in range(2)]
    one, other = (AdvisoryLocks(engine, NAMESPACE) for engine in engines)
    try:
        asyncio.run(_lose_and_recover(one, other, engines[1]))
    finally:
        one.close()
        other.close()
        for engine in engines:
            engine.dispose()
