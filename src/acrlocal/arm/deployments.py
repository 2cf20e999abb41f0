"""ARM template deployments (``Microsoft.Resources/deployments``) at resource group and subscription scope.

Paths (``{scope}`` is ``/subscriptions/{sub}/resourceGroups/{rg}`` or ``/subscriptions/{sub}``), under
``{scope}/providers/Microsoft.Resources/``:

- ``deployments`` GET: the deployments at that scope;
- ``deployments/{name}`` PUT (create or update: **201** ``provisioningState: Accepted`` with
  ``Azure-AsyncOperation``, the deployment then runs in the background), GET, HEAD, DELETE (the record only,
  not what it deployed);
- ``deployments/{name}/validate`` POST (ARM's preflight: 200 with ``validatedResources``, or 400
  ``InvalidTemplate`` / ``InvalidTemplateDeployment``), ``/whatIf`` POST (202 + ``Location``; the result at
  ``operationResults/{id}``), ``/cancel`` POST, ``/exportTemplate`` POST;
- ``deployments/{name}/operations[/{id}]`` GET: one operation per resource, as ARM lists them;
- ``deployments/{name}/operationStatuses/{id}`` GET: ``{"status": "Running" | "Succeeded" | "Failed" |
  "Canceled", "error"}``, what az's pollers read.

A deployment runs as its caller: every resource is created by the same code that serves that resource's own
PUT (:class:`~.providers.InternalRequest` through :func:`~.routes.route`), one write at a time under the
control plane's lock, so RBAC, validation and side effects are exactly those of a direct PUT. Resources are
deployed in dependency order (:meth:`~.templates.Plan.waves`); the first failure stops the deployment, which
ends ``Failed`` with ARM's ``DeploymentFailed`` error naming the failing resource's error. Nested inline
deployments (Bicep modules) run as deployments of their own at their target scope. ``Complete`` mode then
deletes the group's resources the template does not name.

The template engine (:mod:`.templates`) is pure; :class:`DeploymentEnvironment` is what it reads from outside
(the subscription, the group, other resources through their providers' ``render``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json as jsonlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from aiohttp import web

from acrlocal.arm import groups as groups_module
from acrlocal.arm.errors import ArmError, authorization_failed, group_not_found
from acrlocal.arm.generic import check_tree, delete_tree, json, normalize_location, parse_tags
from acrlocal.arm.paths import ArmPath, parse_path
from acrlocal.arm.providers import REGISTRY, Call, InternalRequest, JsonObject, NamespaceHandler, register_handler
from acrlocal.arm.store import StoredDeployment
from acrlocal.arm.templates import Deferred, Plan, PlannedResource, Target, TemplateError, prepare, template_hash
from acrlocal.arm.templates.jsonc import loads
from acrlocal.errors import AcrLocalError, NotFound
from acrlocal.inbound import read_body

log = logging.getLogger(__name__)

TYPE = "Microsoft.Resources/deployments"
OPS = "Microsoft.Resources/deployments"
API_VERSIONS = ("2025-04-01", "2024-11-01", "2024-07-01", "2024-03-01", "2023-07-01", "2022-09-01", "2021-04-01",
                "2020-10-01", "2019-10-01")
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.()")
TERMINAL = ("Succeeded", "Failed", "Canceled")
#: How long a finished what-if result can be fetched.
WHAT_IF_TTL_S = 600.0
MAX_NESTING = 10


def _now() -> datetime:
    return datetime.now(UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"


def _duration(seconds: float) -> str:
    return f"PT{seconds:.7f}S"


def _check_name(name: str) -> None:
    """1-64 of :data:`NAME_CHARS`, not only dots: ``.`` and ``..`` are URL dot-segments, which a client resolves
    away, so that no URL of the deployment (its ``Azure-AsyncOperation`` either) would reach it."""
    if not 1 <= len(name) <= 64 or not set(name) <= NAME_CHARS or not name.strip("."):
        raise ArmError(400, "InvalidDeploymentName", f"The deployment name '{name[:100]}' is invalid. It can "
                       "contain only 1-64 letters, digits, '-', '_', '.', '(' and ')', and not only dots.")


def _template_error(err: TemplateError) -> ArmError:
    return ArmError(400, err.code, err.arm_message())


def _failure(code: str, message: str, target: str | None = None,
             details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if target:
        error["target"] = target
    if details:
        error["details"] = details
    return error


# -- the template engine's view of the server --------------------------------------------------------------


@dataclass
class NeedsAction(AcrLocalError, LookupError):
    """Raised while evaluating a body when a ``list*()`` call must first run its (asynchronous) action."""

    resource_id: str
    action: str
    api_version: str | None
    body: Any


class DeploymentEnvironment:
    """What templates read from the server, as the deploying caller (RBAC applies to every read). Its reads are
    SQL: a template is evaluated (``prepare``, ``Plan.body``, ``Plan.outputs``) in a call through the server's
    ``SqlThread`` (``call.run``), never on the event loop."""

    def __init__(self, call: Call, target: Target, name: str, mode: str, started: datetime,
                 template: Any, location: str | None, what_if: bool = False) -> None:
        self.call = call
        self.target = target
        self.name = name
        self.mode = mode
        self.started = started
        self.template = template
        self.location = location
        self.what_if = what_if
        self.plan: Plan | None = None
        #: Resource groups an outer template creates, by lower-case id: what a what-if reads for them.
        self.planned_groups: dict[str, dict[str, Any]] = {}
        self.actions: dict[tuple[str, str], Any] = {}

    def subscription(self) -> dict[str, Any]:
        sub = self.call.services.directory.subscription(self.target.subscription_id)
        return {"id": f"/subscriptions/{sub.id}", "subscriptionId": sub.id, "tenantId": sub.tenant_id,
                "displayName": sub.display_name}

    def resource_group(self) -> dict[str, Any] | None:
        if self.target.resource_group is None:
            return None
        group = self.call.store.group(self.target.subscription_id, self.target.resource_group)
        planned = self.planned_groups.get(self.target.scope_id.lower())
        if group is None and self.what_if and planned is not None:
            return planned
        if group is None:
            raise TemplateError(f"The resource group '{self.target.resource_group}' could not be found.")
        return groups_module.render(group)

    def tenant(self) -> dict[str, Any]:
        tenant = self.call.services.directory.tenant(self.call.caller.tenant_id)
        return {"tenantId": tenant.id, "countryCode": "US", "displayName": tenant.display_name}

    def deployment(self) -> dict[str, Any]:
        body: dict[str, Any] = {"name": self.name, "properties": {
            "template": {"contentVersion": (self.template or {}).get("contentVersion", "1.0.0.0")},
            "templateHash": template_hash(self.template), "mode": self.mode, "provisioningState": "Accepted"}}
        if self.location:
            body["location"] = self.location
        return body

    def environment(self) -> dict[str, Any]:
        from acrlocal.arm.subscriptions import metadata_endpoints
        cloud = metadata_endpoints(self.call.services, "2022-09-01")
        auth = cloud["authentication"]
        return {"name": cloud["name"], "gallery": cloud["gallery"], "graph": cloud["graph"],
                "portal": cloud["portal"], "graphAudience": cloud["graphAudience"],
                "activeDirectoryDataLake": cloud["activeDirectoryDataLake"], "batch": cloud["batch"],
                "media": cloud["media"], "sqlManagement": cloud["sqlManagement"],
                "vmImageAliasDoc": cloud["vmImageAliasDoc"], "resourceManager": cloud["resourceManager"],
                "authentication": {"loginEndpoint": auth["loginEndpoint"], "audiences": auth["audiences"],
                                   "tenant": auth["tenant"], "identityProvider": auth["identityProvider"]},
                "suffixes": dict(cloud["suffixes"])}

    def reference(self, resource_id: str, api_version: str | None, full: bool) -> Any:
        body = read_resource(self.call, resource_id)
        if body is None:
            planned = self.plan.find(resource_id) if self.plan else None
            if self.what_if and planned is not None:
                raise Deferred(resource_id)
            raise TemplateError(f"The Resource '{resource_id}' was not found.", code="ResourceNotFound")
        return body if full else body.get("properties", {})

    def invoke(self, resource_id: str, action: str, api_version: str | None, body: Any) -> Any:
        key = (resource_id.lower(), action.lower())
        if key in self.actions:
            return self.actions[key]
        if self.what_if:
            raise Deferred(resource_id)
        raise NeedsAction(resource_id, action, api_version, body)

    def now(self) -> datetime:
        return self.started


def read_resource(call: Call, resource_id: str) -> dict[str, Any] | None:
    """The ARM JSON of a resource, a group or a deployment, as its GET renders it; RBAC read as the caller. Reads
    the store: in the ``SqlThread``."""
    try:
        path = parse_path(resource_id)
    except ArmError as err:
        raise TemplateError(f"'{resource_id}' is not a resource id: {err.message}") from None
    if path.kind == "group" and path.subscription and path.group:
        call.caller.require(f"{groups_module.OPS}/read", path.scope)
        group = call.store.group(path.subscription, path.group)
        return groups_module.render(group) if group else None
    if path.kind != "provider" or path.namespace is None or len(path.segments) < 2 or len(path.segments) % 2:
        raise TemplateError(f"'{resource_id}' is not the id of a resource that a template can reference.")
    full_type = f"{path.namespace}/{'/'.join(path.segments[0::2])}"
    if full_type.lower() == TYPE.lower():
        call.caller.require(f"{OPS}/read", resource_id)
        stored = call.store.deployment(resource_id)
        return render(stored) if stored else None
    rt = REGISTRY.type_of(full_type)
    if rt is None:
        raise TemplateError(f"The resource type '{full_type}' is not served here.")
    call.caller.require(rt.operation("read"), resource_id)
    resource = call.store.resource(resource_id)
    return rt.render(call, resource) if resource else None


async def internal(call: Call, method: str, path: str, api_version: str, body: dict[str, Any] | None = None, *,
                   lock: asyncio.Lock | None = None, correlation: str = "") -> tuple[int, Any]:
    """``method path`` sent by the control plane to itself as ``call``'s caller: the status and the JSON answer
    (an ARM error body for a refusal). Writes take ``lock`` (the control plane's write lock)."""
    from acrlocal.arm.routes import route
    headers = {"Host": call.request.headers.get("Host", ""), "x-ms-correlation-request-id": correlation}
    inner = Call(call.services, call.store, call.caller, InternalRequest(method, path, {"api-version": api_version},
                                                                         headers), api_version, body or {},
                 write_lock=lock or call.write_lock)
    async with lock if lock is not None else contextlib.nullcontext():
        try:
            response = await route(inner)
        except ArmError as err:
            return err.status, err.body()
    raw = getattr(response, "body", None)
    payload = jsonlib.loads(raw) if isinstance(raw, bytes | bytearray) and raw else None
    return response.status, payload


# -- rendering -----------------------------------------------------------------------------------------------


def render(d: StoredDeployment) -> JsonObject:
    body = {k: v for k, v in d.body.items() if not k.startswith("_")}
    return {"id": d.id, "name": d.name, "type": TYPE, **body}


def _render_parameters(plan: Plan) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in plan.parameters.items():
        declared = plan.parameter_types.get(name, "String")
        out[name] = {"type": declared} if declared.startswith("Secure") else {"type": declared, "value": value}
    return out


def _render_outputs(outputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {k: ({"type": v["type"]} if v["type"].startswith("Secure") else v) for k, v in outputs.items()}


def _providers(plan: Plan) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, set[str]]] = {}
    for r in plan.deployable:
        namespace, _, rest = r.type.partition("/")
        location = r.source.get("location")
        seen.setdefault(namespace, {}).setdefault(rest, set())
        if isinstance(location, str) and not location.startswith("["):
            seen[namespace][rest].add(normalize_location(location))
    return [{"namespace": ns, "resourceTypes": [{"resourceType": t, "locations": sorted(locs)}
                                                for t, locs in types.items()]} for ns, types in seen.items()]


