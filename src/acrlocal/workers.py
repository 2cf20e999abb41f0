"""Several server processes on the same ports (``acrlocal up --workers N``), so that every core serves.

The first process (the *primary*, worker 0) is the server as it always was: it owns the VMs and their doors, the
control plane's writes, the housekeeping, ``server.json``. It binds every port, serves its control app also on a
Unix socket of its own, and starts the other processes (*secondaries*, workers 1..N-1), which serve the same
listening sockets: the primary hands them over another Unix socket (:class:`SocketBroker`, ``SCM_RIGHTS``), the
one it bound when it started and each registry's as it is made, and the process holding the fewest connections
accepts each new one (:class:`~acrlocal.listeners.SharedSite`).

A secondary serves on its own what scales with traffic and needs nothing but the database: the registries (their
own ports, and their host names on the shared port: data plane and token service), and every Entra endpoint
(discovery, keys, the token endpoints with every grant, the device code endpoint and the sign-in pages: sign-in
flows and the client-assertion replay cache are in the database, so a flow started on one process continues on
any). Every other request on the shared port (ARM and Graph, consoles) it forwards to the primary over the Unix
socket (:class:`Forwarder`, WebSockets too), naming the client's address in a header that the primary believes
only on that socket (:func:`trust_forwarded`). So what holds state in one process (the ARM write lock, the VMs)
stays in one.

What each process keeps in memory and how it stays right across them is in docs/architecture.md (Workers). The
primary restarts a secondary that dies; a secondary ends with the primary (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from acrlocal.config import Limits, Settings

log = logging.getLogger(__name__)

#: The environment variable that hands a secondary its settings and place (JSON).
ENV = "ACRLOCAL_WORKER"
#: The client's address, as the secondary that forwarded the request saw it.
FORWARDED_FOR = "X-Acrlocal-Forwarded-For"
#: Every response of a server of several processes says which one answered.
WORKER_HEADER = "X-Acrlocal-Worker"
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
                        "trailers", "transfer-encoding", "upgrade", "content-length", FORWARDED_FOR.lower()})
WEBSOCKET_HEADERS = frozenset({"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions",
                               "sec-websocket-accept", "sec-websocket-protocol"})
#: What a secondary serves itself on the shared port: its health, and Entra's endpoints and sign-in pages.
LOCAL_PATHS = re.compile(r"^/(healthz|metadata/endpoints|devicelogin|common/discovery/instance|common/userrealm/[^/]+"
                         r"|[^/]+/(v2\.0/)?\.well-known/openid-configuration|[^/]+/discovery/(v2\.0/)?keys"
                         r"|[^/]+/oauth2/(v2\.0/)?(token|devicecode|authorize|logout))\Z")
PR_SET_PDEATHSIG = 1


def default_workers() -> int:
    """The number of cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


# -- handing a secondary its settings --------------------------------------------------------------------------

def encode(settings: Settings, worker: int, primary_socket: str, login_port: bool) -> str:
    raw = dataclasses.asdict(settings)
    raw["data_dir"] = str(settings.data_dir)
    return json.dumps({"settings": raw, "worker": worker, "primary": primary_socket, "login": login_port})


def decode(text: str) -> tuple[Settings, int, str, bool]:
    raw = json.loads(text)
    fields = dict(raw["settings"])
    fields["data_dir"] = Path(fields["data_dir"])
    fields["limits"] = Limits(**fields["limits"])
    return Settings(**fields), int(raw["worker"]), str(raw["primary"]), bool(raw["login"])


# -- what a secondary serves itself, and forwarding the rest ---------------------------------------------------

def serves_locally(request: web.Request) -> bool:
    """Whether a secondary answers ``request`` (on the shared port, not a registry's host name) itself."""
    return bool(LOCAL_PATHS.match(request.path))


