"""SSH at a VM's public IP address: ``ssh azureuser@<publicIpAddress>`` on this machine, as from anywhere on Azure.

While a VM's power state is ``running`` (it boots on the first connection, as everything else does), the server
listens on port 22 (``Settings.vm_ssh_port``) of each public IP address that the VM's network interfaces hold:
loopback addresses ``127.77.x.y`` (see :mod:`acrlocal.arm.network`). Each connection is first checked against the
network security groups of the interface's subnet and of the interface itself, with Azure's inbound rules
(:func:`nsg_allows`; both must allow, and an absent group allows everything); a denied connection is closed at
once (Azure drops its packets and the client waits for its timeout), an allowed one is handed to the VM's own
``sshd -i`` (:meth:`~acrlocal.compute.runtime.ComputeRuntime.serve_ssh`), which logs the admin user in with the
keys of ``osProfile``. A stopped, deallocated or deleted VM has no listener: the connection is refused.

The listeners follow ARM. The store tells when a VM, a network interface or a public IP address is written or
deleted, or a resource group is deleted (:meth:`~acrlocal.arm.store.ArmStore.watch`); the doors are then
reconciled with what ARM holds (:meth:`VmSshDoors.reconcile`, one at a time, again if something changed
meanwhile). Rules are read on every connection, so a rule takes effect on the next one. A reconcile reads every
VM of the server (VMs are few: each is processes on this machine).

Binding port 22 needs root (or ``net.ipv4.ip_unprivileged_port_start``); an address may also be taken (a host
sshd listening on ``0.0.0.0:22``, or another acrlocal server's VM with the same address). Either is logged once,
with what to use instead (another ``--vm-ssh-port``, or ``acrlocal ssh vm``), and the server goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from acrlocal.arm import network
from acrlocal.arm.compute import VM_TYPE, interface_ids
from acrlocal.arm.store import ArmStore, Resource
from acrlocal.compute.machine import MachineError
from acrlocal.compute.runtime import ComputeRuntime, VMNotRunning
from acrlocal.compute.vms import RUNNING
from acrlocal.errors import NotFound

log = logging.getLogger(__name__)

#: Connections a VM's door serves at once; more are closed at once (each runs an sshd in the VM).
MAX_CONNECTIONS = 32
#: The types whose writes can change which doors are open.
WATCHED = frozenset(t.lower() for t in (VM_TYPE, network.NIC, network.PUBLIC_IP))

JsonObject = dict[str, Any]


# -- network security groups (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Inbound:
    """One inbound TCP connection as a network security group sees it: from ``source``, to the VM's private
    address ``destination`` and ``port``, in a virtual network of address space ``vnet``."""

    source: ipaddress.IPv4Address
    source_port: int
    destination: ipaddress.IPv4Address
    port: int
    vnet: tuple[ipaddress.IPv4Network, ...]


def _ports_match(rule: JsonObject, side: str, port: int) -> bool:
    values = [rule.get(f"{side}PortRange"), *(rule.get(f"{side}PortRanges") or [])]
    for value in (str(v).strip() for v in values if v is not None):
        if value == "*":
            return True
        low, _, high = value.partition("-")
        with contextlib.suppress(ValueError):
            if int(low) <= port <= int(high or low):
                return True
    return False


def _addresses_match(rule: JsonObject, side: str, address: ipaddress.IPv4Address,
                     vnet: tuple[ipaddress.IPv4Network, ...]) -> bool:
    """Whether ``address`` is in the rule's prefixes for ``side``: ``*``, CIDR ranges and addresses, and the
    service tags ``VirtualNetwork`` and ``Internet`` (outside the virtual network); other service tags name Azure
    services, which never connect here."""
    in_vnet = any(address in net for net in vnet)
    values = [rule.get(f"{side}AddressPrefix"), *(rule.get(f"{side}AddressPrefixes") or [])]
    for value in (str(v).strip() for v in values if v is not None):
        tag = value.lower()
        if tag in ("*", "any"):
            return True
        if tag == "virtualnetwork":
            if in_vnet:
                return True
            continue
        if tag == "internet":
            if not in_vnet:
                return True
            continue
        with contextlib.suppress(ValueError):
            if address in ipaddress.ip_network(value, strict=False):
                return True
    return False


def rule_matches(rule: JsonObject, connection: Inbound) -> bool:
    """Whether an inbound security rule (its ``properties``) applies to a TCP ``connection``."""
    return (str(rule.get("direction", "")).lower() == "inbound"
            and str(rule.get("protocol", "")).lower() in ("tcp", "*")
            and _ports_match(rule, "source", connection.source_port)
            and _ports_match(rule, "destination", connection.port)
            and _addresses_match(rule, "source", connection.source, connection.vnet)
            and _addresses_match(rule, "destination", connection.destination, connection.vnet))


def nsg_allows(rules: Iterable[JsonObject], connection: Inbound) -> bool:
    """Azure's evaluation of one network security group: its inbound rules and the default ones, by priority,
    the first that matches decides (``DenyAllInBound`` matches everything)."""
    everything = [*rules, *(r["properties"] for r in network.default_rules(""))]
    for rule in sorted((r for r in everything if str(r.get("direction", "")).lower() == "inbound"),
                       key=lambda r: int(r.get("priority", 65500))):
        if rule_matches(rule, connection):
            return str(rule.get("access", "")).lower() == "allow"
    return False


# -- the doors ---------------------------------------------------------------------------------------------


@dataclass
class _Door:
    address: str
    listener: socket.socket
    task: asyncio.Task[None]
    connections: int = 0


class VmSshDoors:
    """The SSH listeners at VMs' public IP addresses. :meth:`start` after the ARM room is up, :meth:`close` before
    the compute runtime stops."""

    def __init__(self, store: ArmStore, runtime: ComputeRuntime, subscriptions: Any, port: int) -> None:
        self.store = store
        self.runtime = runtime
        #: ``() -> ids``: the server's subscriptions, read on each reconcile.
        self.subscriptions = subscriptions
        self.port = port
        self._doors: dict[str, _Door] = {}
        self._refused: set[tuple[str, int]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    @property
    def addresses(self) -> list[str]:
        """The addresses listened on now."""
        return sorted(self._doors)

    async def start(self) -> None:
        if not self.port:
            return
        self._loop = asyncio.get_running_loop()
        self.store.watch(self._changed)
        await self.reconcile()
        self._worker = self._loop.create_task(self._follow())

    async def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        for address in list(self._doors):
            self._shut(address)

    def _changed(self, type_key: str | None) -> None:
        if self._loop is None or (type_key is not None and type_key not in WATCHED):
            return
        with contextlib.suppress(RuntimeError):  # the loop has closed: the server is gone
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _follow(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.reconcile()
            except Exception:  # a failed reconcile must not end the doors; the next change retries
                log.exception("could not update the VMs' ssh listeners")

    # -- what ARM holds ----------------------------------------------------------------------------------

    def wanted(self) -> dict[str, str]:
        """``{public address: VM resource id}`` for every running VM's public IP addresses (reads the store and the
        directory: in the ``SqlThread``)."""
        out: dict[str, str] = {}
        for subscription in self.subscriptions():
            for vm in self.store.resources(subscription, type=VM_TYPE):
                try:
                    if self.runtime.power_state(vm.id) != RUNNING:
                        continue
                except NotFound:
                    continue
                for address in network.public_addresses_of(self.store, interface_ids(vm)):
                    out.setdefault(address, vm.id)
        return out

    def decide(self, address: str, peer: tuple[str, int]) -> tuple[str | None, str]:
        """The VM to serve a connection from ``peer`` to ``address``, or ``None`` and why not (read from ARM now:
        the VM, its interface with this public address, and the security groups of the interface and its
        subnet; in the ``SqlThread``)."""
        vm_id = self.wanted().get(address)
        vm = self.store.resource(vm_id) if vm_id else None
        if vm is None:
            return None, "no running VM has this address"
        for nic_id in interface_ids(vm):
            nic = self.store.resource(nic_id)
            if nic is None:
                continue
            for config in nic.properties.get("ipConfigurations", []):
                props = config.get("properties", {})
                public = self.store.resource((props.get("publicIPAddress") or {}).get("id") or "")
                if public is None or public.properties.get("ipAddress") != address:
                    continue
                subnet = self.store.resource((props.get("subnet") or {}).get("id") or "")
                connection = Inbound(ipaddress.IPv4Address(peer[0]), int(peer[1]),
                                     ipaddress.IPv4Address(props.get("privateIPAddress") or "0.0.0.0"), 22,
                                     self._vnet(subnet))
                for holder in (subnet, nic):
                    nsg_id = ((holder.properties.get("networkSecurityGroup") or {}).get("id")
                              if holder is not None else None)
                    if nsg_id and not nsg_allows(self._rules(nsg_id), connection):
                        return None, f"network security group {nsg_id} denies it"
                return vm.id, "allowed"
        return None, "no network interface of the VM holds this address"

    def _vnet(self, subnet: Resource | None) -> tuple[ipaddress.IPv4Network, ...]:
        vnet = self.store.resource(subnet.parent_id) if subnet is not None and subnet.parent_id else None
        prefixes = ((vnet.properties.get("addressSpace") or {}).get("addressPrefixes") or []) if vnet else []
        return tuple(ipaddress.IPv4Network(p) for p in prefixes)

    def _rules(self, nsg_id: str) -> list[JsonObject]:
        nsg = self.store.resource(nsg_id)
        if nsg is None:
            return []
        return [r.properties for r in self.store.resources(nsg.subscription_id, parent_id=nsg.id, type=network.RULE)]

    # -- listening ---------------------------------------------------------------------------------------

    async def reconcile(self) -> None:
        """Open a door for each running VM's public address, close the others. What ARM holds is read through the
        runtime's ``SqlThread`` (off the event loop on PostgreSQL)."""
        wanted = await self.runtime.sql.run(self.wanted)
        for address in list(self._doors):
            if address not in wanted:
                self._shut(address)
        for address in wanted:
            if address not in self._doors:
                self._open(address)

    def _open(self, address: str) -> None:
        assert self._loop is not None
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((address, self.port))
            listener.listen(64)
            listener.setblocking(False)
        except OSError as exc:
            listener.close()
            self._say_refused(address, exc)
            return
        self._refused = {r for r in self._refused if r[0] != address}
        door = _Door(address, listener, self._loop.create_task(self._accept(address, listener)))
        self._doors[address] = door
        log.info("VMs: ssh at %s:%d", address, self.port)

    def _say_refused(self, address: str, exc: OSError) -> None:
        key = ("*" if exc.errno == errno.EACCES else address, exc.errno or 0)
        if key in self._refused:
            return
        self._refused.add(key)
        if exc.errno == errno.EACCES:
            log.warning("VMs: ssh at the VMs' public IP addresses is off: binding %s:%d was refused (%s): a port "
                        "below 1024 needs root with CAP_NET_BIND_SERVICE (or sysctl "
                        "net.ipv4.ip_unprivileged_port_start=%d). `ssh azureuser@<publicIpAddress>` is refused "
                        "until then; use `acrlocal ssh vm -g <group> -n <vm>`, or `up --vm-ssh-port 2222` and "
                        "`ssh -p 2222 azureuser@<publicIpAddress>`", address, self.port, exc.strerror, self.port)
        else:
            log.warning("VMs: cannot listen for ssh at %s:%d (%s): is an sshd listening on 0.0.0.0:%d, or another "
                        "acrlocal server's VM using this address? Use `acrlocal ssh vm`, or `up --vm-ssh-port 2222` "
                        "and `ssh -p 2222`", address, self.port, exc.strerror, self.port)

    def _shut(self, address: str) -> None:
        door = self._doors.pop(address, None)
        if door is None:
            return
        door.task.cancel()
        door.listener.close()
        log.info("VMs: ssh at %s:%d closed", address, self.port)

    async def _accept(self, address: str, listener: socket.socket) -> None:
        assert self._loop is not None
        while True:
            try:
                connection, peer = await self._loop.sock_accept(listener)
            except OSError as exc:
                if listener.fileno() < 0:
                    return
                log.warning("VMs: ssh at %s: accept failed: %s", address, exc.strerror)
                await asyncio.sleep(1)
                continue
            self._loop.create_task(self._serve(address, connection, peer))

    async def _serve(self, address: str, connection: socket.socket, peer: tuple[str, int]) -> None:
        """Hand one connection to the VM's sshd (the VM boots if it must), or close it; never raises."""
        door = self._doors.get(address)
        try:
            if door is None or door.connections >= MAX_CONNECTIONS:
                log.info("VMs: ssh connection from %s:%d to %s closed: too many at once", *peer, address)
                return
            door.connections += 1
            try:
                vm_id, why = await self.runtime.sql.run(self.decide, address, peer)
                if vm_id is None:
                    log.info("VMs: ssh connection from %s:%d to %s closed: %s", *peer, address, why)
                    return
                connection.setblocking(True)  # the descriptor's flags are sshd's too
                process = await self.runtime.serve_ssh(vm_id, connection)
                connection.close()
                await process.wait()
            finally:
                door.connections -= 1
        except (VMNotRunning, MachineError, NotFound) as exc:
            log.warning("VMs: ssh connection from %s:%d to %s not served: %s", *peer, address, exc)
        except Exception:
            log.exception("VMs: ssh connection from %s:%d to %s failed", *peer, address)
        finally:
            connection.close()
