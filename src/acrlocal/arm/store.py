"""SQL tables of the control plane and :class:`ArmStore`, the only code that touches them.

- ``arm_resource_groups``: one row a resource group, keyed by subscription and lower-cased name.
- ``arm_resources``: every provider resource (registries, identities, VMs, child resources...) in one generic
  table; ``properties`` and the other ARM fields are JSON, ``internal`` is provider state never rendered (e.g. a
  registry's admin passwords).
- ``arm_role_assignments``: role assignments at any scope; one a principal, role and scope (a unique index), as
  Azure has.

ARM compares ids ignoring case, so every id is also stored lower-cased as its key. Each method is one
transaction; deleting a group or a resource deletes what it contains and the role assignments at or below it in
that same transaction. Lookups return ``None`` rather than raising: the HTTP layer chooses ARM's error.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from acrlocal.errors import AlreadyExists
from acrlocal.identity.directory import HELD_SHOWN, TenantDeletion
from acrlocal.rbac.evaluate import RoleAssignment
from acrlocal.rbac.roles import BUILT_IN_ROLES, OWNER, Permission, RoleDefinition
from acrlocal.rbac.scopes import Scope, parse_scope
from acrlocal.storage.sql import byte_ordered, metadata, racing_insert, unique_violation

resource_groups = sa.Table(
    "arm_resource_groups",
    metadata,
    sa.Column("subscription_id", sa.String(36), primary_key=True),
    sa.Column("name_key", sa.String(90), primary_key=True),
    sa.Column("name", sa.String(90), nullable=False),
    sa.Column("location", sa.String(64), nullable=False),
    sa.Column("tags", sa.Text, nullable=False, default="{}"),
    sa.Column("managed_by", sa.String(1024), nullable=True),
    sa.Column("system_data", sa.Text, nullable=False, default="{}"),
    sa.Column("created", sa.Float, nullable=False),
)

resources = sa.Table(
    "arm_resources",
    metadata,
    sa.Column("id_key", byte_ordered(2048), primary_key=True),
    sa.Column("id", sa.String(2048), nullable=False),
    sa.Column("subscription_id", sa.String(36), nullable=False),
    sa.Column("group_key", sa.String(90), nullable=False),
    sa.Column("type_key", sa.String(256), nullable=False),
    sa.Column("type", sa.String(256), nullable=False),
    sa.Column("name", sa.String(260), nullable=False),
    # The name lower-cased, for names unique in any case (a registry's): an index answers who holds one.
    sa.Column("name_key", sa.String(260), nullable=False, server_default=""),
    sa.Column("parent_key", sa.String(2048), nullable=True),
    sa.Column("location", sa.String(64), nullable=True),
    sa.Column("kind", sa.String(64), nullable=True),
    sa.Column("tags", sa.Text, nullable=False, default="{}"),
    sa.Column("sku", sa.Text, nullable=True),
    sa.Column("identity", sa.Text, nullable=True),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),
    sa.Column("extra", sa.Text, nullable=False, default="{}"),
    sa.Column("internal", sa.Text, nullable=False, default="{}"),
    sa.Column("system_data", sa.Text, nullable=False, default="{}"),
    sa.Column("created", sa.Float, nullable=False),
    sa.Index("ix_arm_resources_group", "subscription_id", "group_key"),
    sa.Index("ix_arm_resources_type", "type_key", "name"),
    sa.Index("ix_arm_resources_name", "type_key", "name_key"),
    sa.Index("ix_arm_resources_parent", "parent_key"),
)

#: Template deployments (``Microsoft.Resources/deployments``) at a resource group (``group_key``) or a
#: subscription (``group_key`` empty): the ARM body as ``az deployment ... show`` reads it, the template for
#: ``exportTemplate``, and the deployment operations. Secure parameter values are never stored.
deployments = sa.Table(
    "arm_deployments",
    metadata,
    sa.Column("id_key", sa.String(2048), primary_key=True),
    sa.Column("id", sa.String(2048), nullable=False),
    sa.Column("subscription_id", sa.String(36), nullable=False),
    sa.Column("group_key", sa.String(90), nullable=False),
    sa.Column("name", sa.String(64), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("template", sa.Text, nullable=False, default="{}"),
    sa.Column("operations", sa.Text, nullable=False, default="[]"),
    sa.Column("created", sa.Float, nullable=False),
    # The server process that runs it (arm/runners.py); None: a process from before runners were named.
    sa.Column("runner", sa.String(32), nullable=True),
    # A cancel asked through a replica other than the runner's: the runner reads it between waves.
    sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index("ix_arm_deployments_scope", "subscription_id", "group_key"),
)

role_assignments = sa.Table(
    "arm_role_assignments",
    metadata,
    sa.Column("name", sa.String(36), primary_key=True),
    sa.Column("scope", sa.String(2048), nullable=False),
    sa.Column("scope_key", byte_ordered(2048), nullable=False),
    sa.Column("role_definition", sa.String(36), nullable=False),
    sa.Column("principal_id", sa.String(36), nullable=False),
    sa.Column("principal_type", sa.String(32), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("condition", sa.Text, nullable=True),
    sa.Column("condition_version", sa.String(8), nullable=True),
    sa.Column("created_on", sa.String(40), nullable=False),
    sa.Column("updated_on", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(36), nullable=True),
    sa.Column("updated_by", sa.String(36), nullable=True),
    sa.Index("ix_arm_role_assignments_principal", "principal_id"),
    sa.Index("ix_arm_role_assignments_scope", "scope_key"),
    # One assignment of a role to a principal at a scope, whatever its name (ARM's 409 RoleAssignmentExists): the
    # handler checks first, and this refuses the second of two writers that both checked before either inserted.
    sa.Index("ix_arm_role_assignments_grant", "principal_id", "role_definition", "scope_key", unique=True),
)


@dataclass(frozen=True)
class ResourceGroup:
    subscription_id: str
    name: str
    location: str
    tags: dict[str, str] = field(default_factory=dict)
    managed_by: str | None = None
    system_data: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"/subscriptions/{self.subscription_id}/resourceGroups/{self.name}"


@dataclass(frozen=True)
class Resource:
    """A provider resource as stored. ``type`` is the full type (``Microsoft.ContainerRegistry/registries``);
    ``extra`` holds other top-level ARM fields a provider keeps (``zones``, ``plan``...); ``internal`` is never
    rendered."""

    id: str
    type: str
    name: str
    subscription_id: str
    group: str
    location: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    sku: dict[str, Any] | None = None
    kind: str | None = None
    identity: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    internal: dict[str, Any] = field(default_factory=dict)
    system_data: dict[str, Any] = field(default_factory=dict)
    parent_id: str | None = None

    def evolve(self, **changes: Any) -> Resource:
        return replace(self, **changes)


@dataclass(frozen=True)
class StoredDeployment:
    """A template deployment: ``body`` is its ARM JSON (``properties.provisioningState``...), ``operations`` its
    deployment operations as ARM lists them, ``runner`` the server process that runs it (see
    :mod:`acrlocal.arm.runners`; ``None`` for rows from before processes were named)."""

    id: str
    name: str
    subscription_id: str
    group: str | None
    body: dict[str, Any]
    template: Any = None
    operations: list[dict[str, Any]] = field(default_factory=list)
    runner: str | None = None

    def evolve(self, **changes: Any) -> StoredDeployment:
        return replace(self, **changes)


@dataclass(frozen=True)
class StoredAssignment:
    """A role assignment with the bookkeeping ARM returns (``createdOn``...); :attr:`rbac` is what RBAC needs."""

    name: str
    scope: str
    role_definition: str
    principal_id: str
    principal_type: str
    description: str | None = None
    condition: str | None = None
    condition_version: str | None = None
    created_on: str = ""
    updated_on: str = ""
    created_by: str | None = None
    updated_by: str | None = None

    @property
    def id(self) -> str:
        prefix = "" if self.scope == "/" else self.scope
        return f"{prefix}/providers/Microsoft.Authorization/roleAssignments/{self.name}"

    @property
    def rbac(self) -> RoleAssignment:
        return RoleAssignment(self.id, self.scope, self.role_definition, self.principal_id, self.principal_type,
                              self.condition, self.condition_version)


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _load(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _group(row: Any) -> ResourceGroup:
    return ResourceGroup(row.subscription_id, row.name, row.location, _load(row.tags) or {}, row.managed_by,
                         _load(row.system_data) or {})


def _resource(row: Any) -> Resource:
    return Resource(
        id=row.id, type=row.type, name=row.name, subscription_id=row.subscription_id,
        group=row.id.split("/")[4], location=row.location, tags=_load(row.tags) or {},
        properties=_load(row.properties) or {}, sku=_load(row.sku), kind=row.kind, identity=_load(row.identity),
        extra=_load(row.extra) or {}, internal=_load(row.internal) or {}, system_data=_load(row.system_data) or {},
        parent_id="/".join(row.id.split("/")[:-2]) if row.parent_key else None,
    )


def _run_of(deployment_id: str, runner: str | None) -> sa.ColumnElement[bool]:
    """The deployment's row while it still names ``runner`` (``None``: a row from before runners were named)."""
    c = deployments.c
    return sa.and_(c.id_key == deployment_id.lower(), c.runner.is_(None) if runner is None else c.runner == runner)


