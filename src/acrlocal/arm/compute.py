"""ARM provider ``Microsoft.Compute/virtualMachines``: VMs backed by the compute room's sandboxes.

PUT creates the VM in :class:`~acrlocal.compute.runtime.ComputeRuntime` (its IMDS listener opens at once) or
updates it; PATCH updates tags, properties and identities; DELETE closes the listener and deletes the VM's
system-assigned principal and the role assignments naming it, wherever they are (so no later check can find them;
Azure keeps such assignments as "unknown" ones, which grant nothing either). ``identity`` takes ``type``
``SystemAssigned``, ``UserAssigned``, ``SystemAssigned, UserAssigned`` or ``None`` and ``userAssignedIdentities``
``{id: {}}`` (``null`` removes one; a PATCH keeps the ones it does not mention, a PUT names the whole set).
Adding a user-assigned identity needs ``Microsoft.ManagedIdentity/userAssignedIdentities/assign/action`` on it,
checked as Azure's linked access check before the identity is looked up (403 ``LinkedAuthorizationFailed`` whether
or not it exists; then 400 ``FailedIdentityOperation`` if it does not). An omitted ``identity`` leaves the VM's
identities as they are.

Actions: ``runCommand`` (``RunCommandInput`` → ``{"value": [...]}``, answered when the script has ended; RBAC
``Microsoft.Compute/virtualMachines/runCommand/action``; 400 for a bad input, 409 while another script runs or
when the VM is not running; see :mod:`acrlocal.compute.run_command`); the power actions ``start``, ``powerOff``,
``deallocate`` and ``restart``, long-running operations that start and stop the VM's processes through
:meth:`~acrlocal.compute.runtime.ComputeRuntime.power` (``GET ...?$expand=instanceView`` reports
``PowerState/<state>``); and ``console``, acrlocal's own: a one-time ticket for a shell in the VM as its admin user
(see :mod:`acrlocal.compute.console`), allowed to principals that may log in to the VM as its administrator (the
data action ``Microsoft.Compute/virtualMachines/loginAsAdmin/action``: Virtual Machine Administrator Login) or
that may run commands on it anyway (``runCommand/action``: Owner, Contributor, Virtual Machine Contributor).
``runCommand`` and ``console`` run outside the control plane's write lock: a script may itself call ARM.

The admin user's ``~/.ssh/authorized_keys`` is ``osProfile.linuxConfiguration.ssh.publicKeys[].keyData``, written
when the VM is made and whenever the keys change.

Properties are kept as ``az vm show`` expects them (``vmId``, ``hardwareProfile``, ``storageProfile.osDisk`` and
``imageReference``, ``osProfile.adminUsername``, ``networkProfile``); ``adminPassword`` and ``customData`` are
never stored. Every refusal is an ARM 400/403/404 raised before the runtime or the store changes.
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from acrlocal.arm import images, network, operations
from acrlocal.arm.errors import ArmError, authorization_failed, bad_request
from acrlocal.arm.identities import require_assignable, resolve_assigned
from acrlocal.arm.providers import Call, JsonObject, ResourceType, register, require_object
from acrlocal.arm.services import ArmServices
from acrlocal.arm.store import ArmStore, Resource
from acrlocal.compute import console
from acrlocal.compute.machine import MachineError
from acrlocal.compute.run_command import Busy, RunCommandError, RunRequest
from acrlocal.compute.runtime import ComputeRuntime, HostedElsewhere, VMNotRunning
from acrlocal.compute.vms import RUNNING, VirtualMachine
from acrlocal.errors import ConfigError, NotFound
from acrlocal.identity.directory import Subscription

NAMESPACE = "Microsoft.Compute"
VM_TYPE = f"{NAMESPACE}/virtualMachines"
API_VERSIONS = ("2021-03-01", "2021-07-01", "2021-11-01", "2022-03-01", "2022-08-01", "2022-11-01", "2023-03-01",
                "2023-07-01", "2023-09-01", "2024-03-01", "2024-07-01", "2024-11-01", "2025-04-01", "2026-04-01")
DEFAULT_IMAGE = {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"}
IDENTITY_KINDS = {"systemassigned": "SystemAssigned", "userassigned": "UserAssigned"}
RUN_COMMAND_ACTION = f"{VM_TYPE}/runCommand/action"
LOGIN_AS_ADMIN = f"{VM_TYPE}/loginAsAdmin/action"


def parse_identity_type(value: Any) -> tuple[bool, bool]:
    """``(system, user)`` for an ``identity.type``; 400 for anything but the four ARM spellings."""
    if not isinstance(value, str) or not value.strip():
        raise bad_request("InvalidIdentityType", f"identity.type {value!r} is invalid; expected 'SystemAssigned', "
                          "'UserAssigned', 'SystemAssigned, UserAssigned' or 'None'.")
    parts = {p.strip().lower() for p in value.split(",") if p.strip()}
    if parts == {"none"}:
        return False, False
    if not parts or not parts <= set(IDENTITY_KINDS):
        raise bad_request("InvalidIdentityType", f"identity.type '{value}' is invalid; expected 'SystemAssigned', "
                          "'UserAssigned', 'SystemAssigned, UserAssigned' or 'None'.")
    return "systemassigned" in parts, "userassigned" in parts


def identity_type(system: bool, user: bool) -> str:
    return ", ".join([k for k, on in (("SystemAssigned", system), ("UserAssigned", user)) if on]) or "None"


def wanted_identities(body: JsonObject, existing: JsonObject | None, *, patch: bool) -> tuple[bool, list[str]]:
    """The system flag and user-assigned ids an ``identity`` block asks for, given the VM's current block."""
    current = existing or {}
    current_users = list((current.get("userAssignedIdentities") or {}).keys())
    system, user = parse_identity_type(body.get("type", current.get("type", "None")))
    given = body.get("userAssignedIdentities")
    if given is not None and not isinstance(given, dict):
        raise bad_request("InvalidRequestContent", "identity.userAssignedIdentities must be an object whose keys "
                          "are user-assigned identity ids.")
    if not user:
        if given and any(v is not None for v in given.values()):
            raise bad_request("InvalidIdentityValues", "identity.userAssignedIdentities may only be given when "
                              "identity.type includes 'UserAssigned'.")
        return system, []
    if given is None:
        ids = current_users
    else:
        base = current_users if patch else []
        removed = {k.lower() for k, v in given.items() if v is None}
        ids = [i for i in base if i.lower() not in removed]
        for key, value in given.items():
            if value is not None:
                require_object(value, f"identity.userAssignedIdentities['{key}']")
                if key.lower() not in {i.lower() for i in ids}:
                    ids.append(key)
    if not ids:
        raise bad_request("InvalidIdentityValues", "identity.type includes 'UserAssigned' but no user-assigned "
                          "identity is given in identity.userAssignedIdentities.")
    return system, ids


