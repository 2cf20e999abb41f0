"""The SqlThread on SQLite: calls run inline, except while a long one (``run_long``) is in the thread (then the calls
made meanwhile follow it there, in order, and the event loop goes on), and except when another writer holds the
lock (then a call that committed nothing runs again in the thread, where it waits). On PostgreSQL: a call is tried
on the loop and goes to the thread, whole, at its first request for a connection."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from acrlocal.storage.sql import NeedsDatabase, SqlThread, open_engine
from tests import postgres

BOUND_S = 30.0


def test_on_sqlite_calls_made_while_a_long_one_runs_follow_it_in_order(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'acrlocal.db'}", upgrade=False)
    sql = SqlThread(engine)
    release = threading.Event()
    order: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()

    def call(name: str) -> None:
        if name == "long":
            assert release.wait(BOUND_S), "the loop never released the long call"
        order.append((name, threading.get_ident() == loop_thread))

    async def main() -> None:
        long = asyncio.create_task(sql.run_long(call, "long"))
        await asyncio.sleep(0)  # the long call is in the thread
        short = asyncio.create_task(sql.run(call, "short"))
        await asyncio.sleep(0)
        assert order == [], "a call ran beside the long one"  # the loop goes on meanwhile: this line ran
        release.set()
        await asyncio.gather(long, short)
        await sql.run(call, "after")

    try:
        asyncio.run(main())
    finally:
        sql.close()
        engine.dispose()
    assert order == [("long", False), ("short", False), ("after", True)]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = open_engine(f"sqlite:///{tmp_path / 'acrlocal.db'}", upgrade=False)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE rows (name TEXT PRIMARY KEY)")
    yield engine
    engine.dispose()


def names(engine: sa.Engine) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.exec_driver_sql("SELECT name FROM rows ORDER BY name")]


def test_on_sqlite_a_call_that_finds_the_lock_held_runs_again_in_the_thread(engine: sa.Engine) -> None:
    """It fails at once inline, then waits for the lock in the thread while the loop goes on; one row results."""
    sql = SqlThread(engine)
    holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    tries: list[bool] = []
    loop_thread = threading.get_ident()

    def insert() -> None:
        tries.append(threading.get_ident() == loop_thread)
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO rows VALUES ('one')")

    async def main() -> None:
        call = asyncio.create_task(sql.run(insert))
        while len(tries) < 2:  # the loop goes on while the call waits
            assert not call.done(), call.result()
            await asyncio.sleep(0.01)
        holder.execute("ROLLBACK")
        await asyncio.wait_for(call, BOUND_S)

    try:
        asyncio.run(main())
    finally:
        sql.close()
        holder.close()
    assert tries == [True, False]
    assert names(engine) == ["one"]


def test_on_sqlite_a_call_that_committed_before_the_lock_was_held_is_not_run_again(engine: sa.Engine) -> None:
    """Its first transaction committed: running it again would repeat that, so the busy error is the caller's."""
    sql = SqlThread(engine)
    holder = sqlite3.connect(engine.url.database or "", isolation_level=None)
    tries = []

    def two_transactions() -> None:
        tries.append(1)
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO rows VALUES ('first')")
        holder.execute("BEGIN IMMEDIATE")  # another writer, between the call's two transactions
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO rows VALUES ('second')")

    try:
        with pytest.raises(sa.exc.OperationalError, match="locked"):
            asyncio.run(sql.run(two_transactions))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        sql.close()
    assert tries == [1]
    assert names(engine) == ["first"]


def test_on_sqlite_a_call_of_two_transactions_through_run_long_waits_for_the_lock_between_them(
        engine: sa.Engine) -> None:
    """The same call through ``run_long`` (what control-plane writes use): in the thread, its second transaction
    waits for the other writer instead of failing, so both rows are stored."""
    sql = SqlThread(engine)
    holder = sqlite3.connect(engine.url.database or "", isolation_level=None, check_same_thread=False)
    locked = threading.Event()

    def two_transactions() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO rows VALUES ('first')")
        holder.execute("BEGIN IMMEDIATE")  # another writer, between the call's two transactions
        locked.set()
        threading.Timer(0.3, holder.execute, ("ROLLBACK",)).start()
        with engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO rows VALUES ('second')")

    try:
        asyncio.run(asyncio.wait_for(sql.run_long(two_transactions), BOUND_S))
    finally:
        holder.close()
        sql.close()
    assert locked.is_set()
    assert names(engine) == ["first", "second"]


def test_on_postgresql_a_call_runs_on_the_loop_until_it_asks_for_a_connection() -> None:
    """A call answered from memory runs on the loop; one that asks for a connection stops there (an ``except
    Exception`` on the way does not take the refusal for the database's error) and runs again, whole, in the
    thread, where its query is answered; a call made while the thread is busy goes there after it, in order."""
    if postgres.binaries() is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql); scripts/test installs it")
    engine = open_engine(postgres.shared().create_database("sqlthread"), upgrade=False)
    sql = SqlThread(engine)
    loop_thread = threading.get_ident()
    tries: list[tuple[str, bool]] = []
    release = threading.Event()

    def from_memory() -> int:
        tries.append(("memory", threading.get_ident() == loop_thread))
        return 1

    def from_the_database() -> int:
        tries.append(("database", threading.get_ident() == loop_thread))
        try:
            with engine.connect() as conn:
                return int(conn.execute(sa.text("SELECT 2")).scalar_one())
        except Exception:  # a store's own handling of the database's errors
            return -1

    def long() -> None:
        assert release.wait(BOUND_S), "the loop never released the long call"

    async def main() -> None:
        assert await sql.run(from_memory) == 1
        assert await sql.run(from_the_database) == 2
        first = asyncio.create_task(sql.run_long(long))
        await asyncio.sleep(0)
        second = asyncio.create_task(sql.run(from_memory))
        await asyncio.sleep(0)
        assert not second.done()  # behind the long call, not beside it
        release.set()
        await asyncio.gather(first, second)

    try:
        asyncio.run(main())
    finally:
        sql.close()
        engine.dispose()
    assert tries == [("memory", True), ("database", True), ("database", False), ("memory", False)]
    assert issubclass(NeedsDatabase, BaseException) and not issubclass(NeedsDatabase, Exception)
