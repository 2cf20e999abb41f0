"""Logging the local container client in to a registry, as ``az acr login`` does.

The client is ``$DOCKER_COMMAND``, else ``docker``, else ``podman`` when there is no ``docker`` on PATH. ``<cmd>
ps`` runs first: anything on its stderr (a daemon that is not running) is az's ``DOCKER_COMMAND_ERROR`` and
nothing is logged in. Then ``<cmd> login --username 00000000-... --password-stdin <login server>`` with the ACR
refresh token on stdin (never on the command line).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from acrlocal.cli.acr_auth import az_error
from acrlocal.cli.errors import CLIError

DOCKER_COMMAND_ERROR = "DOCKER_COMMAND_ERROR"
NOT_INSTALLED = "Please verify if Docker client is installed and running."


def docker_command() -> str:
    """The container client to use, checked with ``<cmd> ps``."""
    command = os.environ.get("DOCKER_COMMAND") or "docker"
    if not os.environ.get("DOCKER_COMMAND") and not shutil.which("docker") and shutil.which("podman"):
        command = "podman"
    try:
        proc = subprocess.run([command, "ps"], capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        raise az_error(DOCKER_COMMAND_ERROR, NOT_INSTALLED) from None
    if proc.stderr:
        raise az_error(DOCKER_COMMAND_ERROR, proc.stderr.decode(errors="replace").rstrip("\n"))
    return command


def login(command: str, login_server: str, username: str, password: str) -> None:
    try:
        proc = subprocess.run([command, "login", "--username", username, "--password-stdin", login_server],
                              input=password.encode(), stderr=subprocess.PIPE, timeout=120)
    except (OSError, BrokenPipeError):
        raise CLIError(f"Failed to pass credentials to '{command}' via stdin. Please ensure '{command}' supports "
                       "--password-stdin.") from None
    except subprocess.TimeoutExpired:
        raise CLIError(f"'{command} login' did not finish within 120 seconds.") from None
    if proc.returncode != 0:
        raise CLIError(proc.stderr.decode(errors="replace").strip() or f"'{command} login' failed "
                       f"(exit code {proc.returncode}).")
    if proc.stderr:
        from acrlocal.cli.framework import warn

        warn(proc.stderr.decode(errors="replace").strip())
