"""What the Entra endpoints look up on every request, kept while the database is unchanged.

A client-credentials request with a client secret reads the tenant, the client's principal, whether its service
principal is enabled and its client secrets: four queries that cost more CPU than all the rest of the request but
the signature. They change only when something writes the directory, so :class:`DirectoryLookups` keeps what it
found together with the database's :class:`~acrlocal.storage.sql.DataVersion`, read before the query, and answers
from it only while the version has not moved: a commit by any connection (this process, another worker of the
server, a command writing the database) drops everything kept. With no version (PostgreSQL while it cannot be
reached, another database) every call queries. A secret's expiry is compared with the clock at each use; what is
kept is the secrets' SHA-256 and expiry, as the database holds them, never a verdict.

Only what exists is kept, so an unknown tenant or client costs its query every time and callers cannot fill memory
with names; at most :attr:`DirectoryLookups.ENTRIES` of each kind are kept (all dropped when full). Called on the
event loop only, as the version is read there; the queries run through ``sql`` (off the loop on PostgreSQL), and
what one finds is kept only if the version did not move while it ran.
"""

from __future__ import annotations

from typing import Any

from acrlocal.identity.directory import Client, Directory, Tenant
from acrlocal.storage.sql import DataVersion, SqlThread


class DirectoryLookups:
    """The tenants and clients of ``directory`` as of the database's current ``version``."""

    ENTRIES = 4096

    def __init__(self, directory: Directory, version: DataVersion | None, sql: SqlThread) -> None:
        self.directory = directory
        self.version = version
        self.sql = sql
        self._stamp: int | None = None
        self._tenants: dict[str, Tenant] = {}
        self._clients: dict[str, Client] = {}

    def _fresh(self) -> bool:
        """Whether what is kept may be used (and what is found kept): drops it all if the database moved."""
        stamp = self.version.current() if self.version is not None else None
        if stamp != self._stamp:
            self._tenants.clear()
            self._clients.clear()
            self._stamp = stamp
        return stamp is not None

    def _keep(self, kept: dict[str, Any], key: str, value: Any, stamp: int | None) -> None:
        """Keep what a query found if the version it was read at is still the current one: another request may
        have seen the database move meanwhile, and what was read before that must not outlive it."""
        if stamp is None or stamp != self._stamp:
            return
        if len(kept) >= self.ENTRIES:
            kept.clear()
        kept[key] = value

    async def tenant(self, tenant_id: str) -> Tenant:
        """The tenant; :class:`~acrlocal.errors.NotFound` if there is none with that id."""
        key = tenant_id.lower()
        fresh = self._fresh()
        stamp = self._stamp
        found = self._tenants.get(key) if fresh else None
        if found is None:
            found = await self.sql.run(self.directory.tenant, key)
            self._keep(self._tenants, key, found, stamp)
        return found

    async def client(self, app_id: str) -> Client | None:
        """The principal whose client id is ``app_id`` and what its secrets are checked against, or ``None``."""
        key = app_id.lower()
        fresh = self._fresh()
        stamp = self._stamp
        found = self._clients.get(key) if fresh else None
        if found is None:
            found = await self.sql.run(self.directory.client, key)
            if found is not None:
                self._keep(self._clients, key, found, stamp)
        return found
