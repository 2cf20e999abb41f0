"""Loopback listeners that come and go while the server runs (a port per registry).

Ports are bound here, before aiohttp sees them, so that allocation and binding are one step: a port handed out
is a port this process holds. Allocation goes on from where the last one stopped (up to 65535, then from the base
again), so making the next registry costs a bind or two, not a walk over the ports already taken. Out of ports or
of file descriptors is :class:`~acrlocal.errors.LimitReached` naming the limit. Closing a listener stops new
connections; requests in flight finish.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import ssl
from collections.abc import Container

from aiohttp import web

from acrlocal.errors import ConfigError, LimitReached

log = logging.getLogger(__name__)


# Connections the kernel completes and holds for a port until the server accepts them. A load balancer in front
# opens them in bursts (a client's reconnects, its health checks); past the queue the kernel drops the SYNs, and
# the balancer's connects and checks wait for retransmissions, which marks the server down. aiohttp's sites listen
# again with a backlog of their own (128 unless told), so every site is given this one.
BACKLOG = 1024
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def out_of_files(exc: OSError) -> LimitReached:
    """The error for a socket or file the system refused for lack of descriptors or memory."""
    return LimitReached(f"the server cannot open another socket ({exc.strerror}): raise its open-file limit "
                        "(ulimit -n, or LimitNOFILE= for a service; acrlocal raises its soft limit to the hard "
                        "limit at start)")


def reserve_descriptors(what: str) -> None:
    """:class:`LimitReached` unless the process has a reserve of free file descriptors left after ``what`` takes
    one: a twentieth of its limit, at least 64, kept for connections, the database and files. Checked before a
    registry's port is opened, so that running out is refused there, clearly, and not in some later write."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError:
        return
    reserve = max(64, soft // 20)
    if used + 1 + reserve > soft:
        raise LimitReached(f"{what} would leave fewer than {reserve} of the server's {soft} file descriptors free "
                           f"({used} are open): raise its open-file limit (ulimit -n, or LimitNOFILE= for a service; "
                           "acrlocal raises its soft limit to the hard limit at start)")


def bind(host: str, port: int, *, reuse_port: bool = False, claim: bool = True) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: the system chooses); with ``reuse_port``, one that the
    other processes of the server bind too (``SO_REUSEPORT``: the kernel spreads connections across them). With
    ``claim`` (the first process of a server) the port must be free: one that another program holds with
    ``SO_REUSEPORT`` is not shared by mistake. Raises :class:`LimitReached` when out of file descriptors,
    ``OSError`` otherwise (the port is in use...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if reuse_port and claim and port:
        bind(host, port).close()  # free now (a plain bind fails on a port anyone holds, SO_REUSEPORT or not)
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in OUT_OF_FILES:
            raise out_of_files(exc) from exc
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listeners:
    """Named sites on aiohttp runners. Keys are free-form (``"registry:myreg"``, ``"imds:vm1"``)."""

    def __init__(self, host: str, *, reuse_port: bool = False, claim: bool = True) -> None:
        self.host = host
        self.reuse_port = reuse_port
        self.claim = claim
        self._sites: dict[str, tuple[web.SockSite, int]] = {}
        self._ports: set[int] = set()
        self._next: dict[int, int] = {}  # base -> where the next search starts

    def ports(self) -> set[int]:
        return set(self._ports)

    def names(self) -> list[str]:
        return list(self._sites)

    def port_of(self, key: str) -> int | None:
        entry = self._sites.get(key)
        return entry[1] if entry else None

    def allocate(self, base: int, taken: Container[int] = ()) -> socket.socket:
        """Bind a free port from ``base`` to 65535 (any port if ``base`` is 0), avoiding ``taken`` and this
        process's own listeners. :class:`LimitReached` when none is free, or out of file descriptors."""
        if base == 0:
            return bind(self.host, 0, reuse_port=self.reuse_port, claim=self.claim)
        span = 65536 - base
        start = self._next.get(base, base)
        for i in range(span):
            port = base + (start - base + i) % span
            if port in taken or port in self._ports:
                continue
            try:
                sock = bind(self.host, port, reuse_port=self.reuse_port, claim=self.claim)
            except LimitReached:
                raise
            except OSError:
                continue
            self._next[base] = port + 1 if port < 65535 else base
            return sock
        raise LimitReached(f"no free port on {self.host} from {base} to 65535: every one is in use (by registries "
                           "or other programs); delete registries or start acrlocal with a lower "
                           "--registry-port-base")

    async def open(
        self, key: str, runner: web.AppRunner, sock: socket.socket, ssl_context: ssl.SSLContext | None
    ) -> int:
        """Serve ``runner``'s app on ``sock`` under ``key``; returns the port."""
        if key in self._sites:
            sock.close()
            raise ConfigError(f"listener {key!r} is already open")
        port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=ssl_context, backlog=BACKLOG)  # it listens again
        await site.start()
        self._sites[key] = (site, port)
        self._ports.add(port)
        log.debug("listening %s on %s:%d", key, self.host, port)
        return int(port)

    async def close(self, key: str) -> None:
        entry = self._sites.pop(key, None)
        if entry is not None:
            self._ports.discard(entry[1])
            await entry[0].stop()

    async def close_all(self) -> None:
        for key in list(self._sites):
            await self.close(key)
