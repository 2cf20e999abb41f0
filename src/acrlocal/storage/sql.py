"""The SQL engine and the one :class:`~sqlalchemy.MetaData` every room's tables are declared on.

Each room declares its tables on :data:`metadata` in its own module, and storage names none of them: the tables
are those of the rooms the server is assembled from (``import acrlocal.server`` declares them all).

SQLite runs in WAL mode with ``synchronous=NORMAL`` (a commit survives a process crash; an OS crash may lose the
last commits but never corrupts), foreign keys on, and a busy timeout so that a second process (the CLI reading
state) waits instead of failing. The same tables work on PostgreSQL; only :func:`open_engine` knows the
difference. The schema is made and changed by migrations (:mod:`acrlocal.storage.schema`), never by
``create_all``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import functools
import os
import pickle
import sqlite3
import sys
import threading
import time
import traceback
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.errors import AcrLocalError, ValueTooLong
from acrlocal.files import PRIVATE, make_private

metadata = sa.MetaData()

#: How long a SQLite connection waits for another connection's write lock before its statement fails as busy.
BUSY_TIMEOUT_MS = 10_000

#: Set while :class:`SqlThread` runs a call inline on the event loop (SQLite): the number of commits the call has
#: made, which the engine's ``commit`` listener counts. Connections checked out meanwhile do not wait for another
#: writer's lock (busy timeout 0): the call fails at once and, if it has committed nothing, runs again in the thread.
_inline_call: ContextVar[list[int] | None] = ContextVar("acrlocal_sqlite_inline_call", default=None)

#: Set while :class:`SqlThread` tries a call on the event loop on PostgreSQL: asking the engine for a connection
#: raises :class:`NeedsDatabase` instead of waiting for the network.
_memory_only: ContextVar[bool] = ContextVar("acrlocal_memory_only", default=False)


class NeedsDatabase(BaseException):
    """Raised by an engine's pool (:class:`RefusingPool`) when a call that :class:`SqlThread` tried on the event loop
    asks for a connection: the call needs the database, and runs again, whole, in the thread. A
    :class:`BaseException`, like :class:`GeneratorExit`, so that no ``except Exception`` on the way takes it for the
    database's own error."""


class RefusingPool(sa.pool.QueuePool):
    """SQLAlchemy's default pool for a server database, which refuses a connection (:class:`NeedsDatabase`, before
    any is checked out) while :class:`SqlThread` runs a call on the event loop."""

    def connect(self) -> Any:
        if _memory_only.get():
            raise NeedsDatabase
        return super().connect()


