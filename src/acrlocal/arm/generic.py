"""Generic handling of resource provider paths for types registered as :class:`~.providers.ResourceType`.

``/subscriptions/{sub}/resourceGroups/{rg}/providers/{Namespace}/{type}/{name}[/{childType}/{childName}...]``: GET,
HEAD, PUT, PATCH, DELETE; the same without the last name lists (GET); one segment after an item is an action (POST).
Every call is authorized on the target resource's own id before anything is looked up, so a caller without access
learns nothing about what exists (ARM's order: 401, 403, then 404). The store is read and written through
``call.run`` (the server's ``SqlThread``), each check with what it guards in one call where no provider hook comes
between them.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from aiohttp import web

from acrlocal.arm.errors import ArmError, bad_request, group_not_found, resource_not_found
from acrlocal.arm.paths import ArmPath
from acrlocal.arm.providers import REGISTRY, Call, JsonObject, ResourceType, require_object
from acrlocal.arm.store import ArmStore, Resource
from acrlocal.storage.sql import SqlThread

log = logging.getLogger(__name__)


def json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


def page(call: Any, items: list[Any]) -> web.Response:
    """A list answer of at most ``limits.arm_page_size`` items, with a ``nextLink`` (the position in
    ``$skiptoken``) while more follow, as ARM pages its long lists; az and the SDKs follow it."""
    size = call.services.settings.limits.arm_page_size
    token = call.query.get("$skiptoken")
    try:
        start = int(base64.urlsafe_b64decode(token.encode()).decode()) if token else 0
    except (ValueError, UnicodeDecodeError):
        raise ArmError(400, "InvalidSkipToken", f"The $skiptoken '{token[:60]}' is not valid.") from None
    if start < 0:
        raise ArmError(400, "InvalidSkipToken", f"The $skiptoken '{token[:60]}' is not valid.")
    body: dict[str, Any] = {"value": items[start:start + size]}
    if start + size < len(items):
        body["nextLink"] = next_link(call, base64.urlsafe_b64encode(str(start + size).encode()).decode())
    return web.json_response(body)


def next_link(call: Any, skiptoken: str) -> str:
    """This request's URL (as the caller addressed it) with ``$skiptoken`` replaced."""
    request = call.request
    query = {k: v for k, v in request.query.items() if k != "$skiptoken"}
    query["$skiptoken"] = skiptoken
    return str(request.url.with_query(query))


def normalize_location(value: Any) -> str:
    """ARM's spelling of a location: ``"West US 2"`` → ``"westus2"``."""
    if not isinstance(value, str) or not value.strip():
        raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
    return "".join(value.split()).lower()


def unknown_type(namespace: str, type_path: str, api_version: str) -> ArmError:
    if namespace.lower() not in REGISTRY.namespaces:
        return ArmError(400, "InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid.")
    return ArmError(400, "InvalidResourceType", f"The resource type '{type_path}' could not be found in the "
                    f"namespace '{REGISTRY.namespaces[namespace.lower()]}' for api version '{api_version}'.")


def parse_tags(value: Any) -> dict[str, str]:
    tags = require_object(value, "tags")
    if len(tags) > 50:
        raise bad_request("InvalidTag", f"The resource has {len(tags)} tags; at most 50 are allowed.")
    for key, item in tags.items():
        bad_key = not key or len(key) > 512 or any(c in key for c in "<>%&\\?/")
        if bad_key or not isinstance(item, str) or len(item) > 256:
            raise bad_request("InvalidTag", f"The tag '{str(key)[:100]}' with value '{str(item)[:100]}' is invalid: "
                              "names are 1-512 characters without '<>%&\\?/', values strings of at most 256.")
    return dict(tags)


def _type_path_of(segments: tuple[str, ...]) -> str:
    """``registries/r/webhooks/w`` → ``registries/webhooks`` (the types of an item path)."""
    return "/".join(segments[0::2])


def _build_id(group_scope: str, rt: ResourceType, names: list[str]) -> str:
    types = rt.type.split("/")
    parts = [group_scope, "providers", rt.namespace, types[0], names[0]]
    for kind, name in zip(types[1:], names[1:], strict=True):
        parts += [kind, name]
    return "/".join(parts)


