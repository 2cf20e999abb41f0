"""Resource groups (``Microsoft.Resources/resourceGroups``) and the generic resource lists.

Group names are 1-90 letters, digits, ``_-.()``, not ending in ``.``; they keep the spelling of their creation and
are matched ignoring case. Deleting a group deletes every resource in it (each through its provider, so a
registry stops serving) and every role assignment at or below it, once no resource refuses it (a VM that another
replica runs): a refused delete deletes nothing.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from acrlocal.arm.errors import ArmError, group_not_found
from acrlocal.arm.generic import check_tree, delete_tree, json, normalize_location, page, parse_tags
from acrlocal.arm.odata import Filter, parse_filter
from acrlocal.arm.paths import ArmPath, check_group_name
from acrlocal.arm.providers import Call
from acrlocal.arm.store import Resource, ResourceGroup

OPS = "Microsoft.Resources/subscriptions/resourceGroups"


def render(group: ResourceGroup) -> dict[str, Any]:
    body: dict[str, Any] = {"id": group.id, "name": group.name, "type": "Microsoft.Resources/resourceGroups",
                            "location": group.location, "tags": group.tags,
                            "properties": {"provisioningState": "Succeeded"}}
    if group.managed_by:
        body["managedBy"] = group.managed_by
    return body


async def list_groups(call: Call, path: ArmPath) -> web.StreamResponse:
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
    assert path.subscription is not None
    scope = path.scope
    read = f"{OPS}/read"
    if not call.caller.may(read, scope) and not call.caller.has_any_role_under(scope):
        call.caller.require(read, scope)
    groups = [g for g in await call.run(call.store.groups, path.subscription) if call.caller.may(read, g.id)]
    return page(call, [render(g) for g in groups])


async def group(call: Call, path: ArmPath) -> web.StreamResponse:
    assert path.subscription is not None and path.group is not None
    method = call.request.method
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method)
    if verb is None:
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported for resource groups.")
    call.caller.require(f"{OPS}/{verb}", path.scope)
    existing = await call.run(call.store.group, path.subscription, path.group)
    if method == "HEAD":
        return web.Response(status=204 if existing else 404)
    if method == "GET":
        if existing is None:
            raise group_not_found(path.group)
        return json(render(existing))
    if method == "DELETE":
        if existing is None:
            raise group_not_found(path.group)
        resources = await call.run(call.store.resources, path.subscription, group=path.group, top_level_only=True)
        for resource in resources:  # a refusal (a VM another replica runs) before anything goes
            await check_tree(call, resource)
        for resource in resources:
            await delete_tree(call, resource, checked=True)
        await call.run(call.store.delete_group, path.subscription, path.group)
        return web.Response(status=200)
    body = call.body
    if method == "PATCH":
        if existing is None:
            raise group_not_found(path.group)
        tags = parse_tags(body["tags"]) if "tags" in body else existing.tags
        managed_by = _managed_by(body["managedBy"]) if "managedBy" in body else existing.managed_by
        updated = ResourceGroup(existing.subscription_id, existing.name, existing.location, tags,
                                managed_by, call.system_data(existing.system_data))
        await call.run(call.store.put_group, updated)
        return json(render(updated))
    name = check_group_name(path.group)
    location = normalize_location(body.get("location"))
    if existing is not None and existing.location != location:
        raise ArmError(409, "InvalidResourceGroupLocation", f"Invalid resource group location '{location}'. The "
                       f"Resource group already exists in location '{existing.location}'.")
    managed_by = _managed_by(body.get("managedBy"))
    new = ResourceGroup(path.subscription, existing.name if existing else name, location,
                        parse_tags(body.get("tags")), managed_by,
                        call.system_data(existing.system_data if existing else None))
    created = await call.run(call.store.put_group, new)
    return json(render(new), status=201 if created else 200)


def _managed_by(value: Any) -> str | None:
    """A group's ``managedBy`` from a PUT or PATCH body: a string or null, else 400 InvalidRequestContent (raised
    before anything is written)."""
    if value is not None and not isinstance(value, str):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                       "deserialized: 'managedBy' must be a string.")
    return value


def _generic_view(resource: Any) -> dict[str, Any]:
    """A resource as ``GET .../resources`` lists it: no ``properties`` (ARM leaves them out without $expand)."""
    body: dict[str, Any] = {"id": resource.id, "name": resource.name, "type": resource.type}
    for key in ("location", "kind", "sku", "identity"):
        value = getattr(resource, key)
        if value is not None:
            body[key] = value
    body["tags"] = resource.tags
    return body


async def list_resources(call: Call, path: ArmPath) -> web.StreamResponse:
    """``GET /subscriptions/{sub}[/resourceGroups/{rg}]/resources[?$filter=resourceType eq '...']``: the top-level
    resources the caller may read."""
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
    assert path.subscription is not None
    scope = path.scope
    if not call.caller.may("Microsoft.Resources/subscriptions/resources/read", scope) and \
            not call.caller.has_any_role_under(scope):
        call.caller.require("Microsoft.Resources/subscriptions/resources/read", scope)
    flt, items = await call.run(_listed, call, path)
    name = flt.field("name")
    location = flt.field("location")
    visible = [r for r in items
               if (name is None or r.name.lower() == name.lower())
               and (location is None or (r.location or "") == location.lower())
               and call.caller.may(f"{r.type}/read", r.id)]
    return page(call, [_generic_view(r) for r in visible])


def _listed(call: Call, path: ArmPath) -> tuple[Filter, list[Resource]]:
    """The ``$filter`` and the top-level resources of the path's subscription (of its group, or of the filter's
    group and type); 404 if the path's group does not exist, then 400 for a filter it does not take (one call
    through the ``SqlThread``)."""
    assert path.subscription is not None
    if path.group is not None and call.store.group(path.subscription, path.group) is None:
        raise group_not_found(path.group)
    flt = parse_filter(call.query.get("$filter"), fields=("resourceType", "name", "resourceGroup", "location"))
    return flt, call.store.resources(path.subscription, group=path.group or flt.field("resourceGroup"),
                                     type=flt.field("resourceType"), top_level_only=True)
