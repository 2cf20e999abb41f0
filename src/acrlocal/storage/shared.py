"""What replicas of one server on several machines share through PostgreSQL: cache invalidation and locks.

:class:`DatabaseGenerations` is a :class:`~acrlocal.generations.Generations` whose bumps also reach every other replica.
A bump writes the local slot (the memory-mapped file of this machine's processes), then sends ``NOTIFY
acrlocal_generations, '<replica>:<slot>'`` through the engine's pool and returns once PostgreSQL has taken it, so before
the write's response leaves (a process that starts bumps every slot: ``'<replica>:*'``). Every process LISTENs on a
connection of its own (made in a thread of its own). A request starts with :meth:`DatabaseGenerations.sync`, a round
trip on that connection, driven by the event loop through libpq's non-blocking calls, which also reads the request's
data version: PostgreSQL delivers every notification committed before it ahead of its answer, and each one received
writes a fresh value into its slot, so whatever another replica acknowledged before this request arrived is seen by this
request (read-your-writes through a load balancer without sticky sessions). Requests that arrive during a round trip
share the next one. A round trip that fails (PostgreSQL stopped or unreachable) changes the *epoch* that every
:meth:`current` value carries, so nothing cached before then is trusted; the next one connects again and, once
listening, changes the epoch again (notifications sent while nobody listened are lost). An idle process makes one round
trip a second, which keeps its notifications drained. Every :data:`PEERS_CHECK_S` a process also reads which
processes listen (their connections are named :data:`LISTENER_NAME`); when one has gone, it changes its epoch too,
since that process may have died between a commit and its ``NOTIFY``.

:class:`AdvisoryLocks` gives :mod:`acrlocal.registry.locks` and ARM's write lock PostgreSQL's session advisory
locks (``pg_try_advisory_lock(namespace, key)``) on one connection per process, used from one thread: tried, and
tried again after a short sleep while another replica holds the key. Within a process an asyncio lock orders the
coroutines first, so one session never holds a key twice. A replica that dies, or whose connection is cut, loses
its locks with its session; one that cannot reach the database gets the database's 503. A cut is not silent: the
keys held when the connection is made again are counted lost, and :meth:`AdvisoryLocks.verify` (one round trip on
the lock's own connection, which proves the session that holds the key alive) raises :class:`LockLost`, the
database's 503, before work that relied on the key commits; the next request takes its key on the new session.
ARM's write lock (:class:`DatabaseLock`) makes that check at every commit of its holder's writes, inside the
transaction (:data:`~acrlocal.storage.sql.commit_guard`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import psycopg
import sqlalchemy as sa
from psycopg import pq
from sqlalchemy.engine import Engine

from acrlocal.generations import Generations, slot_of
from acrlocal.storage.sql import SNAPSHOT, LockLost, commit_guard, request_version, serving_version

log = logging.getLogger(__name__)

CHANNEL = "acrlocal_generations"
_SYNC = b"acrlocal_sync"
#: Seconds a request's first round trip waits for PostgreSQL's answer before counting the connection lost.
ANSWER_TIMEOUT_S = 10.0
#: An idle process's round trip: keeps the notifications drained and notices a lost connection.
IDLE_SYNC_S = 1.0
#: How often a process looks at which processes listen (:meth:`DatabaseGenerations._check_listeners`).
PEERS_CHECK_S = 2.0
#: The ``application_name`` of every process's listening connection, by which the others see it live.
LISTENER_NAME = "acrlocal-listener"
_PEERS = b"acrlocal_peers"
#: The listening backends of this database (servers on other databases of the cluster are not peers). Every replica
#: connects as the same role, which sees its own sessions' ``application_name``.
LISTENERS = ("SELECT coalesce(string_agg(pid::text, ',' ORDER BY pid), '') FROM pg_stat_activity "
             f"WHERE application_name = '{LISTENER_NAME}' AND datname = current_database()")


def _raw(engine: Engine) -> Any:
    """A psycopg connection of its own, in autocommit, outside the engine's pool."""
    pooled = engine.raw_connection()
    driver: Any = pooled.driver_connection
    pooled.detach()  # never returned to the pool
    driver.autocommit = True
    return driver


def _unavailable(exc: Exception) -> sa.exc.OperationalError:
    """``exc`` as the error every HTTP layer answers with its protocol's 503 (``storage.sql.database_unavailable``)."""
    return sa.exc.OperationalError("advisory lock", {}, exc)