async def handle(call: Call, path: ArmPath) -> web.StreamResponse:
    """A call under ``/providers/{namespace}/...`` for a namespace of registered resource types."""
    segs = path.segments
    assert path.namespace is not None
    if len(segs) % 2 == 1 and path.group is None and len(segs) == 1 and call.request.method == "POST":
        return await namespace_action(call, path)
    if len(segs) % 2 == 1 and len(segs) >= 3 and call.request.method == "POST":
        return await item_action(call, path)
    if len(segs) % 2 == 1:
        return await list_collection(call, path)
    return await item(call, path)


def _group_checked(call: Call, path: ArmPath) -> str:
    """The stored resource group's scope; 404 ``ResourceGroupNotFound`` if it does not exist. Reads the store: runs
    through ``call.run``."""
    if path.subscription is None or path.group is None:
        raise ArmError(400, "InvalidRequestUri", f"The request uri '{call.request.path}' is invalid: this resource "
                       "type lives in a resource group.")
    group = call.store.group(path.subscription, path.group)
    if group is None:
        raise group_not_found(path.group)
    return group.id


def _type(call: Call, path: ArmPath, type_path: str) -> ResourceType:
    assert path.namespace is not None
    rt = REGISTRY.type(path.namespace, type_path)
    if rt is None:
        raise unknown_type(path.namespace, type_path, call.api_version)
    return rt


async def namespace_action(call: Call, path: ArmPath) -> web.StreamResponse:
    assert path.namespace is not None and path.subscription is not None
    action = REGISTRY.actions.get((path.namespace.lower(), path.segments[0].lower()))
    if action is None:
        raise unknown_type(path.namespace, path.segments[0], call.api_version)
    call.caller.require(action.operation, path.scope)
    result = await action.handler(call, path)
    return json(result) if result is not None else web.Response(status=200)


async def item(call: Call, path: ArmPath) -> web.StreamResponse:
    rt = _type(call, path, _type_path_of(path.segments))
    method = call.request.method
    verb = {"GET": "read", "HEAD": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method)
    if verb is None:
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported for '{rt.full_type}'.")
    names = list(path.segments[1::2])
    requested_id = _build_id(path.group_scope, rt, names) if path.group else path.scope
    call.caller.require(rt.operation(verb), requested_id)
    group_scope, existing, rendered = await call.run(_group_and_resource, call, path, rt, names,
                                                     render=method == "GET")
    rid = _build_id(group_scope, rt, names)
    if method in ("GET", "HEAD"):
        if existing is None:
            raise resource_not_found(rt.full_type, names[-1], path.group)
        return json(rendered) if method == "GET" else web.Response(status=204)
    if method == "DELETE":
        if existing is None:
            return web.Response(status=204)
        await delete_tree(call, existing)
        return web.Response(status=200)
    parent_id: str | None = None
    if rt.is_child:
        parent_id = rid.rsplit("/", 2)[0]
        parent = await call.run(call.store.resource, parent_id)
        if parent is None:
            raise ArmError(404, "ParentResourceNotFound", "Can not perform requested operation on nested resource. "
                           f"Parent resource '{'/'.join(names[:-1])}' not found.")
        parent_id = parent.id
        rid = f"{parent.id}/{rt.type.split('/')[-1]}/{names[-1]}"
    if method == "PATCH":
        if existing is None:
            raise resource_not_found(rt.full_type, names[-1], path.group)
        draft = patched(call.body, existing)
    else:
        rt.validate_name(call, names[-1])
        draft = _drafted(call, rt, rid, names[-1], group_scope, parent_id, existing)
    resource = await rt.prepare(call, draft, existing)
    resource = await rt.apply(call, resource, existing)
    try:
        created, rendered = await call.run(_put, call, rt, resource)
    except Exception:
        if existing is None:
            await undo_create(call, resource)
        raise
    return json(rendered, status=201 if created else 200)


async def undo_create(call: Call, resource: Resource) -> None:
    """Take back what a create's :meth:`apply` made (a hosted registry, an identity's principal, the children it
    stored) when the resource itself could not be stored, so that the client's retry of the PUT starts afresh
    rather than finding the name taken. Runs under the control plane's write lock, so nothing else made them in
    between. Best effort: what cannot be undone is logged, and the original error is the answer."""
    try:
        await _delete_tree(call, resource, call.store, call.services.sql)
    except Exception:
        log.exception("could not undo the failed create of %s", resource.id)