def _deployment(row: Any) -> StoredDeployment:
    return StoredDeployment(row.id, row.name, row.subscription_id, row.group_key or None, _load(row.body) or {},
                            _load(row.template), _load(row.operations) or [], row.runner)


def _assignment(row: Any) -> StoredAssignment:
    return StoredAssignment(row.name, row.scope, row.role_definition, row.principal_id, row.principal_type,
                            row.description, row.condition, row.condition_version, row.created_on, row.updated_on,
                            row.created_by, row.updated_by)


def _at_or_below(column: sa.Column[str], key: str) -> sa.ColumnElement[bool]:
    """``column`` is ``key`` or a path below it (``key/...``): a range on the column (``key/`` up to ``key0``, ``0``
    being the character after ``/``), which an index answers, unlike ``LIKE 'key/%'``. The range assumes byte-wise
    ordering (SQLite's BINARY; a PostgreSQL database needs the ``C`` collation)."""
    base = key.rstrip("/")
    if not base:
        return sa.true()
    return sa.or_(column == key, sa.and_(column >= base + "/", column < base + "0"))


def _ancestor_scope_keys(scope: str | Scope) -> list[str]:
    """Lower-cased keys of ``scope`` and every scope above it, up to ``/``."""
    keys: list[str] = []
    current: Scope | None = parse_scope(scope)
    while current is not None:
        keys.append(str(current).lower())
        current = current.parent
    return keys


