"""What a subject may do in a registry's data plane *now*: the policy behind every token the token service issues.

Computed from current state at every call, never cached, so a removed role assignment, a deleted identity, a
disabled admin user or a regenerated password stops every *new* token at once:

- an Entra **principal**: its role assignments at the registry's ARM scope and above (asked of the control plane
  through :class:`~acrlocal.registry.auth_events.ControlPlaneAccess`), evaluated by
  :func:`acrlocal.rbac.registry_permissions` in the registry's ``roleAssignmentMode``; the principal must still
  exist, in the tenant of the registry's subscription;
- the **admin** user (user name = registry name, while ``adminUserEnabled``): pull, push, delete, metadata and the
  catalog;
- a repository-scoped **token**: what its scope map grants (the :class:`ScopedTokenPolicy` hook);
- **anonymous**: pull on every repository, only while ``anonymousPullEnabled`` on a Standard or Premium registry.

Docker actions map onto the RBAC permissions as ``pull`` → content/read, ``push`` → content/write, ``delete`` →
content/delete, ``metadata_read``/``metadata_write`` → metadata, and ``registry:catalog:*`` → catalog/read.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from acrlocal.errors import NotFound
from acrlocal.identity.directory import Directory, Principal
from acrlocal.rbac import InvalidScope, RegistryPermission, RoleAssignment, RoleAssignmentMode, registry_permissions
from acrlocal.rbac.roles import RoleDefinition
from acrlocal.registry.auth_events import ControlPlaneAccess, ScopedTokenPolicy, SubjectKind
from acrlocal.registry.scopes import ALL, CATALOG, REGISTRY, REPOSITORY
from acrlocal.storage.registries import RegistryRecord

PULL, PUSH, DELETE, METADATA_READ, METADATA_WRITE = "pull", "push", "delete", "metadata_read", "metadata_write"
REPOSITORY_ACTIONS = (PULL, PUSH, DELETE, METADATA_READ, METADATA_WRITE)
ANONYMOUS_SKUS = ("standard", "premium")

_ACTION_OF = {
    RegistryPermission.PULL: PULL,
    RegistryPermission.PUSH: PUSH,
    RegistryPermission.DELETE: DELETE,
    RegistryPermission.METADATA_READ: METADATA_READ,
    RegistryPermission.METADATA_WRITE: METADATA_WRITE,
}


class SubjectRefused(NotFound):
    """The subject cannot hold tokens for this registry (a deleted principal, another tenant, no registry
    resource); the message says which."""


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a token is for. ``id``: object id (principal), user name (admin), token name (token), ``None``."""

    kind: SubjectKind
    id: str | None = None
    tenant: str | None = None


ANONYMOUS = Subject("anonymous")


def registry_subscription(registry: RegistryRecord) -> str | None:
    """The subscription id in the registry's ARM resource id, or ``None`` if it has none yet."""
    resource_id = str(registry.properties.get("resourceId") or "")
    parts = resource_id.split("/")
    if len(parts) > 2 and parts[1].lower() == "subscriptions":
        return parts[2].lower()
    return None


def check_principal(directory: Directory, registry: RegistryRecord, object_id: str, tenant: str) -> Principal:
    """The principal, if it still exists in ``tenant`` and ``tenant`` owns the registry's subscription;
    :class:`SubjectRefused` otherwise."""
    principal = directory.find_principal(object_id=object_id)
    if principal is None or principal.tenant_id.lower() != tenant.lower():
        raise SubjectRefused(f"principal {object_id} does not exist in tenant {tenant}")
    subscription = registry_subscription(registry)
    if subscription is None:
        raise SubjectRefused(f"registry {registry.name} has no Azure resource to authorize against")
    try:
        owner = directory.subscription(subscription).tenant_id
    except NotFound:
        raise SubjectRefused(f"the subscription of registry {registry.name} does not exist") from None
    if owner.lower() != tenant.lower():
        raise SubjectRefused(f"registry {registry.name} belongs to tenant {owner}, not to the token's tenant {tenant}")
    return principal