def _group_and_resource(call: Call, path: ArmPath, rt: ResourceType, names: list[str], *, render: bool = False
                        ) -> tuple[str, Resource | None, JsonObject | None]:
    """The group's scope (404 if the group does not exist), the resource it holds under ``names`` if any, and with
    ``render`` its ARM JSON (a type's rendering may read the store too): one call through the ``SqlThread``."""
    group_scope = _group_checked(call, path)
    resource = call.store.resource(_build_id(group_scope, rt, names))
    return group_scope, resource, rt.render(call, resource) if render and resource is not None else None


def _put(call: Call, rt: ResourceType, resource: Resource) -> tuple[bool, JsonObject]:
    """Store ``resource``: whether it was created, and the resource as stored, rendered (one call through the
    ``SqlThread``)."""
    created = call.store.put_resource(resource)
    return created, rt.render(call, call.store.resource(resource.id) or resource)


def _drafted(call: Call, rt: ResourceType, rid: str, name: str, group_scope: str, parent_id: str | None,
            existing: Resource | None) -> Resource:
    """The resource a PUT body describes (generic fields validated; the type's own checks come after)."""
    body = call.body
    location = body.get("location")
    if location is not None or rt.location_required:
        location = normalize_location(location)
    if existing is not None and existing.location and location and location != existing.location:
        raise ArmError(400, "InvalidResourceLocation",
                       f"The resource '{name}' already exists in location '{existing.location}' in resource group "
                       f"'{group_scope.split('/')[-1]}'. A resource with the same name cannot be created in "
                       f"location '{location}'. Please select a new resource name.")
    sku = body.get("sku")
    identity = body.get("identity")
    kind = body.get("kind")
    if kind is not None and not isinstance(kind, str):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                       "deserialized: 'kind' must be a string.")
    return Resource(
        id=existing.id if existing else rid, type=rt.full_type, name=existing.name if existing else name,
        subscription_id=group_scope.split("/")[2], group=group_scope.split("/")[4], location=location,
        tags=parse_tags(body.get("tags")), properties=require_object(body.get("properties"), "properties"),
        sku=require_object(sku, "sku") if sku is not None else None, kind=kind,
        identity=require_object(identity, "identity") if identity is not None else None,
        extra={}, internal=existing.internal if existing else {},
        system_data=call.system_data(existing.system_data if existing else None), parent_id=parent_id,
    )


def patched(body: JsonObject, existing: Resource) -> Resource:
    """``existing`` with a PATCH body applied: tags, sku and identity replaced, properties merged one level."""
    changes: dict[str, Any] = {}
    if "tags" in body:
        changes["tags"] = parse_tags(body["tags"])
    if "sku" in body:
        changes["sku"] = require_object(body["sku"], "sku")
    if "identity" in body:
        changes["identity"] = require_object(body["identity"], "identity")
    if "properties" in body:
        changes["properties"] = {**existing.properties, **require_object(body["properties"], "properties")}
    return existing.evolve(**changes)


async def delete_tree(call: Call | None, resource: Resource, store: ArmStore | None = None,
                      sql: SqlThread | None = None, *, checked: bool = False) -> None:
    """Delete ``resource`` and its children (deepest first), each through its type's :meth:`remove`, once every
    one of them has passed its type's :meth:`check_remove` (``checked``: the caller ran :func:`check_tree` on it
    already): a refusal (e.g. a subnet in use) deletes nothing. The store is read and written through ``sql``
    (``call.services.sql`` when there is a call), off the event loop on PostgreSQL; a failure after the checks
    stops the walk with what was deleted so far gone."""
    store, sql = _store_and_sql(call, store, sql)
    if not checked:
        await check_tree(call, resource, store, sql)
    await _delete_tree(call, resource, store, sql)


async def check_tree(call: Call | None, resource: Resource, store: ArmStore | None = None,
                     sql: SqlThread | None = None) -> None:
    """Each type's :meth:`check_remove` of ``resource`` and its children (deepest first): raises the first refusal;
    nothing is written. ``store`` and ``sql`` as for :func:`delete_tree`."""
    store, sql = _store_and_sql(call, store, sql)
    for child in await sql.run(store.resources, resource.subscription_id, parent_id=resource.id):
        await check_tree(call, child, store, sql)
    rt = REGISTRY.type_of(resource.type)
    if rt is not None:
        await rt.check_remove(call, resource)


