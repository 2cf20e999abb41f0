"""The client side of a VM's console (see :mod:`acrlocal.compute.console`): this terminal, or these standard
streams, joined to a shell in the VM over a WebSocket.

With a terminal on standard input and no command, the terminal is put in raw mode (restored however the shell
ends) and its size follows the window (SIGWINCH); everything typed goes to the VM, as with ssh. Otherwise standard
input is copied until its end, and the remote command's standard output and error go to ours. The exit code is the
remote process's (255 if the connection failed, as ssh's).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import sys
import termios
import threading
import tty
from typing import Any

import aiohttp

from acrlocal.compute.console import RESIZE, STATUS, STDERR, STDIN, STDOUT, frame

CONNECTION_FAILED = 255


def terminal_size() -> tuple[int, int]:
    size = shutil.get_terminal_size((80, 24))
    return size.lines, size.columns


def _stdin_reader(loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[bytes]) -> None:
    """A daemon thread: standard input, chunk by chunk, then ``b""`` at its end (it may block forever on a
    terminal; the process exits without waiting for it)."""
    while True:
        try:
            chunk = os.read(0, 65536)
        except OSError:
            chunk = b""
        loop.call_soon_threadsafe(queue.put_nowait, chunk)
        if not chunk:
            return


async def relay(url: str, verify: str | bool, *, interactive: bool) -> int:
    """Join this process's standard streams to the console at ``url``; returns the remote exit code."""
    context: ssl.SSLContext | bool = ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
    loop = asyncio.get_running_loop()
    code = CONNECTION_FAILED
    saved: list[Any] | None = None
    async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=context, max_msg_size=0,
                                                                      heartbeat=30) as ws:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        threading.Thread(target=_stdin_reader, args=(loop, queue), daemon=True).start()
        if interactive:
            saved = termios.tcgetattr(0)
            tty.setraw(0)

            def resized() -> None:
                rows, cols = terminal_size()
                task = loop.create_task(ws.send_bytes(frame(RESIZE, json.dumps({"rows": rows, "cols": cols}).encode())))
                pending.add(task)
                task.add_done_callback(pending.discard)

            pending: set[asyncio.Task[None]] = set()

            loop.add_signal_handler(signal.SIGWINCH, resized)
        try:
            async def forward() -> None:
                while True:
                    chunk = await queue.get()
                    await ws.send_bytes(frame(STDIN, chunk))
                    if not chunk:
                        return

            sender = asyncio.ensure_future(forward())
            async for message in ws:
                if message.type != aiohttp.WSMsgType.BINARY or not message.data:
                    continue
                channel, payload = message.data[0], message.data[1:]
                if channel == STDOUT:
                    sys.stdout.buffer.write(payload)
                    sys.stdout.buffer.flush()
                elif channel == STDERR:
                    sys.stderr.buffer.write(payload)
                    sys.stderr.buffer.flush()
                elif channel == STATUS:
                    with contextlib.suppress(ValueError, KeyError, TypeError):
                        code = int(json.loads(payload)["exit"])
            sender.cancel()
        finally:
            if saved is not None:
                loop.remove_signal_handler(signal.SIGWINCH)
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
    return code


def run(url: str, verify: str | bool, *, interactive: bool) -> int:
    try:
        return asyncio.run(relay(url, verify, interactive=interactive))
    except (aiohttp.ClientError, OSError) as exc:
        sys.stderr.write(f"acrlocal: the VM's console could not be reached: {exc}\n")
        return CONNECTION_FAILED