def _sqlite_pragmas(dbapi_conn: Any, record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.close()
    record.info["busy_timeout"] = BUSY_TIMEOUT_MS


def _sqlite_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    """No waiting for a lock on the event loop (see :data:`_inline_call`); the full busy timeout elsewhere. The
    pragma is sent only when the connection's setting changes."""
    wanted = 0 if _inline_call.get() is not None else BUSY_TIMEOUT_MS
    if record.info.get("busy_timeout") != wanted:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={wanted}")
        cur.close()
        record.info["busy_timeout"] = wanted


def _count_inline_commit(_conn: Any) -> None:
    commits = _inline_call.get()
    if commits is not None:
        commits[0] += 1


def sqlite_busy(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's ``SQLITE_BUSY`` (another connection holds the lock a statement needs)."""
    orig = getattr(exc, "orig", None)
    return isinstance(orig, sqlite3.OperationalError) and \
        (getattr(orig, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY


def _private_database_files(database: str | None) -> None:
    """The SQLite file holds secrets (password hashes, token records): make it 0600 before SQLite opens it, whatever
    the umask, and narrow its -wal and -shm files if they exist (SQLite creates those with the database file's
    mode)."""
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    make_private(path)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(path.with_name(path.name + suffix), PRIVATE)


def open_engine(url: str, *, upgrade: bool = True) -> Engine:
    """An engine for ``url``, its schema upgraded to the newest migration unless ``upgrade`` is false (see
    :mod:`acrlocal.storage.schema`). SQLite files get their pragmas on every connection; ``postgresql://`` URLs
    use psycopg 3. A malformed URL raises ``sqlalchemy.exc.ArgumentError``."""
    parsed = sa.engine.make_url(url)
    if parsed.drivername == "sqlite":
        _private_database_files(parsed.database)
        engine = sa.create_engine(parsed, connect_args={"check_same_thread": False})
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "checkout", _sqlite_checkout)
        sa.event.listen(engine, "commit", _count_inline_commit)
    else:
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")  # psycopg 3 (SQLAlchemy's default is psycopg2)
        engine = sa.create_engine(parsed, pool_pre_ping=True, poolclass=RefusingPool)
        sa.event.listen(engine, "begin", _begun)
        sa.event.listen(engine, "before_cursor_execute", _note_write)
        sa.event.listen(engine, "commit", _guard_commit)
    sa.event.listen(engine, "before_execute", _check_lengths)
    if upgrade and not at_newest_migration(engine):
        _upgrade(engine)
    return engine


def _upgrade(engine: Engine) -> None:
    """Upgrade ``engine``'s database to the newest migration. Alembic (with Mako, and Pygments where installed) is
    about 8 MiB of resident memory that a server keeps for its whole life once imported, so unless this process has
    imported it already (``acrlocal migrate``, the tests), the upgrade runs in a forked child that exits when it is
    done. The child's exception is raised here: an :class:`AcrLocalError` as it was, any other as a
    :class:`RuntimeError` naming it, after the child printed its traceback on stderr."""
    if "alembic" in sys.modules or not hasattr(os, "fork"):
        from acrlocal.storage import schema

        schema.upgrade(engine)
        return
    engine.dispose(close=False)  # the child opens connections of its own and leaves the parent's alone
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: upgrade, report, exit without running the parent's clean-ups
        os.close(reader)
        status = 0
        try:
            from acrlocal.storage import schema

            schema.upgrade(engine)
            engine.dispose()
        except BaseException as exc:  # everything goes back to the parent
            status = 1
            if not isinstance(exc, AcrLocalError):
                traceback.print_exc()
                exc = RuntimeError(f"the schema upgrade failed: {type(exc).__name__}: {exc}")
            try:
                report = pickle.dumps(exc)
            except Exception:  # an exception that does not pickle is reported by its text
                report = pickle.dumps(RuntimeError(f"the schema upgrade failed: {exc}"))
            with os.fdopen(writer, "wb") as pipe:
                pipe.write(report)
        finally:
            sys.stderr.flush()
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader, "rb") as pipe:
        report = pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    if report:
        try:
            error = pickle.loads(report)  # from our own child, over a pipe no one else holds
        except Exception as exc:  # an exception class that does not unpickle
            raise RuntimeError(f"the schema upgrade failed, and its error could not be read: {exc}") from None
        raise error
    if os.waitstatus_to_exitcode(wait_status) != 0:
        raise RuntimeError(f"the schema upgrade's process ended with status {os.waitstatus_to_exitcode(wait_status)}")


#: What must hold for the current task's work to commit: a check, given the committing connection (e.g. that the lock
#: the work relies on is still held), that raises, an :class:`~sqlalchemy.exc.OperationalError` such as
#: :class:`LockLost` (the database's 503), when it does not. Set by the holder of such a lock
#: (:class:`acrlocal.storage.shared.DatabaseLock`) in its task's context, which :class:`SqlThread` carries into its
#: thread; ``None``: nothing to check.
commit_guard: ContextVar[Callable[[sa.Connection], None] | None] = ContextVar("acrlocal_commit_guard", default=None)

#: ``Connection.info`` key: the transaction under way has sent a statement other than a SELECT.
_WROTE = "acrlocal_wrote"


def _begun(conn: sa.Connection) -> None:
    conn.info.pop(_WROTE, None)


def _note_write(conn: sa.Connection, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
    if statement.lstrip()[:6].upper() != "SELECT":  # INSERT, UPDATE, DELETE, WITH...: counted as a write
        conn.info[_WROTE] = True


def _guard_commit(conn: sa.Connection) -> None:
    """Before a PostgreSQL transaction that wrote commits: the task's :data:`commit_guard`, if it set one. What it
    raises comes out of the commit, and the transaction is rolled back (``engine.begin()``'s block does so, as does
    closing the connection). A transaction that only read (the NOTIFY of a bump, after the write it announces has
    committed) is not checked."""
    guard = commit_guard.get()
    if guard is not None and conn.info.get(_WROTE):
        guard(conn)


#: The migrations of :mod:`acrlocal.storage.schema`: each file is named after its revision, numbered in order.
MIGRATION_FILES = Path(__file__).with_name("migrations") / "versions"


def at_newest_migration(engine: Engine) -> bool:
    """Whether ``engine``'s database is at the newest migration, read without Alembic: importing it (with Mako,
    and Pygments where installed) costs 2-8 MiB of resident memory that a server whose database is up to date
    never uses. ``False`` for a new database, an older one, or one that cannot be read (the upgrade says why)."""
    newest = max(p.name.split("_")[0] for p in MIGRATION_FILES.glob("[0-9]*.py"))
    try:
        with engine.connect() as conn:
            at = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    except sa.exc.DBAPIError:  # no such table: a new database, or one made before migrations
        return False
    return at == [newest]


_limits: dict[sa.TableClause, dict[str, int]] = {}


def _lengths(table: sa.TableClause) -> dict[str, int]:
    found = _limits.get(table)
    if found is None:
        found = {c.key: c.type.length for c in table.columns
                 if isinstance(c.type, sa.String) and c.type.length is not None}
        _limits[table] = found
    return found


def _check(table: sa.TableClause, limits: dict[str, int], values: Any) -> None:
    items = values.items() if isinstance(values, dict) else ()
    for key, value in items:
        name = key if isinstance(key, str) else getattr(key, "key", None)
        if isinstance(value, sa.BindParameter):
            value = value.value
        if isinstance(value, str) and name in limits and len(value) > limits[name]:
            raise ValueTooLong(table.name, name, limits[name], len(value))


def _check_lengths(conn: Any, statement: Any, multiparams: Any, params: Any, options: Any) -> None:
    """Refuse an INSERT or UPDATE whose string value is longer than its column (``String(n)``), on every backend,
    before the database sees it: raises :class:`~acrlocal.errors.ValueTooLong`."""
    if not isinstance(statement, sa.Insert | sa.Update) or not isinstance(statement.table, sa.TableClause):
        return
    table = statement.table
    limits = _lengths(table)
    if not limits:
        return
    _check(table, limits, statement._values or {})
    for rows in statement._multi_values:
        for row in rows:
            _check(table, limits, row)
    for given in (*(multiparams or ()), params):
        for row in given if isinstance(given, list | tuple) else (given,):
            _check(table, limits, row)


#: Seconds a client is told to wait (``Retry-After``) while the database cannot be reached.
RETRY_AFTER_S = 5


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says that the database cannot be reached now (stopped, restarting, its connections cut, the
    pool exhausted, SQLite busy past its timeout) rather than that a statement is wrong: the HTTP layers answer it
    with their protocol's 503 and ``Retry-After``, and the engine's pool reconnects once the database is back."""
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa.exc.OperationalError) and type(exc.orig).__module__ == "sqlite3":
        return any(word in str(exc.orig) for word in ("locked", "busy"))  # not "no such table": a defect
    return isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.TimeoutError)


class LockLost(AcrLocalError, sa.exc.OperationalError):
    """A key this process held was lost with its session (the connection was cut: PostgreSQL restarted, or the
    backend was terminated), so another replica may hold it now: the work that relied on it must not commit. An
    :class:`~sqlalchemy.exc.OperationalError`, so every HTTP layer answers its protocol's 503 with ``Retry-After``."""

    def __init__(self, namespace: int, key: int) -> None:
        super().__init__(f"advisory lock ({namespace:#x}, {key})", {}, ConnectionError(
            f"the session holding advisory lock ({namespace:#x}, {key}) was cut; the work under it was not "
            "committed"))


def unique_violation(exc: BaseException) -> bool:
    """Whether ``exc`` is a unique key refusing a row that another writer has just inserted (PostgreSQL's SQLSTATE
    23505, SQLite's "UNIQUE constraint failed"): after a check found no such row, the loser of a race."""
    if not isinstance(exc, sa.exc.IntegrityError):
        return False
    return getattr(exc.orig, "sqlstate", None) == "23505" or "UNIQUE constraint failed" in str(exc.orig)


def after_the_winner(engine: Engine, work: Callable[[sa.Connection], None], *, attempts: int = 3) -> None:
    """Run ``work`` in a transaction of its own, and again (up to ``attempts`` in all) when a unique index refused
    what it wrote because another writer committed that row first; the next transaction sees the winner's row, so
    the two end as one of their serial orders. Meant for writes that first change the rows a unique index guards and
    then insert (a rotation retiring the one active key before adding the next): on PostgreSQL (read committed) an
    ``UPDATE`` does not see a row committed after it began, so a racing writer's row is found only by the index. Any
    other error, and the last attempt's unique violation, propagate; nothing of a refused attempt is committed."""
    for attempt in range(1, attempts + 1):
        try:
            with engine.begin() as conn:
                work(conn)
            return
        except sa.exc.IntegrityError as exc:
            if attempt == attempts or not unique_violation(exc):
                raise


def replace_active(engine: Engine, table: sa.Table, row: dict[str, Any], *scope: Any) -> None:
    """Retire the unretired row of ``table`` within ``scope`` (conditions on its columns; none: the whole table) and
    insert ``row`` as the active one, in one transaction (never a moment with every row retired), the old row's
    ``retired`` and the new one's ``created`` the same instant. For tables whose unique index allows one unretired
    row a scope (the signing keys): a writer that raced another's runs again after it (:func:`after_the_winner`),
    so the two end as the rotations in turn. Database errors propagate, with nothing written."""

    def retire_and_add(conn: sa.Connection) -> None:
        now = time.time()
        conn.execute(sa.update(table).where(*scope, table.c.retired.is_(None)).values(retired=now))
        conn.execute(sa.insert(table).values({**row, "created": now}))

    after_the_winner(engine, retire_and_add)


def add_active(engine: Engine, table: sa.Table, row: dict[str, Any], *scope: Any) -> None:
    """Insert ``row`` as the active (unretired) row of ``table`` within ``scope``, unless there is one: another
    process made it meanwhile, and that one stays. See :func:`replace_active`."""

    def add_unless_made(conn: sa.Connection) -> None:
        write_transaction(conn)  # SQLite: what is read next is what the insert goes against
        if conn.execute(sa.select(table).where(*scope, table.c.retired.is_(None)).limit(1)).first() is None:
            conn.execute(sa.insert(table).values({**row, "created": time.time()}))

    after_the_winner(engine, add_unless_made)


def racing_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT into ``table`` with ``on_conflict_do_nothing`` and ``on_conflict_do_update`` (``ON CONFLICT``,
    which PostgreSQL and SQLite both have), for rows that writers in other processes or threads may insert at the
    same time: a check-then-insert would fail with a unique violation for the later one."""
    return dialect_insert(conn.dialect.name, table)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """:func:`racing_insert` for the dialect named ``dialect``, for a statement built before any connection."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def byte_ordered(length: int) -> sa.types.TypeEngine[str]:
    """A string column compared and sorted byte by byte on every backend, for prefix ranges (``key/`` up to
    ``key0``) and OCI's lexical order of names: SQLite's default (``BINARY``) and PostgreSQL's ``C`` collation (a
    database's own collation, e.g. ``en_US``, sorts ignoring punctuation first)."""
    return sa.String(length).with_variant(sa.String(length, collation="C"), "postgresql")


def write_transaction(conn: sa.Connection) -> None:
    """Make what ``conn``'s transaction reads from now on what it writes against, on SQLite: take the database's
    write lock now (``BEGIN IMMEDIATE``) instead of at the first write, so that no other connection (another process
    of the server) commits between a check and the write it guards. SQLite's driver starts a transaction only at
    the first INSERT, UPDATE or DELETE; one already started holds the lock. On PostgreSQL this does nothing: there
    the statements lock the rows they rely on (``FOR SHARE``, ``FOR UPDATE``)."""
    if conn.dialect.name != "sqlite":
        return
    driver = conn.connection.driver_connection
    if driver is not None and not driver.in_transaction:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class NamedLock:
    """A lock with one holder at a time among every process and replica that uses the database: on PostgreSQL a
    session-level advisory lock (``pg_try_advisory_lock``) on a connection of its own, held until :meth:`release`;
    on SQLite an ``flock`` on a file beside the database (``<database>-<name>.lock``), which every process of the
    machine that opens the database sees. A holder that dies releases it with its connection or its process.

    :meth:`acquire` never waits (the caller decides whether to try again) and blocks for one round trip at most;
    a PostgreSQL that cannot be reached raises as any statement would. A holder whose connection was cut (a
    restart, a terminated backend) has lost the lock: :meth:`verify`, one round trip on that connection, says so
    with an :class:`~sqlalchemy.exc.OperationalError` (the database's 503), so the holder stops."""

    def __init__(self, engine: Engine, name: str) -> None:
        self.name = name
        self._engine = engine
        self._key = zlib.crc32(f"acrlocal:{name}".encode()) | (0x6163 << 32)  # a 64-bit key of its own
        self._conn: sa.Connection | None = None
        self._fd: int | None = None
        self._local = threading.Lock()  # an in-memory SQLite database: one process
        database = engine.url.database
        self._path = (Path(f"{database}-{name}.lock")
                      if engine.dialect.name == "sqlite" and database and database != ":memory:"
                      and not database.startswith("file:") else None)

    def acquire(self) -> bool:
        """Take the lock if nobody holds it; ``False`` (nothing held) if someone does, this process included."""
        if self._engine.dialect.name == "postgresql":
            conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            try:
                got = bool(conn.execute(sa.select(sa.func.pg_try_advisory_lock(self._key))).scalar_one())
            except BaseException:
                conn.close()
                raise
            if not got:
                conn.close()
                return False
            self._conn = conn
            return True
        if self._path is None:
            return self._local.acquire(blocking=False)
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: a second open in this process waits too
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def verify(self) -> None:
        """Return if the lock is still held; the database's 503 (nothing held any more) if its session was cut."""
        if self._conn is None:
            return  # a file lock, or an in-process one: held while the process lives
        try:
            self._conn.execute(sa.select(sa.literal(1)))
        except sa.exc.DBAPIError as exc:
            conn, self._conn = self._conn, None
            conn.invalidate()
            conn.close()
            raise sa.exc.OperationalError(f"lock {self.name!r}", {}, ConnectionError(
                f"the session holding the lock {self.name!r} was cut; another process may hold it now")) from exc

    def release(self, *, remove: bool = False) -> None:
        """Give the lock back (the holder only; nothing to do if :meth:`verify` found it lost). ``remove``: also
        remove SQLite's lock file, for a name that nobody will use again."""
        if self._engine.dialect.name == "postgresql" and self._conn is None:
            return
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.execute(sa.select(sa.func.pg_advisory_unlock(self._key)))
            except BaseException:
                conn.invalidate()  # never back to the pool holding the lock: closing the session releases it
                raise
            finally:
                conn.close()
        elif self._fd is not None:
            fd, self._fd = self._fd, None
            if remove and self._path is not None:
                with contextlib.suppress(FileNotFoundError):
                    self._path.unlink()  # before the flock goes: a process waiting for it finds it gone anyway
            os.close(fd)  # drops the flock
        elif self._path is None:
            self._local.release()


P = ParamSpec("P")
T = TypeVar("T")


class SqlThread:
    """Where the stores' calls run for the event loop: inline on SQLite, in one thread of its own elsewhere.

    A SQLite statement is a few microseconds on a local file, less than a hop to a thread, so it runs where it is
    called. A PostgreSQL statement waits for a network round trip, which must not stop the event loop: calls go to
    one thread, in the order they were made, each whole before the next starts, as they run inline. So a store's
    method and a check followed by a write in one function (:meth:`run` takes any callable) stay atomic with
    respect to the others, as the stores and their in-process caches expect. Exceptions come back to the caller.
    A call runs in a copy of the caller's context (as :func:`asyncio.to_thread`), so the caller's
    :data:`commit_guard` checks the commits it makes.

    On PostgreSQL a call is first tried on the event loop, when the thread has nothing to do (so the order holds):
    a call answered from the stores' caches (a manifest HEAD, a repository's locks) needs no round trip, and the hop
    to the thread and back cost more than the call. The engine's pool (:class:`RefusingPool`) refuses it a
    connection meanwhile, so a call that needs the database stops at its first statement, before anything reached
    the network, and runs again, whole, in the thread: what it did before (reading the caches) it does again. An
    engine with another pool is never tried on the loop.

    Inline, a call does not wait for another writer's lock (another process of the server writing, or this one's
    thread): its statement fails at once as busy and, if the call has committed nothing yet, the call runs again,
    whole, in the thread, which waits up to :data:`BUSY_TIMEOUT_MS`. A call that had committed raises the error (the
    HTTP layers answer their 503): calls that may commit more than once go through :meth:`run_long`.

    A call whose cost grows with the data it touches (deleting a repository of 100,000 tags takes a second) goes
    through :meth:`run_long`: to the thread on SQLite too, and the calls made while it runs follow it there, in
    order, instead of running inline beside it. Only SQL waits for it, as on PostgreSQL; the event loop goes on
    serving what needs none.
    """

    def __init__(self, engine: Engine) -> None:
        self._sqlite = engine.dialect.name == "sqlite"
        self._refusing = isinstance(engine.pool, RefusingPool)  # calls may be tried on the loop
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="sql")
        self._handed = 0  # calls given to the thread that have not come back (SQLite runs inline only at 0)

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._sqlite and not self._handed:
            commits = [0]
            token = _inline_call.set(commits)
            try:
                return fn(*args, **kwargs)
            except sa.exc.OperationalError as exc:
                if commits[0] or not sqlite_busy(exc):
                    raise
            finally:
                _inline_call.reset(token)
            # Another writer (a process of the same server, or this one's thread) holds SQLite's lock, and the call
            # committed nothing: the whole call again, in the thread, where it waits for the lock while the loop
            # goes on.
        elif self._refusing and not self._handed:
            trying = _memory_only.set(True)
            try:
                return fn(*args, **kwargs)
            except NeedsDatabase:
                pass  # it asked for a connection: nothing reached the database, the whole call goes to the thread
            finally:
                _memory_only.reset(trying)
        return await self._in_thread(fn, *args, **kwargs)

    async def run_long(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """:meth:`run` in the thread on every backend, for a call whose cost grows with the data it touches, or one
        that may commit more than once (a control-plane write: a resource and then its children, an application
        and then its owner). Inline, such a call that finds another writer's lock after its first commit could only
        raise (running it again would repeat that commit); in the thread it waits for the lock between its commits
        as on PostgreSQL."""
        return await self._in_thread(fn, *args, **kwargs)

    async def _in_thread(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        context = contextvars.copy_context()  # the caller's, as asyncio.to_thread: its commit_guard applies
        self._handed += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._pool, functools.partial(context.run, fn, *args, **kwargs))
        finally:
            self._handed -= 1

    def close(self) -> None:
        self._pool.shutdown(wait=True)


#: What :class:`DataVersion` reads on PostgreSQL: the current snapshot (which transactions have ended), as a 64-bit
#: hash.
SNAPSHOT = "SELECT hashtextextended(pg_current_snapshot()::text, 0)"
#: The :class:`DataVersion` read for the request being served, by the round trip it made first (PostgreSQL's
#: replicas, ``storage/shared.py``): read after the request arrived, it is as good for everything the request
#: computes from the database afterwards, so :meth:`DataVersion.current` answers it without a round trip of its
#: own. Set with the task that serves the request (:func:`serving_version`), and answered in that task only: a task
#: the handler starts, which may outlive the request, copies the context but reads versions of its own.
request_version: ContextVar[tuple[object, int] | None] = ContextVar("acrlocal_request_data_version", default=None)


def _current_task() -> object:
    try:
        return asyncio.current_task()
    except RuntimeError:  # a thread given a copy of the context (asyncio.to_thread): no task, no loop
        return None


def serving_version(version: int | None) -> Token[tuple[object, int] | None]:
    """Make ``version`` the current task's :data:`request_version` (``None``: none); reset it with the token."""
    return request_version.set(None if version is None else (asyncio.current_task(), version))


class DataVersion:
    """A number that changes whenever any connection commits to the database, read in microseconds.

    For SQLite it is ``PRAGMA data_version`` on a connection of its own that never writes ("different if changes
    were committed to the database by any other connection in the interim" — every other connection, in this
    process or another). For PostgreSQL it is a hash of the current snapshot (``pg_current_snapshot()``: the
    oldest transaction still running, the next one to start, and those running in between) on a connection of its
    own: two equal snapshots see the same committed data, and a commit (or rollback) by any replica or client ends
    a transaction, which changes the snapshot of everyone who looks afterwards. It does not move while a long write
    is under way, as the write-ahead log's position does with every row (the audit log's batch of thousands of
    rows moved it some 500 times a second, each time discarding what the token service kept); it also moves for
    commits this caller does not care about, which only costs a recomputation. The number is only ever compared for
    equality. Callers use it to keep a result computed from database state for exactly as long as that state has not
    changed. ``None`` means nothing may be kept: any other database, or PostgreSQL while it cannot be reached (the
    connection is made again on the next call).
    """

    _SNAPSHOT = SNAPSHOT.encode()

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._conn: Any = None
        self._pq: Any = None  # PostgreSQL: libpq's connection under psycopg's, the statement prepared on it
        self._query = {"sqlite": "PRAGMA data_version",
                       "postgresql": SNAPSHOT}.get(engine.dialect.name)

    def current(self) -> int | None:
        if self._query is None:
            return None
        given = request_version.get()
        if given is not None and given[0] is _current_task():
            return given[1]
        if self._engine.dialect.name == "postgresql":
            return self._snapshot()
        if self._conn is None:
            self._conn = self._engine.raw_connection()
        cur = self._conn.cursor()
        try:
            cur.execute(self._query)
            return int(cur.fetchone()[0])
        finally:
            cur.close()

    def _snapshot(self) -> int | None:
        """One round trip of a statement prepared once, through libpq (``psycopg.pq``) directly: psycopg's cursor
        costs 68 µs of CPU a read on this machine, the prepared statement 17 µs, and it is read on every token
        request. Any failure closes the connection (made again on the next call) and answers ``None``."""
        from psycopg import pq

        try:
            if self._pq is None:
                self._conn = self._engine.raw_connection()
                self._conn.driver_connection.autocommit = True
                pgconn = self._conn.driver_connection.pgconn
                prepared = pgconn.prepare(b"acrlocal_data_version", self._SNAPSHOT)
                if prepared.status != pq.ExecStatus.COMMAND_OK:
                    raise RuntimeError(prepared.get_error_message().decode(errors="replace"))
                self._pq = pgconn
            result = self._pq.exec_prepared(b"acrlocal_data_version", None)
            if result.status != pq.ExecStatus.TUPLES_OK:
                raise RuntimeError(result.get_error_message().decode(errors="replace"))
            return int(result.get_value(0, 0))
        except Exception:
            self.close()
            return None

    def close(self) -> None:
        self._pq = None
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
