"""The registry's audit log, shaped like ACR's resource-log tables ``ContainerRegistryLoginEvents`` and
``ContainerRegistryRepositoryEvents``: who (identity), what (operation, repository, tag, digest), from where
(caller address, user agent), with what result, when.

- Login events come from the token service (``/oauth2/exchange`` and ``/oauth2/token``, granted or refused) through
  :meth:`AuditLog.record`, the token service's audit hook; so do its refusals of data-plane requests (``Denied``).
- Repository events come from the data plane: ``Push`` (a manifest stored), ``Pull`` (a manifest read with GET),
  ``Delete`` (a manifest or a repository), ``Untag``, and requests a lock refused (``Denied``).

Writing is off the hot path: :meth:`AuditLog.add` appends to a bounded in-memory buffer (when it is full the oldest
entries are dropped and counted, never the request), and a background task writes the buffer every second in one
transaction from the executor. Each table keeps its newest ``max_rows`` rows. Nothing here ever receives a secret:
callers pass identities (object ids, token names), never credentials; descriptions are the callers' reasons.

Reading is :func:`query` (newest first), served to clients by the registry's ``listAuditEvents`` ARM action, so
the CLI never opens the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import Engine

from acrlocal.registry.auth_events import AuthEvent
from acrlocal.registry.authz import Caller
from acrlocal.storage.sql import metadata

log = logging.getLogger(__name__)

LOGIN_TABLE = "ContainerRegistryLoginEvents"
REPOSITORY_TABLE = "ContainerRegistryRepositoryEvents"
CALLER_KEY = "acrlocal.registry.caller"

login_events = sa.Table(
    "audit_login_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("registry", sa.String(50), nullable=False),
    sa.Column("identity", sa.String(200), nullable=True),
    sa.Column("identity_kind", sa.String(20), nullable=True),
    sa.Column("operation", sa.String(40), nullable=False),
    sa.Column("result", sa.String(20), nullable=False),
    sa.Column("description", sa.String(500), nullable=True),
    sa.Column("caller_address", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=True),
    sa.Index("ix_audit_login_registry_time", "registry", "time"),
)

repository_events = sa.Table(
    "audit_repository_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("registry", sa.String(50), nullable=False),
    sa.Column("identity", sa.String(200), nullable=True),
    sa.Column("identity_kind", sa.String(20), nullable=True),
    sa.Column("operation", sa.String(40), nullable=False),
    sa.Column("repository", sa.String(256), nullable=True),
    sa.Column("tag", sa.String(128), nullable=True),
    sa.Column("digest", sa.String(200), nullable=True),
    sa.Column("media_type", sa.String(255), nullable=True),
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Column("result", sa.String(20), nullable=False),
    sa.Column("description", sa.String(500), nullable=True),
    sa.Column("caller_address", sa.String(64), nullable=True),
    sa.Column("user_agent", sa.String(300), nullable=True),
    sa.Index("ix_audit_repository_registry_time", "registry", "time"),
)


@dataclass(frozen=True, slots=True)
class LoginEvent:
    time: float
    registry: str
    identity: str | None
    identity_kind: str | None
    operation: str
    result: str
    description: str | None = None
    caller_address: str | None = None
    user_agent: str | None = None


@dataclass(frozen=True, slots=True)
class RepositoryEvent:
    time: float
    registry: str
    identity: str | None
    identity_kind: str | None
    operation: str
    repository: str | None
    result: str
    tag: str | None = None
    digest: str | None = None
    media_type: str | None = None
    size: int | None = None
    description: str | None = None
    caller_address: str | None = None
    user_agent: str | None = None


Event = LoginEvent | RepositoryEvent

_LIMITS = {"description": 500, "user_agent": 300, "identity": 200, "caller_address": 64, "repository": 256,
           "tag": 128, "digest": 200, "media_type": 255, "operation": 40}


#: Each event class's field names: a row is read field by field (``dataclasses.asdict`` copies every value deeply,
#: a tenth of a batch's write on the token endpoint's hot path).
_FIELDS = {cls: tuple(f.name for f in fields(cls)) for cls in (LoginEvent, RepositoryEvent)}


def _row(event: Event) -> dict[str, Any]:
    row = {name: getattr(event, name) for name in _FIELDS[type(event)]}
    for key, limit in _LIMITS.items():
        value = row.get(key)
        if isinstance(value, str) and len(value) > limit:
            row[key] = value[:limit]
    return row


def _copy(conn: sa.Connection, table: sa.Table, names: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (their columns ``names``) into ``table`` with PostgreSQL's ``COPY``, in ``conn``'s
    transaction: a batch of thousands of events (a busy token endpoint's second) costs a fifth of the CPU that an
    ``INSERT`` a row does through psycopg's pipeline. The rows' strings were cut to their columns' lengths
    (:func:`_row`)."""
    driver: Any = conn.connection.driver_connection
    with driver.cursor() as cursor, cursor.copy(
            f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row[name] for name in names])


