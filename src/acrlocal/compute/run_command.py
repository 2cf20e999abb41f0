"""``runCommand`` on a VM: a shell script run in the VM, answered as Azure's Linux agent answers.

The script (``script`` lines joined by newlines, at most :data:`MAX_SCRIPT_BYTES`) is run by bash as the VM's
root, as Azure's agent runs it, in ``/var/lib/waagent/run-command/download/0``, with no standard input (it reaches
bash as a memory file: the server writes nothing into the VM). ``parameters`` named ``argN`` are positional
arguments in the order given (az names unnamed ``--parameters`` so); every parameter is also exported as an
environment variable. One script runs per VM at a time (:class:`Busy` otherwise, ARM's 409). The script runs in
a session of its own; when it ends, when it has run for ``timeout_s`` seconds, or when its VM is deleted or
stopped, its process group is killed. Each of stdout and stderr keeps its last :data:`OUTPUT_LIMIT` bytes, as
Azure's agent keeps its last 4,096.

The answer is ARM's ``{"value": [{"code", "level", "displayStatus", "message"}]}`` with ``message`` =
``"Enable succeeded: \\n[stdout]\\n<out>\\n[stderr]\\n<err>"``; a script that exits non-zero, or is stopped, gives
``ProvisioningState/failed/<exit code>`` and ``"Enable failed: failed to execute command: command terminated with
exit status=<n>\\n[stdout]..."`` (the agent's words).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from acrlocal.errors import AcrLocalError

if TYPE_CHECKING:
    from acrlocal.compute.machine import VMProcess

MAX_SCRIPT_BYTES = 256 * 1024
OUTPUT_LIMIT = 4096
READ_CHUNK = 65536
DRAIN_AFTER_EXIT_S = 2.0
COMMAND_IDS = ("RunShellScript",)
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}\Z")
_POSITIONAL = re.compile(r"^arg([0-9]{1,4})\Z")


class RunCommandError(AcrLocalError, ValueError):
    """A request that cannot run (unknown command id, bad parameter, script too large)."""


class Busy(AcrLocalError, RuntimeError):
    """Another run-command is running on the VM."""


@dataclass(frozen=True)
class RunRequest:
    command_id: str
    script: tuple[str, ...]
    parameters: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, body: dict[str, Any]) -> RunRequest:
        """ARM's ``RunCommandInput``; :class:`RunCommandError` naming what is wrong."""
        command_id = body.get("commandId")
        if not isinstance(command_id, str) or not command_id:
            raise RunCommandError("The 'commandId' of the run command is missing; expected 'RunShellScript'.")
        canonical = next((c for c in COMMAND_IDS if c.lower() == command_id.lower()), None)
        if canonical is None:
            raise RunCommandError(f"The command id '{command_id}' is not available on this VM; acrlocal VMs (Linux) "
                                  f"run {', '.join(repr(c) for c in COMMAND_IDS)}.")
        script = body.get("script") or []
        if isinstance(script, str):
            script = [script]
        if not isinstance(script, list) or not all(isinstance(line, str) for line in script):
            raise RunCommandError("'script' must be a list of strings (the script's lines).")
        if len("\n".join(script).encode()) > MAX_SCRIPT_BYTES:
            raise RunCommandError(f"The script is larger than {MAX_SCRIPT_BYTES // 1024} KiB.")
        params = []
        for item in body.get("parameters") or []:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str) or \
                    not isinstance(item.get("value", ""), str):
                raise RunCommandError("Each of 'parameters' must be an object with string 'name' and 'value'.")
            if not _PARAM_NAME.match(item["name"]):
                raise RunCommandError(f"The parameter name '{item['name'][:64]}' is invalid: use letters, digits "
                                      "and '_', not starting with a digit.")
            params.append((item["name"], str(item.get("value", ""))))
        return cls(canonical, tuple(script), tuple(params))

    def positional(self) -> list[str]:
        numbered = [(int(m.group(1)), value) for name, value in self.parameters if (m := _POSITIONAL.match(name))]
        return [value for _, value in sorted(numbered, key=lambda p: p[0])]


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: bytes
    stderr: bytes
    timed_out: bool = False
    timeout_s: float = 0.0

    def to_arm(self) -> dict[str, Any]:
        out = self.stdout.decode(errors="replace")
        err = self.stderr.decode(errors="replace")
        streams = f"\n[stdout]\n{out}\n[stderr]\n{err}"
        if self.exit_code == 0 and not self.timed_out:
            return {"value": [{"code": "ProvisioningState/succeeded", "level": "Info",
                               "displayStatus": "Provisioning succeeded", "message": "Enable succeeded: " + streams}]}
        if self.timed_out:
            reason = f"the script did not finish within {self.timeout_s:g} seconds and was stopped"
        else:
            reason = f"failed to execute command: command terminated with exit status={self.exit_code}"
        return {"value": [{"code": f"ProvisioningState/failed/{self.exit_code}", "level": "Error",
                           "displayStatus": "Provisioning failed", "message": f"Enable failed: {reason}{streams}"}]}


