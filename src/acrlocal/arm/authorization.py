"""``Microsoft.Authorization``: role definitions (read) and role assignments (read, write, delete) at any scope.

``{scope}/providers/Microsoft.Authorization/roleAssignments[/{guid}]`` where ``{scope}`` is ``/``, a subscription,
a resource group or a resource. A PUT checks, before anything is written: the id is a GUID, the scope exists, the
role definition exists (400 ``RoleDefinitionDoesNotExist``), the principal exists in the subscription's tenant
(400 ``PrincipalNotFound``), its type matches ``principalType``, a condition parses; the same role for the same
principal at the same scope under another id is 409 ``RoleAssignmentExists`` (a unique index keeps the same answer
for a writer that checked before another one inserted). Writing needs
``Microsoft.Authorization/roleAssignments/write`` at the scope (Owner, User Access Administrator, RBAC
Administrator); Contributor does not have it.

Also :func:`ensure_admin_owner`, the bootstrap: the local administrator is Owner of the default subscription.
"""

from __future__ import annotations

import base64
import json as jsonlib
import re
import uuid
from typing import Any

from aiohttp import web

from acrlocal.arm.errors import ArmError, group_not_found, resource_not_found
from acrlocal.arm.generic import json, next_link
from acrlocal.arm.odata import parse_filter
from acrlocal.arm.paths import GUID, ArmPath
from acrlocal.arm.providers import Call, NamespaceHandler, register_handler, require_object, utc_now
from acrlocal.arm.store import ArmStore, RoleDefinitionStore, StoredAssignment, StoredRoleDefinition
from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.identity.bootstrap import AdminCredential
from acrlocal.rbac.conditions import parse_condition
from acrlocal.rbac.errors import InvalidCondition, InvalidScope
from acrlocal.rbac.roles import BUILT_IN_ROLES, OWNER, arm_role_definition, find_role, role_definition_id, role_guid
from acrlocal.rbac.scopes import parse_scope

NS = "Microsoft.Authorization"
ASSIGNMENTS_TYPE = f"{NS}/roleAssignments"
API_VERSIONS = ("2022-04-01", "2022-01-01-preview", "2020-10-01-preview", "2020-04-01-preview", "2018-09-01-preview",
                "2015-07-01")
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")


def _render_assignment(a: StoredAssignment) -> dict[str, Any]:
    return {
        "properties": {
            "roleDefinitionId": role_definition_id(a.role_definition, a.scope),
            "principalId": a.principal_id,
            "principalType": a.principal_type,
            "scope": a.scope,
            "condition": a.condition,
            "conditionVersion": a.condition_version,
            "createdOn": a.created_on,
            "updatedOn": a.updated_on,
            "createdBy": a.created_by,
            "updatedBy": a.updated_by,
            "delegatedManagedIdentityResourceId": None,
            "description": a.description,
        },
        "id": a.id,
        "type": ASSIGNMENTS_TYPE,
        "name": a.name,
    }


def _position(token: str | None) -> tuple[str, str] | None:
    """The (created_on, name) a ``$skiptoken`` of a role assignment list continues after."""
    if not token:
        return None
    try:
        created, name = jsonlib.loads(base64.urlsafe_b64decode(token.encode()))
        if isinstance(created, str) and isinstance(name, str):
            return created, name
    except (ValueError, TypeError):
        pass
    raise ArmError(400, "InvalidSkipToken", f"The $skiptoken '{token[:60]}' is not valid.")


def _covers(outer: str, inner: str) -> bool:
    try:
        return parse_scope(outer).covers(parse_scope(inner))
    except InvalidScope:
        return False


def _check_scope_exists(call: Call, path: ArmPath) -> None:
    """404 if the scope names a group or resource that does not exist (the subscription is checked earlier). Reads
    the store: runs through ``call.run``."""
    if path.scope == "/" or path.subscription is None or path.group is None:
        return
    if call.store.group(path.subscription, path.group) is None:
        raise group_not_found(path.group)
    if path.scope.count("/") > 4 and call.store.resource(path.scope) is None:
        parts = path.scope.split("/")
        raise resource_not_found("/".join(parts[6:-1:2]) if len(parts) > 7 else parts[-2], parts[-1], path.group)


