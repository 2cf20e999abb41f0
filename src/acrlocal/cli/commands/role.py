"""``role assignment create|list|delete`` and ``role definition list`` (``Microsoft.Authorization``), as az's.

``--role`` is a role name, matched ignoring case as ARM's ``roleName eq`` filter does (``acrpull`` is AcrPull), or
a role definition id / GUID. ``--assignee`` is resolved as az resolves it, through Microsoft Graph when the
control plane offers it (object id, app id, display name); without Graph, a GUID that is a user-assigned
identity's client id becomes its principal id and any other GUID is taken as an object id.
``--assignee-object-id`` skips the lookup. Output is flattened as az prints it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import click

from acrlocal.cli.errors import CLIError, CLIUsageError, HttpResponseError
from acrlocal.cli.framework import AzChoice, AzGroup, option
from acrlocal.cli.resources import API, IDENTITY_TYPE, flatten, group_path
from acrlocal.cli.session import Session

GUID = re.compile(r"^[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\Z")
PRINCIPAL_TYPES = ("User", "Group", "ServicePrincipal", "ForeignGroup", "Device")
AUTH = "providers/Microsoft.Authorization"


def _flatten_definitions(definitions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Role definitions as az prints them: ``properties.type`` (BuiltInRole, CustomRole) becomes ``roleType``."""
    out = []
    for d in definitions:
        props = dict(d.get("properties") or {})
        if "type" in props:
            props["roleType"] = props.pop("type")
        out.append(flatten({**d, "properties": props}))
    return out


def role_definition_id(session: Session, role: str, scope: str) -> str:
    """The full id of role ``role`` (name, GUID or id) as seen from ``scope``."""
    if role.startswith("/"):
        return role
    sub = f"/subscriptions/{session.subscription_id}"
    if GUID.match(role):
        return f"{sub}/{AUTH}/roleDefinitions/{role}"
    found = session.arm.list(f"{scope.rstrip('/')}/{AUTH}/roleDefinitions", API["authorization"],
                             {"$filter": f"roleName eq '{role}'"})
    if not found:
        found = [d for d in session.arm.list(f"{sub}/{AUTH}/roleDefinitions", API["authorization"])
                 if str((d.get("properties") or {}).get("roleName", "")).lower() == role.lower()]
    if not found:
        raise CLIError(f"Role '{role}' doesn't exist.")
    if len(found) > 1:
        raise CLIError(f"More than one role matches the given name '{role}'. Please pick an id from "
                       f"'{[d['id'] for d in found]}'")
    return str(found[0]["id"])


def _graph(session: Session, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]] | None:
    """Graph objects, or ``None`` when this control plane has no Graph endpoint."""
    try:
        result = session.graph.get(f"v1.0/{path}", api_version="", params=params)
    except HttpResponseError as exc:
        if exc.status == 404 and not isinstance(exc.body, dict):
            return None
        raise
    if isinstance(result, dict) and "value" in result:
        return list(result["value"])
    return [result] if isinstance(result, dict) else []


def resolve_assignee(session: Session, assignee: str) -> tuple[str, str | None]:
    """(object id, principal type) of ``--assignee``."""
    if GUID.match(assignee):
        for ident in session.arm.list(f"/subscriptions/{session.subscription_id}/providers/{IDENTITY_TYPE}",
                                      API["identities"]):
            props = ident.get("properties") or {}
            if str(props.get("clientId", "")).lower() == assignee.lower() or \
                    str(props.get("principalId", "")).lower() == assignee.lower():
                return str(props["principalId"]), "ServicePrincipal"
        found = _graph(session, "servicePrincipals", {"$filter": f"appId eq '{assignee}'"})
        if found:
            return str(found[0]["id"]), "ServicePrincipal"
        return assignee, None
    found = _graph(session, "servicePrincipals", {"$filter": f"displayName eq '{assignee}'"})
    if found is None:
        found = []
    if len(found) == 1:
        return str(found[0]["id"]), "ServicePrincipal"
    if len(found) > 1:
        raise CLIError(f"Find more than one service principal with display name '{assignee}'; use its object id.")
    raise CLIError(f"Cannot find user or service principal in graph database for '{assignee}'. If the assignee is an "
                   f"appId, make sure the corresponding service principal is created with 'az ad sp create --id "
                   f"{assignee}'.")