class AuditLog:
    """Buffered, bounded writer of audit events (and the token service's audit hook, :meth:`record`)."""

    #: Granted data-plane authorizations are not recorded (see :meth:`record`), so the token service need not
    #: build an event for each of them on the hot path.
    records_granted = False

    def __init__(self, engine: Engine, *, buffer: int = 50_000, max_rows: int = 200_000,
                 interval_s: float = 1.0) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self.interval_s = interval_s
        self._pending: deque[Event] = deque(maxlen=buffer)
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        self._flushes = 0

    # -- writing -----------------------------------------------------------------------------------

    def add(self, event: Event) -> None:
        """Queue an event (never blocks, never raises); the oldest is dropped when the buffer is full."""
        if len(self._pending) == self._pending.maxlen:
            self.dropped += 1
        self._pending.append(event)

    def repository_event(self, request: web.Request, registry: str, operation: str, repository: str | None, *,
                         result: str = "Success", tag: str | None = None, digest: str | None = None,
                         media_type: str | None = None, size: int | None = None,
                         description: str | None = None) -> None:
        """Queue a repository event for this request (identity from the authorized caller, if any)."""
        caller: Caller | None = request.get(CALLER_KEY)
        principal = caller.principal if caller is not None else None
        self.add(RepositoryEvent(
            time=time.time(), registry=registry, identity=principal, identity_kind=getattr(caller, "kind", None),
            operation=operation, repository=repository, result=result, tag=tag, digest=digest,
            media_type=media_type, size=size, description=description, caller_address=request.remote,
            user_agent=request.headers.get("User-Agent")))

    def record(self, event: AuthEvent) -> None:
        """The token service's hook: an ``AuthEvent`` (login, or a data-plane authorization decision). Logins
        go to the login table; refused authorizations to the repository table as ``Denied``; granted ones are
        not recorded (the data plane records what was then done)."""
        try:
            kind = getattr(event, "kind", None)
            outcome = str(getattr(event, "outcome", ""))
            common: dict[str, Any] = dict(
                time=float(getattr(event, "time", time.time())), registry=str(event.registry),
                          identity=getattr(event, "subject", None), identity_kind=getattr(event, "subject_kind", None),
                          description=getattr(event, "detail", None), caller_address=getattr(event, "address", None))
            if kind == "login":
                operation = str(getattr(event, "operation", None) or "Login")
                result = "Success" if outcome in ("granted", "partial") else "Failure"
                self.add(LoginEvent(operation=operation, result=result, **common))
            elif kind == "authorization" and outcome in ("denied", "failed"):
                actions = ",".join(getattr(event, "actions", ()) or ())
                self.add(RepositoryEvent(operation=_operation_of(actions),
                                         repository=getattr(event, "repository", None), result="Denied", **common))
        except Exception:  # the hook must never fail a request
            log.exception("could not record an audit event")

    def _write(self, batch: Sequence[Event]) -> None:
        with self.engine.begin() as conn:
            for table, kind in ((login_events, LoginEvent), (repository_events, RepositoryEvent)):
                rows = [_row(e) for e in batch if isinstance(e, kind)]
                if rows and conn.dialect.name == "postgresql":
                    _copy(conn, table, _FIELDS[kind], rows)
                elif rows:
                    conn.execute(sa.insert(table), rows)
        self._flushes += 1
        if self._flushes % 60 == 1:
            self._trim()

    def _trim(self) -> None:
        with self.engine.begin() as conn:
            for table in (login_events, repository_events):
                newest = conn.execute(sa.select(sa.func.max(table.c.id))).scalar()
                if newest is not None and newest > self.max_rows:
                    conn.execute(sa.delete(table).where(table.c.id <= newest - self.max_rows))

    async def flush(self) -> None:
        """Write everything queued so far, in the executor (one transaction)."""
        if not self._pending:
            return
        batch = list(self._pending)
        self._pending.clear()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._write, batch)
        except Exception:
            log.exception("could not write %d audit events; they are lost", len(batch))
        if self.dropped:
            log.warning("audit buffer was full: %d events were dropped", self.dropped)
            self.dropped = 0

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    def start(self) -> None:
        """Start the writer (on the running event loop); events queued before are written at its first turn."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="registry.audit")

    async def stop(self) -> None:
        """Stop the writer and write what is still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()