class _Tail:
    """The last ``limit`` bytes of a stream."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()

    async def pump(self, fd: int) -> None:
        """Read ``fd`` (a pipe the server holds) to its end, keeping the tail; closes it."""
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_CHUNK)
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                   os.fdopen(fd, "rb", buffering=0))
        try:
            while chunk := await reader.read(READ_CHUNK):
                self.data += chunk
                if len(self.data) > self.limit:
                    del self.data[: len(self.data) - self.limit]
        finally:
            transport.close()


#: ``spawn(argv, env, stdio, extra_fds)`` starts a process as the VM's root and returns it.
Spawner = Callable[[list[str], dict[str, str], tuple[int | None, int | None, int | None],
                    list[tuple[int, int]]], Awaitable["VMProcess"]]


async def run(spawn: Spawner, request: RunRequest, *, timeout_s: float, output_limit: int = OUTPUT_LIMIT,
              started: Callable[[VMProcess], None] | None = None) -> RunResult:
    """Run ``request`` as the VM's root through ``spawn``. The script reaches bash as ``/dev/fd/3`` (a memory
    file: nothing is written to the VM's disk by the server). ``started`` is told the process once it runs."""
    script = os.memfd_create("script.sh", os.MFD_CLOEXEC)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        os.write(script, ("\n".join(request.script) + "\n").encode())
        os.lseek(script, 0, os.SEEK_SET)
        env = {name: value for name, value in request.parameters}
        process = await spawn(["/bin/bash", "/dev/fd/3", *request.positional()], env, (None, out_w, err_w),
                              [(3, script)])
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        for fd in (script, out_w, err_w):
            os.close(fd)
    if started is not None:
        started(process)
    out, err = _Tail(output_limit), _Tail(output_limit)
    pumps = [asyncio.ensure_future(out.pump(out_r)), asyncio.ensure_future(err.pump(err_r))]
    timed_out = False
    try:
        code = await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
        code = -signal.SIGKILL
    finally:
        process.kill(signal.SIGKILL, group=True)
        if not timed_out:
            await asyncio.wait(pumps, timeout=DRAIN_AFTER_EXIT_S)
        else:
            await process.wait()
            await asyncio.wait(pumps, timeout=DRAIN_AFTER_EXIT_S)
        for pump in pumps:
            pump.cancel()
    if code < 0:
        code = 128 - code
    return RunResult(code, bytes(out.data), bytes(err.data), timed_out, timeout_s)


class RunCommands:
    """One run-command at a time per VM; :meth:`stop` ends a VM's running script (when the VM is deleted)."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._processes: dict[str, VMProcess] = {}

    def stop(self, vm_id: str) -> None:
        process = self._processes.pop(vm_id, None)
        if process is not None:
            process.kill(signal.SIGKILL, group=True)

    async def run(self, vm_id: str, spawn: Spawner, request: RunRequest, *, timeout_s: float) -> RunResult:
        if vm_id in self._running:
            raise Busy("Run command extension execution is in progress. Please wait for completion before invoking "
                       "a run command.")
        self._running.add(vm_id)
        try:
            return await run(spawn, request, timeout_s=timeout_s,
                             started=lambda process: self._processes.__setitem__(vm_id, process))
        finally:
            self._running.discard(vm_id)
            self._processes.pop(vm_id, None)