def _of_tenant(deleting: TenantDeletion) -> sa.ColumnElement[bool]:
    """Role assignments at or below a tenant's subscriptions, or of one of its principals."""
    c = role_assignments.c
    return sa.or_(c.principal_id.in_(deleting.principal_ids),
                  *(_at_or_below(c.scope_key, f"/subscriptions/{s}") for s in deleting.subscription_ids))


def type_of_id(resource_id: str) -> str | None:
    """``namespace/type[/child type...]`` of a resource id, lower case; ``None`` if it names no provider's."""
    _, sep, tail = resource_id.lower().rpartition("/providers/")
    parts = tail.split("/")
    if not sep or len(parts) < 3:
        return None
    return "/".join([parts[0], *parts[1::2]])


class ArmStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._watchers: list[Callable[[str | None], None]] = []

    def watch(self, callback: Callable[[str | None], None]) -> None:
        """Call ``callback(type)`` after each committed write or deletion of a resource of that type (lower case,
        ``namespace/type[/child type]``), and ``callback(None)`` after a resource group's deletion. Callbacks run
        in the writer's thread and must only schedule work."""
        self._watchers.append(callback)

    def _changed(self, type_key: str | None) -> None:
        for callback in self._watchers:
            callback(type_key)

    # -- resource groups ---------------------------------------------------------------------------

    def group(self, subscription_id: str, name: str) -> ResourceGroup | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(resource_groups).where(
                resource_groups.c.subscription_id == subscription_id.lower(),
                resource_groups.c.name_key == name.lower())).first()
        return _group(row) if row else None

    def groups(self, subscription_id: str) -> list[ResourceGroup]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(resource_groups).where(
                resource_groups.c.subscription_id == subscription_id.lower()).order_by(resource_groups.c.created))
        return [_group(r) for r in rows]

    def put_group(self, group: ResourceGroup) -> bool:
        """Insert or update ``group``; True if it was created. The name keeps the spelling of its creation."""
        values = dict(location=group.location, tags=_json(group.tags), managed_by=group.managed_by,
                      system_data=_json(group.system_data))
        with self.engine.begin() as conn:
            # Inserted unless it exists (also when another replica has just made it), else updated.
            created = conn.execute(racing_insert(conn, resource_groups).values(
                subscription_id=group.subscription_id.lower(), name_key=group.name.lower(), name=group.name,
                created=time.time(), **values).on_conflict_do_nothing(index_elements=["subscription_id", "name_key"])
                .returning(resource_groups.c.name_key)).first()
            if created is not None:
                return True
            conn.execute(sa.update(resource_groups).where(
                resource_groups.c.subscription_id == group.subscription_id.lower(),
                resource_groups.c.name_key == group.name.lower()).values(**values))
            return False

    def delete_group(self, subscription_id: str, name: str) -> None:
        """Delete the group, every resource in it and every role assignment at or below it."""
        sub, key = subscription_id.lower(), name.lower()
        scope_key = f"/subscriptions/{sub}/resourcegroups/{key}"
        with self.engine.begin() as conn:
            conn.execute(sa.delete(resources).where(resources.c.subscription_id == sub,
                                                    resources.c.group_key == key))
            conn.execute(sa.delete(deployments).where(deployments.c.subscription_id == sub,
                                                      deployments.c.group_key == key))
            conn.execute(sa.delete(role_assignments).where(_at_or_below(role_assignments.c.scope_key, scope_key)))
            conn.execute(sa.delete(resource_groups).where(resource_groups.c.subscription_id == sub,
                                                          resource_groups.c.name_key == key))
        self._changed(None)

    # -- resources ---------------------------------------------------------------------------------

    def resource(self, resource_id: str) -> Resource | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(resources).where(resources.c.id_key == resource_id.lower())).first()
        return _resource(row) if row else None

    def resources(self, subscription_id: str, *, group: str | None = None, type: str | None = None,
                  parent_id: str | None = None, top_level_only: bool = False) -> list[Resource]:
        """Resources of a subscription, optionally of one group, of one type, or children of one parent."""
        c = resources.c
        if parent_id is not None:  # a parent's id names its subscription: read the parent's index, not the
            q = sa.select(resources).where(c.parent_key == parent_id.lower())  # subscription's resources
            if not parent_id.lower().startswith(f"/subscriptions/{subscription_id.lower()}/"):
                return []
        else:
            q = sa.select(resources).where(c.subscription_id == subscription_id.lower())
        if group is not None:
            q = q.where(c.group_key == group.lower())
        if type is not None:
            q = q.where(c.type_key == type.lower())
        if parent_id is None and top_level_only:
            q = q.where(c.parent_key.is_(None))
        with self.engine.connect() as conn:
            return [_resource(r) for r in conn.execute(q.order_by(c.created))]

    def resources_named(self, type: str, name: str) -> list[Resource]:
        """Resources of ``type`` called ``name`` in any subscription (for globally unique names)."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(resources).where(resources.c.type_key == type.lower(),
                                                           resources.c.name_key == name.lower()))
            return [_resource(r) for r in rows]

    def put_resource(self, res: Resource) -> bool:
        """Insert or replace ``res``; True if it was created."""
        values = dict(
            id=res.id, subscription_id=res.subscription_id.lower(), group_key=res.group.lower(),
            type_key=res.type.lower(), type=res.type, name=res.name, name_key=res.name.lower(),
            parent_key=res.parent_id.lower() if res.parent_id else None, location=res.location, kind=res.kind,
            tags=_json(res.tags), sku=_json(res.sku), identity=_json(res.identity), properties=_json(res.properties),
            extra=_json(res.extra), internal=_json(res.internal), system_data=_json(res.system_data))
        with self.engine.begin() as conn:
            # Inserted unless it exists (also when another replica has just made it), else replaced.
            created = conn.execute(racing_insert(conn, resources).values(
                id_key=res.id.lower(), created=time.time(), **values).on_conflict_do_nothing(
                index_elements=["id_key"]).returning(resources.c.id_key)).first() is not None
            if not created:
                values.pop("id")  # the id keeps the spelling of its creation
                conn.execute(sa.update(resources).where(resources.c.id_key == res.id.lower()).values(**values))
        self._changed(res.type.lower())
        return created

    def delete_resource(self, resource_id: str) -> None:
        """Delete the resource, its child resources and every role assignment at or below it."""
        key = resource_id.lower()
        with self.engine.begin() as conn:
            conn.execute(sa.delete(resources).where(_at_or_below(resources.c.id_key, key)))
            conn.execute(sa.delete(role_assignments).where(_at_or_below(role_assignments.c.scope_key, key)))
        self._changed(type_of_id(key))

    # -- deployments -------------------------------------------------------------------------------

    def deployment(self, deployment_id: str) -> StoredDeployment | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(deployments).where(deployments.c.id_key == deployment_id.lower())).first()
        return _deployment(row) if row else None

    def deployments(self, subscription_id: str, group: str | None) -> list[StoredDeployment]:
        """The deployments at a resource group, or at the subscription itself when ``group`` is None."""
        c = deployments.c
        q = sa.select(deployments).where(c.subscription_id == subscription_id.lower(),
                                         c.group_key == (group or "").lower())
        with self.engine.connect() as conn:
            return [_deployment(r) for r in conn.execute(q.order_by(c.created))]

    def put_deployment(self, d: StoredDeployment, *, new_run: bool = False) -> bool:
        """Insert or replace ``d``; True if it was created. ``new_run``: ``d`` starts a run of its own (a PUT), so a
        cancel asked of an earlier run under its name is forgotten; the runner's saves keep it."""
        values: dict[str, Any] = dict(body=_json(d.body), template=_json(d.template), operations=_json(d.operations),
                                      runner=d.runner)
        if new_run:
            values["cancel_requested"] = False
        with self.engine.begin() as conn:
            key = d.id.lower()
            if conn.execute(sa.select(deployments.c.id).where(deployments.c.id_key == key)).first():
                conn.execute(sa.update(deployments).where(deployments.c.id_key == key).values(**values))
                return False
            conn.execute(sa.insert(deployments).values(
                id_key=key, id=d.id, subscription_id=d.subscription_id.lower(), group_key=(d.group or "").lower(),
                name=d.name, created=time.time(), **values))
            return True

    def request_cancel(self, deployment_id: str, runner: str | None) -> bool:
        """Ask the runner of a deployment to cancel it (:meth:`cancel_requested`), if the row still names
        ``runner``; whether it did."""
        with self.engine.begin() as conn:
            return conn.execute(sa.update(deployments).where(_run_of(deployment_id, runner)).values(
                cancel_requested=True)).rowcount > 0

    def cancel_requested(self, deployment_id: str) -> bool:
        """Whether a cancel of the deployment's current run was asked through another process."""
        with self.engine.connect() as conn:
            return bool(conn.execute(sa.select(deployments.c.cancel_requested).where(
                deployments.c.id_key == deployment_id.lower())).scalar())

    def end_orphaned_deployment(self, d: StoredDeployment) -> bool:
        """Replace the deployment by ``d`` only if its row still names ``d.runner`` (a process found gone): a
        deployment put again since by a live process is left alone. Whether it was replaced."""
        with self.engine.begin() as conn:
            return conn.execute(sa.update(deployments).where(_run_of(d.id, d.runner)).values(
                body=_json(d.body), operations=_json(d.operations))).rowcount > 0

    def delete_deployment(self, deployment_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(deployments).where(
                deployments.c.id_key == deployment_id.lower())).rowcount > 0

    # -- role assignments --------------------------------------------------------------------------

    def assignment(self, name: str) -> StoredAssignment | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(role_assignments).where(role_assignments.c.name == name.lower())).first()
        return _assignment(row) if row else None

    def assignments(self, *, scope: str | None = None, at_or_below: str | None = None,
                    at_or_above: str | None = None, principal_ids: Iterable[str] | None = None,
                    role_definition: str | None = None) -> list[StoredAssignment]:
        """Assignments filtered by exact scope, by scope at or below one, by scopes applying at one (at or
        above it), by principals, or by role definition GUID."""
        c = role_assignments.c
        q = sa.select(role_assignments)
        if scope is not None:
            q = q.where(c.scope_key == scope.lower())
        if at_or_below is not None:
            q = q.where(_at_or_below(c.scope_key, at_or_below.lower()) if at_or_below != "/" else sa.true())
        if at_or_above is not None:
            q = q.where(c.scope_key.in_(_ancestor_scope_keys(at_or_above)))
        if principal_ids is not None:
            q = q.where(c.principal_id.in_([p.lower() for p in principal_ids]))
        if role_definition is not None:
            q = q.where(c.role_definition == role_definition.lower())
        with self.engine.connect() as conn:
            return [_assignment(r) for r in conn.execute(q.order_by(c.created_on, c.name))]

    def assignments_page(self, *, at_or_above: str, include_below: bool, principal_ids: Iterable[str] | None,
                         after: tuple[str, str] | None, limit: int) -> list[StoredAssignment]:
        """One page of the assignments that apply at ``at_or_above`` (at it or above it) and, with
        ``include_below``, those below it, ordered by (created_on, name) and starting after ``after``: one indexed
        query, whatever the number of assignments elsewhere."""
        c = role_assignments.c
        scope: sa.ColumnElement[bool] = c.scope_key.in_(_ancestor_scope_keys(at_or_above))
        if include_below:
            scope = sa.or_(scope, _at_or_below(c.scope_key, at_or_above.lower()))
        q = sa.select(role_assignments).where(scope)
        if principal_ids is not None:
            q = q.where(c.principal_id.in_([p.lower() for p in principal_ids]))
        if after is not None:
            q = q.where(sa.or_(c.created_on > after[0], sa.and_(c.created_on == after[0], c.name > after[1])))
        with self.engine.connect() as conn:
            return [_assignment(r) for r in conn.execute(q.order_by(c.created_on, c.name).limit(limit))]

    def add_assignment(self, a: StoredAssignment) -> None:
        """Insert ``a``; :class:`~acrlocal.errors.AlreadyExists` if an assignment of its name, or of its principal,
        role and scope, exists (inserted by another writer after the caller checked)."""
        try:
            with self.engine.begin() as conn:
                self._insert_assignment(conn, a)
        except sa.exc.IntegrityError as exc:
            if not unique_violation(exc):
                raise
            raise AlreadyExists(f"a role assignment named {a.name!r}, or of role {a.role_definition!r} to principal "
                                f"{a.principal_id!r} at scope {a.scope!r}, already exists") from None

    def add_assignment_if_absent(self, a: StoredAssignment) -> bool:
        """Insert ``a`` unless an assignment of its name exists (another process or replica inserted it first, as
        each does with the fixed names of the start-up's assignments); whether this call inserted it."""
        try:
            self.add_assignment(a)
        except AlreadyExists:
            if self.assignment(a.name) is None:
                raise
            return False
        return True

    def add_assignment_in(self, conn: Connection, a: StoredAssignment) -> None:
        """Insert ``a`` in the caller's transaction ``conn`` (a write that spans the directory and the control
        plane, e.g. a new tenant with its administrator's Owner assignment); a clash raises the database's
        ``IntegrityError``, which rolls the whole transaction back."""
        self._insert_assignment(conn, a)

    def _insert_assignment(self, conn: Connection, a: StoredAssignment) -> None:
        conn.execute(sa.insert(role_assignments).values(
            name=a.name.lower(), scope=a.scope, scope_key=a.scope.lower(), role_definition=a.role_definition.lower(),
            principal_id=a.principal_id.lower(), principal_type=a.principal_type, description=a.description,
            condition=a.condition, condition_version=a.condition_version, created_on=a.created_on,
            updated_on=a.updated_on, created_by=a.created_by, updated_by=a.updated_by))

    def delete_assignment(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(role_assignments).where(
                role_assignments.c.name == name.lower())).rowcount > 0

    def delete_assignments_of(self, principal_id: str) -> int:
        """Remove every assignment of a principal (when the principal is deleted); returns how many."""
        with self.engine.begin() as conn:
            return int(conn.execute(sa.delete(role_assignments).where(
                role_assignments.c.principal_id == principal_id.lower())).rowcount)

    # -- a tenant being deleted (acrlocal's deleteTenant) -------------------------------------------

    def tenant_holdings_in(self, conn: Connection, deleting: TenantDeletion) -> list[str]:
        """What the control plane still holds of a tenant being deleted, in the deletion's transaction ``conn``,
        beyond what createTenant made (its subscriptions, its administrators' Owner assignments on them): resource
        groups, deployments at a subscription, other role assignments at or below its subscriptions or of its
        principals, and its custom roles. Descriptions for a message, at most ``HELD_SHOWN`` (and one more) of each
        kind; empty when nothing is held."""
        shown = HELD_SHOWN + 1
        subs = list(deleting.subscription_ids)
        g = resource_groups.c
        held = [f"resource group '/subscriptions/{r.subscription_id}/resourceGroups/{r.name}'" for r in conn.execute(
            sa.select(g.subscription_id, g.name).where(g.subscription_id.in_(subs))
            .order_by(g.created, g.subscription_id, g.name_key).limit(shown))]
        d = deployments.c
        held += [f"deployment '{r.id}'" for r in conn.execute(
            sa.select(d.id).where(d.subscription_id.in_(subs)).order_by(d.created, d.id_key).limit(shown))]
        a = role_assignments.c
        made = sa.and_(a.principal_id.in_(deleting.administrator_ids), a.role_definition == OWNER.id,
                       a.scope_key.in_([f"/subscriptions/{s}" for s in subs]))
        held += [f"role assignment '{r.name}' at '{r.scope}'" for r in conn.execute(
            sa.select(a.name, a.scope).where(_of_tenant(deleting), sa.not_(made))
            .order_by(a.created_on, a.name).limit(shown))]
        r_ = role_definitions.c
        held += [f"custom role '{r.role_name}'" for r in conn.execute(
            sa.select(r_.role_name).where(r_.tenant_id == deleting.tenant.id)
            .order_by(r_.created_on, r_.name).limit(shown))]
        return held

    def delete_tenant_rows_in(self, conn: Connection, deleting: TenantDeletion) -> None:
        """Delete, in the deletion's transaction ``conn``, every row the control plane keeps of a tenant being
        deleted: the role assignments at or below its subscriptions or of its principals, its custom roles, and
        (none once :meth:`tenant_holdings_in` found nothing) its subscriptions' groups, resources and
        deployments. An error propagates and rolls the whole deletion back."""
        subs = list(deleting.subscription_ids)
        conn.execute(sa.delete(role_assignments).where(_of_tenant(deleting)))
        conn.execute(sa.delete(role_definitions).where(role_definitions.c.tenant_id == deleting.tenant.id))
        for table in (deployments, resources, resource_groups):
            conn.execute(sa.delete(table).where(table.c.subscription_id.in_(subs)))


