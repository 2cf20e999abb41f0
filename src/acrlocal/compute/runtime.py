"""The VMs this server runs: their records, sandboxes, identities and IMDS listeners.

Creating a VM opens its IMDS listener at once (plain http on 127.0.0.1, one port per VM, allocated from
``settings.imds_port_base``); a restart reopens every VM's listener on the port it had. Deleting a VM closes its
listener, deletes its system-assigned principal (role assignments naming it then grant nothing) and removes its
sandbox. A VM's managed identities are resolved through the directory and cached in memory until the directory
or the VM changes, so the IMDS hot path does no SQL.

Failures raise :class:`~acrlocal.errors.NotFound`, :class:`~acrlocal.errors.AlreadyExists` or
:class:`~acrlocal.errors.ConfigError`; a create that fails half-way is undone (principal, row, sandbox).
"""

from __future__ import annotations

import contextlib
import re
import secrets
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from acrlocal.compute.enter import SandboxAccess
from acrlocal.compute.network import VMNetwork
from acrlocal.compute.run_command import RunCommands, RunRequest, RunResult
from acrlocal.compute.store import VMTable
from acrlocal.compute.tools import VMTools
from acrlocal.compute.vms import Sandbox, VirtualMachine
from acrlocal.config import Settings
from acrlocal.errors import ConfigError, NotFound
from acrlocal.identity.directory import Directory, Principal
from acrlocal.listeners import Listeners, bind

VM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/(?P<rg>[-\w._()]{1,90})/providers/"
    r"Microsoft\.Compute/virtualMachines/(?P<name>[a-zA-Z0-9][-a-zA-Z0-9_.]{0,63})$", re.IGNORECASE)


@dataclass(frozen=True)
class VMIdentities:
    """The managed identities a VM holds now. User-assigned identities whose principal is gone are left out."""

    system: Principal | None
    user: tuple[Principal, ...]

    def all(self) -> tuple[Principal, ...]:
        return ((self.system,) if self.system else ()) + self.user


def parse_vm_id(resource_id: str) -> tuple[str, str, str]:
    """``(subscription, resource group, name)`` of a VM's ARM id; :class:`ConfigError` if it is not one."""
    m = VM_ID.match(resource_id)
    if not m:
        raise ConfigError(f"{resource_id!r} is not a virtual machine id (/subscriptions/<guid>/resourceGroups/"
                          "<group>/providers/Microsoft.Compute/virtualMachines/<name>)")
    return m["sub"].lower(), m["rg"], m["name"]


