"""The one question of the rbac room: may these principals perform this operation at this scope?

:func:`may` answers it the way Azure does:

- an assignment applies to its principal at its scope and at every scope below it;
- the assignment's role grants the operation if an ``actions`` pattern (``dataActions`` for a data operation)
  matches it and no ``notActions`` (``notDataActions``) pattern of the same permission entry does; patterns
  match case-insensitively, ``*`` being a wildcard; one role's ``notActions`` never take away another role's
  grant;
- a condition on the assignment must also hold (see :mod:`acrlocal.rbac.conditions`);
- any one assignment that grants is enough (acrlocal has no deny assignments).

Fail closed: an assignment whose role is unknown, whose scope does not parse, or whose condition cannot be parsed
grants nothing; it is skipped, never an error, so one bad row cannot lock everybody out or let anybody in.

:func:`registry_permissions` builds on it to say what a caller may do in a registry's data plane, in either of
ACR's role assignment modes. Everything here is pure: callers fetch the assignments (and custom role definitions)
from storage and pass them in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from acrlocal.rbac.conditions import parse_condition
from acrlocal.rbac.errors import InvalidCondition, InvalidOperation, InvalidScope
from acrlocal.rbac.roles import BUILT_IN_ROLES, RoleDefinition, role_guid
from acrlocal.rbac.scopes import Scope, parse_scope


@dataclass(frozen=True, slots=True)
class RoleAssignment:
    """A role assignment as ARM stores it.

    ``role_definition_id`` is a role definition resource id or a bare GUID; ``principal_type`` is ARM's
    (``User``, ``Group``, ``ServicePrincipal``...) and does not affect evaluation; ``condition`` is an ABAC
    condition or ``None``, ``condition_version`` ``"2.0"`` or ``None``.
    """

    id: str
    scope: str
    role_definition_id: str
    principal_id: str
    principal_type: str = "ServicePrincipal"
    condition: str | None = None
    condition_version: str | None = None


def may(
    assignments: Iterable[RoleAssignment],
    principal_ids: Iterable[str],
    operation: str,
    scope: str | Scope,
    *,
    data_action: bool = False,
    repository: str | None = None,
    definitions: Mapping[str, RoleDefinition] = BUILT_IN_ROLES,
) -> bool:
    """True if an assignment to one of ``principal_ids`` grants ``operation`` at ``scope``.

    Args:
        assignments: candidate assignments (any principal, any scope; the irrelevant ones are skipped).
        principal_ids: the caller's object id and the ids of the groups it belongs to (compared ignoring case).
        operation: the operation, e.g. ``Microsoft.ContainerRegistry/registries/read``; no wildcards.
        scope: the resource (or group, subscription) acted on.
        data_action: check ``dataActions``/``notDataActions`` instead of ``actions``/``notActions``.
        repository: the repository the request names, for ABAC conditions; ``None`` if it names none.
        definitions: role definitions by lower-case GUID (built-in roles by default; add custom roles).

    Raises:
        InvalidOperation: ``operation`` is empty or contains ``*``.
        InvalidScope: ``scope`` is not an ARM scope.
    """
    if not operation or "*" in operation:
        raise InvalidOperation(f"operation {operation[:200]!r} must be a non-empty operation name without wildcards")
    target = parse_scope(scope)
    principals = {principal.lower() for principal in principal_ids}
    for assignment in assignments:
        if assignment.principal_id.lower() not in principals:
            continue
        try:
            if not parse_scope(assignment.scope).covers(target):
                continue
        except InvalidScope:
            continue
        guid = role_guid(assignment.role_definition_id)
        role = definitions.get(guid) if guid else None
        if role is None or not role.allows(operation, data_action=data_action):
            continue
        if assignment.condition:
            try:
                condition = parse_condition(assignment.condition, assignment.condition_version)
            except InvalidCondition:
                continue
            if not condition.applies(operation, repository=repository):
                continue
        return True
    return False


class RoleAssignmentMode(StrEnum):
    """A registry's ``roleAssignmentMode`` (``az acr create --role-assignment-mode rbac|rbac-abac``)."""

    #: "RBAC Registry Permissions": AcrPull/AcrPush/AcrDelete and Owner/Contributor/Reader reach the data plane.
    RBAC = "LegacyRegistryPermissions"
    #: "RBAC Registry + ABAC Repository Permissions": only the Container Registry Repository roles (data actions,
    #: optionally with repository conditions) and the Catalog Lister reach the data plane.
    RBAC_ABAC = "AbacRepositoryPermissions"