#: Custom role definitions (``Microsoft.Authorization/roleDefinitions`` with ``type: CustomRole``); built-in roles
#: are code (:mod:`acrlocal.rbac.roles`). A custom role belongs to the tenant it was created in; its name is unique
#: there.
role_definitions = sa.Table(
    "arm_role_definitions",
    metadata,
    sa.Column("name", sa.String(36), primary_key=True),
    sa.Column("tenant_id", sa.String(36), nullable=False),
    sa.Column("role_name", sa.String(512), nullable=False),
    sa.Column("role_name_key", sa.String(512), nullable=False),
    sa.Column("description", sa.Text, nullable=True),
    sa.Column("permissions", sa.Text, nullable=False),  # JSON: [{actions, notActions, dataActions, notDataActions}]
    sa.Column("assignable_scopes", sa.Text, nullable=False),  # JSON list
    sa.Column("created_on", sa.String(40), nullable=False),
    sa.Column("updated_on", sa.String(40), nullable=False),
    sa.Column("created_by", sa.String(36), nullable=True),
    sa.Column("updated_by", sa.String(36), nullable=True),
    sa.UniqueConstraint("tenant_id", "role_name_key"),
)


@dataclass(frozen=True)
class StoredRoleDefinition:
    """A custom role as stored; :attr:`rbac` is the :class:`~acrlocal.rbac.roles.RoleDefinition` RBAC evaluates."""

    name: str
    tenant_id: str
    role_name: str
    description: str | None
    permissions: list[dict[str, list[str]]]
    assignable_scopes: list[str]
    created_on: str
    updated_on: str
    created_by: str | None
    updated_by: str | None

    @property
    def rbac(self) -> RoleDefinition:
        entries = tuple(Permission(tuple(p.get("actions", [])), tuple(p.get("notActions", [])),
                                   tuple(p.get("dataActions", [])), tuple(p.get("notDataActions", [])))
                        for p in self.permissions)
        return RoleDefinition(self.name, self.role_name, self.description or "", entries,
                              tuple(self.assignable_scopes), "CustomRole")