class ComputeRuntime:
    def __init__(self, settings: Settings, table: VMTable, directory: Directory, listeners: Listeners) -> None:
        self.settings = settings
        self.table = table
        self.directory = directory
        self.listeners = listeners
        self.runner: web.AppRunner | None = None
        self._by_port: dict[int, VirtualMachine] = {}
        self._by_key: dict[str, VirtualMachine] = {}
        self._identities: dict[str, tuple[int, VMIdentities]] = {}
        # What VMs see of the server (endpoint, registry names); set by the server before start().
        self.network: VMNetwork | None = None
        self.tools = VMTools.detect()
        self.run_commands = RunCommands()

    @property
    def vms_dir(self) -> Path:
        return self.settings.data_dir / "vms"

    def sandbox(self, vm: VirtualMachine) -> Sandbox:
        return Sandbox.of(self.vms_dir, vm, self.settings.ca_path)

    def access(self, vm: VirtualMachine) -> SandboxAccess:
        """How to run programs in ``vm``: its environment, home and the bind mounts of its namespace."""
        sandbox = self.sandbox(vm)
        sandbox.ensure_runroot()
        return SandboxAccess(vm_name=vm.name, resource_id=vm.resource_id, vm_id=vm.vm_id, home=str(sandbox.home),
                             environment=sandbox.shell_environment(vm, self.network, self.tools),
                             mounts=tuple(sandbox.mounts()), bashrc=str(sandbox.bashrc))

    async def run_command(self, resource_id: str, request: RunRequest) -> RunResult:
        """Run a script in the VM (one at a time per VM; see :mod:`acrlocal.compute.run_command`)."""
        vm = self.get(resource_id)
        return await self.run_commands.run(vm.vm_id, self.access(vm), request, self.sandbox(vm).run_command_dir,
                                           timeout_s=self.settings.run_command_timeout_s)

    def set_network(self, network: VMNetwork) -> None:
        """Rewrite every VM's endpoint, hosts file and certificate directories if ``network`` changed."""
        if network == self.network:
            return
        self.network = network
        for vm in self._by_key.values():
            self.sandbox(vm).write(vm, network, self.tools)

    # -- lookups -----------------------------------------------------------------------------------

    def by_port(self, port: int) -> VirtualMachine | None:
        return self._by_port.get(port)

    def get(self, resource_id: str) -> VirtualMachine:
        vm = self._by_key.get(resource_id.lower())
        if vm is None:
            raise NotFound(f"virtual machine {resource_id!r} does not exist")
        return vm

    def all(self) -> list[VirtualMachine]:
        return list(self._by_key.values())

    def identities(self, vm: VirtualMachine) -> VMIdentities:
        """The VM's managed identities, resolved through the directory (cached per directory generation)."""
        generation = self.directory.generation
        cached = self._identities.get(vm.vm_id)
        if cached is not None and cached[0] == generation:
            return cached[1]
        system = None
        if vm.system_principal_id:
            with contextlib.suppress(NotFound):
                system = self.directory.principal(vm.system_principal_id)
        user = []
        for rid in vm.user_assigned:
            p = self.directory.find_principal(resource_id=rid)
            if p is not None and p.kind == "ManagedIdentity" and p.mi_kind == "user":
                user.append(p)
        resolved = VMIdentities(system, tuple(user))
        self._identities[vm.vm_id] = (generation, resolved)
        return resolved

    # -- lifecycle ---------------------------------------------------------------------------------

    def _index(self, vm: VirtualMachine) -> None:
        old = self._by_key.get(vm.resource_id.lower())
        if old is not None and old.imds_port is not None:
            self._by_port.pop(old.imds_port, None)
        self._by_key[vm.resource_id.lower()] = vm
        if vm.imds_port is not None:
            self._by_port[vm.imds_port] = vm
        self._identities.pop(vm.vm_id, None)

    def _unindex(self, vm: VirtualMachine) -> None:
        self._by_key.pop(vm.resource_id.lower(), None)
        if vm.imds_port is not None:
            self._by_port.pop(vm.imds_port, None)
        self._identities.pop(vm.vm_id, None)

    async def start(self, runner: web.AppRunner) -> None:
        """Reopen the IMDS listener of every VM, on the port it had before."""
        self.runner = runner
        for vm in self.table.all():
            await self._open(vm)

    async def _open(self, vm: VirtualMachine) -> VirtualMachine:
        assert self.runner is not None, "ComputeRuntime.start() first"
        if vm.imds_port is not None:
            try:
                sock = bind(self.listeners.host, vm.imds_port)
            except OSError as exc:
                raise ConfigError(f"virtual machine {vm.name!r} needs IMDS port {vm.imds_port}, which is in use "
                                  f"({exc.strerror})") from exc
        else:
            taken = {v.imds_port for v in self.table.all() if v.imds_port is not None}
            sock = self.listeners.allocate(self.settings.imds_port_base, taken | {self.settings.port})
            vm = self.table.update(vm.resource_id, imds_port=sock.getsockname()[1])
        await self.listeners.open(f"imds:{vm.vm_id}", self.runner, sock, None)
        self._index(vm)
        self.sandbox(vm).write(vm, self.network, self.tools)
        return vm

    async def create(self, resource_id: str, *, tenant_id: str, location: str, system_assigned: bool = False,
                     user_assigned: Sequence[str] = (), profile: dict[str, Any] | None = None) -> VirtualMachine:
        """Add a VM and open its IMDS listener. The caller has checked that the user-assigned identities exist."""
        sub, group, name = parse_vm_id(resource_id)
        vm = VirtualMachine(
            vm_id=str(uuid.uuid4()), resource_id=resource_id, name=name, resource_group=group, subscription_id=sub,
            tenant_id=tenant_id, location=location, user_assigned=tuple(user_assigned), profile=dict(profile or {}),
            identity_secret=secrets.token_urlsafe(32), created=time.time())
        principal = None
        added = False
        try:
            if system_assigned:
                principal = self.directory.create_managed_identity(tenant_id, resource_id, name, "system")
                vm = replace(vm, system_principal_id=principal.object_id)
            vm = self.table.add(vm)
            added = True
            return await self._open(vm)
        except BaseException:
            if added:
                await self.listeners.close(f"imds:{vm.vm_id}")
                self._unindex(vm)
                self.table.remove(resource_id)
                self.sandbox(vm).remove()
            if principal is not None:
                self.directory.delete_principal(principal.object_id)
            raise

    async def set_identities(self, resource_id: str, *, system_assigned: bool,
                             user_assigned: Sequence[str]) -> VirtualMachine:
        """Give the VM exactly these identities. Turning the system identity off deletes its principal; turning
        it on again makes a new one (a new object id, as in Azure)."""
        vm = self.get(resource_id)
        principal_id = vm.system_principal_id
        created: Principal | None = None
        if system_assigned and not principal_id:
            created = self.directory.create_managed_identity(vm.tenant_id, vm.resource_id, vm.name, "system")
            principal_id = created.object_id
        try:
            vm = self.table.update(resource_id, user_assigned=list(user_assigned),
                                   system_principal_id=principal_id if system_assigned else None)
        except BaseException:
            if created is not None:
                self.directory.delete_principal(created.object_id)
            raise
        if not system_assigned and principal_id:
            self.directory.delete_principal(principal_id)
        self._index(vm)
        return vm

    def update_profile(self, resource_id: str, profile: dict[str, Any]) -> VirtualMachine:
        """Replace what IMDS reports about the VM (size, OS, image, tags...)."""
        self.get(resource_id)
        vm = self.table.update(resource_id, profile=profile)
        self._index(vm)
        return vm

    def stop(self) -> None:
        """On server shutdown: end the scripts still running and clear each VM's run-time directory, as a
        reboot clears ``/run``. Sandboxes, identities and ports stay for the next start."""
        for vm in list(self._by_key.values()):
            self.run_commands.stop(vm.vm_id)
            self.sandbox(vm).clear_runroot()

    async def delete(self, resource_id: str) -> None:
        """Close the VM's IMDS listener, delete its system identity and its sandbox, forget it."""
        vm = self.get(resource_id)
        self.run_commands.stop(vm.vm_id)
        await self.listeners.close(f"imds:{vm.vm_id}")
        self._unindex(vm)
        if vm.system_principal_id:
            self.directory.delete_principal(vm.system_principal_id)
        self.table.remove(vm.resource_id)
        self.sandbox(vm).remove()