def _disk_id(resource: Resource, disk: str) -> str:
    return f"/subscriptions/{resource.subscription_id}/resourceGroups/{resource.group.upper()}/providers/" \
           f"{NAMESPACE}/disks/{disk}"


# Linux host names (``osProfile.computerName``): Azure refuses more than 64 characters, a name of digits only, and
# punctuation but '-' and '.'. Disk names: 1-80 letters, digits, '_', '.' and '-', from a letter or digit.
HOST_NAME = re.compile(r"^(?![0-9]+\Z)[A-Za-z0-9][A-Za-z0-9.-]{0,63}\Z")
DISK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,79}\Z")
CACHING = ("None", "ReadOnly", "ReadWrite")
CREATE_OPTIONS = ("FromImage", "Attach", "Empty")
DELETE_OPTIONS = ("Delete", "Detach")
STORAGE_ACCOUNT_TYPES = ("Standard_LRS", "Premium_LRS", "StandardSSD_LRS", "UltraSSD_LRS", "Premium_ZRS",
                         "StandardSSD_ZRS", "PremiumV2_LRS")


def _invalid(value: Any, parameter: str, expected: str) -> ArmError:
    return bad_request("InvalidParameter", f"The value {jsonlib.dumps(value)[:100]} of parameter '{parameter}' is "
                       f"invalid: expected {expected}.")


