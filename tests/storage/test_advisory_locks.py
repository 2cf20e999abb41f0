"""The advisory locks replicas hold per upload and per digest, on a real PostgreSQL: a lock lost with its
connection (the backend terminated, as a restart or a network cut does) is free for another replica at once, and
its former holder is told so at its next check instead of going on as if it held it."""

from __future__ import annotations

import asyncio
import threading

import pytest
import sqlalchemy as sa

from acrlocal.storage.shared import AdvisoryLocks, DatabaseLock, LockLost
from acrlocal.storage.sql import SqlThread, commit_guard, database_unavailable, open_engine
from tests import postgres

NAMESPACE = 0x41435202  # the digest locks' (acrlocal.server.ADVISORY_NAMESPACES)
KEY = 4242
#: The advisory locks granted in the test's own database: pg_locks shows the whole cluster, whose other databases'
#: servers take the same namespaces.
GRANTED_HERE = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND "
                "database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND ")


def _terminate_holder(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        pid = conn.execute(sa.text(GRANTED_HERE + "classid = :ns AND objid = :key AND objsubid = 2"),
                           {"ns": NAMESPACE, "key": KEY}).scalar_one()
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


ARM_WRITES = 0x41435203  # the control plane's write lock (acrlocal.server.ADVISORY_NAMESPACES[2])


async def _commits_under_a_lost_lock(lock: DatabaseLock, sql: SqlThread, engine: sa.Engine) -> None:
    def insert(name: str) -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO guarded_rows (name) VALUES (:n)"), {"n": name})

    def notify() -> None:  # a transaction that only reads commits, as a generations bump does
        with engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_notify("acrlocal_test", "x")))
            conn.commit()

    def terminate() -> None:
        with engine.connect() as conn:
            pid = conn.execute(sa.text(GRANTED_HERE + "classid = CAST(:ns AS bigint)::oid"),
                               {"ns": ARM_WRITES}).scalar_one()
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

    others = asyncio.Event()

    async def another_task() -> None:  # started before the lock was taken (a registry request): not checked
        await others.wait()
        await sql.run(insert, "other")

    side = asyncio.create_task(another_task())
    async with lock:
        await sql.run(insert, "held")
        await sql.run(terminate)
        with pytest.raises(LockLost):
            await sql.run(insert, "lost")
        await sql.run(notify)
        others.set()
        await side
    await sql.run(insert, "after")  # released: the task's guard checks nothing any more
    async with lock:  # taken again on a new connection
        await sql.run(insert, "again")


def test_a_write_under_the_control_planes_lock_rolls_back_at_its_commit_once_the_lock_is_lost() -> None:
    """A transaction that wrote, of the task that holds a :class:`DatabaseLock`, verifies the lock right before it
    commits: after the lock's backend is terminated it raises :class:`LockLost` and its row is not stored. A
    transaction that only read, another task's writes, and the holder's once it released the lock are not
    checked."""
    if postgres.binaries() is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql); scripts/test installs it")
    engine = open_engine(postgres.shared().create_database("guarded"))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE guarded_rows (name text PRIMARY KEY)"))
    locks, sql = AdvisoryLocks(engine, ARM_WRITES), SqlThread(engine)
    try:
        asyncio.run(_commits_under_a_lost_lock(DatabaseLock(locks, 0), sql, engine))
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT name FROM guarded_rows")).scalars())
        assert stored == {"held", "other", "after", "again"}
    finally:
        sql.close()
        locks.close()
        engine.dispose()


async def _lost_between_check_and_commit(one: DatabaseLock, one_sql: SqlThread, other: DatabaseLock,
                                         other_sql: SqlThread, engine: sa.Engine) -> set[str]:
    """``one`` writes under the lock; right after its commit check passes, its lock's backend is terminated and
    ``other`` takes the lock, and the commit goes on only a moment later. Returns what ``other`` reads first
    under the lock."""
    checked, go = threading.Event(), threading.Event()

    def insert() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO guarded_rows (name) VALUES ('checked before the loss')"))

    def read() -> set[str]:
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT name FROM guarded_rows")).scalars())

    async with one:
        guard = commit_guard.get()
        assert guard is not None

        def checked_then_wait(conn: sa.Connection) -> None:
            guard(conn)
            checked.set()
            go.wait(30)

        commit_guard.set(checked_then_wait)
        writing = asyncio.ensure_future(one_sql.run_long(insert))
        await asyncio.get_running_loop().run_in_executor(None, checked.wait, 30)
        with engine.connect() as conn:
            pid = conn.execute(sa.text(GRANTED_HERE + "classid = CAST(:ns AS bigint)::oid AND objid = 0"),
                               {"ns": ARM_WRITES}).scalar_one()
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar()

        async def take_and_read() -> set[str]:
            async with other:
                return await other_sql.run(read)

        taking = asyncio.ensure_future(take_and_read())
        await asyncio.sleep(0.5)  # the other replica takes the key now (before the fix it also read then)
        go.set()
        await writing
        return await taking


def test_a_commit_checked_before_its_lock_went_is_read_by_the_next_holder() -> None:
    """The holder's lock connection is cut after its commit check and before the COMMIT, and another replica takes
    the lock meanwhile: that replica waits for the commit (the commits key), so what it reads first under the lock
    has the row. Before, it read the table as it was and went on while the first replica's row landed."""
    if postgres.binaries() is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql); scripts/test installs it")
    url = postgres.shared().create_database("checkedcommit")
    engines = [open_engine(url) for _ in range(2)]
    with engines[0].begin() as conn:
        conn.execute(sa.text("CREATE TABLE guarded_rows (name text PRIMARY KEY)"))
    locks = [AdvisoryLocks(engine, ARM_WRITES) for engine in engines]
    sqls = [SqlThread(engine) for engine in engines]
    try:
        seen = asyncio.run(_lost_between_check_and_commit(DatabaseLock(locks[0], 0), sqls[0],
                                                          DatabaseLock(locks[1], 0), sqls[1], engines[0]))
        assert seen == {"checked before the loss"}
    finally:
        for closing in (*sqls, *locks):
            closing.close()
        for engine in engines:
            engine.dispose()