def _dependencies(plan: Plan) -> list[dict[str, Any]]:
    out = []
    for r in plan.deployable:
        deps = [plan.find(k) for k in dict.fromkeys(r.depends_on)]
        listed = [{"id": d.id, "resourceType": d.type, "resourceName": d.name} for d in deps if d and d.deploys]
        if listed:
            out.append({"dependsOn": listed, "id": r.id, "resourceType": r.type, "resourceName": r.name})
    return out


# -- requests ------------------------------------------------------------------------------------------------


@dataclass
class Request:
    """A deployment request's body, read as ARM reads it."""

    mode: str
    template: Any
    parameters: dict[str, Any]
    location: str | None
    tags: dict[str, str]
    what_if_format: str = "FullResourcePayloads"
    extras: dict[str, Any] = field(default_factory=dict)


async def read_request(call: Call, at_subscription: bool) -> Request:
    raw = await _raw_body(call)
    try:
        body = loads(raw) if raw.strip() else {}
    except TemplateError as err:
        raise ArmError(400, "InvalidRequestContent", err.message) from None
    if not isinstance(body, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                       "deserialized: the body must be a JSON object.")
    return parse_request(body, at_subscription)


async def _raw_body(call: Call) -> bytes:
    """The body's bytes: the control plane has already parsed strict JSON into ``call.body``, but az sends
    templates in a form only ARM's lenient reader takes (``template:{...}``), which it answered with an
    ``InvalidRequestContent`` before this code ran; so a deployment path reads the raw body itself."""
    if isinstance(call.request, web.Request):
        return await read_body(call.request)  # the bytes the control plane read (read once, then cached)
    return jsonlib.dumps(call.body).encode()


