"""Stepping into a VM: the command line that runs a program "on" a VM, for run-command and ``vm ssh`` alike.

A VM is a sandbox on this host (same user, same network, same file system). What makes it a place of its own:

- its environment (HOME, the IMDS and App Service identity endpoints, per-VM az, docker and podman
  configuration, containers storage, ``ACRLOCAL_ENDPOINT``, PATH with ``az`` first), given whole: nothing of the
  caller's environment leaks in but ``TERM``;
- a private mount namespace (``unshare --mount --propagation private``) in which the VM's ``hosts`` file is
  bind-mounted (read-only) on ``/etc/hosts``, so registry host names (``myregistry.localhost``) resolve to
  127.0.0.1 without a DNS query, and the VM's ``/etc/containers`` and ``/etc/docker`` (the host's files plus
  ``certs.d/<login server>/ca.crt``), so podman, skopeo, buildah and docker trust the registries without flags.

Root gets the namespace directly; another user gets it inside a user namespace (``--map-root-user``: the program
then runs as uid 0 of that namespace, which is still the same user outside). Where neither is allowed the
program runs without a namespace and a warning says what is missing. Nothing here is a security boundary.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Any

from acrlocal.errors import ConfigError

#: Bind each ``source target`` pair read-only, then run the program. Paths are arguments, never spliced in.
MOUNT_SCRIPT = r"""
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
  mount --bind "$1" "$2" || { echo "acrlocal: cannot bind $1 on $2" >&2; exit 125; }
  mount -o remount,bind,ro "$2" 2>/dev/null || true
  shift 2
done
shift
exec "$@"
"""
NAMESPACE = "mount-namespace"
USER_NAMESPACE = "user-and-mount-namespace"
NO_NAMESPACE = "none"
PASSED_THROUGH = ("TERM", "COLORTERM", "COLUMNS", "LINES")


@dataclass(frozen=True)
class SandboxAccess:
    """What a caller needs to run programs in a VM: the server's answer to ``retrieveSandboxAccess``, and what
    run-command builds for itself. ``mounts`` are ``(source, target)`` pairs."""

    vm_name: str
    resource_id: str
    vm_id: str
    home: str
    environment: dict[str, str]
    mounts: tuple[tuple[str, str], ...] = ()
    bashrc: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.vm_name, "id": self.resource_id, "vmId": self.vm_id, "home": self.home,
                "environment": dict(self.environment),
                "mounts": [{"source": s, "target": t} for s, t in self.mounts],
                "bashrc": self.bashrc, **self.extra}

    @classmethod
    def from_json(cls, body: Any) -> SandboxAccess:
        """Parse the server's answer; :class:`ConfigError` naming the field that is missing or malformed."""
        if not isinstance(body, dict):
            raise ConfigError(f"the sandbox description is a JSON {type(body).__name__}; expected an object")
        try:
            env = body["environment"]
            mounts = body.get("mounts") or []
            if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                    for k, v in env.items()):
                raise ConfigError("the sandbox description's 'environment' is not an object of strings")
            pairs = tuple((str(m["source"]), str(m["target"])) for m in mounts)
            for source, target in pairs:
                if not (source.startswith("/") and target.startswith("/")):
                    raise ConfigError(f"mount {source!r} on {target!r}: both must be absolute paths")
            return cls(vm_name=str(body["name"]), resource_id=str(body["id"]), vm_id=str(body["vmId"]),
                       home=str(body["home"]), environment=dict(env), mounts=pairs,
                       bashrc=str(body["bashrc"]) if body.get("bashrc") else None)
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"the sandbox description lacks {exc}") from None


@functools.lru_cache(maxsize=1)
def namespace_mode() -> tuple[str, str]:
    """How this process can give a VM a private mount namespace here, and why not when it cannot."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return NO_NAMESPACE, "unshare (util-linux) is not installed"
    attempts = [(NAMESPACE, [unshare, "--mount", "--propagation", "private", "true"])] if os.geteuid() == 0 else []
    attempts.append((USER_NAMESPACE, [unshare, "--user", "--map-root-user", "--mount", "--propagation", "private",
                                      "true"]))
    reason = ""
    for mode, probe in attempts:
        try:
            proc = subprocess.run(probe, capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            reason = str(exc)
            continue
        if proc.returncode == 0:
            return mode, ""
        reason = proc.stderr.decode(errors="replace").strip() or f"exit code {proc.returncode}"
    return NO_NAMESPACE, f"unshare is not permitted here ({reason})"


def no_namespace_warning(access: SandboxAccess, reason: str) -> str:
    return (f"acrlocal: VM {access.vm_name!r} runs without a private mount namespace: {reason}. Registry host "
            "names (<name>.localhost) do not resolve and the registries' CA is not in /etc/containers/certs.d; "
            "use the registries' localhost:<port> login servers (`acrlocal status`).")


def command(access: SandboxAccess, argv: list[str], *, mode: str | None = None,
            caller_env: dict[str, str] | None = None) -> tuple[list[str], dict[str, str], str]:
    """``(argv, environment, mode)`` that run ``argv`` in the VM; the working directory is ``access.home``."""
    mode = mode or namespace_mode()[0]
    env = dict(access.environment)
    source = os.environ if caller_env is None else caller_env
    for name in PASSED_THROUGH:
        if name in source and name not in env:
            env[name] = source[name]
    env["ACRLOCAL_VM_ISOLATION"] = mode
    if mode == NO_NAMESPACE or not access.mounts:
        return list(argv), env, mode
    unshare = shutil.which("unshare") or "unshare"
    flags = ["--mount", "--propagation", "private"]
    if mode == USER_NAMESPACE:
        flags = ["--user", "--map-root-user", *flags]
    pairs = [part for pair in access.mounts for part in pair]
    return [unshare, *flags, "--", "/bin/sh", "-c", MOUNT_SCRIPT, "acrlocal-vm", *pairs, "--", *argv], env, mode


def shell_argv(access: SandboxAccess, command_line: str | None) -> list[str]:
    """bash in the VM: interactive with the VM's start file, or ``bash -c`` for a command (as ssh runs one)."""
    bash = shutil.which("bash", path=access.environment.get("PATH")) or "/bin/bash"
    if command_line is not None:
        return [bash, "-c", command_line]
    if access.bashrc:
        return [bash, "--rcfile", access.bashrc, "-i"]
    return [bash, "-i"]