def _same_grant(call: Call, wanted: StoredAssignment) -> list[StoredAssignment]:
    """The assignment of ``wanted``'s role to its principal at its scope, if any (one at most: a unique index)."""
    return call.store.assignments(scope=wanted.scope, principal_ids=[wanted.principal_id],
                                  role_definition=wanted.role_definition)


def _render_custom(d: StoredRoleDefinition, scope: str) -> dict[str, Any]:
    body = arm_role_definition(d.rbac, scope)
    body["properties"].update(createdOn=d.created_on, updatedOn=d.updated_on, createdBy=d.created_by,
                              updatedBy=d.updated_by)
    return body


def _visible_at(d: StoredRoleDefinition, scope: str) -> bool:
    """A custom role is listed where it may be assigned (at or below an assignable scope) and above those."""
    try:
        target = parse_scope(scope)
        return any(parse_scope(s).covers(target) or target.covers(parse_scope(s)) for s in d.assignable_scopes)
    except InvalidScope:
        return False


_ACTION = re.compile(r"^[A-Za-z0-9*][A-Za-z0-9.*/_-]*\Z")


def _actions(value: Any, name: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(a, str) and _ACTION.match(a) and len(a) <= 512
                                              for a in value):
        raise ArmError(400, "InvalidActionOrNotAction", f"'{name}' must be a list of operations such as "
                       "'Microsoft.ContainerRegistry/registries/read' (wildcards '*' allowed).")
    return list(value)


def _validate_custom_role(call: Call, guid: str, existing: StoredRoleDefinition | None) -> StoredRoleDefinition:
    props = require_object(call.body.get("properties"), "properties")
    name = props.get("roleName")
    if not isinstance(name, str) or not name.strip() or len(name) > 512:
        raise ArmError(400, "InvalidRoleDefinitionName", "'properties.roleName' is required (1 to 512 characters).")
    if props.get("type", "CustomRole") not in ("CustomRole", "customRole"):
        raise ArmError(400, "InvalidRoleDefinitionType", "Only custom roles (type 'CustomRole') can be created.")
    permissions = props.get("permissions")
    if not isinstance(permissions, list) or not permissions or not all(isinstance(p, dict) for p in permissions):
        raise ArmError(400, "InvalidPermissions", "'properties.permissions' must hold at least one entry.")
    entries = [{"actions": _actions(p.get("actions"), "actions"),
                "notActions": _actions(p.get("notActions"), "notActions"),
                "dataActions": _actions(p.get("dataActions"), "dataActions"),
                "notDataActions": _actions(p.get("notDataActions"), "notDataActions")} for p in permissions]
    scopes = props.get("assignableScopes")
    if not isinstance(scopes, list) or not scopes or not all(isinstance(x, str) for x in scopes):
        raise ArmError(400, "InvalidAssignableScopes", "'properties.assignableScopes' must list at least one scope.")
    clean: list[str] = []
    for text in scopes:
        try:
            scope = parse_scope(text)
        except InvalidScope as exc:
            raise ArmError(400, "InvalidAssignableScopes", str(exc)) from None
        if scope.subscription_id is None:
            raise ArmError(400, "InvalidAssignableScopes", "The root scope '/' cannot be an assignable scope of a "
                           "custom role; use subscriptions or resource groups.")
        try:
            sub = call.services.directory.subscription(scope.subscription_id)
        except NotFound:
            raise ArmError(400, "InvalidAssignableScopes", f"The assignable scope '{text[:200]}' names a "
                           "subscription that does not exist.") from None
        if sub.tenant_id != call.caller.tenant_id:
            raise ArmError(400, "InvalidAssignableScopes", f"The assignable scope '{text[:200]}' is not in this "
                           "directory.")
        if scope.resource_group is not None and call.store.group(sub.id, scope.resource_group) is None:
            raise group_not_found(scope.resource_group)
        clean.append(text.rstrip("/"))
    description = props.get("description")
    now = utc_now()
    return StoredRoleDefinition(guid, call.caller.tenant_id, name, description if isinstance(description, str) else
                                None, entries, clean, existing.created_on if existing else now, now,
                                existing.created_by if existing else call.caller.object_id, call.caller.object_id)