class DatabaseGenerations(Generations):
    """Generations kept right across replicas over PostgreSQL (see the module's docstring)."""

    def __init__(self, engine: Engine, path: Path | None = None) -> None:
        super().__init__(path)
        self._engine = engine
        self._replica = f"{random.getrandbits(63):x}"
        self._epoch = random.getrandbits(64)
        self._conn: Any = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="generations")
        self._waiting: asyncio.Future[int | None] | None = None
        self._running = False
        self._runner: asyncio.Task[None] | None = None
        self._idle: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # bump from any thread
        self._listeners: set[str] | None = None  # the listening backends' pids at the last check
        self._peers_due = 0.0

    # -- Generations ------------------------------------------------------------------------------

    def current(self, key: Any) -> int:
        return super().current(key) ^ self._epoch

    def bump(self, key: Any) -> None:
        super().bump(key)
        with self._engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_notify(CHANNEL, f"{self._replica}:{slot_of(key)}")))
            conn.commit()

    def bump_all(self) -> None:
        """Every slot here, and (``'<replica>:*'``) at every other process of every replica."""
        super().bump_all()
        with self._engine.connect() as conn:
            conn.execute(sa.select(sa.func.pg_notify(CHANNEL, f"{self._replica}:*")))
            conn.commit()

    # -- freshness --------------------------------------------------------------------------------

    async def sync(self) -> int | None:
        """Return once every notification committed before the call has been applied (or the epoch changed), with
        the database's :class:`~acrlocal.storage.sql.DataVersion` read in that round trip, after the call: a
        request may use it as its own (``None`` if the round trip failed)."""
        loop = asyncio.get_running_loop()
        if self._waiting is None:
            self._waiting = loop.create_future()
            if not self._running:
                self._running = True
                self._runner = loop.create_task(self._round_trips())
        return await asyncio.shield(self._waiting)

    async def _round_trips(self) -> None:
        try:
            while self._waiting is not None:
                waiting, self._waiting = self._waiting, None
                position = None
                try:
                    position = await self._round_trip()
                finally:
                    if not waiting.done():
                        waiting.set_result(position)
                if position is not None and time.monotonic() >= self._peers_due:
                    self._peers_due = time.monotonic() + PEERS_CHECK_S
                    await self._check_listeners()
        finally:
            self._running = False

    async def _check_listeners(self) -> None:
        """Drop every cache (a new epoch) when a process that listened is gone: it may have died between a commit
        and its NOTIFY, and nothing else would tell this process what it changed. A process that stopped cleanly,
        or a listening connection made again, costs one refill. Runs on the listening connection after a round
        trip, so requests never wait for it; a failure is the next round trip's to notice."""
        try:
            listed = await self._ask(_PEERS)
        except (psycopg.Error, OSError):
            return
        now = set(filter(None, listed.split(",")))
        if self._listeners is not None and self._listeners - now:
            self._epoch = random.getrandbits(64)
            log.info("%d process(es) listening for notifications went away; caches are read again",
                     len(self._listeners - now))
        self._listeners = now

    async def _round_trip(self) -> int | None:
        loop = asyncio.get_running_loop()
        for _ in range(2):  # a connection the database cut (a restart) is made again at once
            fresh = self._conn is None
            try:
                if self._conn is None:
                    await loop.run_in_executor(self._thread, self._connect)
                return int(await self._ask(_SYNC))
            except (psycopg.Error, OSError) as exc:  # stopped, restarting, unreachable: trust nothing until back
                self._epoch = random.getrandbits(64)
                if self._conn is not None:
                    log.warning("lost the database's notifications (%s); caches are bypassed until it is back", exc)
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                if fresh:
                    return None
        return None

    def _connect(self) -> None:
        """A listening connection (in the thread: connecting blocks), its round trip's statement prepared."""
        conn = _raw(self._engine)
        try:
            conn.add_notify_handler(self._notified)
            conn.execute(f"SET application_name = '{LISTENER_NAME}'")
            conn.execute(f"LISTEN {CHANNEL}")
            for name, statement in ((_SYNC, SNAPSHOT), (_PEERS, LISTENERS)):
                prepared = conn.pgconn.prepare(name, statement.encode())
                if prepared.status != pq.ExecStatus.COMMAND_OK:
                    raise psycopg.OperationalError(prepared.get_error_message().decode(errors="replace"))
            conn.pgconn.nonblocking = 1
        except BaseException:
            with contextlib.suppress(Exception):
                conn.close()
            raise
        self._conn = conn
        self._epoch = random.getrandbits(64)  # what was sent while nobody listened is unknown
        self._listeners = None  # and who listened then: the next check starts afresh

    async def _ask(self, statement: bytes) -> str:
        """The round trip every request makes (shared with those arriving meanwhile), on the event loop through
        libpq's non-blocking calls: the prepared statement sent, the socket's answer read when the loop says it is
        readable, the notifications that came before it handed to psycopg's dispatch as psycopg's own fetch does.
        About 25 µs of CPU, where psycopg's cursor in a thread cost 68 µs and the hop to the thread 70. ``_SYNC``
        reads the snapshot's hash, DataVersion's number, which the request then needs no round trip of its own for;
        ``_PEERS`` the listening processes. The answer is the first row's first column, as text. No answer within
        :data:`ANSWER_TIMEOUT_S` counts as a lost connection."""
        pgconn = self._conn.pgconn
        pgconn.send_query_prepared(statement, None)
        while pgconn.flush():
            await self._ready(pgconn.socket, writing=True)
        while True:
            pgconn.consume_input()
            if not pgconn.is_busy():
                break
            await self._ready(pgconn.socket, writing=False)
        results = []
        while (result := pgconn.get_result()) is not None:
            results.append(result)
        while (notify := pgconn.notifies()) is not None:
            if pgconn.notify_handler is not None:
                pgconn.notify_handler(notify)
        if not results or results[0].status != pq.ExecStatus.TUPLES_OK:
            message = results[0].get_error_message() if results else b"no result"
            raise psycopg.OperationalError(message.decode(errors="replace"))
        value = results[0].get_value(0, 0)
        return value.decode() if value is not None else ""

    @staticmethod
    async def _ready(fd: int, *, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        def late() -> None:
            if not ready.done():
                ready.set_exception(TimeoutError(f"PostgreSQL did not answer within {ANSWER_TIMEOUT_S:g} s"))

        (loop.add_writer if writing else loop.add_reader)(fd, wake)
        timer = loop.call_later(ANSWER_TIMEOUT_S, late)
        try:
            await ready
        finally:
            timer.cancel()
            (loop.remove_writer if writing else loop.remove_reader)(fd)

    def _notified(self, notify: Any) -> None:
        replica, _, slot = notify.payload.partition(":")
        if replica == self._replica:
            return
        if slot.isdigit():
            self.set_slot(int(slot), random.getrandbits(64))
        elif slot == "*":
            Generations.bump_all(self)

    def start(self) -> None:
        """Make the first round trip now and one a second while the process is idle (on the running loop)."""
        async def idle() -> None:
            while True:
                await self.sync()
                await asyncio.sleep(IDLE_SYNC_S)

        self._idle = asyncio.get_running_loop().create_task(idle())

    def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
        self._thread.shutdown(wait=True)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
        super().close()


class AdvisoryLocks:
    """Session advisory locks in ``namespace`` (a 32-bit number of its own per kind of key) on one connection.

    All calls run in one thread, in order. ``_held`` is what the current session holds; when a cut connection is
    made again, what it held moves to ``_lost`` until released, and :meth:`verify` raises :class:`LockLost` for it.
    """

    def __init__(self, engine: Engine, namespace: int) -> None:
        self._engine = engine
        self.namespace = namespace
        self._conn: Any = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="advisory-locks")
        self._held: set[int] = set()
        self._lost: set[int] = set()

    def _call(self, sql: str, *args: int) -> bool:
        while True:  # a connection the database cut (a restart) is made again once
            fresh = self._conn is None
            try:
                if self._conn is None:
                    self._conn = _raw(self._engine)
                cur = self._conn.execute(sql, args)
                row = cur.fetchone()
                return bool(row[0]) if row else False
            except (psycopg.Error, OSError) as exc:
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        self._conn.close()
                    self._conn = None
                    if self._held:  # went with the session: another replica may take them now
                        log.warning("lost %d advisory locks of namespace %#x with their connection (%s)",
                                    len(self._held), self.namespace, exc)
                        self._lost |= self._held
                        self._held = set()
                if fresh:
                    raise _unavailable(exc) from exc

    def _try(self, key: int) -> bool:
        got = self._call("SELECT pg_try_advisory_lock(%s, %s)", self.namespace, key)
        if got:
            self._held.add(key)
            self._lost.discard(key)
        return got

    def _verify(self, key: int) -> None:
        if key in self._held:
            self._call("SELECT true")  # a cut connection moves the key to _lost
        if key not in self._held:
            raise LockLost(self.namespace, key)

    async def acquire(self, key: int) -> None:
        """Hold ``key`` (waiting while another replica holds it); the database's 503 when it cannot be reached."""
        loop = asyncio.get_running_loop()
        delay = 0.001
        while not await loop.run_in_executor(self._thread, self._try, key):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    async def verify(self, key: int) -> None:
        """Return if ``key`` is still held (its session answers a round trip); :class:`LockLost` if it went with a
        cut connection (the connection is made again for the next :meth:`acquire`)."""
        await asyncio.get_running_loop().run_in_executor(self._thread, self._verify, key)

    def verify_blocking(self, key: int) -> None:
        """:meth:`verify` from a thread other than the event loop's (the server's ``SqlThread`` at a commit), waiting
        for this object's thread to make the round trip; raises what it raises."""
        self._thread.submit(self._verify, key).result()

    async def wait_for_commits(self, key: int) -> None:
        """Return once no transaction holds ``key`` of this namespace as a transaction lock
        (``pg_advisory_xact_lock``): one statement on this autocommit connection takes it and lets it go at once.
        The database's 503 when it cannot be reached."""
        await asyncio.get_running_loop().run_in_executor(
            self._thread, self._call, "SELECT pg_advisory_xact_lock(%s, %s) IS NULL", self.namespace, key)

    def release(self, key: int) -> None:
        """Let ``key`` go (queued behind any try of this process's, so local waiters keep their order)."""
        def unlock() -> None:
            self._lost.discard(key)
            if key in self._held:
                self._held.discard(key)
                with contextlib.suppress(sa.exc.OperationalError):  # a lost session has let it go already
                    self._call("SELECT pg_advisory_unlock(%s, %s)", self.namespace, key)

        self._thread.submit(unlock)

    def close(self) -> None:
        self._thread.shutdown(wait=True)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


