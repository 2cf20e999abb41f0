"""Loopback listeners that come and go while the server runs (a port per registry).

Ports are bound here, before aiohttp sees them, so that allocation and binding are one step: a port handed out
is a port this process holds. Allocation goes on from where the last one stopped (up to 65535, then from the base
again), so making the next registry costs a bind or two, not a walk over the ports already taken. Out of ports or
of file descriptors is :class:`~acrlocal.errors.LimitReached` naming the limit. Closing a listener stops new
connections; requests in flight finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import mmap
import os
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable, Container
from pathlib import Path

from aiohttp import web

from acrlocal.errors import ConfigError, LimitReached

log = logging.getLogger(__name__)


# Connections the kernel completes and holds for a port until the server accepts them. A load balancer in front
# opens them in bursts (a client's reconnects, its health checks); past the queue the kernel drops the SYNs, and
# the balancer's connects and checks wait for retransmissions, which marks the server down. aiohttp's sites listen
# again with a backlog of their own (128 unless told), so every site is given this one.
BACKLOG = 1024
#: How long a process that holds more connections than another waits before it takes a new one itself.
YIELD_S = 0.01
#: How often each process writes its load while no connection comes (to show the connections that closed).
LOAD_EVERY_S = 0.05
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


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port`` 0: the system chooses). The processes of a server of
    several share it: the primary binds it and hands it to the others (:class:`SharedSite`). Raises
    :class:`LimitReached` when out of file descriptors, ``OSError`` otherwise (the port is in use...)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        if exc.errno in OUT_OF_FILES:
            raise out_of_files(exc) from exc
        raise
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Load:
    """How many connections each process of a server of several holds (its TLS handshakes under way and its
    open connections), in a small file every process maps: slot ``n`` is written by process ``n`` only, as one
    aligned 8-byte store, at each connection it accepts and every :data:`LOAD_EVERY_S` (connections that
    closed), and read by the others without a lock (a value a moment old only moves one connection to a busier
    process)."""

    def __init__(self, path: Path, processes: int, me: int) -> None:
        size = 8 * processes
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if me == 0:  # the primary starts before the others: a previous run's figures are gone
                os.ftruncate(fd, 0)
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._slots = memoryview(self._map).cast("q")
        self.me = me
        self.handshakes = 0
        self.runners: set[web.BaseRunner] = set()
        self._refreshing: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Keep this process's slot current while the event loop runs (until :meth:`close`)."""
        if self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            self.mine()
            await asyncio.sleep(LOAD_EVERY_S)

    def mine(self) -> int:
        """This process's load, also written to its slot."""
        load = self.handshakes
        for runner in self.runners:
            if runner.server is not None:
                load += len(runner.server.connections)
        self._slots[self.me] = load
        return load

    def another_holds_fewer(self) -> bool:
        """Whether another process holds fewer connections than this one (and should take the next)."""
        mine = self.mine()
        return any(self._slots[i] < mine for i in range(len(self._slots)) if i != self.me)

    def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        self._slots.release()
        self._map.close()


class SharedSite(web.BaseSite):
    """A site on a listening socket that every process of the server holds (the same socket: the primary's,
    handed over), accepting one connection at a time: when another process holds fewer connections, this one
    waits :data:`YIELD_S` before taking it, so that the other takes it first if it can. The kernel would wake
    every process for every connection anyway; with ``SO_REUSEPORT`` it instead picks one by a hash of the
    addresses, whatever each is doing, which left 3 or 4 of 4 parallel downloads on one core in most rounds.
    A process that cannot take its turn (busy, or gone) delays a connection by :data:`YIELD_S` at most.

    Accept errors (lack of descriptors) are logged and retried after a pause, as asyncio's own servers do; a
    failed TLS handshake closes that connection only. Stopping stops accepting (the socket is closed in this
    process; the others keep theirs) and cancels handshakes under way; requests in flight finish."""

    __slots__ = ("_accepting", "_handshaking", "_load", "_sock")

    def __init__(self, runner: web.BaseRunner, sock: socket.socket, load: Load, *,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=BACKLOG)
        self._sock = sock
        self._load = load
        self._accepting: asyncio.Task[None] | None = None
        self._handshaking: set[asyncio.Task[None]] = set()

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        return f"{'https' if self._ssl_context else 'http'}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        self._load.runners.add(self._runner)
        self._load.start()
        self._accepting = asyncio.get_running_loop().create_task(self._accept_forever())

    async def stop(self) -> None:
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
            self._accepting = None
        for task in list(self._handshaking):
            task.cancel()
        self._sock.close()
        await super().stop()

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._sock.fileno()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(fd)

    async def _accept_forever(self) -> None:
        while True:
            await self._readable()
            if self._load.another_holds_fewer():
                await asyncio.sleep(YIELD_S)
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                continue  # another process took it
            except OSError as exc:  # out of descriptors, or the system's own trouble: never stop accepting
                log.warning("cannot accept a connection on %s (%s): retrying in 1 s", self.name, exc.strerror)
                await asyncio.sleep(1.0)
                continue
            conn.setblocking(False)
            self._load.handshakes += 1
            self._load.mine()
            task = asyncio.get_running_loop().create_task(self._serve(conn))
            self._handshaking.add(task)
            task.add_done_callback(self._handshaking.discard)

    async def _serve(self, conn: socket.socket) -> None:
        server = self._runner.server
        assert server is not None
        try:
            await asyncio.get_running_loop().connect_accepted_socket(server, conn, ssl=self._ssl_context)
        except (TimeoutError, OSError, ssl.SSLError) as exc:
            log.debug("connection on %s ended before its first request: %s", self.name, exc)
            conn.close()
        finally:
            self._load.handshakes -= 1


