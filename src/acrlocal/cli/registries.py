"""Finding a registry the way az does, and az's client-side registry name rules.

Without ``-g``, az lists ``/subscriptions/{sub}/resources?$filter=resourceType eq
'Microsoft.ContainerRegistry/registries'`` and takes the one whose name matches ignoring case; a miss is az's
``The resource with name ... could not be found in subscription '<name> (<id>)'.`` (exit code 1).
"""

from __future__ import annotations

import re
from typing import Any

from acrlocal.cli.errors import CLIError
from acrlocal.cli.resources import API, REGISTRY_TYPE, resource_group_of, resource_id
from acrlocal.cli.session import Session

NAME = re.compile(r"^[a-zA-Z0-9]{5,50}$")
BAD_REGISTRY_NAME = ("Registry names may contain only alpha numeric characters and must be between 5 and 50 "
                     "characters")


def check_registry_name(name: str) -> str:
    if not NAME.match(name) and not LOGIN_SERVER.match(name):
        raise CLIError(BAD_REGISTRY_NAME)
    return name


def find_resource(session: Session, name: str, type_: str) -> dict[str, Any]:
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
        found = find_resource(session, name, REGISTRY_TYPE)
        group = resource_group_of(found["id"])
        name = str(found["name"])
    return resource_id(session.subscription_id, group, REGISTRY_TYPE, name)


def get_registry(session: Session, name: str, group: str | None) -> dict[str, Any]:
    registry: dict[str, Any] = session.arm.get(registry_path(session, name, group), API["registries"])
    return registry


def login_server_of(session: Session, name: str, group: str | None) -> str:
    """The login server of registry ``name``; a login server given as ``host:port`` (what ``acrlocal status``
    lists) is used as it is, for identities that may pull but not read the registry's ARM resource."""
    if ":" in name and LOGIN_SERVER.match(name):
        return name
    registry = get_registry(session, name, group)
    return str((registry.get("properties") or {}).get("loginServer") or registry.get("loginServer"))


LOGIN_SERVER = re.compile(r"^[A-Za-z0-9.-]+:[0-9]{1,5}$")