class DatabaseLock(asyncio.Lock):
    """An :class:`asyncio.Lock` that also holds ``key`` in ``locks`` while held: ARM's write lock across replicas.

    A request that waited for the lock arrived before what the holders before it committed, so what its first
    round trip (:meth:`DatabaseGenerations.sync`) applied misses their changes to cached state (a registry one of
    them made is not yet in this replica's table of registries). With ``generations``, taking the lock makes that
    round trip again and its data version the request's (:func:`~acrlocal.storage.sql.serving_version`, reset with
    the request's own, when the lock is taken while serving a request), so that the work under the lock checks
    against everything committed before it.

    The key goes with its session if the lock's connection is cut, and another replica may take it while the
    holder is still writing. So taking the lock also sets the holder task's
    :data:`~acrlocal.storage.sql.commit_guard`: until it releases the lock, every transaction of that task (or of a
    task it starts meanwhile) that wrote verifies the key right before it commits (:meth:`AdvisoryLocks.verify`,
    one round trip), and a lost key makes the commit raise :class:`LockLost` and roll back. A guard left in a
    context after the release checks nothing.

    The connection may also be cut between that check and the COMMIT. So the check first takes a second key (the
    *commits key*, ``COMMITS | key``) as a transaction lock on the committing transaction's own connection, held
    until it commits or rolls back; and whoever takes the lock waits, once it holds the key, until no transaction
    holds the commits key (:meth:`AdvisoryLocks.wait_for_commits`) before its work reads anything. A commit whose
    check passed before the key went is then read by the next holder; one whose check came after fails it."""

    #: Added to the key for the commits key (keys are small numbers: ARM's write lock is 0).
    COMMITS = 1 << 30

    def __init__(self, locks: AdvisoryLocks, key: int, generations: DatabaseGenerations | None = None) -> None:
        super().__init__()
        self._locks, self._key, self._generations = locks, key, generations
        self._holder: asyncio.Task[Any] | None = None

    async def acquire(self) -> Literal[True]:
        await super().acquire()
        try:
            await self._locks.acquire(self._key)
        except BaseException:
            super().release()
            raise
        try:  # a former holder that lost the key may be committing what it checked before it lost it
            await self._locks.wait_for_commits(self.COMMITS | self._key)
        except BaseException:
            self.release()
            raise
        if self._generations is not None:
            try:
                version = await self._generations.sync()
            except BaseException:
                self.release()
                raise
            given = request_version.get()
            if given is not None and given[0] is asyncio.current_task():  # a request's (not a deployment's task)
                serving_version(version)
        self._holder = holder = asyncio.current_task()
        commit_guard.set(functools.partial(self._still_held, holder))
        return True

    def _still_held(self, holder: asyncio.Task[Any] | None, conn: sa.Connection) -> None:
        """The commit guard of ``holder``'s work, about to commit on ``conn``: the commits key taken there (held
        until the transaction ends), then :class:`LockLost` if the key went with its session while ``holder``
        holds the lock; nothing once it has let the lock go."""
        if holder is not None and self._holder is holder:
            driver: Any = conn.connection.driver_connection  # not through SQLAlchemy: it is committing
            try:
                driver.execute("SELECT pg_advisory_xact_lock(%s, %s)",
                               (self._locks.namespace, self.COMMITS | self._key))
            except psycopg.Error as exc:
                raise _unavailable(exc) from exc
            self._locks.verify_blocking(self._key)

    def release(self) -> None:
        self._holder = None
        try:
            self._locks.release(self._key)
        finally:
            super().release()