def _text(value: Any, parameter: str, pattern: re.Pattern[str], expected: str) -> str:
    if not isinstance(value, str) or not pattern.match(value):
        raise _invalid(value, parameter, expected)
    return value


def _choice(value: Any, parameter: str, allowed: tuple[str, ...]) -> str:
    """One of ``allowed``, in any case (az sends ``fromImage``), as ``allowed`` spells it."""
    found = next((a for a in allowed if isinstance(value, str) and a.lower() == value.lower()), None)
    if found is None:
        raise _invalid(value, parameter, "one of " + ", ".join(allowed))
    return found


def _given(mapping: JsonObject, key: str, default: Any) -> Any:
    """``mapping[key]``, or ``default`` when it is absent or null (as ARM takes an explicit null)."""
    value = mapping.get(key)
    return default if value is None else value


def _ssh_keys(value: Any) -> JsonObject:
    """``linuxConfiguration.ssh``: ``{"publicKeys": [{"path": str, "keyData": str}, ...]}``."""
    ssh = require_object(value, "properties.osProfile.linuxConfiguration.ssh")
    keys = _given(ssh, "publicKeys", [])
    if not isinstance(keys, list):
        raise _invalid(keys, "ssh.publicKeys", "an array of {path, keyData}")
    for key in keys:
        if not isinstance(key, dict) or not isinstance(key.get("keyData"), str) or \
                not isinstance(key.get("path", ""), str):
            raise _invalid(key, "ssh.publicKeys", "an array of {path, keyData} with text values")
    return {"publicKeys": keys}


def _vm_properties(resource: Resource, existing: Resource | None) -> JsonObject:
    """The stored properties: the body's, with defaults filled in and the secrets left out. Every value stored is
    checked first (400 ``InvalidParameter`` naming it); properties acrlocal does not model are not kept."""
    props = dict(resource.properties)
    hardware = require_object(props.get("hardwareProfile"), "properties.hardwareProfile")
    size = hardware.get("vmSize", "Standard_DS1_v2")
    if not isinstance(size, str) or not re.match(r"^[A-Za-z0-9_]{1,64}\Z", size):
        raise bad_request("InvalidParameter", f"The value '{size}' of parameter 'vmSize' is invalid.")
    storage = require_object(props.get("storageProfile"), "properties.storageProfile")
    image = require_object(storage.get("imageReference"), "properties.storageProfile.imageReference") or \
        dict(DEFAULT_IMAGE)
    old_image = ((existing.properties.get("storageProfile") or {}).get("imageReference")) if existing else None
    if image != old_image:
        images.check_reference(image)
    os_disk = require_object(storage.get("osDisk"), "properties.storageProfile.osDisk")
    old_disk = ((existing.properties.get("storageProfile") or {}).get("osDisk") or {}) if existing else {}
    disk_name = os_disk.get("name")
    if disk_name is not None:
        _text(disk_name, "osDisk.name", DISK_NAME, "1-80 letters, digits, '_', '.' and '-', from a letter or digit")
    disk_name = disk_name or old_disk.get("name") or f"{resource.name}_OsDisk_1_{uuid.uuid4().hex}"
    os_type = os_disk.get("osType", "Linux")
    if os_type not in ("Linux", "Windows"):
        raise bad_request("InvalidParameter", f"The value '{os_type}' of parameter 'osDisk.osType' is invalid.")
    size_gb = _given(os_disk, "diskSizeGB", 30)
    if not isinstance(size_gb, int) or isinstance(size_gb, bool) or not 1 <= size_gb <= 4095:
        raise _invalid(size_gb, "osDisk.diskSizeGB", "a whole number of GiB from 1 to 4095")
    managed = require_object(os_disk.get("managedDisk"), "properties.storageProfile.osDisk.managedDisk")
    os_disk = {
        "osType": os_type, "name": disk_name,
        "createOption": _choice(_given(os_disk, "createOption", "FromImage"), "osDisk.createOption", CREATE_OPTIONS),
        "caching": _choice(_given(os_disk, "caching", "ReadWrite"), "osDisk.caching", CACHING),
        "deleteOption": _choice(_given(os_disk, "deleteOption", "Delete"), "osDisk.deleteOption", DELETE_OPTIONS),
        "diskSizeGB": size_gb,
        "managedDisk": {"storageAccountType": _choice(_given(managed, "storageAccountType", "Premium_LRS"),
                                                      "managedDisk.storageAccountType", STORAGE_ACCOUNT_TYPES),
                        "id": _disk_id(resource, disk_name)},
    }
    data_disks = _given(storage, "dataDisks", [])
    if not isinstance(data_disks, list) or not all(isinstance(d, dict) for d in data_disks):
        raise _invalid(data_disks, "storageProfile.dataDisks", "an array of data disks")
    os_profile = require_object(props.get("osProfile"), "properties.osProfile")
    admin = os_profile.get("adminUsername", "azureuser")
    if not isinstance(admin, str) or not re.match(r"^[a-z_][a-z0-9_-]{0,31}\Z", admin):
        raise bad_request("InvalidParameter", f"The value '{admin}' of parameter 'adminUsername' is invalid: use "
                          "1-32 lower-case letters, digits, '-' and '_', starting with a letter or '_'.")
    computer_name = os_profile.get("computerName")
    if computer_name is not None:
        _text(computer_name, "computerName", HOST_NAME, "a Linux host name: up to 64 letters, digits, '-' and '.', "
              "not digits only")
    for secret in ("adminPassword", "customData"):  # never stored, but a client sends them as text
        if not isinstance(os_profile.get(secret, ""), str):
            raise _invalid("(not shown)", secret, "text")
    linux = require_object(os_profile.get("linuxConfiguration"), "properties.osProfile.linuxConfiguration")
    no_passwords = _given(linux, "disablePasswordAuthentication", True)
    if not isinstance(no_passwords, bool):
        raise _invalid(no_passwords, "linuxConfiguration.disablePasswordAuthentication", "true or false")
    os_profile = {
        "computerName": computer_name or resource.name, "adminUsername": admin,
        "linuxConfiguration": {"disablePasswordAuthentication": no_passwords,
                               "ssh": _ssh_keys(_given(linux, "ssh", {})), "provisionVMAgent": True,
                               "patchSettings": {"patchMode": "ImageDefault", "assessmentMode": "ImageDefault"}},
        "secrets": [], "allowExtensionOperations": True, "requireGuestProvisionSignal": True,
    }
    network = require_object(props.get("networkProfile"), "properties.networkProfile") or {"networkInterfaces": []}
    old = existing.properties if existing else {}
    return {
        "vmId": old.get("vmId", ""),
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {"imageReference": image, "osDisk": os_disk, "dataDisks": data_disks},
        "osProfile": os_profile,
        "networkProfile": network,
        "timeCreated": old.get("timeCreated") or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f0+00:00"),
    }


