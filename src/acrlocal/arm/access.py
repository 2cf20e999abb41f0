"""What other rooms ask the control plane, without HTTP: role assignments that apply to a principal at a scope,
and a registry's admin credentials.

The registry's token service calls :func:`assignments_for` on every token request, then
:func:`acrlocal.rbac.registry_permissions` (or :func:`acrlocal.rbac.may`) with the result. One indexed query:
assignments of the principals whose scope is the target or one of its ancestors.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from sqlalchemy.engine import Engine

from acrlocal.arm.store import ArmStore, RoleDefinitionStore
from acrlocal.rbac.evaluate import RoleAssignment
from acrlocal.rbac.roles import RoleDefinition

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"


def assignments_for(engine: Engine, principal_ids: Iterable[str], scope: str) -> list[RoleAssignment]:
    """The role assignments of ``principal_ids`` that apply at ``scope`` (at it or any scope above it).

    ``scope`` is an ARM id, e.g. a registry's ``properties["resourceId"]``; raises
    :class:`~acrlocal.rbac.errors.InvalidScope` if it is not one."""
    return [a.rbac for a in ArmStore(engine).assignments(principal_ids=list(principal_ids), at_or_above=scope)]


def role_definitions(engine: Engine, tenant_id: str) -> dict[str, RoleDefinition]:
    """Built-in roles and ``tenant_id``'s custom roles by lower-case GUID (``definitions=`` of RBAC's calls)."""
    return RoleDefinitionStore(engine).definitions(tenant_id)


def registry_resource_id(engine: Engine, registry_name: str) -> str | None:
    """The ARM id of the registry called ``registry_name`` (names are unique across the server), or ``None``."""
    found = ArmStore(engine).resources_named(REGISTRY_TYPE, registry_name)
    return found[0].id if found else None


def check_admin_password(engine: Engine, registry_name: str, username: str, password: str) -> bool:
    """True if the registry's admin user is enabled and ``username``/``password`` are its credentials
    (username = registry name, either of its two passwords; constant-time comparison)."""
    found = ArmStore(engine).resources_named(REGISTRY_TYPE, registry_name)
    if not found:
        return False
    registry = found[0]
    if not registry.properties.get("adminUserEnabled") or username.lower() != registry.name.lower():
        return False
    ok = False
    for value in registry.internal.get("adminPasswords", {}).values():
        if hmac.compare_digest(str(value).encode(), password.encode()):
            ok = True
    return ok