def parse_request(body: dict[str, Any], at_subscription: bool) -> Request:
    props = body.get("properties")
    if not isinstance(props, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                       "deserialized: 'properties' is required and must be an object.")
    mode = props.get("mode")
    if not isinstance(mode, str) or mode.lower() not in ("incremental", "complete"):
        raise ArmError(400, "InvalidDeploymentMode" if mode is not None else "InvalidRequestContent",
                       f"The deployment mode '{mode}' is not valid; expected 'Incremental' or 'Complete'."
                       if mode is not None else "The request content was invalid and could not be deserialized: "
                       "'properties.mode' is required.")
    if at_subscription and mode.lower() == "complete":
        raise ArmError(400, "InvalidDeploymentMode", "The deployment mode 'Complete' is not supported for "
                       "deployments at subscription scope.")
    if props.get("templateLink") is not None and props.get("template") is None:
        raise ArmError(400, "InvalidTemplateLink", "acrlocal cannot download templates (templateLink); send the "
                       "template inline (az deployment ... --template-file).")
    if props.get("parametersLink") is not None:
        raise ArmError(400, "InvalidParametersLink", "acrlocal cannot download parameter files (parametersLink); "
                       "send the parameters inline.")
    template = props.get("template")
    if template is None:
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                       "deserialized: 'properties.template' is required.")
    parameters = props.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                       "deserialized: 'properties.parameters' must be an object.")
    location = body.get("location")
    if at_subscription or location is not None:
        location = normalize_location(location)
    settings = props.get("whatIfSettings") or {}
    fmt = settings.get("resultFormat", "FullResourcePayloads") if isinstance(settings, dict) else \
        "FullResourcePayloads"
    return Request(mode="Complete" if mode.lower() == "complete" else "Incremental", template=template,
                   parameters=parameters, location=location, tags=parse_tags(body.get("tags")),
                   what_if_format=str(fmt))


# -- the handler ---------------------------------------------------------------------------------------------


@dataclass
class WhatIfResult:
    subscription_id: str
    principal: str
    body: dict[str, Any] | None
    created: float = field(default_factory=time.monotonic)