def ssh_public_keys(resource: Resource) -> list[str]:
    """``osProfile.linuxConfiguration.ssh.publicKeys[].keyData``: the admin user's authorized keys."""
    linux = ((resource.properties.get("osProfile") or {}).get("linuxConfiguration") or {})
    keys = ((linux.get("ssh") or {}).get("publicKeys") or []) if isinstance(linux, dict) else []
    return [str(k["keyData"]) for k in keys if isinstance(k, dict) and isinstance(k.get("keyData"), str)]


def _not_running(name: str, state: str) -> ArmError:
    return ArmError(409, "OperationNotAllowed", "The operation requires the VM to be running (or set to run). "
                    f"Virtual machine '{name}': {state}.")


def _imds_profile(resource: Resource) -> JsonObject:
    """What IMDS reports about the VM (``/metadata/instance/compute``)."""
    props = resource.properties
    disk = props["storageProfile"]["osDisk"]
    return {
        "vmSize": props["hardwareProfile"]["vmSize"], "osType": disk["osType"],
        "adminUsername": props["osProfile"]["adminUsername"], "computerName": props["osProfile"]["computerName"],
        "imageReference": props["storageProfile"]["imageReference"],
        "osDisk": {"name": disk["name"], "id": disk["managedDisk"]["id"], "caching": disk["caching"],
                   "diskSizeGB": disk["diskSizeGB"], "storageAccountType": disk["managedDisk"]["storageAccountType"]},
        "tags": resource.tags,
    }


