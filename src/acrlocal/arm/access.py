"""What other rooms ask the control plane, without HTTP: role assignments that apply to a principal at a scope,
and a registry's admin credentials.

:class:`ArmAccess` is the registry's :class:`~acrlocal.registry.auth_events.ControlPlaneAccess`, handed to its
token service by ``server.py``: the token service calls :meth:`~ArmAccess.assignments_for` on every token request,
then :func:`acrlocal.rbac.registry_permissions` (or :func:`acrlocal.rbac.may`) with the result. One indexed query:
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


class ArmAccess:
    """The control plane's answers on ``engine`` (reads only; safe from any thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def assignments_for(self, principal_ids: Iterable[str], scope: str) -> list[RoleAssignment]:
        """The role assignments of ``principal_ids`` that apply at ``scope`` (at it or any scope above it).

        ``scope`` is an ARM id, e.g. a registry's ``properties["resourceId"]``; raises
        :class:`~acrlocal.rbac.errors.InvalidScope` if it is not one."""
        store = ArmStore(self.engine)
        return [a.rbac for a in store.assignments(principal_ids=list(principal_ids), at_or_above=scope)]

    def role_definitions(self, tenant_id: str) -> dict[str, RoleDefinition]:
        """Built-in roles and ``tenant_id``'s custom roles by lower-case GUID (``definitions=`` of RBAC's calls)."""
        return RoleDefinitionStore(self.engine).definitions(tenant_id)

    def registry_resource_id(self, registry_name: str) -> str | None:
        """The ARM id of the registry called ``registry_name`` (names are unique across the server), or ``None``."""
        found = ArmStore(self.engine).resources_named(REGISTRY_TYPE, registry_name)
        return found[0].id if found else None

    def check_admin_password(self, registry_name: str, username: str, password: str) -> bool:
        """True if the registry's admin user is enabled and ``username``/``password`` are its credentials
        (username = registry name, either of its two passwords; constant-time comparison)."""
        found = ArmStore(self.engine).resources_named(REGISTRY_TYPE, registry_name)
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