class Authorization(NamespaceHandler):
    namespace = NS
    resource_types = {"roleAssignments": API_VERSIONS, "roleDefinitions": API_VERSIONS}

    async def handle(self, call: Call, path: ArmPath) -> web.StreamResponse:
        segs = path.segments
        kind = segs[0].lower() if segs else ""
        if kind == "roledefinitions" and len(segs) <= 2:
            return await self.role_definitions(call, path)
        if kind == "roleassignments" and len(segs) <= 2:
            if len(segs) == 1:
                return await self.list_assignments(call, path)
            return await self.assignment(call, path, segs[1])
        raise ArmError(400, "InvalidResourceType", f"The resource type '{'/'.join(segs[0::2])}' could not be found "
                       f"in the namespace '{NS}' for api version '{call.api_version}'.")

    # -- role definitions ----------------------------------------------------------------------------

    async def role_definitions(self, call: Call, path: ArmPath) -> web.StreamResponse:
        """Built-in roles (read-only) and the tenant's custom roles: GET one or a list (``roleName eq``, ``type
        eq``), PUT and DELETE of custom roles."""
        method = call.request.method
        guid = path.segments[1].lower() if len(path.segments) == 2 else None
        if method in ("PUT", "DELETE"):
            if guid is None:
                raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported.")
            return await self.write_role_definition(call, path, guid)
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported.")
        if path.scope != "/":  # the catalogue of built-in roles is public at the tenant root
            call.caller.require(f"{NS}/roleDefinitions/read", path.scope)
        custom = await call.run(self._custom_roles, call, path)
        if guid is not None:
            role = BUILT_IN_ROLES.get(guid)
            if role is not None:
                return json(arm_role_definition(role, path.scope))
            found = next((d for d in custom if d.name == guid), None)
            if found is None:
                raise ArmError(404, "RoleDefinitionDoesNotExist",
                               f"The specified role definition with ID '{path.segments[1]}' does not exist.")
            return json(_render_custom(found, path.scope))
        flt = parse_filter(call.query.get("$filter"), fields=("roleName", "type"))
        items = [arm_role_definition(r, path.scope) for r in BUILT_IN_ROLES.values()]
        items += [_render_custom(d, path.scope) for d in custom if _visible_at(d, path.scope)]
        if (name := flt.field("roleName")) is not None:
            items = [i for i in items if i["properties"]["roleName"].casefold() == name.casefold()]
        if (kind := flt.field("type")) is not None:
            items = [i for i in items if i["properties"]["type"].lower() == kind.lower()]
        return json({"value": items})

    @staticmethod
    def _custom_roles(call: Call, path: ArmPath) -> list[StoredRoleDefinition]:
        """The tenant's custom roles, after a 404 if the scope does not exist (one call through the
        ``SqlThread``)."""
        if path.scope != "/":
            _check_scope_exists(call, path)
        return RoleDefinitionStore(call.store.engine).all(call.caller.tenant_id)

    async def write_role_definition(self, call: Call, path: ArmPath, guid: str) -> web.StreamResponse:
        """PUT or DELETE of a custom role: the checks, the write and the caller's reloaded roles in one call through
        the ``SqlThread`` (so no other call of the thread comes between a check and the write it guards)."""
        return await call.run(self._write_role_definition, call, path, guid)

    def _write_role_definition(self, call: Call, path: ArmPath, guid: str) -> web.Response:
        if guid in BUILT_IN_ROLES:
            raise ArmError(400, "RoleDefinitionIsBuiltIn", f"The role definition '{guid}' is a built-in role; "
                           "built-in roles cannot be changed or deleted.")
        if not GUID.match(guid):
            raise ArmError(400, "InvalidRoleDefinitionId", f"The role definition ID '{guid[:100]}' is not valid: it "
                           "must be a GUID.")
        store = RoleDefinitionStore(call.store.engine)
        existing = store.get(guid)
        if existing is not None and existing.tenant_id != call.caller.tenant_id:
            existing = None
            if call.request.method == "PUT":
                raise ArmError(409, "RoleDefinitionExists", f"A role definition with ID '{guid}' already exists.")
        if call.request.method == "DELETE":
            call.caller.require(f"{NS}/roleDefinitions/delete", path.scope)
            if existing is None:
                return web.Response(status=204)
            for scope in existing.assignable_scopes:
                call.caller.require(f"{NS}/roleDefinitions/delete", scope)
            if call.store.assignments(role_definition=guid):
                raise ArmError(409, "RoleDefinitionHasAssignments", f"There are existing role assignments "
                               f"referencing role '{existing.role_name}': delete them first.")
            store.delete(guid)
            call.caller.reload_assignments()
            return json(_render_custom(existing, path.scope))
        wanted = _validate_custom_role(call, guid, existing)
        call.caller.require(f"{NS}/roleDefinitions/write", path.scope)
        for scope in {*wanted.assignable_scopes, *(existing.assignable_scopes if existing else [])}:
            call.caller.require(f"{NS}/roleDefinitions/write", scope)
        clash = [d for d in store.all(call.caller.tenant_id)
                 if d.role_name.casefold() == wanted.role_name.casefold() and d.name != guid]
        if clash:
            raise ArmError(409, "RoleDefinitionWithSameNameExists", "A custom role with the same name already "
                           "exists in this directory. Use a different name.")
        store.put(wanted)
        call.caller.reload_assignments()
        stored = store.get(guid)
        assert stored is not None
        return json(_render_custom(stored, path.scope), status=201)  # ARM answers 201 to every PUT here

    # -- role assignments ----------------------------------------------------------------------------

    async def list_assignments(self, call: Call, path: ArmPath) -> web.StreamResponse:
        """Assignments at, above and below the scope; ``atScope()`` keeps those at or above it;
        ``principalId eq`` / ``assignedTo()`` keep one principal's. Paged in the database (``limits.arm_page_size``
        a page, ``nextLink`` with the last item's position in ``$skiptoken``)."""
        if call.request.method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
        call.caller.require(f"{ASSIGNMENTS_TYPE}/read", path.scope)
        size = call.services.settings.limits.arm_page_size
        items = await call.run(self._assignments_page, call, path, size)
        body: dict[str, Any] = {"value": [_render_assignment(a) for a in items[:size]]}
        if len(items) > size:
            last = items[size - 1]
            token = base64.urlsafe_b64encode(jsonlib.dumps([last.created_on, last.name]).encode()).decode()
            body["nextLink"] = next_link(call, token)
        return json(body)

    @staticmethod
    def _assignments_page(call: Call, path: ArmPath, size: int) -> list[StoredAssignment]:
        """Up to ``size + 1`` assignments of the page the query asks for, after a 404 if the scope does not exist
        and a 400 for a filter or position it does not take (one call through the ``SqlThread``)."""
        _check_scope_exists(call, path)
        flt = parse_filter(call.query.get("$filter"), fields=("principalId",), functions=("atScope", "assignedTo"))
        principal = flt.field("principalId") or flt.functions.get("assignedto")
        principals = [principal] if principal else None
        after = _position(call.query.get("$skiptoken"))
        return call.store.assignments_page(at_or_above=path.scope, include_below="atscope" not in flt.functions,
                                           principal_ids=principals, after=after, limit=size + 1)

    async def assignment(self, call: Call, path: ArmPath, name: str) -> web.StreamResponse:
        """GET, PUT or DELETE of one assignment: the checks, the write and the caller's reloaded assignments in one
        call through the ``SqlThread``."""
        method = call.request.method
        verb = {"GET": "read", "PUT": "write", "DELETE": "delete"}.get(method)
        if verb is None:
            raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported for role "
                           "assignments.")
        call.caller.require(f"{ASSIGNMENTS_TYPE}/{verb}", path.scope)
        return await call.run(self._assignment, call, path, name)

    def _assignment(self, call: Call, path: ArmPath, name: str) -> web.Response:
        method = call.request.method
        _check_scope_exists(call, path)
        if not GUID.match(name):
            raise ArmError(400, "InvalidRoleAssignmentId", f"The role assignment ID '{name[:100]}' is not valid. "
                           "The role assignment ID must be a GUID.")
        existing = call.store.assignment(name)
        here = existing if existing is not None and existing.scope.lower() == path.scope.lower() else None
        if method == "GET":
            if here is None:
                raise ArmError(404, "RoleAssignmentNotFound", f"The role assignment '{name}' is not found.")
            return json(_render_assignment(here))
        if method == "DELETE":
            if here is None:
                return web.Response(status=204)
            call.store.delete_assignment(name)
            call.caller.reload_assignments()
            return json(_render_assignment(here))
        wanted = self.validate(call, path, name.lower())
        if existing is None and not _same_grant(call, wanted):
            try:
                call.store.add_assignment(wanted)
            except AlreadyExists:  # inserted after the checks by a writer they did not wait for: the checks' answer
                existing = call.store.assignment(name)
            else:
                call.caller.reload_assignments()
                return json(_render_assignment(wanted), status=201)
        return self._existing(call, wanted, existing)

    @staticmethod
    def _existing(call: Call, wanted: StoredAssignment, existing: StoredAssignment | None) -> web.Response:
        """The answer to a PUT of ``wanted`` when an assignment of its name (``existing``) or of its principal, role
        and scope exists: 200 with the same assignment, 409 ``RoleAssignmentUpdateNotPermitted`` for another one
        under its name, 409 ``RoleAssignmentExists`` for the same grant under another name. Reads the store: runs
        through ``call.run``."""
        if existing is not None:
            same = (existing.scope.lower() == wanted.scope.lower()
                    and existing.role_definition == wanted.role_definition
                    and existing.principal_id == wanted.principal_id)
            if not same:
                raise ArmError(409, "RoleAssignmentUpdateNotPermitted", "Tenant ID, application ID, principal ID, "
                               "and scope are not allowed to be updated.")
            return json(_render_assignment(existing), status=200)
        raise ArmError(409, "RoleAssignmentExists", "The role assignment already exists.",
                       details=[{"code": "RoleAssignmentExists", "message": a.id} for a in _same_grant(call, wanted)])

    def validate(self, call: Call, path: ArmPath, name: str) -> StoredAssignment:
        """The assignment a PUT's body describes; 400 for what ARM refuses. Reads the directory: runs through
        ``call.run``."""
        props = require_object(call.body.get("properties"), "properties")
        role_ref = props.get("roleDefinitionId")
        if not isinstance(role_ref, str) or not role_ref:
            raise ArmError(400, "InvalidRoleDefinitionId", "The role definition ID '' is not valid: "
                           "'properties.roleDefinitionId' is required.")
        guid = role_guid(role_ref)
        if guid is None:
            raise ArmError(400, "InvalidRoleDefinitionId", f"The role definition ID '{role_ref[:200]}' is not valid.")
        role = find_role(guid, call.caller.definitions)
        if role is not None and role.role_type == "CustomRole" and not any(
                _covers(s, path.scope) for s in role.assignable_scopes):
            role = None  # not assignable here: ARM answers as for a role it does not know
        if role is None:
            raise ArmError(400, "RoleDefinitionDoesNotExist",
                           f"The specified role definition with ID '{guid}' does not exist.")
        principal_id = props.get("principalId")
        if not isinstance(principal_id, str) or not GUID.match(principal_id):
            raise ArmError(400, "InvalidPrincipalId", f"The principal ID '{str(principal_id)[:100]}' is not valid: "
                           "it must be a GUID.")
        tenant = call.caller.tenant_id
        if path.subscription is not None:
            tenant = call.services.directory.subscription(path.subscription).tenant_id
        principal = call.services.directory.find_principal(object_id=principal_id)
        if principal is None or principal.tenant_id != tenant:
            raise ArmError(400, "PrincipalNotFound", f"Principal {principal_id.replace('-', '')} does not exist in "
                           f"the directory {tenant}. Check that you have the correct principal ID. If you are "
                           "creating this principal and then immediately assigning a role, this error might be "
                           "related to a replication delay. In this case, set the role assignment principalType "
                           "property to a value, such as ServicePrincipal, User, or Group.  See "
                           "https://aka.ms/docs-principaltype")
        principal_type = props.get("principalType") or principal.principal_type
        if principal_type not in PRINCIPAL_TYPES:
            raise ArmError(400, "InvalidPrincipalType", f"The principal type '{str(principal_type)[:50]}' is not "
                           f"valid; expected one of {', '.join(PRINCIPAL_TYPES)}.")
        if principal_type != principal.principal_type:
            raise ArmError(400, "UnmatchedPrincipalType", f"The PrincipalId '{principal.object_id}' has type "
                           f"'{principal.principal_type}' , which is different from specified PrincipalType "
                           f"'{principal_type}'.")
        condition = props.get("condition")
        version = props.get("conditionVersion")
        if condition is not None:
            if not isinstance(condition, str):
                raise ArmError(400, "InvalidRoleAssignmentCondition", "The condition must be a string.")
            if version is not None and not isinstance(version, str):
                raise ArmError(400, "InvalidRoleAssignmentCondition", f"The condition version must be a string "
                               f"such as '2.0', not {jsonlib.dumps(version)[:100]}.")
            try:
                parse_condition(condition, version)
            except InvalidCondition as exc:
                raise ArmError(400, "InvalidRoleAssignmentCondition", str(exc)) from None
            version = version or "2.0"
        description = props.get("description")
        now = utc_now()
        return StoredAssignment(
            name=name, scope=path.scope, role_definition=role.id, principal_id=principal.object_id,
            principal_type=principal_type, description=description if isinstance(description, str) else None,
            condition=condition, condition_version=version if condition else None, created_on=now, updated_on=now,
            created_by=call.caller.object_id, updated_by=call.caller.object_id)


def ensure_admin_owner(admin: AdminCredential, store: ArmStore) -> None:
    """Idempotent: the local administrator and the user ``up`` creates hold Owner on the default subscription
    (fixed assignment ids). Synchronous SQL: called while the server is assembled, before it serves."""
    scope = f"/subscriptions/{admin.subscriptionId}"
    owners = [(admin.objectId, "ServicePrincipal", "acrlocal administrator")]
    if admin.userObjectId:
        owners.append((admin.userObjectId, "User", "acrlocal user"))
    for object_id, kind, description in owners:
        name = str(uuid.uuid5(uuid.NAMESPACE_URL, f"acrlocal:admin-owner:{object_id}:{admin.subscriptionId}"))
        have = store.assignments(scope=scope, principal_ids=[object_id], role_definition=OWNER.id)
        if have or store.assignment(name) is not None:
            continue
        now = utc_now()
        # Replicas starting together each find none and insert the same fixed name: the first one's stays.
        store.add_assignment_if_absent(StoredAssignment(name, scope, OWNER.id, object_id, kind, description, None,
                                                        None, now, now, None, None))


register_handler(Authorization())