def _role_definition(row: Any) -> StoredRoleDefinition:
    return StoredRoleDefinition(row.name, row.tenant_id, row.role_name, row.description, json.loads(row.permissions),
                                json.loads(row.assignable_scopes), row.created_on, row.updated_on, row.created_by,
                                row.updated_by)


class RoleDefinitionStore:
    """Custom role definitions; one transaction a method."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self, tenant_id: str) -> list[StoredRoleDefinition]:
        c = role_definitions.c
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(role_definitions).where(c.tenant_id == tenant_id.lower())
                                .order_by(c.created_on, c.name)).all()
        return [_role_definition(r) for r in rows]

    def get(self, name: str) -> StoredRoleDefinition | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(role_definitions).where(role_definitions.c.name == name.lower())).first()
        return _role_definition(row) if row else None

    def definitions(self, tenant_id: str) -> dict[str, RoleDefinition]:
        """Built-in roles and the tenant's custom roles, by lower-case GUID: what RBAC evaluates with."""
        return {**BUILT_IN_ROLES, **{d.name: d.rbac for d in self.all(tenant_id)}}

    def put(self, d: StoredRoleDefinition) -> bool:
        """Insert or replace; True if created. The caller has checked that the name is free in the tenant."""
        values = dict(tenant_id=d.tenant_id.lower(), role_name=d.role_name, role_name_key=d.role_name.casefold(),
                      description=d.description, permissions=json.dumps(d.permissions),
                      assignable_scopes=json.dumps(d.assignable_scopes), updated_on=d.updated_on,
                      updated_by=d.updated_by)
        c = role_definitions.c
        with self.engine.begin() as conn:
            if conn.execute(sa.select(c.name).where(c.name == d.name.lower())).first():
                conn.execute(sa.update(role_definitions).where(c.name == d.name.lower()).values(**values))
                return False
            conn.execute(sa.insert(role_definitions).values(name=d.name.lower(), created_on=d.created_on,
                                                            created_by=d.created_by, **values))
            return True

    def delete(self, name: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(role_definitions).where(
                role_definitions.c.name == name.lower())).rowcount > 0
