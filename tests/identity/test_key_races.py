"""Two processes writing signing keys at the same moment, on PostgreSQL: a tenant's Entra keys (``KeyRing``) and the
registries' token keys (``TokenKeys``). Each race ends as one of its serial orders, with one unretired key (the one
that signs).

The test's own transaction stands for the other process: it does what that process's rotation (or first key) writes
and holds it uncommitted; the key ring under test starts its own in a thread, the test waits until PostgreSQL shows
it waiting for a lock, then commits. Read committed is where the race lived: a rotation's ``UPDATE`` does not see a
key committed after it began, so before the unique index both new keys stayed unretired. (SQLite takes its write
lock first, so its writers run one after the other.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.identity import keys as entra_keys
from acrlocal.identity import store
from acrlocal.identity.directory import Directory
from acrlocal.registry import token_keys
from acrlocal.storage.sql import open_engine
from tests import postgres
from tests.table_locks import BOUND_S


@pytest.fixture
def engine() -> Iterator[Engine]:
    engine = open_engine(postgres.shared().create_database("keyrace"))
    try:
        yield engine
    finally:
        engine.dispose()


@dataclass
class Keys:
    """One room's keys, as the test sees them."""
    table: sa.Table
    scope: sa.ColumnElement[bool]  # the rows of the keys that race (one tenant's, or the registries')
    row: Callable[[], dict[str, object]]  # a new key's row, as the other process makes it
    rotate: Callable[[], str]  # the process under test rotates; the kid that signs after
    first: Callable[[], str]  # the process under test needs a signing key; the kid it signs with

    def unretired(self, conn: sa.Connection) -> list[str]:
        return list(conn.execute(sa.select(self.table.c.kid).where(self.scope, self.table.c.retired.is_(None)))
                    .scalars())


def _keys(engine: Engine, room: str) -> Keys:
    if room == "tenant":
        tenant = Directory(engine).create_tenant("races").id
        ring = entra_keys.KeyRing(engine)
        return Keys(store.signing_keys, store.signing_keys.c.tenant_id == tenant,
                    lambda: entra_keys._new_key(tenant), lambda: ring.rotate(tenant).kid,
                    lambda: ring.active(tenant).kid)
    registries = token_keys.TokenKeys(engine)
    return Keys(token_keys.token_keys, sa.true(), token_keys._new_key, lambda: registries.rotate().kid,
                lambda: registries.active().kid)


def _waiting_for_a_lock(watcher: sa.Connection) -> bool:
    return bool(watcher.execute(sa.text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))
        .scalar_one())


def _race(engine: Engine, keys: Keys, other: Callable[[sa.Connection], None], mine: Callable[[], str]) -> str:
    """``other`` in the test's transaction, uncommitted; ``mine`` in a thread until it waits for a lock (or, had it
    nothing to wait for, has returned); then the commit. What ``mine`` returned."""
    with engine.connect() as watcher, engine.connect() as holder, ThreadPoolExecutor(1) as pool:
        watcher = watcher.execution_options(isolation_level="AUTOCOMMIT")
        with holder.begin():
            other(holder)
            pending: Future[str] = pool.submit(mine)
            deadline = time.monotonic() + BOUND_S
            while not (_waiting_for_a_lock(watcher) or pending.done()):
                assert time.monotonic() < deadline, "the key ring neither waited for the other process nor returned"
                time.sleep(0.02)
        return pending.result(timeout=BOUND_S)


@pytest.mark.parametrize("room", ["tenant", "registries"])
def test_two_rotations_at_once_end_as_one_after_the_other(engine: Engine, room: str) -> None:
    keys = _keys(engine, room)
    first = keys.first()
    theirs = keys.row()

    def rotation_elsewhere(conn: sa.Connection) -> None:
        conn.execute(sa.update(keys.table).where(keys.scope, keys.table.c.retired.is_(None))
                     .values(retired=time.time()))
        conn.execute(sa.insert(keys.table).values(theirs))

    mine = _race(engine, keys, rotation_elsewhere, keys.rotate)
    with engine.connect() as conn:
        assert keys.unretired(conn) == [mine]
        retired = set(conn.execute(sa.select(keys.table.c.kid).where(keys.scope, keys.table.c.retired.is_not(None)))
                      .scalars())
    assert retired == {first, theirs["kid"]}  # theirs, then mine: both rotations happened, in turn


@pytest.mark.parametrize("room", ["tenant", "registries"])
def test_two_first_keys_at_once_leave_one(engine: Engine, room: str) -> None:
    keys = _keys(engine, room)
    theirs = keys.row()
    mine = _race(engine, keys, lambda conn: conn.execute(sa.insert(keys.table).values(theirs)), keys.first)
    assert mine == theirs["kid"]  # the key the other process made first is the one this one signs with
    with engine.connect() as conn:
        assert keys.unretired(conn) == [mine]
