"""``vm create|show|list|delete``, ``vm identity assign|remove|show``, ``vm run-command invoke``
(``Microsoft.Compute/virtualMachines``), as az's, and ``vm ssh`` / ``ssh vm``: a shell in the VM.

``--image UbuntuLTS --admin-username --generate-ssh-keys`` are accepted for the tutorial's sake: an acrlocal VM is
a sandbox on this host, so the image is recorded, no key is generated and nothing is written under ``~/.ssh``
(``--ssh-key-values``, or an existing ``~/.ssh/id_rsa.pub``, become the admin user's ``authorized_keys``). As
az's, ``vm create`` makes the VM's network first: the resource group's virtual network (else ``<vm>VNET``
``10.0.0.0/16`` with ``<vm>Subnet``), ``<vm>NSG`` allowing ssh, ``<vm>PublicIP`` (an address of this machine,
see :mod:`acrlocal.arm.network`) unless ``--public-ip-address ""``, and ``<vm>VMNic``.
``--identities`` takes identity names (in the VM's resource group) or ids, and ``[system]`` for the VM's own.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from acrlocal.cli import console
from acrlocal.cli.errors import CLIError, CLIUsageError
from acrlocal.cli.framework import AzGroup, confirm, option
from acrlocal.cli.resources import API, IDENTITY_TYPE, VM_TYPE, flatten, group_path, list_path, resource_id
from acrlocal.cli.session import Session

SYSTEM = "[system]"
#: How long the CLI waits for a run-command's answer: longer than any script may run on the server.
RUN_COMMAND_WAIT_S = 24 * 3600 + 60
IMAGE_ALIASES = {
    "ubuntults": {"publisher": "Canonical", "offer": "UbuntuServer", "sku": "18.04-LTS", "version": "latest"},
    "ubuntu2204": {"publisher": "Canonical", "offer": "0001-com-ubuntu-server-jammy", "sku": "22_04-lts-gen2",
                   "version": "latest"},
    "ubuntu2404": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server", "version": "latest"},
    "debian11": {"publisher": "Debian", "offer": "debian-11", "sku": "11-backports-gen2", "version": "latest"},
    "debian12": {"publisher": "Debian", "offer": "debian-12", "sku": "12-gen2", "version": "latest"},
}
name_option = option("--name", "-n", "name", required=True, help="The name of the Virtual Machine.")
group_option = option("--resource-group", "-g", "resource_group", required=True, help="Name of resource group.")


def _image_reference(image: str) -> dict[str, str]:
    if image.lower() in IMAGE_ALIASES:
        return dict(IMAGE_ALIASES[image.lower()])
    if image.startswith("/"):
        return {"id": image}
    parts = image.split(":")
    if len(parts) == 4:
        return dict(zip(("publisher", "offer", "sku", "version"), parts, strict=True))
    raise CLIError(f"Invalid image \"{image}\". Use a valid image URN, custom image name, custom image id, VHD blob "
                   f"URI, or pick an image from {sorted(IMAGE_ALIASES)}.")


def _identity_ids(sub: str, group: str, identities: tuple[str, ...]) -> tuple[bool, list[str]]:
    """(system wanted, user-assigned identity ids) for ``--identities``/``--assign-identity`` values."""
    system = False
    ids: list[str] = []
    for value in [v for v in identities if v] or [SYSTEM]:
        if value.lower() == SYSTEM:
            system = True
        elif value.startswith("/"):
            ids.append(value)
        else:
            ids.append(resource_id(sub, group, IDENTITY_TYPE, value))
    return system, ids


def identity_type(system: bool, user: bool) -> str:
    return {(True, True): "SystemAssigned, UserAssigned", (True, False): "SystemAssigned",
            (False, True): "UserAssigned", (False, False): "None"}[(system, user)]


def _identity_info(vm: dict[str, Any]) -> dict[str, Any]:
    ident = vm.get("identity") or {}
    return {"systemAssignedIdentity": ident.get("principalId") or "",
            "userAssignedIdentities": ident.get("userAssignedIdentities") or {}}


def _vm_table(result: Any) -> Any:
    rows = result if isinstance(result, list) else [result]
    return [{"Name": r.get("name"), "ResourceGroup": r.get("resourceGroup"), "Location": r.get("location")}
            for r in rows]


@click.group("vm", cls=AzGroup)
def vm() -> None:
    """Manage Linux or Windows virtual machines (acrlocal: sandboxes on this host)."""


def _path(session: Session, group: str, name: str) -> str:
    return resource_id(session.subscription_id, group, VM_TYPE, name)


@vm.command("create")
@name_option
@group_option
@option("--image", default="UbuntuLTS", help="The name of the operating system image (alias, URN or id).")
@option("--admin-username", default="azureuser", help="Username for the VM.")
@option("--generate-ssh-keys", is_flag=True, help="Accepted for compatibility; acrlocal writes no key.")
@option("--ssh-key-values", nargs_star=True, help="SSH public keys or public key files (default: ~/.ssh/id_rsa.pub "
        "when it exists).")
@option("--public-ip-address", help="Name of the public IP address to create (\"\" for none).")
@option("--authentication-type", help="Accepted for compatibility.")
@option("--location", "-l", help="Location; the resource group's by default.")
@option("--size", default="Standard_DS1_v2", help="The VM size.")
@option("--assign-identity", nargs_star=True, help="Identities to assign: names or ids, [system] for its own.")
@option("--role", default="Contributor", help="Role for the system identity (with --scope).")
@option("--scope", help="Scope the system identity can access (creates a role assignment).")
@option("--no-wait", is_flag=True, help="Do not wait for the long-running operation to finish.")
def create(name: str, resource_group: str, image: str, admin_username: str, generate_ssh_keys: bool,
           ssh_key_values: tuple[str, ...], authentication_type: str | None, location: str | None, size: str,
           assign_identity: tuple[str, ...], role: str, scope: str | None, no_wait: bool,
           public_ip_address: str | None) -> Any:
    """Create a VM."""
    session = Session()
    sub = session.subscription_id
    if not location:
        location = str(session.arm.get(group_path(sub, resource_group), API["groups"])["location"])
    linux: dict[str, Any] = {"disablePasswordAuthentication": True}
    keys = _ssh_keys(ssh_key_values)
    if keys:
        linux["ssh"] = {"publicKeys": [{"path": f"/home/{admin_username}/.ssh/authorized_keys", "keyData": key}
                                       for key in keys]}
    body: dict[str, Any] = {"location": location, "properties": {
        "hardwareProfile": {"vmSize": size},
        "storageProfile": {"imageReference": _image_reference(image)},
        "osProfile": {"computerName": name, "adminUsername": admin_username, "linuxConfiguration": linux},
    }}
    if wants_identity := bool(assign_identity):
        _identity_ids(sub, resource_group, tuple(assign_identity or ()))  # refuse bad values before making anything
    elif scope:
        raise CLIUsageError("usage error: --scope needs --assign-identity")
    nic = _network(session, resource_group, name, location,
                   f"{name}PublicIP" if public_ip_address is None else public_ip_address)
    body["properties"]["networkProfile"] = {"networkInterfaces": [{"id": nic["id"]}]}
    if wants_identity:
        system, ids = _identity_ids(sub, resource_group, tuple(assign_identity or ()))
        ident: dict[str, Any] = {"type": identity_type(system, bool(ids))}
        if ids:
            ident["userAssignedIdentities"] = {i: {} for i in ids}
        body["identity"] = ident
    result = session.arm.put(_path(session, resource_group, name), API["vms"], body, wait=not no_wait)
    configuration = (((nic.get("properties") or {}).get("ipConfigurations") or [{}])[0].get("properties") or {})
    public = ""
    if configuration.get("publicIPAddress"):
        address = session.arm.get(configuration["publicIPAddress"]["id"], API["network"])
        public = str((address.get("properties") or {}).get("ipAddress") or "")
    out: dict[str, Any] = {"fqdns": "", "id": result.get("id"), "location": result.get("location"),
                           "macAddress": str((nic.get("properties") or {}).get("macAddress") or ""),
                           "powerState": "VM running",
                           "privateIpAddress": str(configuration.get("privateIPAddress") or ""),
                           "publicIpAddress": public, "resourceGroup": resource_group, "zones": ""}
    if wants_identity:
        info = _identity_info(result)
        if scope and info["systemAssignedIdentity"]:
            from acrlocal.cli.commands.role import create_assignment

            create_assignment(session, info["systemAssignedIdentity"], "ServicePrincipal", role, scope)
            info = {"role": role, "scope": scope, **info}
        out["identity"] = info
    return out


def _ssh_keys(values: tuple[str, ...]) -> list[str]:
    """The public keys of ``--ssh-key-values`` (key text, or files holding one), else of ``~/.ssh/id_rsa.pub``
    when it exists, as az reads them; nothing is generated."""
    if not values:
        default = os.path.expanduser("~/.ssh/id_rsa.pub")
        values = (default,) if os.path.isfile(default) else ()
    keys = []
    for value in values:
        text = value
        if not value.startswith(("ssh-", "ecdsa-")):
            try:
                with open(os.path.expanduser(value)) as f:
                    text = f.read()
            except OSError as exc:
                raise CLIError(f"An RSA key file or key value must be supplied to SSH Key Value: cannot read "
                               f"{value!r} ({exc.strerror}).") from None
        text = " ".join(text.split())
        if not text.startswith(("ssh-", "ecdsa-")):
            raise CLIError(f"{value!r} is not an SSH public key (ssh-rsa, ssh-ed25519, ecdsa-...).")
        keys.append(text)
    return keys


def _network(session: Session, group: str, name: str, location: str, public_ip: str) -> dict[str, Any]:
    """The network interface a new VM gets, made as az makes it (see the module's docstring)."""
    sub, api = session.subscription_id, API["network"]
    vnets = [v for v in session.arm.list(list_path(sub, group, "Microsoft.Network/virtualNetworks"), api)
             if str(v.get("location", "")).lower() == location.lower() and (v.get("properties") or {}).get("subnets")]
    if vnets:
        subnet_id = str(vnets[0]["properties"]["subnets"][0]["id"])
    else:
        vnet = session.arm.put(resource_id(sub, group, "Microsoft.Network/virtualNetworks", f"{name}VNET"), api, {
            "location": location, "properties": {
                "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                "subnets": [{"name": f"{name}Subnet", "properties": {"addressPrefix": "10.0.0.0/24"}}]}})
        subnet_id = str(vnet["properties"]["subnets"][0]["id"])
    nsg = session.arm.put(resource_id(sub, group, "Microsoft.Network/networkSecurityGroups", f"{name}NSG"), api, {
        "location": location, "properties": {"securityRules": [{"name": "default-allow-ssh", "properties": {
            "protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22", "sourceAddressPrefix": "*",
            "destinationAddressPrefix": "*", "access": "Allow", "priority": 1000, "direction": "Inbound"}}]}})
    configuration: dict[str, Any] = {"privateIPAllocationMethod": "Dynamic", "subnet": {"id": subnet_id}}
    if public_ip:
        address = session.arm.put(resource_id(sub, group, "Microsoft.Network/publicIPAddresses", public_ip), api, {
            "location": location, "sku": {"name": "Standard"},
            "properties": {"publicIPAllocationMethod": "Static"}})
        configuration["publicIPAddress"] = {"id": address["id"]}
    return dict(session.arm.put(resource_id(sub, group, "Microsoft.Network/networkInterfaces", f"{name}VMNic"), api, {
        "location": location, "properties": {
            "ipConfigurations": [{"name": f"ipconfig{name}", "properties": configuration}],
            "networkSecurityGroup": {"id": nsg["id"]}}}))


@vm.command("show", show=True)
@name_option
@group_option
@option("--show-details", "-d", is_flag=True, help="Show public ip address, FQDN, and power states.")
def show(name: str, resource_group: str, show_details: bool) -> Any:
    """Get the details of a VM."""
    session = Session()
    if not show_details:
        return flatten(session.arm.get(_path(session, resource_group, name), API["vms"]))
    result = flatten(session.arm.call("GET", _path(session, resource_group, name), api_version=API["vms"],
                                      params={"$expand": "instanceView"}))
    statuses = ((result.get("instanceView") or {}).get("statuses") or []) if isinstance(result, dict) else []
    power = next((s.get("displayStatus") for s in statuses if str(s.get("code", "")).startswith("PowerState/")),
                 None)
    return {**result, "powerState": power, "publicIps": "", "fqdns": "", "privateIps": "", "macAddresses": ""}


def _power(name: str, resource_group: str, action: str, no_wait: bool) -> Any:
    session = Session()
    session.arm.call("POST", f"{_path(session, resource_group, name)}/{action}", api_version=API["vms"],
                     wait=not no_wait)
    return None


no_wait_option = option("--no-wait", is_flag=True, help="Do not wait for the long-running operation to finish.")


@vm.command("start")
@name_option
@group_option
@no_wait_option
def start(name: str, resource_group: str, no_wait: bool) -> Any:
    """Start a stopped VM (its processes run again)."""
    return _power(name, resource_group, "start", no_wait)


@vm.command("stop")
@name_option
@group_option
@no_wait_option
@option("--skip-shutdown", is_flag=True, help="Accepted for compatibility: the VM's processes are ended either way.")
def stop(name: str, resource_group: str, no_wait: bool, skip_shutdown: bool) -> Any:
    """Power off (stop) a running VM: every process in it ends; its disk stays."""
    return _power(name, resource_group, "powerOff", no_wait)


@vm.command("deallocate")
@name_option
@group_option
@no_wait_option
def deallocate(name: str, resource_group: str, no_wait: bool) -> Any:
    """Deallocate a VM: it stops, as with `vm stop`, and is reported deallocated."""
    return _power(name, resource_group, "deallocate", no_wait)


@vm.command("restart")
@name_option
@group_option
@no_wait_option
def restart(name: str, resource_group: str, no_wait: bool) -> Any:
    """Restart a VM: its processes end and it boots again (/tmp and /run cleared)."""
    return _power(name, resource_group, "restart", no_wait)


@vm.command("list", table=_vm_table)
@option("--resource-group", "-g", "resource_group", help="Name of resource group.")
def list_(resource_group: str | None) -> Any:
    """List details of Virtual Machines."""
    session = Session()
    return flatten(session.arm.list(list_path(session.subscription_id, resource_group, VM_TYPE), API["vms"]))


@vm.command("delete")
@name_option
@group_option
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
@option("--no-wait", is_flag=True, help="Do not wait for the long-running operation to finish.")
def delete(name: str, resource_group: str, yes: bool, no_wait: bool) -> Any:
    """Delete a VM (its sandbox, IMDS endpoint and system-assigned identity go with it)."""
    confirm("Are you sure you want to perform this operation?", yes)
    session = Session()
    session.arm.delete(_path(session, resource_group, name), API["vms"], wait=not no_wait)
    return None


@vm.group("identity", cls=AzGroup)
def vm_identity() -> None:
    """Manage service identities of a VM."""


@vm_identity.command("assign")
@name_option
@group_option
@option("--identities", nargs_star=True, help="Space-separated identities to assign: names, ids, or [system].")
@option("--role", help="Role for the system identity (with --scope).")
@option("--scope", help="Scope the system identity can access (creates a role assignment).")
def identity_assign(name: str, resource_group: str, identities: tuple[str, ...], role: str | None,
                    scope: str | None) -> Any:
    """Enable managed service identity on a VM (system-assigned by default)."""
    session = Session()
    path = _path(session, resource_group, name)
    current = session.arm.get(path, API["vms"]).get("identity") or {}
    system, ids = _identity_ids(session.subscription_id, resource_group, identities)
    has_system = system or "systemassigned" in str(current.get("type", "")).lower().replace(" ", "")
    users: dict[str, Any] = {k: {} for k in (current.get("userAssignedIdentities") or {})}
    users.update({i: {} for i in ids})
    ident: dict[str, Any] = {"type": identity_type(has_system, bool(users))}
    if users:
        ident["userAssignedIdentities"] = users
    result = session.arm.patch(path, API["vms"], {"identity": ident})
    info = _identity_info(result)
    if scope:
        if not info["systemAssignedIdentity"]:
            raise CLIUsageError("usage error: --scope applies to the system-assigned identity ([system])")
        from acrlocal.cli.commands.role import create_assignment

        create_assignment(session, info["systemAssignedIdentity"], "ServicePrincipal", role or "Contributor", scope)
        info = {"role": role or "Contributor", "scope": scope, **info}
    return info


@vm_identity.command("remove")
@name_option
@group_option
@option("--identities", nargs_star=True, help="Space-separated identities to remove: names, ids, or [system].")
def identity_remove(name: str, resource_group: str, identities: tuple[str, ...]) -> Any:
    """Remove managed service identities from a VM."""
    session = Session()
    path = _path(session, resource_group, name)
    current = session.arm.get(path, API["vms"]).get("identity") or {}
    system, ids = _identity_ids(session.subscription_id, resource_group, identities)
    existing = {k.lower(): k for k in (current.get("userAssignedIdentities") or {})}
    missing = [i for i in ids if i.lower() not in existing]
    if missing:
        raise CLIError(f"'{missing[0]}' is not associated with '{name}'")
    has_system = "systemassigned" in str(current.get("type", "")).lower().replace(" ", "") and not system
    remaining: dict[str, Any] = {v: {} for k, v in existing.items() if k not in {i.lower() for i in ids}}
    ident: dict[str, Any] = {"type": identity_type(has_system, bool(remaining))}
    if ids:
        ident["userAssignedIdentities"] = {**remaining, **{existing[i.lower()]: None for i in ids}}
    result = session.arm.patch(path, API["vms"], {"identity": ident})
    return result.get("identity")


@vm_identity.command("show")
@name_option
@group_option
def identity_show(name: str, resource_group: str) -> Any:
    """Display the VM's managed identity info."""
    session = Session()
    return session.arm.get(_path(session, resource_group, name), API["vms"]).get("identity")


@vm.group("run-command", cls=AzGroup)
def run_command() -> None:
    """Manage run commands on a Virtual Machine."""


@run_command.command("invoke")
@name_option
@group_option
@option("--command-id", required=True, help="The command id, e.g. RunShellScript.")
@option("--scripts", nargs_star=True, help="Script lines to run.")
@option("--parameters", nargs_star=True, help="Parameters in [name=]value form; unnamed ones are positional.")
def run_command_invoke(name: str, resource_group: str, command_id: str, scripts: tuple[str, ...],
                       parameters: tuple[str, ...]) -> Any:
    """Execute a command on a VM: bash in the VM's sandbox, with its identity endpoints, as its admin user."""
    session = Session()
    params: list[dict[str, str]] = []
    positional = 0
    for p in parameters:
        key, sep, value = p.partition("=")
        if sep:
            params.append({"name": key, "value": value})
        else:
            positional += 1
            params.append({"name": f"arg{positional}", "value": p})
    body = {"commandId": command_id, "script": list(scripts), "parameters": params}
    return session.arm.call("POST", f"{_path(session, resource_group, name)}/runCommand", api_version=API["vms"],
                            body=body, timeout=RUN_COMMAND_WAIT_S)


def _enter_vm(name: str, resource_group: str, command: tuple[str, ...]) -> Any:
    """A shell in the VM as its admin user (or ``bash -c '<command>'``, as ssh runs a remote command), joined to
    this terminal or these streams; exits with the remote exit code.

    The server hands out a one-time console ticket (``POST .../console``, allowed to principals that may log in to
    the VM as its administrator, or run commands on it); this CLI never reads the server's data directory.
    """
    session = Session()
    interactive = not command and os.isatty(0) and os.isatty(1)
    body: dict[str, Any] = {"term": os.environ.get("TERM") or "xterm"}
    if command:
        body["command"] = " ".join(command)
    if interactive:
        rows, cols = console.terminal_size()
        body["tty"] = {"rows": rows, "cols": cols}
    answer = session.arm.post(f"{_path(session, resource_group, name)}/console", API["vms"], body)
    base = session.endpoints.resource_manager.rstrip("/")
    url = "wss" + base[len("https"):] + str(answer["path"]) if base.startswith("https") else base + answer["path"]
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(console.run(url, session.endpoints.verify, interactive=interactive))


ssh_name = option("--name", "-n", "--vm-name", "name", required=True, help="The name of the VM.")
remote_command = click.argument("command", nargs=-1, type=click.UNPROCESSED)
local_user = option("--local-user", help="Accepted for compatibility; the VM's shell runs as its admin user.")


@vm.command("ssh", context_settings={"ignore_unknown_options": True})
@ssh_name
@group_option
@local_user
@remote_command
def ssh(name: str, resource_group: str, local_user: str | None, command: tuple[str, ...]) -> Any:
    """Open a shell in a VM, or run `-- COMMAND...` there (needs Virtual Machine Administrator Login, or a role
    that may run commands on it: Owner, Contributor, Virtual Machine Contributor)."""
    return _enter_vm(name, resource_group, command)


@click.group("ssh", cls=AzGroup)
def ssh_group() -> None:
    """SSH into resources (acrlocal: a shell in a VM's sandbox)."""


@ssh_group.command("vm", context_settings={"ignore_unknown_options": True})
@ssh_name
@group_option
@local_user
@remote_command
def ssh_vm(name: str, resource_group: str, local_user: str | None, command: tuple[str, ...]) -> Any:
    """Open a shell in a VM, or run `-- COMMAND...` there (as `vm ssh`)."""
    return _enter_vm(name, resource_group, command)