class VirtualMachines(ResourceType):
    namespace = NAMESPACE
    type = "virtualMachines"
    api_versions = API_VERSIONS
    name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[a-zA-Z0-9][-a-zA-Z0-9_.]{0,62}[a-zA-Z0-9_]\Z|^\w\Z")
    name_rule = "1-64 letters, digits, '-', '_' and '.', not ending in '-' or '.'"
    actions: ClassVar[dict[str, str]] = {"start": "power", "restart": "power", "powerOff": "power",
                                         "deallocate": "power", "runCommand": "run_command", "console": "console"}
    self_authorized_actions: ClassVar[frozenset[str]] = frozenset({"console"})
    unlocked_actions: ClassVar[frozenset[str]] = frozenset({"runcommand", "console"})

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        """The identities and interfaces checked against the store, in one call through the ``SqlThread``."""
        return await call.run(self._prepared, call, draft, existing)

    @staticmethod
    def _prepared(call: Call, draft: Resource, existing: Resource | None) -> Resource:
        patch = call.request.method == "PATCH"
        body_identity = call.body.get("identity") if "identity" in call.body else None
        current = existing.identity if existing else None
        if body_identity is None:
            identity = current
        else:
            require_object(body_identity, "identity")
            system, users = wanted_identities(body_identity, current, patch=patch)
            require_assignable(call, draft, users, current)  # before any lookup: 403 whether or not they exist
            resolved = resolve_assigned(call, draft, users)
            identity = {"type": identity_type(system, bool(resolved)),
                        "userAssignedIdentities": {rid: {} for rid in resolved}}
        properties = _vm_properties(draft, existing)
        properties["networkProfile"] = checked_interfaces(call, draft.id, properties["networkProfile"])
        return draft.evolve(identity=identity, properties=properties)

    def _identity_block(self, call: Call, resource: Resource, system_principal: str | None, tenant: str,
                        users: list[str]) -> JsonObject | None:
        """The ``identity`` the VM renders (reads the store: in the ``SqlThread``)."""
        block: JsonObject = {"type": identity_type(bool(system_principal), bool(users))}
        if block["type"] == "None":
            return None
        if system_principal:
            block["principalId"] = system_principal
            block["tenantId"] = tenant
        if users:
            block["userAssignedIdentities"] = {}
            for rid in users:
                uami = call.store.resource(rid)
                props = uami.properties if uami else {}
                block["userAssignedIdentities"][rid] = {"principalId": props.get("principalId"),
                                                        "clientId": props.get("clientId")}
        return block

    async def apply(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        """Create or update the VM in the runtime (which sends its SQL through the ``SqlThread``), then record its
        identities and interfaces in one call of that thread."""
        runtime = call.services.runtime
        wanted = resource.identity or {"type": "None"}
        system, _ = parse_identity_type(wanted.get("type", "None"))
        users = list((wanted.get("userAssignedIdentities") or {}).keys())
        tenant = (await call.run(call.services.directory.subscription, resource.subscription_id)).tenant_id
        keys = ssh_public_keys(resource)
        try:
            vm = await runtime.lookup(resource.id)
        except NotFound:
            try:
                vm = await runtime.create(resource.id, tenant_id=tenant, location=resource.location or "",
                                          system_assigned=system, user_assigned=users,
                                          profile=_imds_profile(resource), ssh_keys=keys)
            except MachineError as exc:
                raise ArmError(409, "AllocationFailed", f"Allocation failed: the virtual machine '{resource.name}' "
                               f"cannot run on this host. {exc}") from None
        else:
            before = vm.system_principal_id
            vm = await runtime.set_identities(resource.id, system_assigned=system, user_assigned=users)
            vm = await runtime.update_profile(resource.id, _imds_profile(resource))
            if before and before != vm.system_principal_id:
                await call.run(call.store.delete_assignments_of, before)
            if existing is not None and ssh_public_keys(existing) != keys:
                await runtime.set_ssh_keys(resource.id, keys)
        return await call.run(self._applied, call, resource, existing, vm, tenant, users)

    def _applied(self, call: Call, resource: Resource, existing: Resource | None, vm: VirtualMachine, tenant: str,
                 users: list[str]) -> Resource:
        identity = self._identity_block(call, resource, vm.system_principal_id, tenant, users)
        attach_interfaces(call.store, resource, existing)
        return resource.evolve(identity=identity, properties={**resource.properties, "vmId": vm.vm_id})

    async def check_remove(self, call: Call | None, resource: Resource) -> None:
        """A VM that another replica runs is refused (the runtime's :class:`HostedElsewhere`, ARM's 409) before
        anything of the delete goes."""
        if call is not None:
            with contextlib.suppress(NotFound):
                await call.services.runtime.lookup(resource.id)

    async def remove(self, call: Call | None, resource: Resource) -> None:
        started = (call.services, call.store) if call else self.started
        if started is None:
            return
        services, store = started
        runtime = services.runtime
        try:
            vm = await runtime.lookup(resource.id)
        except NotFound:
            return
        await runtime.delete(resource.id)
        await services.sql.run(_released, store, resource, vm.system_principal_id)

    async def run_command(self, call: Call, resource: Resource) -> JsonObject | None:
        """Run the script in the VM and answer with its outcome (see :mod:`acrlocal.compute.run_command`)."""
        try:
            request = RunRequest.parse(call.body)
        except RunCommandError as exc:
            raise bad_request("InvalidParameter", str(exc)) from None
        try:
            result = await call.services.runtime.run_command(resource.id, request)
        except VMNotRunning as exc:
            raise _not_running(resource.name, str(exc)) from None
        except (Busy, ConfigError, MachineError) as exc:
            raise ArmError(409, "Conflict", str(exc)) from None
        except NotFound:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{VM_TYPE}/{resource.name}' under resource "
                           f"group '{resource.group}' was not found.") from None
        return result.to_arm()

    async def console(self, call: Call, resource: Resource) -> JsonObject | None:
        """A one-time ticket for a shell in the VM, for principals that may log in as its admin (or run
        commands on it anyway): ``{"path": "/.acrlocal/console/<ticket>", "expiresInSeconds": 60}``."""
        if not (call.caller.may_data(LOGIN_AS_ADMIN, resource.id) or call.caller.may(RUN_COMMAND_ACTION,
                                                                                        resource.id)):
            raise authorization_failed(call.caller.client, call.caller.object_id, LOGIN_AS_ADMIN, resource.id)
        runtime = call.services.runtime
        try:
            command, tty, term = console.parse_request(call.body)
        except ValueError as exc:
            raise bad_request("InvalidParameter", str(exc)) from None
        vm = await self._vm(runtime, resource)
        if vm.power_state != RUNNING:
            raise _not_running(vm.name, vm.power_state)
        ticket = runtime.consoles.issue(resource.id, command=command, tty=tty, term=term)
        return {"path": console.PATH.format(ticket=ticket), "expiresInSeconds": int(console.TICKET_LIFETIME_S)}

    async def _vm(self, runtime: ComputeRuntime, resource: Resource) -> VirtualMachine:
        try:
            return await runtime.lookup(resource.id)
        except NotFound:
            raise ArmError(404, "ResourceNotFound", f"The Resource '{VM_TYPE}/{resource.name}' under resource "
                           f"group '{resource.group}' was not found.") from None

    async def power(self, call: Call, resource: Resource) -> web.StreamResponse:
        """``start``, ``powerOff``, ``deallocate``, ``restart``: a long-running operation (202, then poll) that
        changes the VM's power state (see :func:`set_power`)."""
        action = call.request.path.rstrip("/").rsplit("/", 1)[-1].lower()
        with contextlib.suppress(NotFound):  # another replica's VM: refused now, not in the operation
            await call.services.runtime.lookup(resource.id)
        lock = call.write_lock

        async def work() -> None:
            async with lock if lock is not None else contextlib.nullcontext():
                await set_power(call, resource.id, action)

        return operations.start(call, NAMESPACE, resource.location or "westus", work)

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        if call is not None and "instanceview" in str(call.query.get("$expand", "")).lower():
            body["properties"]["instanceView"] = instance_view(call.services, resource)
        return body

    #: What :meth:`remove` uses when a deletion has no call (a cascade), from :meth:`on_start` on.
    started: tuple[ArmServices, ArmStore] | None = None

    async def on_start(self, services: ArmServices, store: ArmStore) -> None:
        """Reconcile the runtime with ARM after a crash between the two: a runtime VM without an ARM resource is
        deleted; an ARM VM without a runtime VM gets one (same vmId is not possible: the sandbox was lost). The
        store is read and written through the ``SqlThread`` (requests may already be served)."""
        self.started = (services, store)
        runtime = services.runtime
        arm_ids = set()
        for sub, res in await services.sql.run(_vms, services, store):
            arm_ids.add(res.id.lower())
            try:
                await runtime.lookup(res.id)
            except HostedElsewhere:  # another replica runs it
                continue
            except NotFound:
                identity = res.identity or {"type": "None"}
                system, _ = parse_identity_type(identity.get("type", "None"))
                vm = await runtime.create(res.id, tenant_id=sub.tenant_id, location=res.location or "",
                                          system_assigned=system,
                                          user_assigned=list(identity.get("userAssignedIdentities") or {}),
                                          profile=_imds_profile(res), check=False)
                if vm.system_principal_id:
                    identity = {**identity, "principalId": vm.system_principal_id, "tenantId": sub.tenant_id}
                await services.sql.run(store.put_resource, res.evolve(
                    identity=identity, properties={**res.properties, "vmId": vm.vm_id}))
        for vm in runtime.all():
            if vm.resource_id.lower() not in arm_ids:
                await runtime.delete(vm.resource_id)