def anonymous_pull_enabled(registry: RegistryRecord) -> bool:
    sku = str(registry.properties.get("sku") or "").lower()
    return bool(registry.properties.get("anonymousPullEnabled")) and sku in ANONYMOUS_SKUS


@dataclass
class CurrentPermissions:
    """The permissions of one subject in one registry, read from current state once (one query for a
    principal's role assignments) and then asked per resource."""

    directory: Directory
    access: ControlPlaneAccess
    scoped_tokens: ScopedTokenPolicy | None
    registry: RegistryRecord
    subject: Subject
    _assignments: list[RoleAssignment] | None = field(default=None, repr=False)
    _principal_ids: list[str] | None = field(default=None, repr=False)
    _definitions: dict[str, RoleDefinition] | None = field(default=None, repr=False)

    def principal_ids(self) -> list[str]:
        """The subject and the groups it belongs to (directly or nested): a group's role assignments apply to its
        members."""
        if self._principal_ids is None:
            assert self.subject.id is not None
            self._principal_ids = [self.subject.id, *self.directory.member_of(self.subject.id)]
        return self._principal_ids

    def definitions(self) -> dict[str, RoleDefinition]:
        """Built-in roles and the custom roles of the subject's tenant, read once."""
        if self._definitions is None:
            self._definitions = self.access.role_definitions(self.subject.tenant or "")
        return self._definitions

    def _role_assignments(self) -> list[RoleAssignment]:
        if self._assignments is None:
            resource_id = self.registry.properties.get("resourceId")
            if not resource_id or self.subject.id is None:
                self._assignments = []
            else:
                try:
                    self._assignments = self.access.assignments_for(self.principal_ids(), str(resource_id))
                except InvalidScope:
                    self._assignments = []
        return self._assignments

    def _rbac(self, repository: str | None) -> frozenset[RegistryPermission]:
        resource_id = self.registry.properties.get("resourceId")
        assignments = self._role_assignments()
        if not assignments or not resource_id or self.subject.id is None:
            return frozenset()
        try:
            mode = RoleAssignmentMode(self.registry.properties.get("roleAssignmentMode") or RoleAssignmentMode.RBAC)
        except ValueError:
            mode = RoleAssignmentMode.RBAC
        try:
            return registry_permissions(assignments, self.principal_ids(), str(resource_id), repository=repository,
                                        mode=mode, definitions=self.definitions())
        except InvalidScope:
            return frozenset()

    def actions(self, resource_type: str, name: str) -> frozenset[str]:
        """The Docker actions the subject may perform on ``resource_type:name`` now (``*`` alone for the
        catalog); empty for a resource type or name that means nothing here."""
        kind = self.subject.kind
        if resource_type == REGISTRY:
            if name != CATALOG:
                return frozenset()
            if kind == "admin":
                return frozenset({ALL}) if self.registry.properties.get("adminUserEnabled") else frozenset()
            if kind == "principal":
                return frozenset({ALL}) if RegistryPermission.CATALOG_LIST in self._rbac(None) else frozenset()
            if kind == "token":
                return self._scoped(resource_type, name) & {ALL}
            return frozenset()
        if resource_type != REPOSITORY:
            return frozenset()
        if kind == "admin":
            return frozenset(REPOSITORY_ACTIONS) if self.registry.properties.get("adminUserEnabled") else frozenset()
        if kind == "principal":
            return frozenset(_ACTION_OF[p] for p in self._rbac(name) if p in _ACTION_OF)
        if kind == "token":
            return self._scoped(resource_type, name) & set(REPOSITORY_ACTIONS)
        return frozenset({PULL}) if anonymous_pull_enabled(self.registry) else frozenset()

    def _scoped(self, resource_type: str, name: str) -> frozenset[str]:
        policy = self.scoped_tokens
        if policy is None or self.subject.id is None:
            return frozenset()
        return frozenset(policy.actions(self.registry, self.subject.id, resource_type, name))
