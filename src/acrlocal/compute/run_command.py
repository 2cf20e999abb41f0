"""``runCommand`` on a VM: a shell script run in the VM's sandbox, answered as Azure's Linux agent answers.

The script (``script`` lines joined by newlines, at most :data:`MAX_SCRIPT_BYTES`) is written to the VM's
``run-command/script.sh`` and run by bash in the VM (:mod:`acrlocal.compute.enter`), in the VM's home, with no
standard input. ``parameters`` named ``argN`` are positional arguments in the order given (az names unnamed
``--parameters`` so); every parameter is also exported as an environment variable. One script runs per VM at a
time (:class:`Busy` otherwise, ARM's 409). The script runs in a session of its own; when it ends, when it has
run for ``timeout_s`` seconds, or when its VM is deleted, that session's processes are killed, so nothing it
started outlives it. Each of stdout and stderr keeps its last :data:`OUTPUT_LIMIT` bytes, as Azure's agent keeps
its last 4,096.

The answer is ARM's ``{"value": [{"code", "level", "displayStatus", "message"}]}`` with ``message`` =
``"Enable succeeded: \\n[stdout]\\n<out>\\n[stderr]\\n<err>"``; a script that exits non-zero, or is stopped, gives
``ProvisioningState/failed/<exit code>`` and ``"Enable failed: failed to execute command: command terminated with
exit status=<n>\\n[stdout]..."`` (the agent's words).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from acrlocal.compute import enter
from acrlocal.compute.enter import SandboxAccess
from acrlocal.errors import AcrLocalError

MAX_SCRIPT_BYTES = 256 * 1024
OUTPUT_LIMIT = 4096
READ_CHUNK = 65536
DRAIN_AFTER_EXIT_S = 2.0
COMMAND_IDS = ("RunShellScript",)
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_POSITIONAL = re.compile(r"^arg([0-9]{1,4})$")


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

    async def pump(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(READ_CHUNK):
            self.data += chunk
            if len(self.data) > self.limit:
                del self.data[: len(self.data) - self.limit]


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run(access: SandboxAccess, request: RunRequest, workdir: Path, *, timeout_s: float,
              output_limit: int = OUTPUT_LIMIT, started: Callable[[int], None] | None = None) -> RunResult:
    """Run ``request`` in the VM described by ``access``; ``workdir`` holds the script file. ``started`` is told
    the script's session id (its process group) once it runs."""
    workdir.mkdir(mode=0o700, exist_ok=True)
    script = workdir / "script.sh"
    fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(request.script) + "\n")
    bash = shutil.which("bash", path=access.environment.get("PATH")) or "/bin/bash"
    argv = [bash, str(script), *request.positional()]
    env = {**{name: value for name, value in request.parameters}, **access.environment}
    access = SandboxAccess(access.vm_name, access.resource_id, access.vm_id, access.home, env, access.mounts)
    full, full_env, mode = enter.command(access, argv, caller_env={})
    prefix = b""
    if mode == enter.NO_NAMESPACE and access.mounts:
        prefix = (enter.no_namespace_warning(access, enter.namespace_mode()[1]) + "\n").encode()
    proc = await asyncio.create_subprocess_exec(
        *full, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env=full_env, cwd=access.home, start_new_session=True)
    if started is not None:
        started(proc.pid)
    out, err = _Tail(output_limit), _Tail(output_limit)
    assert proc.stdout is not None and proc.stderr is not None
    pumps = [asyncio.ensure_future(out.pump(proc.stdout)), asyncio.ensure_future(err.pump(proc.stderr))]
    timed_out = False
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        timed_out = True
    finally:
        _kill_session(proc.pid)
        if proc.returncode is None:
            await proc.wait()
        await asyncio.wait(pumps, timeout=DRAIN_AFTER_EXIT_S)
        for pump in pumps:
            pump.cancel()
    code = proc.returncode if proc.returncode is not None else -9
    if code < 0:
        code = 128 - code
    return RunResult(code, bytes(out.data), (prefix + bytes(err.data))[-output_limit:] if prefix else
                     bytes(err.data), timed_out, timeout_s)


class RunCommands:
    """One run-command at a time per VM; :meth:`stop` ends a VM's running script (when the VM is deleted)."""

    def __init__(self) -> None:
        self._running: set[str] = set()
        self._sessions: dict[str, int] = {}

    def stop(self, vm_id: str) -> None:
        session = self._sessions.pop(vm_id, None)
        if session is not None:
            _kill_session(session)

    async def run(self, vm_id: str, access: SandboxAccess, request: RunRequest, workdir: Path, *,
                  timeout_s: float) -> RunResult:
        if vm_id in self._running:
            raise Busy("Run command extension execution is in progress. Please wait for completion before invoking "
                       "a run command.")
        self._running.add(vm_id)
        try:
            return await run(access, request, workdir, timeout_s=timeout_s,
                             started=lambda pid: self._sessions.__setitem__(vm_id, pid))
        finally:
            self._running.discard(vm_id)
            self._sessions.pop(vm_id, None)