def create_assignment(session: Session, principal_id: str, principal_type: str | None, role: str, scope: str,
                      description: str | None = None) -> Any:
    properties: dict[str, Any] = {"roleDefinitionId": role_definition_id(session, role, scope),
                                  "principalId": principal_id}
    if principal_type:
        properties["principalType"] = principal_type
    if description:
        properties["description"] = description
    path = f"{scope.rstrip('/')}/{AUTH}/roleAssignments/{uuid.uuid4()}"
    return flatten(session.arm.put(path, API["authorization"], {"properties": properties}))


def _scope(session: Session, scope: str | None, group: str | None) -> str | None:
    if scope and group:
        raise CLIUsageError(f"Resource group '{group}' is redundant because 'scope' is supplied")
    if group:
        return group_path(session.subscription_id, group).replace("/resourcegroups/", "/resourceGroups/")
    return scope


@click.group("role", cls=AzGroup)
def role() -> None:
    """Manage Azure role-based access control (Azure RBAC)."""


@role.group("assignment", cls=AzGroup)
def assignment() -> None:
    """Manage role assignments."""


@assignment.command("create")
@option("--role", required=True, help="Role name or id.")
@option("--scope", help="Scope at which the role assignment applies.")
@option("--resource-group", "-g", "resource_group", help="Use the resource group as the scope.")
@option("--assignee", help="Represent a user, group, or service principal: object id, app id or name.")
@option("--assignee-object-id", help="The assignee's object id; no Graph lookup.")
@option("--assignee-principal-type", type=AzChoice(PRINCIPAL_TYPES), help="With --assignee-object-id.")
@option("--description", help="Description of the role assignment.")
def assignment_create(role: str, scope: str | None, resource_group: str | None, assignee: str | None,
                      assignee_object_id: str | None, assignee_principal_type: str | None,
                      description: str | None) -> Any:
    """Create a new role assignment for a user, group, or service principal."""
    if bool(assignee) == bool(assignee_object_id):
        raise CLIUsageError("usage error: --assignee STRING | --assignee-object-id GUID")
    session = Session()
    target = _scope(session, scope, resource_group)
    if not target:
        raise CLIUsageError("the following arguments are required: --scope")
    if assignee_object_id:
        principal_id, principal_type = assignee_object_id, assignee_principal_type
    else:
        principal_id, principal_type = resolve_assignee(session, str(assignee))
    return create_assignment(session, principal_id, principal_type, role, target, description)


def _assignments(session: Session, assignee: str | None, role_: str | None, scope: str | None,
                 all_: bool) -> list[dict[str, Any]]:
    sub = f"/subscriptions/{session.subscription_id}"
    params = None
    principal = resolve_assignee(session, assignee)[0] if assignee else None
    if scope:  # as az: those at the scope and above it, from the scope's own list (ARM checks the scope)
        params = {"$filter": "atScope()"}
    elif principal:
        params = {"$filter": f"principalId eq '{principal}'"}
    listed_at = scope.rstrip("/") if scope else sub
    items = flatten(session.arm.list(f"{listed_at}/{AUTH}/roleAssignments", API["authorization"], params))
    if principal:
        items = [a for a in items if str(a.get("principalId", "")).lower() == principal.lower()]
    if scope:
        items = [a for a in items if str(a.get("scope", "")).lower() == scope.rstrip("/").lower()]
    elif not all_ and not assignee:
        items = [a for a in items if str(a.get("scope", "")).lower() == sub.lower()]
    definitions = {str(d["id"]).lower().rsplit("/", 1)[-1]: d for d in
                   _flatten_definitions(session.arm.list(f"{sub}/{AUTH}/roleDefinitions", API["authorization"]))}
    for a in items:
        definition = definitions.get(str(a.get("roleDefinitionId", "")).lower().rsplit("/", 1)[-1], {})
        a["roleDefinitionName"] = definition.get("roleName", "")
        a.setdefault("principalName", "")
    if role_:
        wanted = role_definition_id(session, role_, scope or sub).lower().rsplit("/", 1)[-1]
        items = [a for a in items if str(a.get("roleDefinitionId", "")).lower().rsplit("/", 1)[-1] == wanted]
    return list(items)