def _store_and_sql(call: Call | None, store: ArmStore | None, sql: SqlThread | None) -> tuple[ArmStore, SqlThread]:
    store = store or (call.store if call else None)
    sql = sql or (call.services.sql if call else None)
    assert store is not None and sql is not None
    return store, sql


async def _delete_tree(call: Call | None, resource: Resource, store: ArmStore, sql: SqlThread) -> None:
    """:func:`delete_tree`'s deletions, once everything is checked."""
    for child in await sql.run(store.resources, resource.subscription_id, parent_id=resource.id):
        await _delete_tree(call, child, store, sql)
    rt = REGISTRY.type_of(resource.type)
    if rt is not None:
        await rt.remove(call, resource)
    await sql.run(store.delete_resource, resource.id)


async def list_collection(call: Call, path: ArmPath) -> web.StreamResponse:
    """GET of a type's collection: at a subscription, a resource group, or under a parent resource. Items the
    caller may not read are left out; a caller with no role anywhere in the subscription gets 403."""
    segs = path.segments
    rt = _type(call, path, _type_path_of(segs))
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported for a "
                       f"collection of '{rt.full_type}'.")
    assert path.subscription is not None
    read = rt.operation("read")
    collection_scope = path.group_scope
    if rt.is_child:
        if path.group is None:
            raise ArmError(400, "InvalidRequestUri", "Child resources are listed under their parent resource.")
        parent_rt = _type(call, path, _type_path_of(segs[:-1]))
        parent_requested = _build_id(path.group_scope, parent_rt, list(segs[1::2]))
        if not call.caller.may(read, parent_requested):
            call.caller.require(read, parent_requested)
        return page(call, await call.run(_children, call, path, parent_rt, rt))
    if not call.caller.may(read, collection_scope) and not call.caller.has_any_role_under(collection_scope):
        call.caller.require(read, collection_scope)
    return page(call, await call.run(_collection, call, path, rt, read))


def _children(call: Call, path: ArmPath, parent_rt: ResourceType, rt: ResourceType) -> list[JsonObject]:
    """The children of ``rt``'s type under the parent a collection's path names, rendered; 404 for a missing
    group or parent (one call through the ``SqlThread``)."""
    assert path.subscription is not None
    segs = path.segments
    group_scope = _group_checked(call, path)
    parent = call.store.resource(_build_id(group_scope, parent_rt, list(segs[1::2])))
    if parent is None:
        raise resource_not_found(parent_rt.full_type, segs[-2], path.group)
    return [rt.render(call, r) for r in call.store.resources(path.subscription, parent_id=parent.id,
                                                             type=rt.full_type)]


def _collection(call: Call, path: ArmPath, rt: ResourceType, read: str) -> list[JsonObject]:
    """The resources of ``rt``'s type at the path's subscription or group that the caller may ``read``, rendered;
    404 for a missing group (one call through the ``SqlThread``)."""
    assert path.subscription is not None
    if path.group is not None:
        _group_checked(call, path)
    items = call.store.resources(path.subscription, group=path.group, type=rt.full_type)
    return [rt.render(call, r) for r in items if call.caller.may(read, r.id)]


async def item_action(call: Call, path: ArmPath) -> web.StreamResponse:
    segs = path.segments
    rt = _type(call, path, _type_path_of(segs[:-1]))
    action_name = segs[-1]
    method_name = next((m for a, m in rt.actions.items() if a.lower() == action_name.lower()), None)
    if method_name is None:
        raise unknown_type(rt.namespace, f"{rt.type}/{action_name}", call.api_version)
    canonical_action = next(a for a in rt.actions if a.lower() == action_name.lower())
    names = list(segs[1:-1:2])
    if path.group is None:
        raise ArmError(400, "InvalidRequestUri", "This resource type lives in a resource group.")
    if canonical_action.lower() not in rt.self_authorized_actions:
        call.caller.require(rt.operation(f"{canonical_action}/action"), _build_id(path.group_scope, rt, names))
    _, existing, _ = await call.run(_group_and_resource, call, path, rt, names)
    if existing is None:
        raise resource_not_found(rt.full_type, names[-1], path.group)
    result = await getattr(rt, method_name)(call, existing)
    if isinstance(result, web.StreamResponse):  # e.g. a long-running operation's 202
        return result
    return json(result) if result is not None else web.Response(status=200)
