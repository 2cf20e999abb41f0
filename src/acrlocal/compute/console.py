"""A shell in a VM over a WebSocket, for ``acrlocal ssh vm`` (as ``kubectl exec`` does it for a pod).

The control plane's action ``POST .../virtualMachines/{vm}/console`` (authorized there: Virtual Machine
Administrator Login, or a role that may run commands) issues a one-time ticket, valid for
:data:`TICKET_LIFETIME_S` seconds, for one shell as the VM's admin user: interactive on a new terminal of the VM
(``tty``, a login shell as sshd starts one), or ``bash -c <command>`` as ``ssh host command`` runs it. The client
then opens ``wss://<endpoint>/.acrlocal/console/<ticket>``; the ticket is the whole authorization of that
connection, and is spent by it.

Frames are binary, the first byte a channel, as in Kubernetes' ``channel.k8s.io`` protocol: ``0`` standard input
(an empty payload is its end), ``1`` standard output (also the terminal's output), ``2`` standard error, ``3`` the
status when the process ended (JSON ``{"exit": <code>}``), ``4`` a terminal resize (JSON ``{"rows", "cols"}``).
The server closes the socket after the status. When the client goes away first, the shell's session gets SIGHUP,
as after a lost ssh connection, and is killed a few seconds later.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
import signal
import struct
import termios
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import WSMsgType, web

from acrlocal.compute.machine import MachineError, VMProcess
from acrlocal.inbound import parse_json

log = logging.getLogger(__name__)

STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4
TICKET_LIFETIME_S = 60.0
HANGUP_GRACE_S = 3.0
PATH = "/.acrlocal/console/{ticket}"
READ_CHUNK = 65536


@dataclass(frozen=True)
class Ticket:
    resource_id: str
    command: str | None
    tty: tuple[int, int] | None
    term: str | None
    expires: float


class Tickets:
    """Issued console tickets (in memory: a ticket is spent within a minute or never)."""

    def __init__(self) -> None:
        self._tickets: dict[str, Ticket] = {}

    def issue(self, resource_id: str, *, command: str | None, tty: tuple[int, int] | None,
              term: str | None) -> str:
        now = time.monotonic()
        for key in [k for k, t in self._tickets.items() if t.expires < now]:
            del self._tickets[key]
        value = secrets.token_urlsafe(32)
        self._tickets[value] = Ticket(resource_id, command, tty, term, now + TICKET_LIFETIME_S)
        return value

    def redeem(self, value: str) -> Ticket | None:
        ticket = self._tickets.pop(value, None)
        if ticket is None or ticket.expires < time.monotonic():
            return None
        return ticket


def parse_request(body: Any) -> tuple[str | None, tuple[int, int] | None, str | None]:
    """``(command, tty size, TERM)`` of the action's body ``{"command"?, "tty"?: {"rows", "cols"}, "term"?}``;
    :class:`ValueError` naming what is wrong."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise ValueError("the request body must be an object")
    command = body.get("command")
    if command is not None and (not isinstance(command, str) or len(command) > 128 * 1024):
        raise ValueError("'command' must be a string of at most 128 KiB")
    tty = body.get("tty")
    size = None
    if tty is not None:
        if not isinstance(tty, dict) or not all(isinstance(tty.get(k), int) and 0 < tty[k] < 10000
                                                for k in ("rows", "cols")):
            raise ValueError("'tty' must be {\"rows\": <1-9999>, \"cols\": <1-9999>}")
        size = (int(tty["rows"]), int(tty["cols"]))
    term = body.get("term")
    if term is not None and (not isinstance(term, str) or not term.isprintable() or len(term) > 64):
        raise ValueError("'term' must be a terminal type name")
    return command, size, term


def frame(channel: int, payload: bytes = b"") -> bytes:
    return bytes([channel]) + payload


def set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