def _assignment_table(result: Any) -> Any:
    rows = result if isinstance(result, list) else [result]
    return [{"Principal": r.get("principalName") or r.get("principalId"), "Role": r.get("roleDefinitionName"),
             "Scope": r.get("scope")} for r in rows]


@assignment.command("list", table=_assignment_table)
@option("--assignee", help="Represent a user, group, or service principal.")
@option("--role", "role_", help="Role name or id.")
@option("--scope", help="Scope at which the role assignment applies.")
@option("--resource-group", "-g", "resource_group", help="Use the resource group as the scope.")
@option("--all", "all_", is_flag=True, help="Show all assignments under the current subscription.")
def assignment_list(assignee: str | None, role_: str | None, scope: str | None, resource_group: str | None,
                    all_: bool) -> Any:
    """List role assignments (at the subscription, or --scope, or --all)."""
    session = Session()
    return _assignments(session, assignee, role_, _scope(session, scope, resource_group), all_)


@assignment.command("delete")
@option("--ids", nargs_star=True, help="Space-separated role assignment ids.")
@option("--assignee", help="Represent a user, group, or service principal.")
@option("--role", "role_", help="Role name or id.")
@option("--scope", help="Scope at which the role assignment applies.")
@option("--resource-group", "-g", "resource_group", help="Use the resource group as the scope.")
@option("--yes", "-y", is_flag=True, help="Accepted for compatibility.")
def assignment_delete(ids: tuple[str, ...], assignee: str | None, role_: str | None, scope: str | None,
                      resource_group: str | None, yes: bool) -> Any:
    """Delete role assignments."""
    session = Session()
    ids = tuple(i for i in ids if i)
    if ids:
        if assignee or role_ or scope or resource_group:
            raise CLIUsageError("usage error: --ids is not combinable with --assignee, --role or --scope")
        targets = list(ids)
    else:
        if not (assignee or role_ or scope or resource_group):
            raise CLIError("Please provide at least one of these parameters: --ids, --assignee, --role, --scope, "
                           "--resource-group.")
        targets = [str(a["id"]) for a in _assignments(session, assignee, role_,
                                                      _scope(session, scope, resource_group), True)]
        if not targets:
            from acrlocal.cli.framework import warn

            warn("No matched assignments were found to delete")
    for rid in targets:
        session.arm.delete(rid, API["authorization"])
    return None


@role.group("definition", cls=AzGroup)
def definition() -> None:
    """Manage role definitions."""


@definition.command("list")
@option("--name", "-n", "name", help="A role's name (matched ignoring case) or id.")
@option("--scope", help="Scope at which the role definitions apply.")
@option("--custom-role-only", is_flag=True, help="Custom roles only.")
def definition_list(name: str | None, scope: str | None, custom_role_only: bool) -> Any:
    """List role definitions."""
    session = Session()
    base = scope or f"/subscriptions/{session.subscription_id}"
    params = {"$filter": f"roleName eq '{name}'"} if name and not GUID.match(name) else None
    items = _flatten_definitions(session.arm.list(f"{base.rstrip('/')}/{AUTH}/roleDefinitions", API["authorization"],
                                                 params))
    if name:
        wanted = name.lower()
        items = [d for d in items if wanted in (str(d.get("roleName", "")).lower(), str(d.get("name", "")).lower())]
    if custom_role_only:
        items = [d for d in items if d.get("roleType") == "CustomRole"]
    return items