def _vms(services: ArmServices, store: ArmStore) -> list[tuple[Subscription, Resource]]:
    """Every VM resource with its subscription (in the ``SqlThread``)."""
    return [(sub, res) for sub in services.directory.subscriptions() for res in store.resources(sub.id, type=VM_TYPE)]


def _released(store: ArmStore, resource: Resource, system_principal_id: str | None) -> None:
    """After a VM's deletion: its system identity's role assignments and its interfaces (in the ``SqlThread``)."""
    if system_principal_id:
        store.delete_assignments_of(system_principal_id)
    release_interfaces(store, resource)


# -- instance view ---------------------------------------------------------------------------------------------

POWER_LABELS = {"running": "VM running", "stopped": "VM stopped", "deallocated": "VM deallocated",
                "starting": "VM starting", "stopping": "VM stopping", "deallocating": "VM deallocating"}


POWER_ACTIONS = {"start": "running", "restart": "running", "poweroff": "stopped", "deallocate": "deallocated"}


def power_state(services: ArmServices, resource: Resource) -> str:
    """The VM's power state (``running``, ``stopped``, ``deallocated``...): the compute runtime's when it keeps
    one, else what the last power action recorded."""
    reader = getattr(services.runtime, "power_state", None)
    if reader is not None:
        try:
            return str(reader(resource.id))
        except NotFound:
            return "deallocated"
    return str(resource.internal.get("powerState", "running"))


