"""The programs a VM gets from this host, found once when the server starts.

- ``az``: Microsoft's Azure CLI when one is installed (``$ACRLOCAL_VM_AZ`` names it, else ``az`` on PATH; the
  value ``acrlocal`` chooses acrlocal's CLI even then), else acrlocal's az-shaped CLI. With the Azure CLI, the
  VM's ``az`` runs ``acrlocal az-setup --apply`` in the VM's ``AZURE_CONFIG_DIR`` on first use (and again when
  the server's endpoint moved), so its cloud is this server.
- ``docker`` as podman (what Debian's podman-docker package does) when docker has no daemon here (no
  ``/var/run/docker.sock``) and podman is installed: the tutorial's ``docker pull`` and ``az acr login`` (which
  runs ``docker ps`` and ``docker login``) then work in a VM.
- the Python and the directory of the ``acrlocal`` package the VM's shims run.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import acrlocal

DOCKER_SOCKET = Path("/var/run/docker.sock")
ENV_VM_AZ = "ACRLOCAL_VM_AZ"


@dataclass(frozen=True)
class VMTools:
    python: str
    package_root: str
    real_az: str | None = None
    podman_as_docker: str | None = None

    @classmethod
    def detect(cls, path: str | None = None) -> VMTools:
        """What this host offers, looked up on ``path`` (default ``$PATH``); a ``bin`` directory of an acrlocal
        sandbox is never taken for the Azure CLI."""
        search = os.pathsep.join(p for p in (path or os.environ.get("PATH", "")).split(os.pathsep)
                                 if p and not _is_sandbox_bin(p))
        chosen = os.environ.get(ENV_VM_AZ, "")
        az = None if chosen == "acrlocal" else shutil.which(chosen or "az", path=None if chosen else search)
        podman = shutil.which("podman", path=search)
        return cls(python=sys.executable, package_root=str(Path(acrlocal.__file__).resolve().parent.parent),
                   real_az=az, podman_as_docker=podman if podman and not DOCKER_SOCKET.exists() else None)


def _is_sandbox_bin(directory: str) -> bool:
    parts = Path(directory).parts
    return len(parts) >= 3 and parts[-1] == "bin" and parts[-3] == "vms"
