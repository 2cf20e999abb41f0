"""A virtual machine as acrlocal runs it, and its sandbox on disk (pure: no HTTP, no SQL).

A VM's sandbox is ``<data dir>/vms/<vmId>/``::

    home/          $HOME of the VM's shell and run-command (``.azure``, ``.docker``, ``.config/containers`` live here)
    env            the VM's environment, ``KEY='value'`` lines a POSIX shell can source: HOME, the IMDS address
                   (``AZURE_POD_IDENTITY_AUTHORITY_HOST``), the CA bundle, per-VM config directories
    appservice.env the App Service identity endpoint (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``), for code that
                   wants the App Service door to the same identities (kept apart: azure-identity prefers it over
                   IMDS when both are set)
    vm.json        name, ARM id, vmId and ports, for people and tools

Both env files are mode 0600 in a 0700 directory: ``appservice.env`` holds the VM's identity secret.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acrlocal.config import LOOPBACK


@dataclass(frozen=True)
class VirtualMachine:
    vm_id: str
    resource_id: str
    name: str
    resource_group: str
    subscription_id: str
    tenant_id: str
    location: str
    system_principal_id: str | None = None
    user_assigned: tuple[str, ...] = ()
    profile: dict[str, Any] = field(default_factory=dict)
    imds_port: int | None = None
    identity_secret: str = field(default="", repr=False)
    created: float = 0.0

    @property
    def imds_url(self) -> str:
        """What ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` is set to inside the VM."""
        return f"http://{LOOPBACK}:{self.imds_port}"

    @property
    def identity_endpoint(self) -> str:
        """What ``IDENTITY_ENDPOINT`` is set to for the App Service door."""
        return f"http://{LOOPBACK}:{self.imds_port}/msi/token"

    def identity_type(self) -> str:
        """ARM's ``identity.type`` for this VM."""
        kinds = (["SystemAssigned"] if self.system_principal_id else []) + (
            ["UserAssigned"] if self.user_assigned else [])
        return ", ".join(kinds) or "None"


def _env_lines(values: dict[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Sandbox:
    """The directory of one VM. ``ca_path`` is the acrlocal CA the VM's clients trust."""

    root: Path
    ca_path: Path

    @classmethod
    def of(cls, vms_dir: Path, vm: VirtualMachine, ca_path: Path) -> Sandbox:
        return cls(vms_dir / vm.vm_id, ca_path)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def appservice_env_file(self) -> Path:
        return self.root / "appservice.env"

    def environment(self, vm: VirtualMachine) -> dict[str, str]:
        """The VM's environment (what ``env`` holds)."""
        home = str(self.home)
        return {
            "HOME": home,
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": vm.imds_url,
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
            "AZURE_CONFIG_DIR": f"{home}/.azure",
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "DOCKER_CONFIG": f"{home}/.docker",
            "REGISTRY_AUTH_FILE": f"{home}/.config/containers/auth.json",
            "NO_PROXY": "127.0.0.1,localhost,.localhost",
            "no_proxy": "127.0.0.1,localhost,.localhost",
            "ACRLOCAL_VM_NAME": vm.name,
            "ACRLOCAL_VM_ID": vm.vm_id,
            "ACRLOCAL_VM_RESOURCE_ID": vm.resource_id,
        }

    def appservice_environment(self, vm: VirtualMachine) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": vm.identity_endpoint, "IDENTITY_HEADER": vm.identity_secret}

    def write(self, vm: VirtualMachine) -> None:
        """Create the directories (kept if they exist) and rewrite the env files and ``vm.json``."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.home.mkdir(exist_ok=True)
        _write_private(self.env_file, _env_lines(self.environment(vm)))
        _write_private(self.appservice_env_file, _env_lines(self.appservice_environment(vm)))
        _write_private(self.root / "vm.json", json.dumps({
            "name": vm.name, "resourceId": vm.resource_id, "vmId": vm.vm_id, "imdsEndpoint": vm.imds_url,
            "identityEndpoint": vm.identity_endpoint, "home": str(self.home)}, indent=2) + "\n")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
