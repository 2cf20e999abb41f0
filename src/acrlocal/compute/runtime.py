"""The VMs this server runs: their records, directories, identities, power and running machines.

A VM is made (its principal, its row, its directory) without starting anything; it boots the first time
something runs in it (a run-command, a shell, an SSH connection) or when it is started or restarted, and stays up
until it is stopped, deallocated, deleted, or the server stops. Booting makes its namespaces
(:mod:`acrlocal.compute.vminit`), checks them, and serves its doors: IMDS (``169.254.169.254:80``) and the front
door (Azure's names on port 443, TLS with the local CA) through the server's own aiohttp applications, the DNS
stub (:mod:`acrlocal.compute.dns`), and, with Docker Engine on the host, ``/run/docker.sock``, whose first
connection starts the VM's own ``dockerd``. Requests on those doors are told apart by the network namespace of
the connection (:meth:`ComputeRuntime.by_netns`).

Nothing here costs work per VM when a registry is added or removed: the DNS stub asks the registries when a name
is looked up, and the front door's certificate covers ``*.azurecr.io``. Starting the server reads the VM rows and
boots nothing.

A VM's managed identities are resolved through the directory and cached in memory until the directory or the VM
changes, so the IMDS hot path does no SQL. A user-assigned identity is the principal it was when it was assigned:
one deleted and made again under its ARM id is not held until it is assigned again. The directory's and the
table's SQL that the event loop asks for runs through ``sql`` (the server's ``SqlThread``: inline on SQLite, off
the loop on PostgreSQL); :meth:`get`, which may read the table for a VM this server does not run, is for code
already in that thread, :meth:`lookup` for the loop. Failures raise :class:`~acrlocal.errors.NotFound`,
:class:`~acrlocal.errors.ConfigError`, :class:`VMNotRunning` or :class:`~acrlocal.compute.machine.MachineError`;
a create that fails half-way is undone (principal, row, directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from acrlocal.compute import sandbox
from acrlocal.compute.console import Tickets
from acrlocal.compute.machine import Machine, MachineError, VMProcess, check_host, netns_cookie
from acrlocal.compute.run_command import RunCommands, RunRequest, RunResult
from acrlocal.compute.sandbox import ROOT, Account, VMDirectory
from acrlocal.compute.store import VMTable
from acrlocal.compute.tools import DOCKERD_STARTER, TOOLS, VMTools, write_shared
from acrlocal.compute.vms import DEALLOCATED, RUNNING, STOPPED, VirtualMachine
from acrlocal.config import Settings
from acrlocal.errors import AcrLocalError, ConfigError, NotFound
from acrlocal.identity.directory import Directory, Principal
from acrlocal.identity.imds import VMIdentities
from acrlocal.storage.sql import SqlThread

log = logging.getLogger(__name__)

VM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-fA-F-]{36})/resourceGroups/(?P<rg>[-\w._()]{1,90})/providers/"
    r"Microsoft\.Compute/virtualMachines/(?P<name>[a-zA-Z0-9][-a-zA-Z0-9_.]{0,63})\Z", re.IGNORECASE)
DOCKERD_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0)


class VMNotRunning(AcrLocalError, RuntimeError):
    """The VM is stopped or deallocated: nothing runs in it until it is started."""


def parse_vm_id(resource_id: str) -> tuple[str, str, str]:
    """``(subscription, resource group, name)`` of a VM's ARM id; :class:`ConfigError` if it is not one."""
    m = VM_ID.match(resource_id)
    if not m:
        raise ConfigError(f"{resource_id!r} is not a virtual machine id (/subscriptions/<guid>/resourceGroups/"
                          "<group>/providers/Microsoft.Compute/virtualMachines/<name>)")
    return m["sub"].lower(), m["rg"], m["name"]


