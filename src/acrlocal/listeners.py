"""Loopback listeners that come and go while the server runs (a port per registry, an IMDS port per VM).

Ports are bound here, before aiohttp sees them, so that allocation and binding are one step: a port handed out
is a port this process holds. Closing a listener stops new connections; requests in flight finish.
"""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterable

from aiohttp import web

from acrlocal.errors import ConfigError

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: the system chooses). Raises ``OSError``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listeners:
    """Named sites on aiohttp runners. Keys are free-form (``"registry:myreg"``, ``"imds:vm1"``)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._sites: dict[str, tuple[web.SockSite, int]] = {}

    def ports(self) -> set[int]:
        return {port for _, port in self._sites.values()}

    def port_of(self, key: str) -> int | None:
        entry = self._sites.get(key)
        return entry[1] if entry else None

    def allocate(self, base: int, taken: Iterable[int] = ()) -> socket.socket:
        """Bind the first free port at or above ``base`` (any port if ``base`` is 0)."""
        if base == 0:
            return bind(self.host, 0)
        avoid = set(taken) | self.ports()
        for port in range(base, min(base + 2000, 65536)):
            if port in avoid:
                continue
            try:
                return bind(self.host, port)
            except OSError:
                continue
        raise ConfigError(f"no free port on {self.host} from {base} upward")

    async def open(
        self, key: str, runner: web.AppRunner, sock: socket.socket, ssl_context: ssl.SSLContext | None
    ) -> int:
        """Serve ``runner``'s app on ``sock`` under ``key``; returns the port."""
        if key in self._sites:
            sock.close()
            raise ConfigError(f"listener {key!r} is already open")
        port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=ssl_context)
        await site.start()
        self._sites[key] = (site, port)
        log.debug("listening %s on %s:%d", key, self.host, port)
        return int(port)

    async def close(self, key: str) -> None:
        entry = self._sites.pop(key, None)
        if entry is not None:
            await entry[0].stop()

    async def close_all(self) -> None:
        for key in list(self._sites):
            await self.close(key)