async def set_power(call: Call, resource_id: str, action: str) -> None:
    """Carry out a power action: the compute runtime's ``power(resource_id, action)`` when it has one (stopping
    and starting the VM's processes), and the state recorded on the resource (the store through ``call.run``)."""
    resource = await call.run(call.store.resource, resource_id)
    if resource is None:
        raise ArmError(404, "ResourceNotFound", f"The Resource '{VM_TYPE}/{resource_id.rsplit('/', 1)[-1]}' was "
                       "not found.")
    runner = getattr(call.services.runtime, "power", None)
    if runner is not None:
        await runner(resource_id, action)
    await call.run(call.store.put_resource, resource.evolve(internal={**resource.internal,
                                                                      "powerState": POWER_ACTIONS[action]}))


def instance_view(services: ArmServices, resource: Resource) -> JsonObject:
    """``properties.instanceView`` as ``$expand=instanceView`` shows it (``az vm show -d``, ``az vm create``)."""
    state = power_state(services, resource)
    created = resource.properties.get("timeCreated")
    disk = (resource.properties.get("storageProfile") or {}).get("osDisk") or {}
    image = (resource.properties.get("storageProfile") or {}).get("imageReference") or {}
    provisioned = {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Provisioning succeeded",
                   "time": created}
    return {
        "computerName": (resource.properties.get("osProfile") or {}).get("computerName", resource.name),
        "osName": str(image.get("offer", "linux")).lower(), "osVersion": str(image.get("sku", "")),
        "vmAgent": {"vmAgentVersion": "2.13.1.1", "statuses": [
            {"code": "ProvisioningState/succeeded", "level": "Info", "displayStatus": "Ready",
             "message": "Guest Agent is running", "time": created}], "extensionHandlers": []},
        "disks": [{"name": disk.get("name", ""), "statuses": [provisioned]}],
        "hyperVGeneration": "V1",
        "statuses": [provisioned, {"code": f"PowerState/{state}", "level": "Info",
                                   "displayStatus": POWER_LABELS.get(state, f"VM {state}")}],
    }


