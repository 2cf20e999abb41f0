"""Finding a registry the way az does, and az's client-side registry name rules.

Without ``-g``, az lists ``/subscriptions/{sub}/resources?$filter=resourceType eq
'Microsoft.ContainerRegistry/registries'`` and takes the one whose name matches ignoring case; a miss is az's
``The resource with name ... could not be found in subscription '<name> (<id>)'.`` (exit code 1).

For the data plane (``acr login``, ``acr repository``) a registry the signed-in identity cannot see (an identity
with only AcrPull) is reached as az reaches it: by ``<name>`` + the cloud's ACR login server suffix
(``suffixes.acrLoginServer`` of ``/metadata/endpoints``: ``myregistry.azurecr.io`` inside a VM,
``myregistry.localhost:<shared port>`` on the host), but only when that name resolves to loopback without asking a
DNS server off this machine: ``/etc/hosts`` maps it, or every name server in ``/etc/resolv.conf`` is on loopback
(an acrlocal VM's DNS stub). Elsewhere the "could not be found" error stands, with a hint.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Any

from acrlocal.cli.errors import CLIError
from acrlocal.cli.resources import API, REGISTRY_TYPE, resource_group_of, resource_id
from acrlocal.cli.session import Session
from acrlocal.publiccloud import FRONT_DOOR

HOSTS = Path("/etc/hosts")
RESOLV_CONF = Path("/etc/resolv.conf")

NAME = re.compile(r"^[a-zA-Z0-9]{5,50}\Z")
BAD_REGISTRY_NAME = ("Registry names may contain only alpha numeric characters and must be between 5 and 50 "
                     "characters")


def check_registry_name(name: str) -> str:
    if not NAME.match(name) and not LOGIN_SERVER.match(name):
        raise CLIError(BAD_REGISTRY_NAME)
    return name


def _find_resource(session: Session, name: str, type_: str) -> dict[str, Any]:
    """The ARM resource of ``type_`` named ``name`` (ignoring case) in the current subscription."""
    sub = session.subscription_id
    found = session.arm.list(f"/subscriptions/{sub}/resources", API["resources"],
                             {"$filter": f"resourceType eq '{type_}'"},
                             keep=lambda r: str(r.get("name", "")).lower() == name.lower()
                             and str(r.get("type", "")).lower() == type_.lower())
    if not found:
        account = session.account()
        raise CLIError(f"The resource with name '{name}' and type '{type_}' could not be found in subscription "
                       f"'{account['name']} ({account['id']})'.")
    if len(found) > 1:
        raise CLIError(f"More than one resources with type '{type_}' are found with name '{name}'.")
    resource: dict[str, Any] = found[0]
    return resource


def registry_path(session: Session, name: str, group: str | None) -> str:
    """The ARM path of registry ``name`` (looked up when ``group`` is not given)."""
    check_registry_name(name)
    if not group:
        found = _find_resource(session, name, REGISTRY_TYPE)
        group = resource_group_of(found["id"])
        name = str(found["name"])
    return resource_id(session.subscription_id, group, REGISTRY_TYPE, name)


def get_registry(session: Session, name: str, group: str | None) -> dict[str, Any]:
    registry: dict[str, Any] = session.arm.get(registry_path(session, name, group), API["registries"])
    return registry


def login_server_of(session: Session, name: str, group: str | None) -> str:
    """The login server of registry ``name``; a login server given as ``host:port`` (what ``acrlocal status``
    lists) is used as it is. A registry the identity cannot see falls back to ``<name><suffix>`` where that name
    resolves locally (see the module's docstring)."""
    if ":" in name and LOGIN_SERVER.match(name):
        return name
    try:
        registry = get_registry(session, name, group)
    except CLIError as exc:
        if group or "could not be found" not in str(exc):
            raise
        fallback = _suffix_login_server(session, name)
        if fallback is None:
            raise CLIError(f"{exc} An identity that may pull but not read the registry reaches it by its login "
                           "server: pass it as --name (`acrlocal status` lists them), or run this inside an "
                           "acrlocal VM, where <name>.azurecr.io resolves.") from None
        from acrlocal.cli.framework import debug

        debug(f"Registry '{name}' is not visible to this identity; using the login server {fallback}")
        return fallback
    return str((registry.get("properties") or {}).get("loginServer") or registry.get("loginServer"))


def _is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _is_local(address: str) -> bool:
    """A loopback address, or Azure's front door inside an acrlocal VM: its address is on ``lo`` of the VM's own
    network namespace, and there only (it can be bound here; binding sends nothing)."""
    if _is_loopback(address):
        return True
    if address.split("%", 1)[0] != FRONT_DOOR:
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((FRONT_DOOR, 0))
    except OSError:
        return False
    return True


def resolves_locally(host: str, hosts: Path = HOSTS, resolv_conf: Path = RESOLV_CONF) -> bool:
    """True if ``host`` resolves to a loopback address (or, in a VM, its front door) with no question to a DNS
    server off this machine."""
    host = host.lower()
    try:
        for line in hosts.read_text().splitlines():
            fields = line.split("#", 1)[0].split()
            if len(fields) >= 2 and _is_local(fields[0]) and host in (f.lower() for f in fields[1:]):
                return True
    except OSError:
        pass
    try:
        servers = [line.split()[1] for line in resolv_conf.read_text().splitlines()
                   if line.startswith("nameserver") and len(line.split()) >= 2]
    except OSError:
        return False
    if not servers or not all(_is_loopback(s) for s in servers):
        return False
    try:
        return all(_is_local(str(info[4][0])) for info in socket.getaddrinfo(host, None, socket.AF_INET))
    except OSError:
        return False


def _suffix_login_server(session: Session, name: str) -> str | None:
    """``<name><ACR login server suffix>`` lower-cased, if it resolves locally here, else ``None``."""
    url = session.endpoints.resource_manager.rstrip("/") + "/metadata/endpoints"
    try:
        response = session.http.request("GET", url, params={"api-version": "2022-09-01"})
        suffix = str(response.json()["suffixes"]["acrLoginServer"])
    except (ValueError, KeyError, TypeError):
        return None
    server = (name + (suffix if suffix.startswith(".") else "." + suffix)).lower()
    host = server.rsplit(":", 1)[0]
    return server if resolves_locally(host) else None


LOGIN_SERVER = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}\Z")