class Deployments(NamespaceHandler):
    namespace = "Microsoft.Resources"
    resource_types: ClassVar[dict[str, tuple[str, ...]]] = {
        "deployments": API_VERSIONS, "deployments/operations": API_VERSIONS,
        "deploymentOperations": API_VERSIONS, "operationResults": API_VERSIONS}
    unlocked_actions = frozenset({"cancel"})  # (see cancel)

    def __init__(self) -> None:
        self.running: dict[str, Running] = {}
        self.what_ifs: dict[str, WhatIfResult] = {}

    async def handle(self, call: Call, path: ArmPath) -> web.StreamResponse:
        segs = [s for s in path.segments]
        if path.subscription is None:
            raise ArmError(400, "InvalidRequestUri", "Deployments at tenant or management group scope are not "
                           "served by acrlocal; deploy at a subscription or a resource group.")
        if path.scope.count("/") not in (2, 4) or (path.scope.count("/") == 4 and path.group is None):
            raise ArmError(400, "InvalidRequestUri", f"The request uri '{call.request.path}' is invalid: "
                           "deployments live at a subscription or a resource group.")
        lowered = [s.lower() for s in segs]
        if lowered and lowered[0] == "operationresults" and len(segs) == 2:
            return self.what_if_result(call, path, segs[1])
        if not lowered or lowered[0] != "deployments":
            raise ArmError(400, "InvalidResourceType", f"The resource type '{'/'.join(segs[:1])}' could not be "
                           f"found in the namespace 'Microsoft.Resources' for api version '{call.api_version}'.")
        method = call.request.method
        if len(segs) == 1:
            return await self.list(call, path)
        name = segs[1]
        _check_name(name)
        target = Target(path.subscription, path.group)
        did = f"{target.scope_id}/providers/{TYPE}/{name}"
        if len(segs) == 2:
            if method == "PUT":
                return await self.create(call, path, target, did, name)
            if method in ("GET", "HEAD"):
                call.caller.require(f"{OPS}/read", did)
                stored = await call.run(self._found, call, target, did)
                if method == "HEAD":
                    return web.Response(status=204 if stored else 404)
                if stored is None:
                    raise _not_found(name)
                return json(render(stored))
            if method == "DELETE":
                call.caller.require(f"{OPS}/delete", did)
                return self._accepted(call, target, None) if await call.run(self.delete, call, target, did, name) \
                    else web.Response(status=204)
            raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{method}' is not supported.")
        action = lowered[2]
        if action == "validate" and method == "POST":
            return await self.validate(call, path, target, did, name)
        if action == "whatif" and method == "POST":
            return await self.what_if(call, path, target, did, name)
        if action == "cancel" and method == "POST":
            return await self.cancel(call, target, did, name)
        if action == "exporttemplate" and method == "POST":
            call.caller.require(f"{OPS}/exportTemplate/action", did)
            stored = await call.run(self._stored, call, target, did, name)
            return json({"template": stored.template})
        if action == "operations" and method == "GET":
            call.caller.require(f"{OPS}/operations/read", did)
            stored = await call.run(self._stored, call, target, did, name)
            if len(segs) == 3:
                return json({"value": stored.operations})
            op = next((o for o in stored.operations if o["operationId"].lower() == lowered[3]), None)
            if op is None:
                raise ArmError(404, "DeploymentOperationNotFound", f"Deployment operation '{segs[3]}' could not "
                               f"be found for deployment '{name}'.")
            return json(op)
        if action == "operationstatuses" and method == "GET" and len(segs) == 4:
            call.caller.require(f"{OPS}/read", did)
            stored = await call.run(self._stored, call, target, did, name)
            if stored.body.get("_asyncOperation") != segs[3]:
                raise ArmError(404, "OperationNotFound", f"The operation '{segs[3]}' was not found.")
            state = stored.body["properties"]["provisioningState"]
            status: dict[str, Any] = {"status": state if state in TERMINAL else "Running"}
            if state == "Failed":
                status["error"] = stored.body["properties"].get("error")
            return json(status)
        raise ArmError(400, "InvalidRequestUri", f"The request uri '{call.request.path}' is not a deployment "
                       "operation acrlocal serves.")

    # -- helpers (those that read the store run in the SqlThread, through call.run) ----------------------------

    def _group_checked(self, call: Call, target: Target) -> None:
        if target.resource_group is not None and call.store.group(target.subscription_id,
                                                                  target.resource_group) is None:
            raise group_not_found(target.resource_group)

    def _current(self, call: Call, stored: StoredDeployment | None,
                 alive: Callable[[str | None], bool] | None = None) -> StoredDeployment | None:
        """``stored`` as it stands: a deployment not ended whose process is gone (it stopped, or was killed, while
        the deployment ran: see :mod:`acrlocal.arm.runners`) ends ``Failed`` now, whichever replica reads it
        first; one that a live process runs, this one or another replica's, is left as it is. ``alive``: how a
        runner is asked (``call.services.runners.alive`` if ``None``; a list asks once per runner)."""
        if stored is None or stored.body.get("properties", {}).get("provisioningState") in TERMINAL:
            return stored
        if stored.id.lower() in self.running or (alive or call.services.runners.alive)(stored.runner):
            return stored
        props = {**stored.body.get("properties", {}), "provisioningState": "Failed", "error": _failure(
            "DeploymentFailed", "The server stopped while the deployment was running.")}
        ended = stored.evolve(body={**stored.body, "properties": props})
        if call.store.end_orphaned_deployment(ended):
            return ended
        return call.store.deployment(stored.id)  # put again meanwhile, by a live process

    def _read(self, call: Call, did: str) -> StoredDeployment | None:
        return self._current(call, call.store.deployment(did))

    def _found(self, call: Call, target: Target, did: str) -> StoredDeployment | None:
        self._group_checked(call, target)
        return self._read(call, did)

    def _stored(self, call: Call, target: Target, did: str, name: str) -> StoredDeployment:
        stored = self._found(call, target, did)
        if stored is None:
            raise _not_found(name)
        return stored

    async def list(self, call: Call, path: ArmPath) -> web.StreamResponse:
        if call.request.method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
        assert path.subscription is not None
        target = Target(path.subscription, path.group)
        call.caller.require(f"{OPS}/read", target.scope_id)
        items = [render(d) for d in await call.run(self._listed, call, target)]
        wanted = _state_filter(call.query.get("$filter"))
        if wanted is not None:
            items = [d for d in items if d["properties"].get("provisioningState", "").lower() == wanted.lower()]
        top = call.query.get("$top")
        if top is not None and top.isascii() and top.isdigit():
            items = items[-int(top):] if int(top) else []
        return json({"value": items})

    def _listed(self, call: Call, target: Target) -> Sequence[StoredDeployment]:
        self._group_checked(call, target)
        alive = functools.cache(call.services.runners.alive)  # one probe per runner, not per deployment
        found = (self._current(call, d, alive)
                 for d in call.store.deployments(target.subscription_id, target.resource_group))
        return [d for d in found if d is not None]  # (None: deleted meanwhile)

    def delete(self, call: Call, target: Target, did: str, name: str) -> bool:
        """Delete the deployment unless it is still running (409); whether there was one. The check and the
        delete run in one call of the ``SqlThread``."""
        self._group_checked(call, target)
        stored = self._read(call, did)
        if stored is None:
            return False
        if stored.body["properties"].get("provisioningState") not in TERMINAL:
            raise ArmError(409, "DeploymentActive", f"Unable to delete deployment '{name}': it is still active "
                           f"(current provisioning state: {stored.body['properties']['provisioningState']}). "
                           "Cancel it first.")
        call.store.delete_deployment(did)
        return True

    async def cancel(self, call: Call, target: Target, did: str, name: str) -> web.StreamResponse:
        """Cancel a deployment in progress: it stops before its next wave of resources (``Canceled``). The process
        that runs it is told at once; another replica asks it through the deployment's row, which it reads between
        waves. Served outside the write lock (``unlocked_actions``): it changes no resource, and the runner may be
        holding the lock for a resource of this very deployment."""
        call.caller.require(f"{OPS}/cancel/action", did)
        stored = await call.run(self._stored, call, target, did, name)
        state = stored.body["properties"].get("provisioningState")
        running = self.running.get(did.lower())
        if state not in TERMINAL:
            if running is not None:
                running.cancel_requested = True
                return web.Response(status=204)
            if await call.run(call.store.request_cancel, did, stored.runner):
                return web.Response(status=204)
            state = (await call.run(self._stored, call, target, did, name)).body["properties"].get(
                "provisioningState")  # ended, or put again, meanwhile
        raise ArmError(409, "DeploymentCannotBeCanceled", f"The deployment '{name}' cannot be canceled: it is not "
                       f"running (current provisioning state: {state}).")

    # -- checking a request ------------------------------------------------------------------------------

    async def _plan(self, call: Call, path: ArmPath, target: Target, name: str, *,
                    what_if: bool = False) -> tuple[Request, Plan, DeploymentEnvironment]:
        request = await read_request(call, target.resource_group is None)
        env = DeploymentEnvironment(call, target, name, request.mode, _now(), request.template, request.location,
                                    what_if=what_if)
        plan = await call.run(self._prepared, call, target, request, env)
        return request, plan, env

    def _prepared(self, call: Call, target: Target, request: Request, env: DeploymentEnvironment) -> Plan:
        """The template's plan at ``target`` (404 for a missing group first); evaluating it reads the store, so
        this runs in the ``SqlThread``."""
        self._group_checked(call, target)
        try:
            plan = prepare(request.template, request.parameters, target, env)
        except TemplateError as err:
            raise _template_error(err) from None
        env.plan = plan
        return plan

    def _preflight(self, call: Call, plan: Plan, name: str, target: Target, depth: int = 0) -> None:
        """What ARM checks before it deploys: every type is served, every body evaluates (values that only
        deployment makes known aside), and the caller may write every resource. Evaluating the bodies reads the
        store: this runs in the ``SqlThread``."""
        problems: list[dict[str, Any]] = []
        for r in plan.deployable:
            lowered = r.type.lower()
            if lowered == "microsoft.resources/deployments":
                continue
            if lowered == "microsoft.resources/resourcegroups":
                operation = f"{groups_module.OPS}/write"
            elif lowered.startswith("microsoft.authorization/roleassignments"):
                operation = "Microsoft.Authorization/roleAssignments/write"
            else:
                rt = REGISTRY.type_of(r.type)
                if rt is None:
                    namespace = r.type.split("/")[0]
                    known = namespace.lower() in REGISTRY.namespaces
                    problems.append(_failure(
                        "InvalidResourceType" if known else "NoRegisteredProviderFound",
                        f"The resource type '{r.type.split('/', 1)[1]}' could not be found in the namespace "
                        f"'{namespace}'." if known else f"No registered resource provider found for location "
                        f"'{r.source.get('location', '')}' and API version '{r.api_version}' for type "
                        f"'{r.type}'. acrlocal serves {', '.join(sorted(REGISTRY.namespaces.values()))}.",
                        r.id))
                    continue
                operation = rt.operation("write")
            if not call.caller.may(operation, r.id):
                problems.append(_failure("AuthorizationFailed", f"The client '{call.caller.client}' with object "
                                         f"id '{call.caller.object_id}' does not have authorization to perform "
                                         f"action '{operation}' over scope '{r.id}' or the scope is invalid.",
                                         r.id))
                continue
            try:
                plan.body(r, keep_unknown=True)
            except TemplateError as err:
                raise _template_error(err) from None
        if problems:
            raise ArmError(400, "InvalidTemplateDeployment", f"The template deployment '{name}' is not valid "
                           "according to the validation procedure. The tracking id is "
                           f"'{uuid.uuid4()}'. See inner errors for details.", details=problems)

    def _body(self, call: Call, did: str, name: str, request: Request, plan: Plan, state: str,
              started: datetime) -> dict[str, Any]:
        props: dict[str, Any] = {
            "templateHash": template_hash(request.template), "parameters": _render_parameters(plan),
            "mode": request.mode, "provisioningState": state, "timestamp": _stamp(started),
            "duration": _duration(0), "correlationId": call.request.headers.get(
                "x-ms-correlation-request-id") or str(uuid.uuid4()),
            "providers": _providers(plan), "dependencies": _dependencies(plan)}
        body: dict[str, Any] = {"properties": props}
        if request.location:
            body = {"location": request.location, **body}
        if request.tags:
            body["tags"] = request.tags
        return body

    # -- validate, what-if, create ----------------------------------------------------------------------

    async def validate(self, call: Call, path: ArmPath, target: Target, did: str, name: str) -> web.StreamResponse:
        call.caller.require(f"{OPS}/validate/action", did)
        request, plan, env = await self._plan(call, path, target, name, what_if=True)
        await call.run(self._preflight, call, plan, name, target)
        body = self._body(call, did, name, request, plan, "Succeeded", env.started)
        body["properties"]["validatedResources"] = [{"id": r.id} for r in plan.deployable]
        return json({"id": did, "name": name, "type": TYPE, **body})

    async def what_if(self, call: Call, path: ArmPath, target: Target, did: str, name: str) -> web.StreamResponse:
        call.caller.require(f"{OPS}/whatIf/action", did)
        request, plan, _ = await self._plan(call, path, target, name, what_if=True)
        await call.run(self._preflight, call, plan, name, target)
        from acrlocal.arm.what_if import changes
        result = {"status": "Succeeded", "properties": {"changes": await changes(call, plan, request.mode,
                                                                                  request.what_if_format)}}
        return self._accepted(call, target, result)

    def _accepted(self, call: Call, target: Target, result: dict[str, Any] | None) -> web.StreamResponse:
        """202 with a ``Location`` whose GET answers ``result`` (204 when None): what-if and delete."""
        now = time.monotonic()
        for key in [k for k, v in self.what_ifs.items() if now - v.created > WHAT_IF_TTL_S]:
            del self.what_ifs[key]
        op = uuid.uuid4().hex
        self.what_ifs[op] = WhatIfResult(target.subscription_id, call.caller.object_id, result)
        location = f"{_base(call)}/subscriptions/{target.subscription_id}/providers/Microsoft.Resources/" \
                   f"operationResults/{op}?api-version={call.api_version}"
        return web.Response(status=202, headers={"Location": location, "Retry-After": "1"})

    def what_if_result(self, call: Call, path: ArmPath, op: str) -> web.StreamResponse:
        found = self.what_ifs.get(op)
        if found is None or found.subscription_id != path.subscription or found.principal != \
                call.caller.object_id:
            raise ArmError(404, "OperationNotFound", f"The operation '{op}' was not found.")
        return json(found.body) if found.body is not None else web.Response(status=204)

    async def create(self, call: Call, path: ArmPath, target: Target, did: str, name: str) -> web.StreamResponse:
        call.caller.require(f"{OPS}/write", did)
        existing = await call.run(self._read, call, did)
        if existing is not None and existing.body["properties"].get("provisioningState") not in TERMINAL:
            raise ArmError(409, "DeploymentActive", f"Unable to edit or replace deployment '{name}': previous "
                           "deployment is still active (current provisioning state: "
                           f"{existing.body['properties'].get('provisioningState')}). Please see "
                           "https://aka.ms/arm-deploy for usage details.")
        request, plan, env = await self._plan(call, path, target, name, what_if=True)
        await call.run(self._preflight, call, plan, name, target)
        env.what_if = False
        op = uuid.uuid4().hex
        body = self._body(call, did, name, request, plan, "Accepted", env.started)
        body["_asyncOperation"] = op
        stored = StoredDeployment(did, name, target.subscription_id, target.resource_group, body, request.template,
                                  runner=call.services.runners.me)
        created = await call.run(functools.partial(call.store.put_deployment, stored, new_run=True))
        running = Running(self, call, stored, request, plan, env)
        self.running[did.lower()] = running
        running.task = asyncio.get_running_loop().create_task(running.run(), name=f"deployment {did}")
        status_url = f"{_base(call)}{did}/operationStatuses/{op}?api-version={call.api_version}"
        return web.json_response(render(stored), status=201 if created else 200,
                                 headers={"Azure-AsyncOperation": status_url, "Retry-After": "1"})

    async def run_nested(self, parent: Running, resource: PlannedResource, body: dict[str, Any]) -> JsonObject:
        """Deploy an inline nested deployment (a Bicep module) at its own target and wait for it."""
        if parent.depth >= MAX_NESTING:
            raise ArmError(400, "InvalidTemplate", f"Nested deployments go deeper than {MAX_NESTING} levels.")
        _check_name(resource.name)
        target = resource.nested_target or parent.env.target
        call = parent.call
        did = f"{target.scope_id}/providers/{TYPE}/{resource.name}"
        call.caller.require(f"{OPS}/write", did)
        request = parse_request(body, target.resource_group is None)
        env = DeploymentEnvironment(call, target, resource.name, request.mode, _now(), request.template,
                                    request.location)
        plan = await call.run(self._prepared, call, target, request, env)
        await call.run(self._preflight, call, plan, resource.name, target)
        stored = StoredDeployment(did, resource.name, target.subscription_id, target.resource_group,
                                  self._body(call, did, resource.name, request, plan, "Accepted", env.started),
                                  request.template, runner=call.services.runners.me)
        await call.run(functools.partial(call.store.put_deployment, stored, new_run=True))
        nested = Running(self, call, stored, request, plan, env, depth=parent.depth + 1, parent=parent)
        self.running[did.lower()] = nested
        await nested.run()
        final = await call.run(call.store.deployment, did)
        assert final is not None
        if final.body["properties"]["provisioningState"] != "Succeeded":
            error = final.body["properties"].get("error") or {}
            raise ArmError(400, error.get("code", "DeploymentFailed"), error.get("message", "The nested deployment "
                           "failed."), details=error.get("details"))
        return render(final)


