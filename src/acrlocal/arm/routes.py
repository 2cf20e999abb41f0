"""HTTP: the ARM-shaped control plane on the shared https port.

Every ARM path goes through :func:`dispatch`, which in this order: authenticates the bearer token (401), requires
``api-version`` (400 ``MissingApiVersionParameter``), parses the path (400), checks the subscription (404
``SubscriptionNotFound``, 401 for a token of another tenant), reads the JSON body of a write (400
``InvalidRequestContent``), and hands the call to the subscription, group or provider code, which authorizes it on
its target scope before anything is looked up. Writes run one at a time (an ``asyncio.Lock``), so a check and the
write that follows it cannot interleave with another write. The SQL of a call (the caller's principal and role
assignments, the store, the directory) runs through the server's ``SqlThread`` (``Call.run``), off the event loop on
PostgreSQL; the write lock is taken on the loop and no SQL connection is held while a call waits for it. Replicas
over PostgreSQL share the lock (:class:`~acrlocal.storage.shared.DatabaseLock`), which goes with its session if its
connection is cut: then every transaction of the write checks the lock right before it commits and, if it went, rolls
back with :class:`~acrlocal.storage.sql.LockLost`, answered as the database's 503 ``ServiceUnavailable`` with
``Retry-After`` (an earlier transaction of the same write, committed while the lock was held, stays). Every
answer carries ``x-ms-request-id`` and ``x-ms-correlation-request-id``; errors are ARM's ``{"error": {"code",
"message"}}``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_urldispatcher import MatchInfoError

from acrlocal import inbound
from acrlocal.arm import generic, graph, groups, images, subscriptions
from acrlocal.arm.auth import authenticate
from acrlocal.arm.authorization import ensure_admin_owner
from acrlocal.arm.errors import ArmError, invalid_content, subscription_not_found
from acrlocal.arm.graph.errors import GraphError
from acrlocal.arm.paths import ArmPath, parse_request_path
from acrlocal.arm.providers import REGISTRY, Call, load_providers
from acrlocal.arm.services import ARM, ArmServices
from acrlocal.arm.store import ArmStore
from acrlocal.arm.templates import TemplateError, jsonc
from acrlocal.compute.runtime import HostedElsewhere
from acrlocal.errors import NotFound, ValueTooLong
from acrlocal.inbound import MalformedRequest, RequestTooLarge
from acrlocal.publiccloud import GRAPH_HOST, LOGIN_HOST, host_of
from acrlocal.storage.sql import RETRY_AFTER_S, database_unavailable

log = logging.getLogger(__name__)

STORE_KEY = web.AppKey("arm_store", ArmStore)
LOCK_KEY = web.AppKey("arm_write_lock", asyncio.Lock)
WRITES = ("PUT", "PATCH", "DELETE", "POST")


def _ids(request: web.Request) -> dict[str, str]:
    request_id = str(uuid.uuid4())
    correlation = _client_id(request, "x-ms-correlation-request-id") or _client_id(
        request, "x-ms-client-request-id") or request_id
    return {"x-ms-request-id": request_id, "x-ms-correlation-request-id": correlation,
            "x-ms-routing-request-id": f"LOCAL:{request_id}"}


def _client_id(request: web.Request, name: str) -> str | None:
    """A request id the client chose, to echo: ASCII only (``None`` otherwise), at most 200 characters."""
    try:
        value = inbound.header(request, name)
    except MalformedRequest:
        return None
    return value[:200] if value else None


def error_response(err: ArmError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers=err.headers)


async def read_body(request: web.Request) -> dict[str, Any]:
    """The JSON object of a write, read as ARM reads it (:mod:`.templates.jsonc`); ``{}`` for an empty body; 400
    ``InvalidRequestContent`` for anything else."""
    try:
        raw = await inbound.read_body(request)
    except RequestTooLarge as exc:
        raise ArmError(413, "RequestEntityTooLarge", f"The request content is too large: {exc}.") from None
    if not raw.strip():
        return {}
    try:
        body = inbound.parse_json(raw)
    except MalformedRequest as exc:
        try:  # ARM's reader is lenient (unquoted names, comments), and az relies on it for templates
            body = jsonc.loads(raw)
        except TemplateError:
            raise invalid_content(f"{str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise invalid_content(f"expected a JSON object, got {type(body).__name__}")
    return body


def api_version(request: web.Request) -> str:
    value = request.query.get("api-version")
    if not value:
        raise ArmError(400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is required for all requests.")
    return value


async def dispatch(request: web.Request) -> web.StreamResponse:
    services = request.app[ARM]
    store = request.app[STORE_KEY]
    ids = _ids(request)
    try:
        caller = await authenticate(request, services.tokens, services.directory, store, services.sql)
        version = api_version(request)
        body = await read_body(request) if request.method in ("PUT", "PATCH", "POST") else {}
        call = Call(services, store, caller, request, version, body, write_lock=request.app[LOCK_KEY])
        if request.method in WRITES and not _unlocked(request):
            async with request.app[LOCK_KEY]:
                response = await route(call)
        else:
            response = await route(call)
    except ArmError as err:
        response = error_response(err)
    except MalformedRequest as exc:  # a header or body no handler could read (see acrlocal.inbound)
        codes = {413: "RequestEntityTooLarge", 408: "RequestTimeout"}
        response = error_response(ArmError(exc.status, codes.get(exc.status, "InvalidRequestContent"), str(exc)))
    except ValueTooLong as exc:
        response = error_response(ArmError(400, "InvalidRequestContent", f"The request content was invalid: {exc}."))
    except HostedElsewhere as exc:  # replicas: a VM's calls go to the replica that runs it (not forwarded)
        response = error_response(ArmError(409, "OperationNotAllowed", f"The virtual machine runs on the acrlocal "
                                           f"replica '{exc.host}', which alone answers calls on it; send this "
                                           "request to that replica."))
    except Exception as exc:
        if database_unavailable(exc):
            log.warning("ARM request %s %s: the database is not reachable (%s)", request.method, request.path,
                        type(exc).__name__)
            response = error_response(ArmError(503, "ServiceUnavailable", "The service is unavailable now; retry "
                                               "the request later.", headers={"Retry-After": str(RETRY_AFTER_S)}))
            response.headers.update(ids)
            return response
        log.exception("ARM request %s %s failed", request.method, request.path)
        response = error_response(ArmError(500, "InternalServerError", "The server encountered an internal error; "
                                           f"request id {ids['x-ms-request-id']}."))
    response.headers.update(ids)
    return response


def _unlocked(request: web.Request) -> bool:
    """A POST to an action that changes no ARM state and may run long (see ``ResourceType.unlocked_actions``)."""
    if request.method != "POST":
        return False
    last = request.path.rstrip("/").rsplit("/", 1)[-1]
    return REGISTRY.is_unlocked_action(last)


async def route(call: Call) -> web.StreamResponse:
    # The registries another process changed (under the write lock: all it let commit before): handlers and
    # renderers look registries up in memory.
    await call.services.registries.fresh()
    request = call.request
    lowered = request.path.rstrip("/").lower()
    if lowered == "/subscriptions":
        return await _get_only(call, subscriptions.list_subscriptions(call))
    if lowered == "/tenants":
        return await _get_only(call, subscriptions.list_tenants(call))
    path = parse_request_path(request.raw_path)
    if path.subscription is not None:
        try:
            sub = await call.run(call.services.directory.subscription, path.subscription)
        except NotFound:
            raise subscription_not_found(path.subscription) from None
        if sub.tenant_id != call.caller.tenant_id:
            issuer = call.services.tokens.issuer(call.caller.tenant_id)
            raise ArmError(401, "InvalidAuthenticationTokenTenant",
                           f"The access token is from the wrong issuer '{issuer}'. "
                           f"It must match the tenant '{call.services.tokens.issuer(sub.tenant_id)}' associated with "
                           "this subscription. Please use the authority (URL) "
                           f"'{call.services.tokens.authority}/{sub.tenant_id}' to get the token.")
        if path.kind == "subscription":
            return await subscriptions.get_subscription(call, path, sub)
    return await route_path(call, path)


async def route_path(call: Call, path: ArmPath) -> web.StreamResponse:
    if path.kind == "groups":
        return await groups.list_groups(call, path)
    if path.kind == "group":
        return await groups.group(call, path)
    if path.kind == "resources":
        return await groups.list_resources(call, path)
    if path.kind == "providers":
        return await subscriptions.list_providers(call, path)
    assert path.kind == "provider" and path.namespace is not None
    at_subscription = path.subscription is not None and path.group is None and path.scope.count("/") == 2
    if at_subscription and (not path.segments or (
            len(path.segments) == 1 and path.segments[0].lower() in ("register", "unregister")
            and call.request.method == "POST")):
        return await subscriptions.provider(call, path)
    if at_subscription and path.segments and path.segments[0].lower() == "locations":
        location_handler = REGISTRY.location_handlers.get(path.namespace.lower())
        if location_handler is not None:
            return await location_handler(call, path)
    if path.subscription is None and [s.lower() for s in path.segments] == ["operations"]:
        return await _get_only(call, subscriptions.list_operations(call, path.namespace))
    if path.subscription is None and path.scope == "/" and len(path.segments) == 1:
        tenant_action = REGISTRY.tenant_actions.get((path.namespace.lower(), path.segments[0].lower()))
        if tenant_action is not None:
            if call.request.method != "POST":
                raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
            return await tenant_action.handler(call, path)
    handler = REGISTRY.handlers.get(path.namespace.lower())
    if handler is not None:
        return await handler.handle(call, path)
    if path.namespace.lower() not in REGISTRY.namespaces:
        raise generic.unknown_type(path.namespace, "/".join(path.segments[0::2]), call.api_version)
    if path.scope.count("/providers/") or path.subscription is None:
        raise ArmError(400, "InvalidRequestUri", f"The request uri '{call.request.path}' is invalid: "
                       f"'{path.namespace}' resources are not extension resources.")
    return await generic.handle(call, path)


async def _get_only(call: Call, handler: Any) -> web.StreamResponse:
    if call.request.method != "GET":
        handler.close()
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
    result: web.StreamResponse = await handler
    return result


async def metadata_endpoints(request: web.Request) -> web.StreamResponse:
    response = web.json_response(subscriptions.metadata_endpoints(request.app[ARM], request.query.get("api-version"),
                                                                  request.host))
    response.headers.update(_ids(request))
    return response



async def on_server_started(services: ArmServices, store: ArmStore) -> None:
    """Called by the server once every room is up (the default registry exists): providers reconcile."""
    for rt in list(REGISTRY.types.values()):
        await rt.on_start(services, store)
    for handler in list(REGISTRY.handlers.values()):
        await handler.on_start(services, store)


@web.middleware
async def unknown_paths(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A path no route of the shared endpoint takes: ARM's gateway answers it with a 400 in ARM's JSON, Graph (on its
    own host name, inside a VM) with its ``BadRequest``; Entra's host keeps the plain 404 of a page not found."""
    match = request.match_info
    if not isinstance(match, MatchInfoError) or match.http_exception.status != 404:
        return await handler(request)
    host = host_of(request.host)
    if host == GRAPH_HOST:
        segment = request.path.strip("/").split("/", 1)[0]
        return GraphError(400, "BadRequest", f"Invalid version: {segment[:100]}").response(request)
    if host == LOGIN_HOST:
        return await handler(request)
    response = error_response(ArmError(400, "InvalidRequestUri", f"The request URI '{request.path[:300]}' is not "
                                       "valid: no ARM, Graph or Entra endpoint has it."))
    response.headers.update(_ids(request))
    return response


def setup(app: web.Application, services: ArmServices, store: ArmStore,
          write_lock: asyncio.Lock | None = None) -> None:
    """Serve ARM and Graph on ``app`` with ``services``, resources in ``store``; writes one at a time under
    ``write_lock`` (this process's own lock if ``None``; replicas over PostgreSQL share one)."""
    load_providers()
    ensure_admin_owner(services.admin, store)
    app[ARM] = services
    app[STORE_KEY] = store
    app[LOCK_KEY] = write_lock or asyncio.Lock()
    app.router.add_get("/metadata/endpoints", metadata_endpoints)
    # az cloud register joins "--endpoint-resource-manager https://host:port/" and "/metadata/endpoints".
    app.router.add_get("//metadata/endpoints", metadata_endpoints)
    app.router.add_get("/metadata/vm-image-aliases", images.aliases)
    graph.setup(app, services, store, app[LOCK_KEY])
    app.middlewares.append(unknown_paths)
    app.router.add_route("*", "/{root:(?i:subscriptions|tenants)}", dispatch)
    app.router.add_route("*", "/{root:(?i:subscriptions)}/{tail:(?s:.*)}", dispatch)
    app.router.add_route("*", "/{root:(?i:providers)}/{tail:(?s:.*)}", dispatch)