class RegistryPermission(StrEnum):
    """What a caller may do in a registry's data plane, named like ACR's repository permissions.

    Docker token actions map onto them as ``pull`` → PULL, ``push`` → PUSH, ``delete`` → DELETE;
    ``registry:catalog:*`` → CATALOG_LIST.
    """

    PULL = "content/read"
    PUSH = "content/write"
    DELETE = "content/delete"
    METADATA_READ = "metadata/read"
    METADATA_WRITE = "metadata/write"
    CATALOG_LIST = "catalog/read"


_ACR = "Microsoft.ContainerRegistry/registries"
_REPOSITORIES = f"{_ACR}/repositories"

# In "RBAC registry permissions" mode the registry honours these (control-plane shaped) actions. Reading tags
# comes with pull and managing them with push (AcrPull lists tags, AcrPush retags), or with the metadata actions.
_RBAC_OPERATIONS: Mapping[RegistryPermission, tuple[str, ...]] = {
    RegistryPermission.PULL: (f"{_ACR}/pull/read",),
    RegistryPermission.PUSH: (f"{_ACR}/push/write",),
    RegistryPermission.DELETE: (f"{_ACR}/artifacts/delete",),
    RegistryPermission.METADATA_READ: (f"{_ACR}/pull/read", f"{_ACR}/metadata/read"),
    RegistryPermission.METADATA_WRITE: (f"{_ACR}/push/write", f"{_ACR}/metadata/write"),
    RegistryPermission.CATALOG_LIST: (f"{_ACR}/pull/read",),
}

# In "RBAC registry + ABAC repository permissions" mode only these data actions count.
_ABAC_DATA_OPERATIONS: Mapping[RegistryPermission, str] = {
    RegistryPermission.PULL: f"{_REPOSITORIES}/content/read",
    RegistryPermission.PUSH: f"{_REPOSITORIES}/content/write",
    RegistryPermission.DELETE: f"{_REPOSITORIES}/content/delete",
    RegistryPermission.METADATA_READ: f"{_REPOSITORIES}/metadata/read",
    RegistryPermission.METADATA_WRITE: f"{_REPOSITORIES}/metadata/write",
    RegistryPermission.CATALOG_LIST: f"{_ACR}/catalog/read",
}


def registry_permissions(
    assignments: Iterable[RoleAssignment],
    principal_ids: Iterable[str],
    registry: str | Scope,
    *,
    repository: str | None,
    mode: RoleAssignmentMode,
    definitions: Mapping[str, RoleDefinition] = BUILT_IN_ROLES,
) -> frozenset[RegistryPermission]:
    """The data-plane permissions the principals hold in ``registry`` (its resource id) for ``repository``.

    In :attr:`RoleAssignmentMode.RBAC` the registry checks ``actions``: AcrPull pulls, AcrPush pulls and pushes,
    AcrDelete deletes, Reader (``*/read``) pulls, Contributor and Owner (``*``) do everything; data actions and
    the Container Registry Repository roles give nothing.

    In :attr:`RoleAssignmentMode.RBAC_ABAC` the registry checks ``dataActions`` only: AcrPull/AcrPush/AcrDelete
    and Owner/Contributor/Reader give no data-plane access; Container Registry Repository Reader/Writer/
    Contributor do, narrowed by their conditions on the repository name, and the Catalog Lister lists the catalog.

    ``repository`` ``None`` asks about the registry as a whole (e.g. for a catalog listing): a grant whose
    condition depends on the repository name does not hold then. CATALOG_LIST never depends on ``repository``.

    Raises:
        InvalidScope: ``registry`` is not the resource id of a ``Microsoft.ContainerRegistry/registries``.
    """
    mode = RoleAssignmentMode(mode)
    scope = parse_scope(registry)
    if (scope.resource_type or "").lower() != _ACR.lower():
        raise InvalidScope(f"scope {str(scope)[:200]!r} is not a container registry (expected {_ACR}/{{name}})")
    candidates = list(assignments)
    principals = [p.lower() for p in principal_ids]
    granted: set[RegistryPermission] = set()
    for permission in RegistryPermission:
        target_repository = None if permission is RegistryPermission.CATALOG_LIST else repository
        if mode is RoleAssignmentMode.RBAC:
            checks = [(operation, False) for operation in _RBAC_OPERATIONS[permission]]
        else:
            checks = [(_ABAC_DATA_OPERATIONS[permission], True)]
        if any(
            may(
                candidates,
                principals,
                operation,
                scope,
                data_action=data_action,
                repository=target_repository,
                definitions=definitions,
            )
            for operation, data_action in checks
        ):
            granted.add(permission)
    return frozenset(granted)