@dataclass(frozen=True)
class Doors:
    """What the server serves on a VM's doors: the IMDS application, the control application behind the front
    door and its TLS context (Azure's names), and whether a registry exists (for the DNS stub)."""

    imds: web.AppRunner
    front: web.AppRunner
    front_tls: ssl.SSLContext
    registry_exists: Callable[[str], bool]


@dataclass
class _Running:
    machine: Machine
    admin: Account
    tty_gid: int
    servers: list[asyncio.AbstractServer]
    dns: asyncio.BaseTransport | None = None
    dockerd: VMProcess | None = None
    dockerd_failures: int = 0


class HostedElsewhere(AcrLocalError):
    """The VM runs on another replica of the server (``host``, its name there): only that one answers its calls."""

    def __init__(self, resource_id: str, host: str) -> None:
        super().__init__(f"virtual machine {resource_id!r} runs on the acrlocal replica {host!r}")
        self.resource_id, self.host = resource_id, host


class ComputeRuntime:
    def __init__(self, settings: Settings, table: VMTable, directory: Directory, ca_pem: Callable[[], bytes],
                 ca_hash: str | None = None, *, sql: SqlThread) -> None:
        self.settings = settings
        self.table = table
        self.directory = directory
        self.sql = sql
        self.ca_pem = ca_pem
        self.ca_hash = ca_hash
        self.doors: Doors | None = None
        self.tools = VMTools.detect()
        self.run_commands = RunCommands()
        self.consoles = Tickets()
        self._by_key: dict[str, VirtualMachine] = {}
        self._identities: dict[str, tuple[int, VMIdentities]] = {}
        self._running: dict[str, _Running] = {}
        self._by_netns: dict[int, VirtualMachine] = {}
        self._boots: dict[str, asyncio.Task[_Running]] = {}
        self._host_checked = False

    @property
    def vms_dir(self) -> Path:
        return self.settings.data_dir / "vms"

    @property
    def shared_dir(self) -> Path:
        return self.settings.data_dir / "vm-shared"

    def directory_of(self, vm: VirtualMachine) -> VMDirectory:
        return VMDirectory(self.vms_dir / vm.vm_id)

    # -- lookups -----------------------------------------------------------------------------------

    def get(self, resource_id: str) -> VirtualMachine:
        """The VM this server runs; :class:`HostedElsewhere` if another replica runs it, ``NotFound`` if none. A VM
        this server does not run is looked up in the table (SQL): on the event loop, use :meth:`lookup`."""
        vm = self._by_key.get(resource_id.lower())
        if vm is None:
            host = self.table.host_of(resource_id)
            if host is not None:
                raise HostedElsewhere(resource_id, host)
            raise NotFound(f"virtual machine {resource_id!r} does not exist")
        return vm

    async def lookup(self, resource_id: str) -> VirtualMachine:
        """:meth:`get`, with the table's look-up of a VM this server does not run made through ``sql`` (off the
        event loop on PostgreSQL)."""
        vm = self._by_key.get(resource_id.lower())
        if vm is not None:
            return vm
        return await self.sql.run(self.get, resource_id)

    def all(self) -> list[VirtualMachine]:
        return list(self._by_key.values())

    def by_netns(self, cookie: int) -> VirtualMachine | None:
        """The running VM whose network namespace has this cookie (see :func:`~acrlocal.compute.machine.
        netns_cookie`); what IMDS uses to know which VM asks."""
        return self._by_netns.get(cookie)

    def vm_of_request(self, request: web.Request) -> VirtualMachine | None:
        """The VM a request came from, through one of its doors; ``None`` for the host's own connections."""
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            return None
        try:
            return self._by_netns.get(netns_cookie(sock))
        except OSError:
            return None

    async def identities(self, vm: VirtualMachine) -> VMIdentities:
        """The VM's managed identities, resolved through the directory (cached per directory generation; a miss
        reads the directory through ``sql``, off the event loop on PostgreSQL)."""
        generation = self.directory.generation
        cached = self._identities.get(vm.vm_id)
        if cached is not None and cached[0] == generation:
            return cached[1]
        resolved = await self.sql.run(self._resolve_identities, vm)
        self._identities[vm.vm_id] = (generation, resolved)
        return resolved

    def _resolve_identities(self, vm: VirtualMachine) -> VMIdentities:
        system = None
        if vm.system_principal_id:
            with contextlib.suppress(NotFound):
                system = self.directory.principal(vm.system_principal_id)
        user = []
        for rid in vm.user_assigned:
            p = self.directory.find_principal(resource_id=rid)
            bound = vm.user_principals.get(rid.lower())
            if p is not None and p.kind == "ManagedIdentity" and p.mi_kind == "user" and bound in (None, p.object_id):
                user.append(p)
        return VMIdentities(system, tuple(user))

    def _bind(self, vm: VirtualMachine, user_assigned: Sequence[str]) -> dict[str, str]:
        """The principal each of ``user_assigned`` (ARM ids) is bound to on ``vm``: the one it was bound to if the
        VM holds it already, else the one it has now (none if it has none). In the ``sql`` thread."""
        bound = {}
        for rid in user_assigned:
            key = rid.lower()
            if key in vm.user_principals:
                bound[key] = vm.user_principals[key]
                continue
            p = self.directory.find_principal(resource_id=rid)
            if p is not None and p.kind == "ManagedIdentity" and p.mi_kind == "user":
                bound[key] = p.object_id
        return bound

    def power_state(self, resource_id: str) -> str:
        """``running``, ``stopped`` or ``deallocated`` (Azure's ``PowerState/<state>``)."""
        return self.get(resource_id).power_state

    def is_booted(self, resource_id: str) -> bool:
        """True while the VM's processes run (it has booted and not stopped since)."""
        running = self._running.get(self.get(resource_id).vm_id)
        return running is not None and running.machine.running

    # -- lifecycle ---------------------------------------------------------------------------------

    def _index(self, vm: VirtualMachine) -> None:
        self._by_key[vm.resource_id.lower()] = vm
        self._identities.pop(vm.vm_id, None)
        running = self._running.get(vm.vm_id)
        if running is not None and running.machine.netns:
            self._by_netns[running.machine.netns] = vm

    def _unindex(self, vm: VirtualMachine) -> None:
        self._by_key.pop(vm.resource_id.lower(), None)
        self._identities.pop(vm.vm_id, None)

    async def start(self, doors: Doors) -> None:
        """Read the VMs (booting none) and bring the VMs' shared tools directory up to date."""
        self.doors = doors
        for vm in await asyncio.to_thread(self.table.all):
            self._index(vm)
        await asyncio.to_thread(write_shared, self.shared_dir, self.tools, self.ca_pem())

    async def create(self, resource_id: str, *, tenant_id: str, location: str, system_assigned: bool = False,
                     user_assigned: Sequence[str] = (), profile: dict[str, Any] | None = None,
                     ssh_keys: Sequence[str] = (), check: bool = True) -> VirtualMachine:
        """Add a VM: its system principal, row and directory (its disk and ``/etc``). Nothing runs yet. The caller
        has checked that the user-assigned identities exist. :class:`MachineError`, before anything is made, if
        this server cannot run VMs (see :meth:`check_host`; ``check=False`` skips that, for a VM ARM already
        has)."""
        sub, group, name = parse_vm_id(resource_id)
        if check:
            await self.check_host()
        vm = VirtualMachine(
            vm_id=str(uuid.uuid4()), resource_id=resource_id, name=name, resource_group=group, subscription_id=sub,
            tenant_id=tenant_id, location=location, user_assigned=tuple(user_assigned), profile=dict(profile or {}),
            created=time.time())
        accounts = sandbox.make_accounts(vm.admin_username)
        principal = None
        added = False
        folder = self.directory_of(vm)
        try:
            if system_assigned:
                principal = await self.sql.run(self.directory.create_managed_identity, tenant_id, resource_id, name,
                                               "system")
                vm = replace(vm, system_principal_id=principal.object_id)
            vm = replace(vm, user_principals=await self.sql.run(self._bind, vm, vm.user_assigned))
            await asyncio.to_thread(self._provision, folder, vm, accounts, list(ssh_keys))
            vm = await self.sql.run(self.table.add, vm)
            added = True
            self._index(vm)
            return vm
        except BaseException:
            if added:
                self._unindex(vm)
                await self.sql.run(self.table.remove, resource_id)
            await asyncio.to_thread(folder.remove)
            if principal is not None:
                await self.sql.run(self.directory.delete_principal, principal.object_id)
            raise

    def _provision(self, folder: VMDirectory, vm: VirtualMachine, accounts: sandbox.Accounts,
                   ssh_keys: list[str]) -> None:
        sandbox.provision(folder, hostname=vm.hostname, accounts=accounts, ssh_keys=ssh_keys, ca_pem=self.ca_pem(),
                          ca_hash=self.ca_hash, vm_id=vm.vm_id)
        sandbox.write_info(folder, name=vm.name, resource_id=vm.resource_id, vm_id=vm.vm_id, accounts=accounts)

    async def set_identities(self, resource_id: str, *, system_assigned: bool,
                             user_assigned: Sequence[str]) -> VirtualMachine:
        """Give the VM exactly these identities. Turning the system identity off deletes its principal; turning
        it on again makes a new one (a new object id, as in Azure). A user-assigned identity the VM holds already
        stays bound to the principal it had when it was assigned (one made again under its ARM id is not taken);
        one newly assigned is bound to the principal it has now. The directory and the table are written in one
        call through ``sql``; a failed update deletes the principal it made."""
        vm = await self.lookup(resource_id)
        vm = await self.sql.run(self._set_identities, vm, system_assigned, list(user_assigned))
        self._index(vm)
        return vm

    def _set_identities(self, vm: VirtualMachine, system_assigned: bool, user_assigned: list[str]) -> VirtualMachine:
        principal_id = vm.system_principal_id
        created: Principal | None = None
        if system_assigned and not principal_id:
            created = self.directory.create_managed_identity(vm.tenant_id, vm.resource_id, vm.name, "system")
            principal_id = created.object_id
        try:
            updated = self.table.update(vm.resource_id, user_assigned=user_assigned,
                                        user_principals=self._bind(vm, user_assigned),
                                        system_principal_id=principal_id if system_assigned else None)
        except BaseException:
            if created is not None:
                self.directory.delete_principal(created.object_id)
            raise
        if not system_assigned and principal_id:
            self.directory.delete_principal(principal_id)
        return updated

    async def update_profile(self, resource_id: str, profile: dict[str, Any]) -> VirtualMachine:
        """Replace what IMDS reports about the VM (size, OS, image, tags...); the table is written through
        ``sql``."""
        await self.lookup(resource_id)
        vm = await self.sql.run(self.table.update, resource_id, profile=profile)
        self._index(vm)
        return vm

    async def set_ssh_keys(self, resource_id: str, keys: Sequence[str]) -> None:
        """Make ``keys`` (``osProfile.linuxConfiguration.ssh.publicKeys[].keyData``) the admin user's
        ``~/.ssh/authorized_keys``, written without following any link the VM may have made."""
        vm = await self.lookup(resource_id)
        folder = self.directory_of(vm)
        admin, _, _ = await asyncio.to_thread(sandbox.read_accounts, folder)
        await asyncio.to_thread(sandbox.write_file, folder.disk, f"{admin.home.lstrip('/')}/.ssh/authorized_keys",
                                sandbox.authorized_keys(keys), mode=0o600, uid=admin.uid, gid=admin.gid)

    async def delete(self, resource_id: str) -> None:
        """Stop the VM, delete its system identity and its directory, forget it."""
        vm = await self.lookup(resource_id)
        self.run_commands.stop(vm.vm_id)
        await self._shutdown(vm)
        self._unindex(vm)
        await self.sql.run(self._forget, vm)
        await asyncio.to_thread(self.directory_of(vm).remove)

    def _forget(self, vm: VirtualMachine) -> None:
        """The VM's system identity and row go (in the ``sql`` thread)."""
        if vm.system_principal_id:
            self.directory.delete_principal(vm.system_principal_id)
        self.table.remove(vm.resource_id)

    async def stop(self) -> None:
        """On server shutdown: power off every running VM (at once); they boot again when next used."""
        await asyncio.gather(*(self._shutdown(vm) for vm in self.all()), return_exceptions=True)

    # -- power ---------------------------------------------------------------------------------------

    async def power_on(self, resource_id: str) -> VirtualMachine:
        """Azure's ``start``: the VM may run again, and boots now."""
        vm = await self._set_power(resource_id, RUNNING)
        await self._booted(vm)
        return vm

    async def power_off(self, resource_id: str, *, deallocate: bool = False) -> VirtualMachine:
        """Azure's ``powerOff`` (``stopped``) or ``deallocate``: every process of the VM ends; its disk stays."""
        vm = await self._set_power(resource_id, DEALLOCATED if deallocate else STOPPED)
        self.run_commands.stop(vm.vm_id)
        await self._shutdown(vm)
        return vm

    async def restart(self, resource_id: str) -> VirtualMachine:
        """Azure's ``restart``: the VM's processes end and it boots again (``/run`` and ``/tmp`` cleared)."""
        vm = await self.lookup(resource_id)
        if vm.power_state != RUNNING:
            raise VMNotRunning(f"virtual machine {vm.name!r} is {vm.power_state}; start it first")
        self.run_commands.stop(vm.vm_id)
        await self._shutdown(vm)
        await self._booted(vm)
        return vm

    async def power(self, resource_id: str, action: str) -> VirtualMachine:
        """ARM's power action by name (``start``, ``restart``, ``powerOff``, ``deallocate``, any case)."""
        operation = action.lower()
        if operation == "start":
            return await self.power_on(resource_id)
        if operation == "restart":
            return await self.restart(resource_id)
        if operation in ("poweroff", "deallocate"):
            return await self.power_off(resource_id, deallocate=operation == "deallocate")
        raise ConfigError(f"power action {action!r} is not start, restart, powerOff or deallocate")

    async def _set_power(self, resource_id: str, state: str) -> VirtualMachine:
        await self.lookup(resource_id)
        vm = await self.sql.run(self.table.update, resource_id, power_state=state)
        self._index(vm)
        return vm

    async def check_host(self) -> None:
        """:class:`MachineError` saying what is missing if VMs cannot run here (the server is not root, or cannot
        make a VM's namespaces with a network namespace holding only ``lo``); once it passed, only the cheap
        part is checked again (every boot checks the VM's own namespaces anyway)."""
        if self._host_checked and os.geteuid() == 0:
            return
        await check_host()
        self._host_checked = True

    # -- running -------------------------------------------------------------------------------------

    async def _booted(self, vm: VirtualMachine) -> _Running:
        """The VM's running machine, booting it if it is not running (one boot at a time per VM)."""
        if vm.power_state != RUNNING:
            raise VMNotRunning(f"The operation requires the VM to be running (or set to run). VM {vm.name!r} is "
                               f"{vm.power_state}.")
        running = self._running.get(vm.vm_id)
        if running is not None and running.machine.running:
            return running
        task = self._boots.get(vm.vm_id)
        if task is None:
            task = asyncio.ensure_future(self._boot(vm))
            self._boots[vm.vm_id] = task
            task.add_done_callback(lambda _: self._boots.pop(vm.vm_id, None))
        return await asyncio.shield(task)

    async def _boot(self, vm: VirtualMachine) -> _Running:
        if self.doors is None:
            raise MachineError("the compute runtime has not started")
        await self.check_host()
        folder = self.directory_of(vm)
        admin, tty_gid, docker_gid = await asyncio.to_thread(sandbox.read_accounts, folder)
        await asyncio.to_thread(sandbox.check_data_dir_hidden, self.settings.data_dir, self.tools,
                                self.shared_dir)
        if self.tools.docker == "engine":
            await asyncio.to_thread(sandbox.give_docker_key, folder)
        plan = sandbox.boot_plan(folder, hostname=vm.hostname, tools=self.tools, shared=self.shared_dir,
                                 cgroup=f"acrlocal-vm-{vm.vm_id.replace('-', '')[:12]}", tty_gid=tty_gid,
                                 docker_gid=docker_gid)
        machine = Machine(vm.vm_id, plan, folder.boot_log)
        await machine.boot()
        running = _Running(machine, admin, tty_gid, [])
        try:
            await self._serve(vm, running)
        except BaseException:
            await self._close(running)
            await machine.stop()
            raise
        self._running[vm.vm_id] = running
        self._by_netns[machine.netns] = self.get(vm.resource_id)
        asyncio.get_running_loop().create_task(self._forget_when_ended(vm.vm_id, running))
        return running

    async def _serve(self, vm: VirtualMachine, running: _Running) -> None:
        assert self.doors is not None
        loop = asyncio.get_running_loop()
        doors = running.machine.doors
        imds, front = self.doors.imds.server, self.doors.front.server
        if imds is None or front is None:
            raise MachineError("the server's applications are not set up")
        running.servers.append(await loop.create_server(imds, sock=doors["imds"]))
        running.servers.append(await loop.create_server(front, sock=doors["front"], ssl=self.doors.front_tls))
        # Imported with the first VM that runs: dnspython is 1.7 MiB of resident memory a server without VMs never uses.
        from acrlocal.compute import dns

        names = dns.Names(self.doors.registry_exists)
        running.dns, _ = await loop.create_datagram_endpoint(lambda: dns.Stub(names), sock=doors["dns"])
        if "docker" in doors:
            self._await_docker(vm, running)

    async def _forget_when_ended(self, vm_id: str, running: _Running) -> None:
        await running.machine.ended.wait()
        await self._close(running)
        if self._running.get(vm_id) is running:
            del self._running[vm_id]
        self._by_netns.pop(running.machine.netns, None)

    async def _close(self, running: _Running) -> None:
        for server in running.servers:
            server.close()
        running.servers.clear()
        if running.dns is not None:
            running.dns.close()
            running.dns = None
        docker = running.machine.doors.get("docker")
        if docker is not None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(docker.fileno())

    async def _shutdown(self, vm: VirtualMachine) -> None:
        task = self._boots.get(vm.vm_id)
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        running = self._running.pop(vm.vm_id, None)
        if running is not None:
            await self._close(running)
            await running.machine.stop()
            self._by_netns.pop(running.machine.netns, None)

    # -- Docker Engine: started on the first connection to /run/docker.sock -----------------------------------

    def _await_docker(self, vm: VirtualMachine, running: _Running) -> None:
        sock = running.machine.doors["docker"]
        asyncio.get_running_loop().add_reader(sock.fileno(), self._docker_wanted, vm, running)

    def _docker_wanted(self, vm: VirtualMachine, running: _Running) -> None:
        sock = running.machine.doors.get("docker")
        if sock is None:
            return
        asyncio.get_running_loop().remove_reader(sock.fileno())
        asyncio.get_running_loop().create_task(self._run_dockerd(vm, running, sock))

    async def _run_dockerd(self, vm: VirtualMachine, running: _Running, sock: socket.socket) -> None:
        started = time.monotonic()
        try:
            running.dockerd = await running.machine.spawn(
                ["unshare", "--mount", "--propagation", "slave", "/bin/sh", f"{TOOLS}/{DOCKERD_STARTER}"],
                account=ROOT, env=ROOT.environment(), cwd="/", extra_fds=[(3, sock.fileno())], listen_fds=1)
            log.info("VM %s: Docker Engine started", vm.name)
            code = await running.dockerd.wait()
        except MachineError as exc:
            log.warning("VM %s: Docker Engine did not start: %s", vm.name, exc)
            code = -1
        running.dockerd = None
        if not running.machine.running:
            return
        log.warning("VM %s: Docker Engine exited with %s (see /var/log/docker.log in the VM)", vm.name, code)
        if time.monotonic() - started < 30:
            running.dockerd_failures += 1
            _refuse_waiting(sock)
        else:
            running.dockerd_failures = 0
        delay = DOCKERD_RETRY_S[min(running.dockerd_failures, len(DOCKERD_RETRY_S) - 1)]
        await asyncio.sleep(delay)
        if running.machine.running:
            self._await_docker(vm, running)

    # -- processes -----------------------------------------------------------------------------------

    async def spawn(self, resource_id: str, argv: Sequence[str], *, user: str = "admin",
                    env: dict[str, str] | None = None, cwd: str | None = None,
                    stdio: Sequence[int | None] = (None, None, None), extra_fds: Sequence[tuple[int, int]] = (),
                    pty: tuple[int, int] | None = None, term: str | None = None,
                    executable: str | None = None) -> VMProcess:
        """Run ``argv`` in the VM (booting it if needed) as its admin user (``user="admin"``) or root
        (``"root"``), with that user's environment plus ``env``, and the server's descriptors ``stdio`` as its 0, 1
        and 2 (``None``: ``/dev/null``), or a new terminal of the VM (``pty=(rows, columns)``; its master side
        is ``VMProcess.master``). The descriptors are copied; the caller closes its own. :class:`VMNotRunning`
        for a stopped VM, :class:`MachineError` if it cannot boot or the program cannot start."""
        vm = await self.lookup(resource_id)
        running = await self._booted(vm)
        account = ROOT if user == "root" else running.admin if user == "admin" else None
        if account is None:
            raise ConfigError(f"user {user!r} is not 'admin' or 'root'")
        environment = {**account.environment(term), **(env or {})}
        return await running.machine.spawn(argv, account=account, env=environment, cwd=cwd, stdio=stdio,
                                           extra_fds=extra_fds, pty=pty, executable=executable,
                                           tty_gid=running.tty_gid)

    async def serve_ssh(self, resource_id: str, connection: socket.socket) -> VMProcess:
        """Serve one SSH connection (a connected socket; the caller closes its copy) with the VM's own sshd
        (``sshd -i``, as inetd runs it): the admin user logs in with a key of its ``authorized_keys``. Needs
        Debian's openssh-server on the host (:class:`MachineError` otherwise)."""
        if not Path("/usr/sbin/sshd").exists():
            raise MachineError("this host has no sshd (apt-get install openssh-server); VMs use the host's")
        fd = connection.fileno()
        return await self.spawn(resource_id, ["/usr/sbin/sshd", "-i", "-e"], user="root", stdio=(fd, fd, None),
                                cwd="/")

    async def run_command(self, resource_id: str, request: RunRequest) -> RunResult:
        """Run a script in the VM as its root (one at a time per VM; see :mod:`acrlocal.compute.run_command`)."""
        vm = await self.lookup(resource_id)

        async def spawn(argv: list[str], env: dict[str, str], stdio: tuple[int | None, int | None, int | None],
                        extra: list[tuple[int, int]]) -> VMProcess:
            return await self.spawn(resource_id, argv, user="root", env=env, stdio=stdio, extra_fds=extra,
                                    cwd=sandbox.RUN_COMMAND_DIR)

        return await self.run_commands.run(vm.vm_id, spawn, request, timeout_s=self.settings.run_command_timeout_s)


def _refuse_waiting(sock: socket.socket) -> None:
    """Close the connections waiting on a listening socket whose server failed, so clients hear it at once."""
    while True:
        try:
            conn, _ = sock.accept()
        except (BlockingIOError, OSError):
            return
        conn.close()