class Forwarder:
    """Forwards requests to the primary's control app over its Unix socket, streaming both ways."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.UnixConnector(path=self.path, limit=0), auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @staticmethod
    def _headers(request: web.Request, drop: frozenset[str] = frozenset()) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() not in drop)
        headers[FORWARDED_FOR] = request.remote or ""
        return headers

    async def forward(self, request: web.Request) -> web.StreamResponse:
        url = URL("http://primary" + request.raw_path, encoded=True)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request, url)
        body = await request.read() if request.body_exists else None  # bounded by the app's client_max_size
        async with self.session().request(request.method, url, headers=self._headers(request), data=body,
                                          allow_redirects=False) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_BY_HOP:
                    response.headers.add(key, value)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(65536):
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _websocket(self, request: web.Request, url: URL) -> web.StreamResponse:
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        async with self.session().ws_connect(url, headers=self._headers(request, WEBSOCKET_HEADERS),
                                             protocols=protocols, max_msg_size=0) as upstream:
            ws = web.WebSocketResponse(protocols=[upstream.protocol] if upstream.protocol else (), max_msg_size=0)
            await ws.prepare(request)

            async def pump(source: Any, sink: Any) -> None:
                async for message in source:
                    if message.type == aiohttp.WSMsgType.BINARY:
                        await sink.send_bytes(message.data)
                    elif message.type == aiohttp.WSMsgType.TEXT:
                        await sink.send_str(message.data)
                    else:
                        break

            tasks = [asyncio.ensure_future(pump(ws, upstream)), asyncio.ensure_future(pump(upstream, ws))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            code = upstream.close_code or aiohttp.WSCloseCode.OK
            await upstream.close()
            await ws.close(code=code)
            return ws

    def middleware(self) -> Any:
        forwarder = self

        @web.middleware
        async def forward_to_primary(request: web.Request, handler: Any) -> web.StreamResponse:
            if serves_locally(request):
                return await handler(request)
            return await forwarder.forward(request)

        return forward_to_primary


# -- the listening sockets, handed from the primary to its secondaries -----------------------------------------

def broker_path(primary_socket: str) -> str:
    """Where the primary hands out its listening sockets: beside its control socket, in its private directory."""
    return os.path.join(os.path.dirname(primary_socket), "listeners.sock")


class SocketBroker:
    """The primary's side: on a Unix socket of this user's, a secondary writes a port number and gets back the
    primary's listening socket for it (``SCM_RIGHTS``: the same socket, not a copy bound beside it), or ``no``
    when the primary holds none. Connections are served one at a time; a malformed or silent one is dropped."""

    def __init__(self, path: str, held: Callable[[int], socket.socket | None]) -> None:
        self.path = path
        self._held = held
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(self.path)
        os.chmod(self.path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._serve_forever(sock))

    async def _serve_forever(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(sock)
            with conn:
                try:
                    request = await asyncio.wait_for(loop.sock_recv(conn, 16), 5.0)
                    port = int(request.decode("ascii").strip())
                    found = self._held(port)
                    if found is None:
                        await loop.sock_sendall(conn, b"no")
                    else:
                        socket.send_fds(conn, [b"ok"], [found.fileno()])
                except (TimeoutError, OSError, ValueError, UnicodeDecodeError) as exc:
                    log.warning("a secondary's request for a listening socket failed: %s", exc)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


class SocketFetcher:
    """A secondary's side of :class:`SocketBroker`: ``await fetcher(port)`` is the primary's listening socket
    for ``port``; ``OSError`` if the primary holds none (or cannot be reached within 10 s)."""

    def __init__(self, primary_socket: str) -> None:
        self.path = broker_path(primary_socket)

    async def __call__(self, port: int) -> socket.socket:
        return await asyncio.to_thread(self._fetch, port)

    def _fetch(self, port: int) -> socket.socket:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(10.0)
            conn.connect(self.path)
            conn.sendall(f"{port}\n".encode())
            answer, fds, _, _ = socket.recv_fds(conn, 16, 1)
        if answer != b"ok" or len(fds) != 1:
            for fd in fds:
                os.close(fd)
            raise OSError(errno.ENOENT, f"the first process of the server does not listen on port {port}")
        sock = socket.socket(fileno=fds[0])
        sock.setblocking(False)
        return sock


# -- the primary: believing its secondaries, and keeping them running -------------------------------------------

def _on_unix_socket(request: web.Request) -> bool:
    transport = request.transport
    sock = transport.get_extra_info("socket") if transport is not None else None
    return sock is not None and sock.family == socket.AF_UNIX


@web.middleware
async def trust_forwarded(request: web.Request, handler: Any) -> web.StreamResponse:
    """On the primary's Unix socket (reachable by this user only), a request comes from a secondary: the client's
    address is the one it names, and the scheme the https the client used."""
    if _on_unix_socket(request):
        request = request.clone(remote=request.headers.get(FORWARDED_FOR, ""), scheme="https")
    return await handler(request)


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class Secondaries:
    """The primary's secondaries: started, restarted when one dies, stopped with the primary."""

    def __init__(self, settings: Settings, primary_socket: str, login_port: bool) -> None:
        self.settings = settings
        self.primary_socket = primary_socket
        self.login_port = login_port
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self._watch: asyncio.Task[None] | None = None
        self._stopping = False

    def _spawn(self, worker: int) -> None:
        env = dict(os.environ)
        env[ENV] = encode(self.settings, worker, self.primary_socket, self.login_port)
        log_path = self.settings.data_dir / f"worker-{worker}.log"
        with open(log_path, "ab") as out:
            self.processes[worker] = subprocess.Popen(
                [sys.executable, "-m", "acrlocal", "_worker"], stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)

    async def start(self, wait_ready: float = 60.0) -> None:
        for worker in range(1, self.settings.workers):
            self._spawn(worker)
        await self._ready(wait_ready)
        self._watch = asyncio.get_running_loop().create_task(self._watch_forever())

    async def _ready(self, timeout: float) -> None:
        """Wait until every secondary says it serves (its ``worker-<n>.ready`` file)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for worker, process in self.processes.items():
            ready = self.settings.data_dir / f"worker-{worker}.ready"
            while not ready.exists():
                if process.poll() is not None or loop.time() > deadline:
                    log.warning("worker %d did not start (see %s)", worker,
                                self.settings.data_dir / f"worker-{worker}.log")
                    break
                await asyncio.sleep(0.05)

    async def _watch_forever(self) -> None:
        while not self._stopping:
            await asyncio.sleep(1.0)
            for worker, process in list(self.processes.items()):
                if process.poll() is not None and not self._stopping:
                    log.warning("worker %d ended with %s; starting it again", worker, process.returncode)
                    (self.settings.data_dir / f"worker-{worker}.ready").unlink(missing_ok=True)
                    self._spawn(worker)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes.values()]

    async def stop(self, timeout: float = 20.0) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for worker, process in self.processes.items():
            try:
                await asyncio.to_thread(process.wait, timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
            (self.settings.data_dir / f"worker-{worker}.ready").unlink(missing_ok=True)
        self.processes.clear()
