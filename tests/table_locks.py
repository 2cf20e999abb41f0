"""Holding a PostgreSQL table lock in a test's own transaction, to stop a server's statement behind it at a known
point, and seeing that the statement is waiting (``pg_locks``).

:func:`own_transaction` holds what a test needs held. :func:`served_while_waiting` is the check of the
``test_sql_off_the_loop`` modules: a request whose statement is queued behind the lock must leave the same (single)
server process answering another request that needs no SQL. With the statement on the event loop the process could
not answer, and the check would stop at :data:`BOUND_S`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import requests
import sqlalchemy as sa

from tests.harness import AcrLocal

#: How long a check waits for what must happen at once; reaching it is the failure, never a measurement.
BOUND_S = 30.0


@contextmanager
def one_process(data: Path) -> Iterator[AcrLocal]:
    """A server of one process (so that a probe meets the event loop a waiting statement would stop) on a private
    PostgreSQL database, stopped when the block ends."""
    server = AcrLocal(data, "--workers", "1", backend="postgresql")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def waiters(conn: sa.Connection, table: str) -> int:
    """How many other sessions wait for a lock on ``table`` (statements queued behind one the caller holds)."""
    return int(conn.execute(sa.text(
        "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = CAST(:t AS regclass) AND pid <> "
        "pg_backend_pid()"), {"t": table}).scalar_one())


def wait_until(reached: Callable[[], bool], what: str, pending: Future[requests.Response] | None = None) -> None:
    """Return once ``reached()``; fail at :data:`BOUND_S` (naming ``what``), or at once if ``pending``, a request that
    must still be waiting meanwhile, has answered."""
    deadline = time.monotonic() + BOUND_S
    while not reached():
        assert pending is None or not pending.done(), f"answered before {what}: {pending.result().text}"
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.05)


@contextmanager
def own_transaction(engine: sa.Engine, workers: int = 1) -> Iterator[tuple[sa.Connection, ThreadPoolExecutor,
                                                                            sa.Connection]]:
    """``(holder, pool, watcher)``: a transaction of the test's own (``holder``: what it locks or writes stays held
    until the block ends), a pool of ``workers`` threads for the requests that are to wait on it, and an autocommit
    connection to see them waiting (:func:`waiters`). On leaving, whatever happened: the transaction is rolled back
    first (what waits goes on), then the pool's requests finish, then both connections close."""
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    holder = engine.connect()
    try:
        with ThreadPoolExecutor(workers) as pool:
            transaction = holder.begin()
            try:
                yield holder, pool, watcher
            finally:
                transaction.rollback()
    finally:
        holder.close()
        watcher.close()


def served_while_waiting(server: AcrLocal, table: str, send: Callable[[], requests.Response], *,
                         bump: bool = False) -> requests.Response:
    """Hold ``table`` (``ACCESS EXCLUSIVE``) in a transaction of the test's own, ``send()`` in a thread and wait until
    the server's statement is queued behind the lock; check that the server still answers a request that needs no
    SQL and that ``send()`` still waits; then let the lock go and return what ``send()`` got. ``bump``: write first
    in that transaction, so that nothing the server keeps while the database is unchanged answers for the look-up."""
    engine = server.database()
    try:
        with own_transaction(engine) as (holder, pool, watcher):
            if bump:
                holder.execute(sa.text("CREATE TEMPORARY TABLE IF NOT EXISTS served_while_waiting (n int)"))
                holder.execute(sa.text("INSERT INTO served_while_waiting VALUES (1)"))
            holder.execute(sa.text(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE"))
            pending = pool.submit(send)
            wait_until(lambda: waiters(watcher, table) > 0, f"the server's statement queued behind the lock on "
                       f"{table}", pending)
            probe = server.session().get(f"{server.shared}/common/discovery/instance", timeout=BOUND_S)
            assert probe.status_code == 200
            assert not pending.done() and waiters(watcher, table)
        return pending.result(timeout=BOUND_S)
    finally:
        engine.dispose()
