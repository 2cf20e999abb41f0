"""Which registries this server hosts, and where each one answers.

A registry answers on a loopback port of its own (login server ``localhost:<port>``, no DNS needed) and on the
shared port under the host name ``<name>.<suffix>`` for users who map that name themselves. Registries are
added and removed while the server runs; the control plane calls :meth:`RegistryHosting.create` and
:meth:`RegistryHosting.delete`, exactly as ``acrlocal up`` does for the default registry.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from acrlocal import publiccloud
from acrlocal.config import Settings
from acrlocal.errors import ConfigError, LimitReached, NotFound
from acrlocal.generations import Generations
from acrlocal.listeners import Listeners, reserve_descriptors
from acrlocal.storage.metadata import RegistryMetadata
from acrlocal.storage.registries import RegistryRecord, RegistryTable
from acrlocal.storage.sql import SqlThread, database_unavailable
from acrlocal.tls import LocalCA

log = logging.getLogger(__name__)
REGISTRY_NAME = re.compile(r"^[a-zA-Z0-9]{5,50}\Z")


def check_registry_name(name: str) -> str:
    """The registry name lower-cased; :class:`ConfigError` unless it is 5-50 letters and digits (ACR's rule)."""
    if not REGISTRY_NAME.fullmatch(name):
        raise ConfigError(f"registry name {name!r} must be 5 to 50 letters and digits")
    return name.lower()


#: The generation slot of the list of registries and their properties.
GENERATION = "registries"


class _Taken:
    """The ports registries hold, and the shared port: what a new registry's port must not be."""

    def __init__(self, by_port: dict[int, RegistryRecord], shared: int, offset: int = 0) -> None:
        self.by_port, self.shared, self.offset = by_port, shared, offset

    def __contains__(self, port: object) -> bool:
        return port == self.shared or (isinstance(port, int) and port - self.offset in self.by_port)


class RegistryHosting:
    def __init__(
        self,
        settings: Settings,
        table: RegistryTable,
        listeners: Listeners,
        ca: LocalCA,
        on_change: Callable[[], Awaitable[None]] | None = None,
        content: RegistryMetadata | None = None,
        generations: Generations | None = None,
        *,
        sql: SqlThread,
    ) -> None:
        self.settings = settings
        self.table = table
        # Where the table's reads and writes for a registry made, deleted or opened run (the server's SqlThread:
        # off the event loop on PostgreSQL). The look-ups on the request path read the records kept here; ``fresh``
        # reads the table again, through it too, after another process changed it.
        self.sql = sql
        self.listeners = listeners
        self.ca = ca
        self.on_change = on_change
        self.content = content
        self.runner: web.AppRunner | None = None
        self._by_port: dict[int, RegistryRecord] = {}
        self._by_host: dict[str, RegistryRecord] = {}
        self._by_name: dict[str, RegistryRecord] = {}
        # Another process of the server changing the registries (made, deleted, properties) changes this slot:
        # ``fresh`` reads the records again (``_reloading``: the read under way, with the stamp read before its query)
        # and ``resync`` is told to bring the ports along.
        self.generations = generations or Generations()
        self._stamp = self.generations.current(GENERATION)
        self._reloading: tuple[int, asyncio.Future[None]] | None = None
        self.resync: Callable[[], None] | None = None
        self._syncing = asyncio.Lock()
        self.shared_port = settings.port

    # -- lookups on the hot path -------------------------------------------------------------------

    async def fresh(self) -> None:
        """Bring the records up to date if another process changed the registries since they were read: call it
        before a look-up whose answer must include that change (the request entries that find a registry by port or
        host name, ARM). The look-ups themselves only read memory. The table is read again through the SqlThread,
        once per change: every caller that comes while that read runs awaits the same one. While the database cannot
        be reached the records read last are kept (the request's own queries then answer its protocol's 503), and
        the next call tries again; any other error is raised to every caller awaiting that read."""
        stamp = self.generations.current(GENERATION)
        if stamp == self._stamp:
            return
        if self._reloading is None or self._reloading[0] != stamp:  # none yet, or one begun before this change
            self._reloading = (stamp, asyncio.ensure_future(self._reload(stamp)))
        await asyncio.shield(self._reloading[1])

    async def _reload(self, stamp: int) -> None:
        """Read the table (``stamp``: the generation read before the query) and index what it holds, unless the
        records are already those of the newest generation (a later read, or this process's own change, came first)."""
        try:
            records = await self.sql.run(self.table.all)
        except sa.exc.SQLAlchemyError as exc:
            if database_unavailable(exc):
                return
            raise
        finally:
            if self._reloading is not None and self._reloading[0] == stamp:
                self._reloading = None
        if self._stamp == self.generations.current(GENERATION):
            return
        self._stamp = stamp
        self._by_port.clear()
        self._by_host.clear()
        self._by_name.clear()
        for rec in records:
            self._index(rec)
        if self.resync is not None:
            self.resync()

    def _changed(self) -> None:
        """After this process changed the registries: tell the others."""
        self.generations.bump(GENERATION)
        self._stamp = self.generations.current(GENERATION)

    def by_port(self, port: int) -> RegistryRecord | None:
        """The registry served on local ``port`` (its table port plus ``registry_port_offset``)."""
        return self._by_port.get(port - self.settings.registry_port_offset)

    def by_host(self, host: str) -> RegistryRecord | None:
        """The registry whose host name is ``host`` (``name.suffix``, or Azure's ``name.azurecr.io`` as VMs reach
        it, with or without the port)."""
        found = self._by_host.get(host.rsplit(":", 1)[0].lower() if host.count(":") == 1 else host.lower())
        if found is None and (name := publiccloud.registry_of(host)) is not None:
            found = self._by_name.get(name)
        return found

    def named_in(self, host: str) -> str | None:
        """The registry name a host name stands for (``<name>.<suffix>`` or ``<name>.azurecr.io``, with or without
        the port), whether or not such a registry exists; ``None`` for any other host."""
        hostname = publiccloud.host_of(host)
        name, _, suffix = hostname.partition(".")
        if suffix == self.settings.hostname_suffix.lower() and REGISTRY_NAME.fullmatch(name):
            return name
        return publiccloud.registry_of(host)

    def exists(self, name: str) -> bool:
        return name.lower() in self._by_name

    def get(self, name: str) -> RegistryRecord:
        rec = self._by_name.get(name.lower())
        if rec is None:
            raise NotFound(f"registry {name!r} does not exist")
        return rec

    def all(self) -> list[RegistryRecord]:
        return list(self._by_name.values())

    def first(self, n: int) -> list[RegistryRecord]:
        """The first ``n`` registries served (in the order they were made; the default registry first)."""
        return list(itertools.islice(self._by_name.values(), n))

    def count(self) -> int:
        return len(self._by_name)

    def hostname(self, rec: RegistryRecord) -> str:
        return f"{rec.name}.{self.settings.hostname_suffix}"

    def login_server(self, rec: RegistryRecord) -> str:
        """The login server that needs no DNS: ``localhost:<port>``."""
        return f"localhost:{rec.port}"

    def host_login_server(self, rec: RegistryRecord) -> str:
        """The login server by host name on the shared port: ``<name>.<suffix>:<shared port>``."""
        return f"{self.hostname(rec)}:{self.shared_port}"

    def login_servers(self, rec: RegistryRecord) -> list[str]:
        return [self.login_server(rec), f"127.0.0.1:{rec.port}", self.host_login_server(rec),
                publiccloud.registry_host(rec.name)]

    def describe(self, rec: RegistryRecord) -> dict[str, Any]:
        return {
            "name": rec.name,
            "loginServer": self.login_server(rec),
            "hostLoginServer": self.host_login_server(rec),
            "port": rec.port,
            "properties": rec.properties,
        }

    # -- lifecycle ---------------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext:
        return self.ca.server_context()

    def _index(self, rec: RegistryRecord) -> None:
        self._by_name[rec.name] = rec
        if rec.port is not None:
            self._by_port[rec.port] = rec
        self._by_host[self.hostname(rec)] = rec

    def _unindex(self, rec: RegistryRecord) -> None:
        self._by_name.pop(rec.name, None)
        if rec.port is not None:
            self._by_port.pop(rec.port, None)
        self._by_host.pop(self.hostname(rec), None)

    async def start(self, runner: web.AppRunner) -> None:
        """Open the port of every registry in the table (the ports they had before a restart)."""
        self.runner = runner
        self.ca.serve_names(self._by_host.__contains__)
        for rec in await self.sql.run(self.table.all):
            await self._open(rec)

    async def _open(self, rec: RegistryRecord) -> RegistryRecord:
        assert self.runner is not None, "RegistryHosting.start() first"
        offset = self.settings.registry_port_offset
        if rec.port is not None:
            try:
                sock = await self.listeners.claim(rec.port + offset)
            except LimitReached:
                raise
            except OSError as exc:
                raise ConfigError(
                    f"registry {rec.name!r} needs port {rec.port + offset}, which is in use ({exc.strerror})"
                ) from exc
        else:
            sock = self.listeners.allocate(self.settings.registry_port_base + offset,
                                           _Taken(self._by_port, self.shared_port, offset))
            port = sock.getsockname()[1] - offset
            rec = await self.sql.run(self._set_port, rec.name, port)
        await self.listeners.open(f"registry:{rec.name}", self.runner, sock, self._ssl())
        self._index(rec)
        return rec

    async def sync_listeners(self) -> None:
        """Serve exactly the registries of the table, each on its port: what another process of the server (the
        one that makes and deletes registries) changed. The sockets are that process's (:meth:`Listeners.claim`)."""
        offset = self.settings.registry_port_offset
        async with self._syncing:
            await self.fresh()
            for key in self.listeners.names():
                if key.startswith("registry:"):
                    rec = self._by_name.get(key.split(":", 1)[1])
                    if rec is None or rec.port is None or rec.port + offset != self.listeners.port_of(key):
                        await self.listeners.close(key)
            for rec in list(self._by_name.values()):
                key = f"registry:{rec.name}"
                if rec.port is None or self.listeners.port_of(key) is not None or self.runner is None:
                    continue
                try:
                    sock = await self.listeners.claim(rec.port + offset)
                except OSError as exc:
                    log.warning("registry %s: cannot serve port %d here (%s)", rec.name, rec.port + offset, exc)
                    continue
                await self.listeners.open(key, self.runner, sock, self._ssl())

    async def create(self, name: str, properties: dict[str, Any] | None = None) -> RegistryRecord:
        """Add a registry and start serving it at once. Raises ``AlreadyExists`` or ``ConfigError``."""
        name = check_registry_name(name)
        reserve_descriptors(f"registry {name!r}'s port")
        rec = await self.sql.run(self.table.add, name, None, properties or {})
        try:
            await asyncio.to_thread(self.ca.host_context, self.hostname(rec))
            rec = await self._open(rec)
        except BaseException:
            self.table.remove(name)  # (inline: this path may be a cancellation, which must not wait)
            raise
        self._changed()
        if self.on_change:
            await self.on_change()
        return rec

    def _set_port(self, name: str, port: int) -> RegistryRecord:
        self.table.set_port(name, port)
        return self.table.get(name)

    def refresh(self, name: str) -> RegistryRecord:
        """Reload a registry's record after its properties changed in the table."""
        rec = self.table.get(name)
        self._index(rec)
        self._changed()
        return rec

    async def delete(self, name: str) -> None:
        """Stop serving a registry and forget it with its repositories, manifests, tags and upload sessions.
        Blob bytes no other registry links are deleted by the data plane's sweeper. :class:`NotFound` if there is no
        such registry (one another process made counts)."""
        await self.fresh()
        rec = self.get(name)
        await self.listeners.close(f"registry:{rec.name}")
        self._unindex(rec)
        if self.content is not None:  # as long as the registry's content is large
            await self.sql.run_long(self.content.delete_registry, rec.id)
        await self.sql.run(self.table.remove, rec.name)
        self._changed()
        if self.on_change:
            await self.on_change()