def _operation_of(actions: str) -> str:
    """ACR's operation name for a set of requested actions (``pull,push`` → ``Push``)."""
    if "delete" in actions:
        return "Delete"
    if "push" in actions or "metadata_write" in actions:
        return "Push"
    return "Pull"


# -- what the data plane calls ---------------------------------------------------------------------------


def remember(request: web.Request, caller: Caller) -> Caller:
    """Keep the authorized caller on the request, for the events it causes."""
    request[CALLER_KEY] = caller
    return caller


# -- reading ---------------------------------------------------------------------------------------------

_LOGIN_COLUMNS = {"TimeGenerated": "time", "Registry": "registry", "Identity": "identity",
                  "IdentityType": "identity_kind", "OperationName": "operation", "ResultType": "result",
                  "ResultDescription": "description", "CallerIpAddress": "caller_address",
                  "UserAgent": "user_agent"}
_REPOSITORY_COLUMNS = {**_LOGIN_COLUMNS, "Repository": "repository", "Tag": "tag", "Digest": "digest",
                       "MediaType": "media_type", "Size": "size"}
TABLES = {LOGIN_TABLE: (login_events, _LOGIN_COLUMNS), REPOSITORY_TABLE: (repository_events, _REPOSITORY_COLUMNS)}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def query(engine: Engine, registry: str, table: str, *, since: float | None = None, top: int = 100,
          operation: str | None = None, repository: str | None = None) -> list[dict[str, Any]]:
    """The newest ``top`` events of ``table`` (``ContainerRegistryLoginEvents`` or
    ``ContainerRegistryRepositoryEvents``) for ``registry``, newest first, as ACR names the columns. Raises
    ``KeyError`` for an unknown table."""
    sql_table, columns = TABLES[table]
    q = sa.select(sql_table).where(sql_table.c.registry == registry.lower())
    if since is not None:
        q = q.where(sql_table.c.time >= since)
    if operation is not None:
        q = q.where(sql_table.c.operation == operation)
    if repository is not None and "repository" in sql_table.c:
        q = q.where(sql_table.c.repository == repository)
    q = q.order_by(sql_table.c.id.desc()).limit(max(1, min(top, 10_000)))
    with engine.connect() as conn:
        rows = list(conn.execute(q))
    out = []
    for row in rows:
        item = {name: getattr(row, column) for name, column in columns.items()}
        item["TimeGenerated"] = iso(row.time)
        out.append(item)
    return out
