"""Finding a registry the way az does, and az's client-side registry name rules.

Without ``-g``, az lists ``/subscriptions/{sub}/resources?$filter=resourceType eq
'Microsoft.ContainerRegistry/registries'`` and takes the one whose name matches ignoring case; a miss is az's
``The resource with name ... could not be found in subscription '<name> (<id>)'.`` (exit code 1).

For the data plane (``acr login``, ``acr repository``) a registry the signed-in identity cannot see (an identity
with only AcrPull) is reached as az reaches it: by ``<name>`` + the cloud's ACR login server suffix
(``suffixes.acrLoginServer`` of ``/metadata/endpoints``: ``myregistry.localhost:<shared port>``), but only when
``/etc/hosts`` maps that name to loopback, as it does inside an acrlocal VM. Elsewhere the name would be asked of
the DNS server, off this machine, so the "could not be found" error stands, with a hint.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from acrlocal.cli.errors import CLIError
from acrlocal.cli.resources import API, REGISTRY_TYPE, resource_group_of, resource_id
from acrlocal.cli.session import Session
from acrlocal.compute.network import resolves_locally

HOSTS = Path("/etc/hosts")

NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")
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
                           "acrlocal VM, where <name>.localhost resolves.") from None
        from acrlocal.cli.framework import debug

        debug(f"Registry '{name}' is not visible to this identity; using the login server {fallback}")
        return fallback
    return str((registry.get("properties") or {}).get("loginServer") or registry.get("loginServer"))


def _suffix_login_server(session: Session, name: str, hosts: Path = HOSTS) -> str | None:
    """``<name><ACR login server suffix>`` lower-cased, if ``hosts`` maps its host to loopback, else ``None``."""
    try:
        text = hosts.read_text()
    except OSError:
        return None
    url = session.endpoints.resource_manager.rstrip("/") + "/metadata/endpoints"
    try:
        response = session.http.request("GET", url, params={"api-version": "2022-09-01"})
        suffix = str(response.json()["suffixes"]["acrLoginServer"])
    except (ValueError, KeyError, TypeError):
        return None
    server = (name + (suffix if suffix.startswith(".") else "." + suffix)).lower()
    host = server.rsplit(":", 1)[0]
    return server if resolves_locally(text, host) else None


LOGIN_SERVER = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")
