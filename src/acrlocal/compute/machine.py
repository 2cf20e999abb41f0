"""A running VM, as the server holds it: the boot program's process, PID 1's agent socket, the doors PID 1 handed
over, and the processes started in the VM (asyncio; no HTTP, no SQL).

:meth:`Machine.boot` starts :mod:`acrlocal.compute.vminit` (``python -I -S``, the boot plan on stdin, one end of a
SOCK_SEQPACKET socket pair on fd 3) and waits for PID 1's ``ready`` with the listening sockets it made in the VM's
network namespace. Before the server uses them, :func:`verify_doors` checks, independently of the VM, that they
live in a network namespace that is not the host's and holds only ``lo`` (through ``/proc/<PID 1>/net``).
:meth:`Machine.spawn` asks PID 1 to start a process (as a given account, with given file descriptors, optionally
on a new pseudo-terminal of the VM) and returns a :class:`VMProcess` whose :meth:`~VMProcess.wait` gives its exit
code. :meth:`Machine.stop` asks PID 1 to power off (SIGTERM to everything, a few seconds' grace) and kills what is
left; closing the agent socket (the server exiting, even by SIGKILL) does the same from PID 1's side.

File descriptors the server holds per running VM: the agent socket, the monitor's pipes (closed once booted), and
the doors (IMDS, front door, DNS, and the Docker socket while Docker Engine waits for its first use): five.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acrlocal.compute import vminit
from acrlocal.compute.sandbox import Account
from acrlocal.errors import AcrLocalError

log = logging.getLogger(__name__)

BOOT_TIMEOUT_S = 60.0
STOP_GRACE_S = 5.0
SO_NETNS_COOKIE = 71


class MachineError(AcrLocalError, RuntimeError):
    """A VM that cannot start, or a process that cannot start in it; the message says why."""


def netns_cookie(sock: socket.socket) -> int:
    """The cookie of the network namespace a socket lives in (Linux 5.14 and later)."""
    return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), sys.byteorder)


async def check_host() -> None:
    """:class:`MachineError` naming what is missing if this server cannot make VMs: it must run as root, and make
    a VM's namespaces with a network namespace holding only ``lo`` (tried in a child that keeps nothing)."""
    if os.geteuid() != 0:
        raise MachineError(f"VMs need root: each VM's mount, user, network and PID namespaces are made by the server "
                           f"as root, and this server runs as uid {os.geteuid()} (start it with sudo)")
    proc = await asyncio.create_subprocess_exec(sys.executable, "-I", "-S", vminit.__file__, "--probe",
                                                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        said = out.decode(errors="replace").strip() or f"the namespace check exited with {proc.returncode}"
        raise MachineError(f"this host cannot run VMs in namespaces of their own: {said}")


def host_netns_cookie() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return netns_cookie(s)


def verify_doors(init_pid: int, doors: Sequence[socket.socket], expected: Sequence[dict[str, Any]]) -> int:
    """The VM's network namespace, checked from the host: the doors all live in one namespace that is not the
    host's, which holds only ``lo`` and has no route; each door is bound where the plan said. Returns the
    namespace's cookie; :class:`MachineError` otherwise."""
    if len(doors) != len(expected):
        raise MachineError(f"the VM handed over {len(doors)} sockets; expected {len(expected)}")
    cookies = {netns_cookie(s) for s in doors}
    if len(cookies) != 1 or host_netns_cookie() in cookies:
        raise MachineError("the VM's sockets are not in one network namespace of their own")
    if os.stat(f"/proc/{init_pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
        raise MachineError("the VM's first process runs in the host's network namespace")
    with open(f"/proc/{init_pid}/net/dev") as f:
        interfaces = sorted(line.split(":", 1)[0].strip() for line in f.read().splitlines()[2:])
    if interfaces != ["lo"]:
        raise MachineError(f"the VM's network namespace has interfaces {interfaces}; expected only lo")
    with open(f"/proc/{init_pid}/net/route") as f:
        if f.read().splitlines()[1:]:
            raise MachineError("the VM's network namespace has routes; expected none but loopback's")
    for sock, door in zip(doors, expected, strict=True):
        if door["kind"] in ("tcp", "udp"):
            where = sock.getsockname()
            if (where[0], where[1]) != (door["address"], door["port"]):
                raise MachineError(f"the VM's {door['name']} socket is bound to {where}; expected "
                                   f"{door['address']}:{door['port']}")
    return cookies.pop()


@dataclass
class VMProcess:
    """A process started in a VM. ``master`` is the pseudo-terminal's master side (the server's to read, write and
    resize) when one was asked for."""

    machine: Machine
    ident: int
    pid: int
    master: int | None = None
    exited: asyncio.Future[int] = field(default_factory=lambda: asyncio.get_running_loop().create_future())

    async def wait(self) -> int:
        """The exit code (``-N`` for a signal), when the process has ended."""
        return await asyncio.shield(self.exited)

    def kill(self, sig: int = signal.SIGKILL, *, group: bool = True) -> None:
        """Signal the process group it leads (what is left of it, even after the process itself ended), or only
        the process while it runs."""
        if self.pid and (group or not self.exited.done()):
            self.machine.signal(self.pid, sig, group=group)

    def close(self) -> None:
        if self.master is not None:
            with contextlib.suppress(OSError):
                os.close(self.master)
            self.master = None


class Machine:
    """One running VM. Create, :meth:`boot`, then :meth:`spawn`; :meth:`stop` ends it. ``doors`` maps each door's
    name (``imds``, ``front``, ``dns``, ``docker``) to its listening socket once booted."""

    def __init__(self, vm_id: str, plan: dict[str, Any], log_path: Path) -> None:
        self.vm_id = vm_id
        self.plan = plan
        self.log_path = log_path
        self.doors: dict[str, socket.socket] = {}
        self.netns = 0
        self.init_pid = 0
        self.ended = asyncio.Event()
        self._monitor: asyncio.subprocess.Process | None = None
        self._agent: socket.socket | None = None
        self._next = 0
        self._pending: dict[int, asyncio.Future[tuple[dict[str, Any], list[int]]]] = {}
        self._processes: dict[int, VMProcess] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._boot: asyncio.Queue[tuple[dict[str, Any], list[int]] | BaseException] | None = None

    # -- boot ------------------------------------------------------------------------------------------------

    async def boot(self, timeout: float = BOOT_TIMEOUT_S) -> None:
        """Start the VM; :class:`MachineError` with the boot program's own words if it cannot."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        loop = asyncio.get_running_loop()
        self._boot = asyncio.Queue()
        try:
            log_file = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
            try:
                self._monitor = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-S", vminit.__file__, str(theirs.fileno()),
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=log_file,
                    pass_fds=(theirs.fileno(),), start_new_session=True)
            finally:
                log_file.close()
                theirs.close()
            assert self._monitor.stdin is not None
            self._monitor.stdin.write(json.dumps(self.plan).encode())
            self._monitor.stdin.close()
            ours.setblocking(False)
            self._agent = ours
            loop.add_reader(ours.fileno(), self._on_message)
            self._watcher = loop.create_task(self._watch_monitor())
            booted, _ = await asyncio.wait_for(self._next_boot_message("booted"), timeout)
            self.init_pid = int(booted["init"])
            _ready, fds = await asyncio.wait_for(self._next_boot_message("ready"), timeout)
            self._boot = None
            doors = [socket.socket(fileno=fd) for fd in fds]
            try:
                self.netns = await asyncio.to_thread(verify_doors, self.init_pid, doors, self.plan["doors"])
            except BaseException:
                for door in doors:
                    door.close()
                raise
            for door, spec in zip(doors, self.plan["doors"], strict=True):
                door.setblocking(False)
                self.doors[spec["name"]] = door
            log.info("VM %s booted (PID 1 is host pid %d)", self.vm_id, self.init_pid)
        except TimeoutError:
            await self.stop()
            raise MachineError(f"the VM did not start within {timeout:g} seconds (see {self.log_path})") from None
        except BaseException:
            await self.stop()
            raise

    async def _next_boot_message(self, op: str) -> tuple[dict[str, Any], list[int]]:
        assert self._boot is not None
        item = await self._boot.get()
        if isinstance(item, BaseException):
            raise item
        if item[0].get("op") != op:
            _close_all(item[1])
            raise MachineError(f"the VM's boot said {item[0].get('op')!r} where {op!r} was expected")
        return item

    def _on_message(self) -> None:
        assert self._agent is not None
        while True:
            try:
                message, fds = vminit.receive(self._agent)
            except BlockingIOError:
                return
            except (OSError, ValueError) as exc:
                log.warning("VM %s: agent socket: %s", self.vm_id, exc)
                message, fds = None, []
            if message is None:
                self._gone("the VM's first process ended")
                return
            self._dispatch(message, fds)

    def _dispatch(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op in ("booted", "ready") and self._boot is not None:
            self._boot.put_nowait((message, fds))
            return
        if op == "error":
            error = MachineError(f"the VM could not start: {message.get('message')}")
            if self._boot is not None:
                self._boot.put_nowait(error)
            else:
                log.warning("VM %s: %s", self.vm_id, error)
            _close_all(fds)
            return
        ident = message.get("id")
        if op in ("started", "failed", "pong") and isinstance(ident, int) and ident in self._pending:
            future = self._pending.pop(ident)
            if not future.done():
                future.set_result((message, fds))
            else:
                _close_all(fds)
            return
        if op == "exited" and isinstance(ident, int):
            process = self._processes.pop(ident, None)
            if process is not None and not process.exited.done():
                process.exited.set_result(int(message.get("code", -1)))
        _close_all(fds)

    async def _watch_monitor(self) -> None:
        assert self._monitor is not None
        code = await self._monitor.wait()
        self._gone(f"the VM's monitor exited with {code}")
        cgroup = self.plan.get("cgroup")
        if cgroup:  # a monitor that was killed left the VM's cgroups behind
            left = await asyncio.to_thread(vminit.remove_vm_cgroups, cgroup)
            if left:
                log.warning("VM %s: its cgroups %s could not be removed: processes are still in them", self.vm_id,
                            ", ".join(left))

    def _gone(self, why: str) -> None:
        if self.ended.is_set():
            return
        log.info("VM %s stopped: %s", self.vm_id, why)
        self.ended.set()
        if self._agent is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(self._agent.fileno())
            self._agent.close()
            self._agent = None
        failure = MachineError(f"the VM stopped ({why})")
        if self._boot is not None:
            self._boot.put_nowait(MachineError(f"the VM could not start: {why} (see {self.log_path})"))
        for future in self._pending.values():
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()
        for process in self._processes.values():
            if not process.exited.done():
                process.exited.set_result(-signal.SIGKILL)
        self._processes.clear()
        for door in self.doors.values():
            door.close()
        self.doors.clear()

    @property
    def running(self) -> bool:
        return self._agent is not None and not self.ended.is_set() and bool(self.doors)

    # -- processes -------------------------------------------------------------------------------------------

    async def spawn(self, argv: Sequence[str], *, account: Account, env: dict[str, str], cwd: str | None = None,
                    stdio: Sequence[int | None] = (None, None, None), extra_fds: Sequence[tuple[int, int]] = (),
                    pty: tuple[int, int] | None = None, listen_fds: int = 0, executable: str | None = None,
                    tty_gid: int = 5) -> VMProcess:
        """Start ``argv`` in the VM as ``account`` (its ids and groups), with exactly ``env``, in ``cwd`` (the
        account's home by default). ``stdio`` are the server's descriptors for the process's 0, 1 and 2 (``None``:
        the VM's ``/dev/null``); ``extra_fds`` are ``(target, server fd)`` pairs; ``pty`` ``(rows, columns)``
        gives it a new terminal of the VM instead (its master side is :attr:`VMProcess.master`); ``listen_fds``
        sets systemd's ``LISTEN_FDS``/``LISTEN_PID``. The descriptors are copied: the caller still closes its
        own. :class:`MachineError` if the VM is not running or the program cannot be started."""
        if not self.running or self._agent is None:
            raise MachineError("the VM is not running")
        self._next += 1
        ident = self._next
        fds: list[int] = []
        indexes: list[int | None] = []
        for fd in stdio:
            if fd is None:
                indexes.append(None)
            else:
                indexes.append(len(fds))
                fds.append(fd)
        extra = []
        for target, fd in extra_fds:
            extra.append((target, len(fds)))
            fds.append(fd)
        request: dict[str, Any] = {
            "op": vminit.SPAWN, "id": ident, "argv": list(argv), "env": env, "cwd": cwd or account.home,
            "uid": account.uid, "gid": account.gid, "groups": list(account.groups), "stdio": indexes,
            "extra_fds": extra, "tty_gid": tty_gid}
        if executable:
            request["file"] = executable
        if pty is not None:
            request["pty"] = True
            request["winsize"] = list(pty)
        if listen_fds:
            request["listen_fds"] = listen_fds
        future: asyncio.Future[tuple[dict[str, Any], list[int]]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        process = VMProcess(self, ident, 0)
        self._processes[ident] = process
        try:
            vminit.send(self._agent, request, fds)
        except OSError as exc:
            self._pending.pop(ident, None)
            self._processes.pop(ident, None)
            raise MachineError(f"the VM's agent did not take the request: {exc.strerror}") from None
        answer, got = await future
        if answer.get("op") == "failed":
            self._processes.pop(ident, None)
            _close_all(got)
            raise MachineError(f"{argv[0]}: {answer.get('error')}")
        process.pid = int(answer["pid"])
        if got:
            process.master = got[0]
            os.set_blocking(process.master, False)
            _close_all(got[1:])
        return process

    def signal(self, pid: int, sig: int, *, group: bool = True) -> None:
        if self._agent is not None:
            with contextlib.suppress(OSError):
                vminit.send(self._agent, {"op": "kill", "pid": pid, "signal": int(sig), "group": group})

    async def stop(self, grace: float = STOP_GRACE_S) -> None:
        """Power off: PID 1 ends every process of the VM; whatever remains after ``grace`` is killed."""
        if self._agent is not None:
            with contextlib.suppress(OSError):
                vminit.send(self._agent, {"op": "poweroff"})
        monitor = self._monitor
        if monitor is not None and monitor.returncode is None:
            try:
                await asyncio.wait_for(monitor.wait(), grace + 2.0)
            except TimeoutError:
                if self.init_pid:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.init_pid, signal.SIGKILL)
                with contextlib.suppress(ProcessLookupError):
                    monitor.kill()
                await monitor.wait()
        self._gone("powered off")
        if self._watcher is not None:  # its removal of the VM's cgroups, before a server that stops exits
            await asyncio.gather(self._watcher, return_exceptions=True)


def _close_all(fds: Sequence[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)