class Listeners:
    """Named sites on aiohttp runners. Keys are free-form (``"registry:myreg"``, ``"imds:vm1"``).

    In a server of several processes (``load`` given), every site is a :class:`SharedSite`: the primary binds
    every port and hands the sockets it :meth:`held` to the others, whose ``fetch`` asks it for them
    (:mod:`acrlocal.workers`)."""

    def __init__(self, host: str, *, load: Load | None = None,
                 fetch: Callable[[int], Awaitable[socket.socket]] | None = None) -> None:
        self.host = host
        self.load = load
        self.fetch = fetch
        self._sites: dict[str, tuple[web.BaseSite, int]] = {}
        self._ports: set[int] = set()
        self._held: dict[int, socket.socket] = {}  # every listening socket this process bound, by port
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
            return self._hold(bind(self.host, 0))
        span = 65536 - base
        start = self._next.get(base, base)
        for i in range(span):
            port = base + (start - base + i) % span
            if port in taken or port in self._ports:
                continue
            try:
                sock = bind(self.host, port)
            except LimitReached:
                raise
            except OSError:
                continue
            self._next[base] = port + 1 if port < 65535 else base
            return self._hold(sock)
        raise LimitReached(f"no free port on {self.host} from {base} to 65535: every one is in use (by registries "
                           "or other programs); delete registries or start acrlocal with a lower "
                           "--registry-port-base")

    async def claim(self, port: int) -> socket.socket:
        """The listening socket for ``port``: bound here, or in a secondary the primary's (``OSError`` if it has
        none, or if the port is in use)."""
        if self.fetch is not None:
            return await self.fetch(port)
        return self._hold(bind(self.host, port))

    def _hold(self, sock: socket.socket) -> socket.socket:
        self._held[sock.getsockname()[1]] = sock
        return sock

    def held(self, port: int) -> socket.socket | None:
        """The listening socket this process bound for ``port`` and still holds, if any."""
        sock = self._held.get(port)
        return sock if sock is not None and sock.fileno() != -1 else None

    async def open(
        self, key: str, runner: web.AppRunner, sock: socket.socket, ssl_context: ssl.SSLContext | None
    ) -> int:
        """Serve ``runner``'s app on ``sock`` under ``key``; returns the port."""
        if key in self._sites:
            sock.close()
            raise ConfigError(f"listener {key!r} is already open")
        port = sock.getsockname()[1]
        site: web.BaseSite
        if self.load is not None:
            site = SharedSite(runner, sock, self.load, ssl_context=ssl_context)
        else:
            site = web.SockSite(runner, sock, ssl_context=ssl_context, backlog=BACKLOG)  # it listens again
        self._held.setdefault(port, sock)
        await site.start()
        self._sites[key] = (site, port)
        self._ports.add(port)
        log.debug("listening %s on %s:%d", key, self.host, port)
        return int(port)

    async def close(self, key: str) -> None:
        entry = self._sites.pop(key, None)
        if entry is not None:
            self._ports.discard(entry[1])
            self._held.pop(entry[1], None)
            await entry[0].stop()

    async def close_all(self) -> None:
        for key in list(self._sites):
            await self.close(key)