def _base(call: Call) -> str:
    host = call.request.headers.get("Host") or f"localhost:{call.services.settings.port}"
    return f"https://{host}"


def _not_found(name: str) -> ArmError:
    return ArmError(404, "DeploymentNotFound", f"Deployment '{name}' could not be found.")


def _state_filter(value: str | None) -> str | None:
    if not value:
        return None
    parts = value.split(" eq ", 1)
    if len(parts) == 2 and parts[0].strip().lower() == "provisioningstate":
        return parts[1].strip().strip("'")
    raise ArmError(400, "InvalidFilterInQueryString", f"The $filter '{value[:200]}' is not supported; use "
                   "\"provisioningState eq '<state>'\".")


# -- running a deployment ------------------------------------------------------------------------------------


class Running:
    """One deployment in progress: deploys the plan's resources wave by wave and records each operation. It runs as
    a task of its own after the answer; its SQL (saving its state, evaluating the template) goes through the
    server's ``SqlThread``, and its writes take the control plane's write lock on the event loop, as requests do."""

    def __init__(self, handler: Deployments, call: Call, stored: StoredDeployment, request: Request, plan: Plan,
                 env: DeploymentEnvironment, *, depth: int = 0, parent: Running | None = None) -> None:
        self.handler = handler
        self.call = call
        self.stored = stored
        self.request = request
        self.plan = plan
        self.env = env
        self.depth = depth
        self.parent = parent
        self.cancel_requested = False
        self.task: asyncio.Task[None] | None = None
        self.operations: list[dict[str, Any]] = []
        self.lock = call.write_lock or asyncio.Lock()

    async def canceled(self) -> bool:
        """Whether a cancel was asked of this run or of a deployment it is nested in: through this process (at
        once), or through another replica (the flag on the deployment's row)."""
        run: Running | None = self
        while run is not None:
            if run.cancel_requested or await run.call.run(run.call.store.cancel_requested, run.stored.id):
                return True
            run = run.parent
        return False

    async def _save(self, state: str, **extra: Any) -> None:
        body = dict(self.stored.body)
        props = dict(body["properties"])
        props["provisioningState"] = state
        props["duration"] = _duration((_now() - self.env.started).total_seconds())
        props.update(extra)
        body["properties"] = props
        self.stored = self.stored.evolve(body=body, operations=list(self.operations))
        await self.call.run(self.call.store.put_deployment, self.stored)

    async def run(self) -> None:
        try:
            await self._save("Running")
            failures: list[dict[str, Any]] = []
            for wave in self.plan.waves():
                if await self.canceled():
                    await self._save("Canceled")
                    return
                for resource in wave:
                    error = await self._deploy(resource)
                    if error is not None:
                        failures.append(error)
                if failures:
                    break
            if failures:
                await self._save("Failed", error=_failure(
                    "DeploymentFailed", "At least one resource deployment operation failed. Please list "
                    "deployment operations for details. Please see https://aka.ms/arm-deployment-operations for "
                    "usage details.", self.stored.id, failures))
                return
            outputs = await self._outputs()
            if outputs is None:
                return
            if self.request.mode == "Complete" and not await self._delete_unnamed():
                return
            resources = [{"id": r.id} for r in self.plan.deployable]
            await self._save("Succeeded", outputs=_render_outputs(outputs), outputResources=resources)
        except Exception as exc:  # the deployment ends Failed whatever happens, and the server goes on
            log.exception("deployment %s failed", self.stored.id)
            await self._save("Failed", error=_failure("DeploymentFailed", f"The deployment failed: {exc}.",
                                                      self.stored.id))
        finally:
            self.handler.running.pop(self.stored.id.lower(), None)

    async def _evaluate(self, what: Any) -> Any:
        """Call ``what()`` (a body or the outputs) in the ``SqlThread`` (it reads the store), first running each
        ``list*()`` action it asks for."""
        for _ in range(50):
            try:
                return await self.call.run(what)
            except NeedsAction as need:
                self.env.actions[(need.resource_id.lower(), need.action.lower())] = await self._action(need)
        raise TemplateError("The template calls more than 50 list*() functions in one place.")

    async def _action(self, need: NeedsAction) -> Any:
        query = {"api-version": need.api_version or "2023-01-01"}
        status, payload = await self._dispatch("POST", f"{need.resource_id}/{need.action}", query,
                                               need.body if isinstance(need.body, dict) else {})
        if status >= 400:
            error = (payload or {}).get("error", {})
            raise TemplateError(f"The function '{need.action}' on '{need.resource_id}' failed: "
                                f"{error.get('code')}: {error.get('message')}")
        return payload

    async def _dispatch(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> tuple[
            int, Any]:
        return await internal(self.call, method, path, query["api-version"], body, lock=self.lock,
                              correlation=self.stored.body["properties"].get("correlationId", ""))

    async def _deploy(self, resource: PlannedResource) -> dict[str, Any] | None:
        """Deploy one resource; its error (ARM's shape) if it failed, else None."""
        started = _now()
        op: dict[str, Any] = {
            "id": f"{self.stored.id}/operations/{uuid.uuid4().hex[:16].upper()}",
            "operationId": "", "properties": {
                "provisioningOperation": "Create", "provisioningState": "Running", "timestamp": _stamp(started),
                "duration": _duration(0), "trackingId": str(uuid.uuid4()),
                "targetResource": {"id": resource.id, "resourceType": resource.type,
                                   "resourceName": resource.name, "apiVersion": resource.api_version}}}
        op["operationId"] = op["id"].rsplit("/", 1)[-1]
        self.operations.append(op)
        await self._save("Running")
        status, payload = 500, None
        try:
            body = await self._evaluate(lambda: self.plan.body(resource))
            lowered = resource.type.lower()
            if lowered == "microsoft.resources/deployments":
                payload = await self.handler.run_nested(self, resource, body)
                status = 200
            else:
                status, payload = await self._dispatch("PUT", resource.id, {"api-version": resource.api_version or
                                                                     API_VERSIONS[0]}, body)
        except TemplateError as err:
            status, payload = 400, {"error": {"code": err.code, "message": err.arm_message()}}
        except ArmError as err:
            status, payload = err.status, err.body()
        props = op["properties"]
        props["duration"] = _duration((_now() - started).total_seconds())
        props["statusCode"] = {200: "OK", 201: "Created", 202: "Accepted", 204: "NoContent", 400: "BadRequest",
                               403: "Forbidden", 404: "NotFound", 409: "Conflict"}.get(status, str(status))
        if status < 400:
            props["provisioningState"] = "Succeeded"
            props["statusMessage"] = {"status": "Succeeded"}
            await self._save("Running")
            return None
        error = (payload or {}).get("error") or {"code": "InternalServerError", "message": "The resource failed."}
        props["provisioningState"] = "Failed"
        props["statusMessage"] = {"status": "Failed", "error": error}
        await self._save("Running")
        return {**error, "target": resource.id} if "target" not in error else error

    async def _outputs(self) -> dict[str, dict[str, Any]] | None:
        try:
            outputs: dict[str, dict[str, Any]] = await self._evaluate(self.plan.outputs)
            return outputs
        except (TemplateError, ArmError) as err:
            message = err.arm_message() if isinstance(err, TemplateError) else err.message
            await self._save("Failed", error=_failure("DeploymentOutputEvaluationFailed", "Unable to evaluate "
                                                      f"template outputs: {message}", self.stored.id))
            return None

    async def _delete_unnamed(self) -> bool:
        """Complete mode: delete the group's top-level resources that the template does not name. The caller's
        delete permission on every one of them is checked before the first delete, and each type's
        ``check_remove``: a refused permission ends the deployment Failed (AuthorizationFailed for each refused
        resource, in the details) and a refused removal raises, both with nothing deleted. False if it ended the
        deployment."""
        target = self.env.target
        if target.resource_group is None:
            return True
        named = {r.key for r in self.plan.resources if r.condition}
        caller = self.call.caller
        async with self.lock:
            unnamed = [resource for resource in await self.call.run(
                self.call.store.resources, target.subscription_id, group=target.resource_group, top_level_only=True)
                if resource.id.lower() not in named]
            refused: list[dict[str, Any]] = []
            for resource in unnamed:
                rt = REGISTRY.type_of(resource.type)
                if rt is not None and not caller.may(rt.operation("delete"), resource.id):
                    error = authorization_failed(caller.client, caller.object_id, rt.operation("delete"), resource.id)
                    refused.append({**error.body()["error"], "target": resource.id})
            if refused:
                await self._save("Failed", error=_failure(
                    "DeploymentFailed", "The deployment in Complete mode may not delete every resource that the "
                    "template does not name; nothing was deleted. See inner errors for details.", self.stored.id,
                    refused))
                return False
            for resource in unnamed:
                with contextlib.suppress(NotFound):
                    await check_tree(self.call, resource)
            for resource in unnamed:
                with contextlib.suppress(NotFound):
                    await delete_tree(self.call, resource, checked=True)
        return True


register_handler(Deployments())
