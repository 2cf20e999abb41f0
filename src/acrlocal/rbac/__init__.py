"""Azure RBAC, pure: built-in roles, ARM scopes, ABAC conditions, and the one function that decides.

Nothing here does I/O. The control plane stores role assignments and renders these objects as ARM JSON; the
registry's token service asks :func:`registry_permissions` (or :func:`may`) what a caller may do.

- :mod:`.roles`: :data:`BUILT_IN_ROLES` with Azure's real GUIDs, :func:`find_role`, :func:`arm_role_definition`.
- :mod:`.scopes`: :func:`parse_scope`, :class:`Scope`, :func:`is_at_or_above`.
- :mod:`.conditions`: :func:`parse_condition` for ACR repository conditions.
- :mod:`.evaluate`: :class:`RoleAssignment`, :func:`may`, :func:`registry_permissions`.
"""

from acrlocal.rbac.actions import action_matches
from acrlocal.rbac.conditions import Condition, parse_condition
from acrlocal.rbac.errors import InvalidCondition, InvalidOperation, InvalidScope, UnknownRole
from acrlocal.rbac.evaluate import (
    RegistryPermission,
    RoleAssignment,
    RoleAssignmentMode,
    may,
    registry_permissions,
)
from acrlocal.rbac.roles import (
    BUILT_IN_ROLES,
    Permission,
    RoleDefinition,
    arm_role_definition,
    find_role,
    get_role,
    role_definition_id,
    role_guid,
)
from acrlocal.rbac.scopes import Scope, is_at_or_above, normalize_scope, parse_scope, same_scope

__all__ = [
    "BUILT_IN_ROLES",
    "Condition",
    "InvalidCondition",
    "InvalidOperation",
    "InvalidScope",
    "Permission",
    "RegistryPermission",
    "RoleAssignment",
    "RoleAssignmentMode",
    "RoleDefinition",
    "Scope",
    "UnknownRole",
    "action_matches",
    "arm_role_definition",
    "find_role",
    "get_role",
    "is_at_or_above",
    "may",
    "normalize_scope",
    "parse_condition",
    "parse_scope",
    "registry_permissions",
    "role_definition_id",
    "role_guid",
    "same_scope",
]
