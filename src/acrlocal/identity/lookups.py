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
event loop only, as the version is read there.
"""

from __future__ import annotations

from typing import Any

from acrlocal.identity.directory import Client, Directory, Tenant
from acrlocal.storage.sql import DataVersion


class DirectoryLookups:
    """The tenants and clients of ``directory`` as of the database's current ``version``."""

    ENTRIES = 4096

    def __init__(self, directory: Directory, version: DataVersion | None) -> None:
        self.directory = directory
        self.version = version
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

    def _keep(self, kept: dict[str, Any], key: str, value: Any) -> None:
        if len(kept) >= self.ENTRIES:
            kept.clear()
        kept[key] = value

    def tenant(self, tenant_id: str) -> Tenant:
        """The tenant; :class:`~acrlocal.errors.NotFound` if there is none with that id."""
        key = tenant_id.lower()
        fresh = self._fresh()
        found = self._tenants.get(key) if fresh else None
        if found is None:
            found = self.directory.tenant(key)
            if fresh:
                self._keep(self._tenants, key, found)
        return found

    def client(self, app_id: str) -> Client | None:
        """The principal whose client id is ``app_id`` and what its secrets are checked against, or ``None``."""
        key = app_id.lower()
        fresh = self._fresh()
        found = self._clients.get(key) if fresh else None
        if found is None:
            found = self.directory.client(key)
            if fresh and found is not None:
                self._keep(self._clients, key, found)
        return found
