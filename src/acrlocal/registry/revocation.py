"""Whether an access token issued earlier still stands: its admin user still enabled, its scoped token still there
and enabled.

ACR's access tokens live 75 minutes and are checked by signature alone, so disabling the admin user or a scoped
token stops new tokens but not the ones already out. A local tool is expected to act at once, so the data plane
asks :meth:`Revocations.refused` on every request that presents an admin user's or a scoped token's access token
(tokens of Entra principals and anonymous ones need no look-up: their grants are ACR's). A registry deleted is
not served any more, and one made again under its name has another ``uid``, which tokens name
(:mod:`acrlocal.registry.token_codec`).

The answer is read from the database (the ``registries`` row for the admin user, the token's resource through
the scoped-token policy) and kept while the database is unchanged (:class:`~acrlocal.storage.sql.DataVersion`,
which sees commits of every connection and process), so a repeated request costs one ``PRAGMA data_version``
read on SQLite (on PostgreSQL, the current snapshot, read by the request's first round trip). The look-up runs
through the server's :class:`~acrlocal.storage.sql.SqlThread` (off the event loop on PostgreSQL, unless caches
answer it). Database errors propagate: they are not refusals.
"""

from __future__ import annotations

from acrlocal.errors import NotFound
from acrlocal.registry.auth_events import ScopedTokenPolicy
from acrlocal.storage.registries import RegistryRecord, RegistryTable
from acrlocal.storage.sql import DataVersion, SqlThread

#: Subjects whose answers are kept at once; when full, the kept answers are dropped.
ENTRIES = 10_000


class Revocations:
    """Answers for the registries of ``table``, their scoped tokens through ``scoped_tokens`` (``None``: there are
    none), looked up through ``sql`` and kept while ``version`` (``None``: never kept) is unchanged."""

    def __init__(self, table: RegistryTable, scoped_tokens: ScopedTokenPolicy | None, sql: SqlThread,
                 version: DataVersion | None = None) -> None:
        self.table = table
        self.scoped_tokens = scoped_tokens
        self.sql = sql
        self.version = version
        self._kept: dict[tuple[str, str, str | None], tuple[int, str | None]] = {}

    async def refused(self, registry: RegistryRecord, kind: str, subject: str | None) -> str | None:
        """Why an access token of ``kind``/``subject`` for ``registry`` no longer stands, or ``None`` if it does."""
        if kind not in ("admin", "token"):
            return None
        key = (registry.uid, kind, subject)
        version = self.version.current() if self.version is not None else None
        if version is not None:
            kept = self._kept.get(key)
            if kept is not None and kept[0] == version:
                return kept[1]
        reason = await self.sql.run(self._look_up, registry, kind, subject)
        if version is not None:
            if len(self._kept) >= ENTRIES:
                self._kept.clear()
            self._kept[key] = (version, reason)
        return reason

    def _look_up(self, registry: RegistryRecord, kind: str, subject: str | None) -> str | None:
        try:
            current = self.table.get(registry.name)
        except NotFound:
            current = None
        if current is None or current.uid != registry.uid:
            return f"registry {registry.name} has been deleted"
        if kind == "admin":
            if not current.properties.get("adminUserEnabled"):
                return f"the admin user of registry {registry.name} is disabled"
            return None
        policy = self.scoped_tokens
        if subject is None or policy is None or not policy.enabled(current, subject):
            return f"the token {str(subject)[:60]!r} of registry {registry.name} is disabled or has been deleted"
        return None