async def _pump(fd: int, ws: web.WebSocketResponse, channel: int) -> None:
    """Copy ``fd`` (a pipe or a terminal's master side, which the pump closes) to ``ws`` on ``channel``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=READ_CHUNK)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                               os.fdopen(fd, "rb", buffering=0))
    try:
        while True:
            try:
                chunk = await reader.read(READ_CHUNK)
            except OSError:  # EIO: the terminal's last user closed it
                break
            if not chunk:
                break
            await ws.send_bytes(frame(channel, chunk))
    except (ConnectionResetError, RuntimeError):
        pass
    finally:
        transport.close()


async def serve(request: web.Request, runtime: Any, tickets: Tickets) -> web.StreamResponse:
    """The WebSocket handler: redeem the ticket, start the shell, relay until it ends."""
    ticket = tickets.redeem(request.match_info["ticket"])
    if ticket is None:
        return web.json_response({"error": {"code": "InvalidTicket", "message": "The console ticket is unknown, "
                                            "spent or expired; ask for a new one."}}, status=404)
    ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024, heartbeat=30)
    await ws.prepare(request)
    try:
        await _run(ws, runtime, ticket)
    except (MachineError, OSError) as exc:
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await ws.send_bytes(frame(STDERR, f"acrlocal: {exc}\r\n".encode()))
            await ws.send_bytes(frame(STATUS, json.dumps({"exit": 255}).encode()))
    except Exception as exc:  # the runtime's own refusals (a stopped VM, a VM deleted meanwhile)
        with contextlib.suppress(ConnectionResetError, RuntimeError):
            await ws.send_bytes(frame(STDERR, f"acrlocal: {exc}\r\n".encode()))
            await ws.send_bytes(frame(STATUS, json.dumps({"exit": 255}).encode()))
    await ws.close()
    return ws


async def _run(ws: web.WebSocketResponse, runtime: Any, ticket: Ticket) -> None:
    argv = ["bash", "-c", ticket.command] if ticket.command is not None else ["-bash"]
    pumps: list[asyncio.Task[None]] = []
    stdin_w: int | None = None
    if ticket.tty is not None:
        process: VMProcess = await runtime.spawn(ticket.resource_id, argv, pty=ticket.tty, term=ticket.term,
                                                 executable="/bin/bash")
        assert process.master is not None
        master = process.master
        process.master = None
        stdin_w = os.dup(master)
        pumps.append(asyncio.ensure_future(_pump(master, ws, STDOUT)))
    else:
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            process = await runtime.spawn(ticket.resource_id, argv, stdio=(in_r, out_w, err_w), term=ticket.term,
                                          executable="/bin/bash")
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        stdin_w = in_w
        pumps += [asyncio.ensure_future(_pump(out_r, ws, STDOUT)), asyncio.ensure_future(_pump(err_r, ws, STDERR))]
    os.set_blocking(stdin_w, False)
    reader = asyncio.ensure_future(_from_client(ws, stdin_w, ticket.tty is not None))
    exited = asyncio.ensure_future(process.wait())
    done, _ = await asyncio.wait([exited, reader], return_when=asyncio.FIRST_COMPLETED)
    if exited not in done:  # the client went away: hang up, as sshd does when the connection drops
        process.kill(signal.SIGHUP)
        try:
            await asyncio.wait_for(asyncio.shield(exited), HANGUP_GRACE_S)
        except TimeoutError:
            process.kill(signal.SIGKILL)
        await exited
        for pump in pumps:
            pump.cancel()
        return
    code = exited.result()
    await asyncio.wait(pumps, timeout=2.0)
    for pump in pumps:
        pump.cancel()
    reader.cancel()
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await ws.send_bytes(frame(STATUS, json.dumps({"exit": code if code >= 0 else 128 - code}).encode()))
    process.kill(signal.SIGHUP)


async def _write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to a non-blocking ``fd``, waiting while the pipe or terminal is full."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except BlockingIOError:
            await asyncio.sleep(0.01)
            continue
        view = view[written:]


async def _from_client(ws: web.WebSocketResponse, stdin: int, tty: bool) -> None:
    """Client frames: input (written to the process), resizes. Returns when the client is gone."""
    open_input: int | None = stdin
    try:
        async for message in ws:
            if message.type != WSMsgType.BINARY or not message.data:
                continue
            channel, payload = message.data[0], message.data[1:]
            if channel == STDIN and open_input is not None:
                if payload:
                    with contextlib.suppress(OSError):
                        await _write_all(open_input, payload)
                elif not tty:
                    os.close(open_input)
                    open_input = None
            elif channel == RESIZE and tty and open_input is not None:
                with contextlib.suppress(ValueError, KeyError, TypeError, OSError):
                    size = parse_json(payload, what="the terminal size")
                    set_size(open_input, max(1, int(size["rows"])), max(1, int(size["cols"])))
    finally:
        if open_input is not None:
            os.close(open_input)


def setup(app: web.Application, runtime: Any, tickets: Tickets) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await serve(request, runtime, tickets)

    app.router.add_get(PATH, handler)
