"""How long the server waits on a client: idle connections, request headers, request bodies and responses.

Every listener serves one of the server's aiohttp runners (control, registry, IMDS), and these bounds apply to
all of them, so a handful of slow or silent connections cannot hold the server's resources:

- **idle and headers** (``limits.idle_timeout_s``): aiohttp's keep-alive timer closes a connection on which no
  request is under way once this long has passed since it opened or since its last response. Bytes of a request
  whose headers are not complete do not reset the timer, so this is also how long a client has to send a
  request's headers (a slowloris client is closed with the idle ones).
- **request bodies** (``limits.read_timeout_s``): bodies are read through :mod:`acrlocal.inbound`, which gives
  up when no byte arrives for this long (408 in the protocol's format; aiohttp then closes the connection
  after at most :func:`runner_options`' ``lingering_time``).
- **responses** (``limits.read_timeout_s``): :class:`StalledWriters` closes a connection whose unsent response
  bytes have not moved for this long (a client that stopped reading).
- **TLS handshakes**: asyncio's own bound (60 s) until the handshake is done.

A request that is being worked on with its body complete (a long ``run-command``, a deployment) has no bound
here: the server, not the client, is taking the time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import termios
from collections.abc import Sequence
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)


def runner_options(idle_timeout_s: float, read_timeout_s: float) -> dict[str, Any]:
    """Keyword arguments for ``web.AppRunner`` that apply the idle bound (and cap aiohttp's lingering read of
    a body the handler left unread)."""
    return {"keepalive_timeout": idle_timeout_s, "lingering_time": min(10.0, read_timeout_s)}


def _unsent(transport: Any) -> int:
    """Bytes written to ``transport`` that the peer has not taken: the transport's own buffer plus the kernel's
    send queue (``TIOCOUTQ``; over TLS the transport's buffer is empty while the socket's is full)."""
    size = int(transport.get_write_buffer_size())
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            size += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    return size


def _reset(transport: Any) -> None:
    """Close now and drop what is unsent: ``close()`` would wait for those bytes, and even after ``abort()``
    the kernel would go on sending its queue; with a zero linger time the peer gets a reset."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class StalledWriters:
    """Closes connections whose response has not drained for ``timeout_s`` seconds.

    Once a second it looks at every connection of ``runners``: a connection holding unsent bytes (in the
    transport or the kernel's send queue) whose count has not changed for ``timeout_s`` is aborted (the handler
    writing to it gets a connection error, as for a client that went away). Start with :meth:`start`, end with
    :meth:`stop`.
    """

    def __init__(self, runners: Sequence[web.BaseRunner], timeout_s: float, *, interval_s: float = 1.0) -> None:
        self.runners = runners
        self.timeout_s = timeout_s
        self.interval_s = min(interval_s, timeout_s / 2)
        # Per connection: its unsent byte count and when that count last changed (only connections that have
        # unsent bytes; rebuilt on every check, so closed connections drop out).
        self._seen: dict[Any, tuple[int, float]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="timeouts.stalled-writers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.check(loop.time())
            except Exception:  # a watchdog that dies would let every later stall through
                log.exception("checking for stalled responses failed; checking again in %.0f s", self.interval_s)

    def check(self, now: float) -> int:
        """Close the connections stalled at ``now``; returns how many."""
        closed = 0
        seen: dict[Any, tuple[int, float]] = {}
        for runner in self.runners:
            server = runner.server
            for handler in server.connections if server is not None else ():
                transport = handler.transport
                if transport is None or transport.is_closing():
                    continue
                unsent = _unsent(transport)
                if unsent == 0:
                    continue
                before = self._seen.get(handler)
                since = before[1] if before is not None and before[0] == unsent else now
                if now - since < self.timeout_s:
                    seen[handler] = (unsent, since)
                    continue
                log.info("closing a connection from %s: %d response bytes unread for %.0f s",
                         transport.get_extra_info("peername"), unsent, now - since)
                _reset(transport)
                closed += 1
        self._seen = seen
        return closed