# -- network interfaces (Microsoft.Network) -------------------------------------------------------------------


def checked_interfaces(call: Call, vm_id: str, profile: JsonObject) -> JsonObject:
    """``networkProfile`` with every interface checked: the caller may join it (403 ``LinkedAuthorizationFailed``
    otherwise, whether or not it exists), it exists in the caller's tenant (another tenant's is answered as a
    missing one) and no other VM uses it (reads the store: in the ``SqlThread``)."""
    refs = profile.get("networkInterfaces") or []
    if not isinstance(refs, list):
        raise bad_request("InvalidParameter", "properties.networkProfile.networkInterfaces must be an array.")
    out = []
    for ref in refs:
        ref = require_object(ref, "properties.networkProfile.networkInterfaces[]")
        nic_id = ref.get("id")
        if isinstance(nic_id, str):
            call.caller.require_linked(f"{VM_TYPE}/write", vm_id, f"{network.NIC}/join/action", nic_id)
        nic = call.tenant_resource(nic_id) if isinstance(nic_id, str) else None
        if nic is None or nic.type.lower() != network.NIC.lower():
            raise bad_request("InvalidParameter", f"The network interface '{nic_id}' referenced by virtual machine "
                              f"'{vm_id}' was not found.")
        user = (nic.properties.get("virtualMachine") or {}).get("id")
        if user and user.lower() != vm_id.lower() and call.store.resource(user) is not None:
            raise bad_request("NicInUse", f"Network interface {nic.id} is used by virtual machine {user}; a network "
                              "interface can be attached to one virtual machine.")
        entry: JsonObject = {"id": nic.id}
        props = require_object(ref.get("properties"), "networkInterfaces[].properties")
        if props:
            entry["properties"] = {k: v for k, v in props.items() if k in ("primary", "deleteOption")}
        out.append(entry)
    return {**{k: v for k, v in profile.items() if k != "networkInterfaces"}, "networkInterfaces": out}


def interface_ids(resource: Resource | None) -> list[str]:
    if resource is None:
        return []
    return [n["id"] for n in (resource.properties.get("networkProfile") or {}).get("networkInterfaces", [])]


def attach_interfaces(store: ArmStore, resource: Resource, existing: Resource | None) -> None:
    """Mark the VM's interfaces as used by it, and those it no longer names as free (SQL: in the
    ``SqlThread``)."""
    wanted = {i.lower() for i in interface_ids(resource)}
    for nic_id in interface_ids(existing):
        if nic_id.lower() not in wanted:
            network.attach(store, nic_id, None)
    for nic_id in interface_ids(resource):
        network.attach(store, nic_id, resource.id)


def release_interfaces(store: ArmStore, resource: Resource) -> None:
    """A deleted VM's interfaces are free again; those with ``deleteOption: Delete`` go with it (and a public IP
    address whose own ``deleteOption`` is ``Delete``). SQL: in the ``SqlThread``."""
    for ref in (resource.properties.get("networkProfile") or {}).get("networkInterfaces", []):
        nic = network.attach(store, ref["id"], None)
        if nic is None or (ref.get("properties") or {}).get("deleteOption") != "Delete":
            continue
        for config in nic.properties.get("ipConfigurations", []):
            public = config.get("properties", {}).get("publicIPAddress") or {}
            if (public.get("properties") or {}).get("deleteOption") == "Delete":
                store.delete_resource(public["id"])
        store.delete_resource(nic.id)


register(VirtualMachines())
