"""HTTP entry point of the data plane: one function per request, ``handle(request, services, registry)``.

The server finds the registry (by local port or by host name) and calls :func:`handle` with the
:class:`~acrlocal.registry.services.RegistryServices` it made. The path is parsed by
hand (:mod:`acrlocal.registry.paths`, no regex router) and dispatched on (endpoint, method) through one dict.
Each handler checks names first, then calls the authorizer once, then touches storage.

Errors: a :class:`~acrlocal.registry.errors.RegistryError` becomes the OCI ``{"errors": [...]}`` body with its
status and headers; anything unexpected is logged and answered ``500 UNKNOWN`` in the same format, and the server
keeps serving. A method an endpoint does not have is ``405 UNSUPPORTED``. A blob store that cannot be reached is
``503 UNAVAILABLE`` with ``Retry-After``.

:func:`on_startup` removes upload files that no session owns (a crash's leftovers), reconciles blob files with blob
rows (:mod:`acrlocal.registry.housekeeping`) and starts the sweeper, which
expires sessions idle for longer than ``limits.upload_session_ttl_s`` and deletes blobs no repository links any
more (after a blob, manifest or registry deletion).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.web_urldispatcher import UrlMappingMatchInfo

from acrlocal.errors import ValueTooLong
from acrlocal.inbound import MalformedRequest, RequestTooLarge
from acrlocal.registry import acr_api, blob_api, guards, housekeeping, locks, manifest_api
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.paths import Endpoint, Route, parse_path
from acrlocal.registry.services import RegistryServices
from acrlocal.registry.wire import API_VERSION, API_VERSION_VALUE, error_response
from acrlocal.storage.blobs import StorageUnavailable
from acrlocal.storage.registries import RegistryRecord
from acrlocal.storage.sql import RETRY_AFTER_S, database_unavailable

log = logging.getLogger(__name__)

Handler = Callable[[web.Request, RegistryServices, RegistryRecord, Route], Awaitable[web.StreamResponse]]


async def _base(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                route: Route) -> web.Response:
    """``GET /v2/``: 200 ``{}`` to a caller the authorizer accepts (the 401 challenge comes from it)."""
    await services.authorizer.authorize(request, registry, None, ())
    return web.json_response({}, headers={API_VERSION: API_VERSION_VALUE})


ROUTES: dict[tuple[Endpoint, str], Handler] = {
    (Endpoint.BASE, "GET"): _base,
    (Endpoint.BASE, "HEAD"): _base,
    (Endpoint.CATALOG, "GET"): manifest_api.catalog,
    (Endpoint.MANIFEST, "GET"): manifest_api.get_manifest,
    (Endpoint.MANIFEST, "HEAD"): manifest_api.get_manifest,
    (Endpoint.MANIFEST, "PUT"): manifest_api.put_manifest,
    (Endpoint.MANIFEST, "DELETE"): manifest_api.delete_manifest,
    (Endpoint.BLOB, "GET"): blob_api.get_blob,
    (Endpoint.BLOB, "HEAD"): blob_api.get_blob,
    (Endpoint.BLOB, "DELETE"): blob_api.delete_blob,
    (Endpoint.UPLOADS, "POST"): blob_api.start_upload,
    (Endpoint.UPLOAD, "GET"): blob_api.upload_status,
    (Endpoint.UPLOAD, "PATCH"): blob_api.patch_upload,
    (Endpoint.UPLOAD, "PUT"): blob_api.put_upload,
    (Endpoint.UPLOAD, "DELETE"): blob_api.cancel_upload,
    (Endpoint.TAGS, "GET"): manifest_api.list_tags,
    (Endpoint.REFERRERS, "GET"): manifest_api.referrers,
    (Endpoint.ACR_CATALOG, "GET"): acr_api.catalog,
    (Endpoint.ACR_REPOSITORY, "GET"): acr_api.get_repository,
    (Endpoint.ACR_REPOSITORY, "PATCH"): acr_api.patch_repository,
    (Endpoint.ACR_REPOSITORY, "DELETE"): acr_api.delete_repository,
    (Endpoint.ACR_TAGS, "GET"): acr_api.list_tags,
    (Endpoint.ACR_TAG, "GET"): acr_api.get_tag,
    (Endpoint.ACR_TAG, "PATCH"): acr_api.patch_tag,
    (Endpoint.ACR_TAG, "DELETE"): acr_api.delete_tag,
    (Endpoint.ACR_MANIFESTS, "GET"): acr_api.list_manifests,
    (Endpoint.ACR_MANIFEST, "GET"): acr_api.get_manifest,
    (Endpoint.ACR_MANIFEST, "PATCH"): acr_api.patch_manifest,
    (Endpoint.ACR_MANIFEST, "DELETE"): acr_api.delete_manifest,
}


_OPERATIONS = {"GET": "Pull", "HEAD": "Pull", "PUT": "Push", "POST": "Push", "PATCH": "Push", "DELETE": "Delete"}


def _not_found(route: Route | None) -> RegistryError:
    if route is None:
        return RegistryError("NAME_UNKNOWN", "no such endpoint under /v2/ or /acr/v1/", status=404)
    return RegistryError("UNSUPPORTED", f"{route.endpoint.value} does not support this method", status=405)


async def handle(request: web.Request, services: RegistryServices, registry: RegistryRecord) -> web.StreamResponse:
    if request.path.startswith("/oauth2/"):
        try:
            return await services.token_service.handle(request, registry)
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return unavailable(request, exc)
    route = parse_path(request.raw_path)
    try:
        handler = ROUTES.get((route.endpoint, request.method)) if route is not None else None
        if handler is None or route is None:
            raise _not_found(route)
        services.throttle.check(registry, request.method)
        return await handler(request, services, registry, route)
    except RegistryError as err:
        if err.code == guards.DISALLOWED and route is not None:
            services.audit.repository_event(request, registry.name, _OPERATIONS.get(request.method, "Pull"),
                                            route.name or None, result="Denied", description=str(err.detail))
        return error_response(err)
    except MalformedRequest as exc:  # a header or body no handler could read (see acrlocal.inbound)
        code = "SIZE_INVALID" if isinstance(exc, RequestTooLarge) else "UNSUPPORTED"
        return error_response(RegistryError(code, str(exc), status=exc.status))
    except ValueTooLong as exc:
        code = _TOO_LONG.get(route.endpoint, "UNSUPPORTED") if route is not None else "UNSUPPORTED"
        return error_response(RegistryError(code, str(exc), status=400))
    except StorageUnavailable as exc:  # the blob store is down: the client retries later, the server goes on
        log.warning("%s %s: %s", request.method, request.path, exc)
        return error_response(RegistryError("UNAVAILABLE", f"{exc}; try again shortly", status=503,
                                            headers={"Retry-After": str(RETRY_AFTER_S)}))
    except (ConnectionError, asyncio.CancelledError):
        raise
    except Exception as exc:
        if database_unavailable(exc):
            return unavailable(request, exc)
        log.exception("%s %s failed", request.method, request.path)
        return error_response(RegistryError("UNKNOWN", "internal error; the server log has the details"))


def unavailable(request: web.Request, exc: BaseException) -> web.Response:
    """503 UNAVAILABLE with ``Retry-After`` while the database cannot be reached."""
    log.warning("%s %s: the database is not reachable (%s)", request.method, request.path, type(exc).__name__)
    return error_response(RegistryError("UNAVAILABLE", "the registry's database is not reachable now; retry later",
                                        status=503, headers={"Retry-After": str(RETRY_AFTER_S)}))


# The OCI code of a value that validation let through but that is longer than where it is kept.
_TOO_LONG = {Endpoint.MANIFEST: "MANIFEST_INVALID", Endpoint.UPLOADS: "BLOB_UPLOAD_INVALID",
             Endpoint.UPLOAD: "BLOB_UPLOAD_INVALID"}


def unknown_registry(name: str) -> web.Response:
    """What a registry's host name answers when no registry has that name (deleted, or never made)."""
    return error_response(RegistryError("NAME_UNKNOWN", f"registry {name!r} does not exist", status=404))


def route_every_request(app: web.Application, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
    """Send every request of ``app`` to ``handler`` without aiohttp's pattern matching.

    The data plane parses its own paths (:mod:`acrlocal.registry.paths`); aiohttp's patterns would cost a regex
    walk per request and do not match every path a request can decode to (``%0A`` is a newline, which ``.*``
    does not match, so such a request would get aiohttp's plain-text 404 instead of an OCI error).
    """
    route = app.router.add_resource("/").add_route("*", handler)

    async def resolve(request: web.Request) -> UrlMappingMatchInfo:
        return UrlMappingMatchInfo({}, route)

    app.router.resolve = resolve  # type: ignore[method-assign]


# -- housekeeping ----------------------------------------------------------------------------------------

def _sweep_interval(ttl_s: float) -> float:
    """How often the sweeper runs: a quarter of the TTL, between 1 s and 5 min."""
    return min(max(ttl_s / 4, 1.0), 300.0)


async def sweep(services: RegistryServices, now: float | None = None) -> None:
    """Expire idle upload sessions, then delete the bytes of blobs that no repository links. Each part runs in one
    process or replica at a time (the store's ``upload_expiry`` and ``collection`` locks); while another holds
    one, this sweep skips that part for a turn."""
    meta, sql = services.meta, services.sql
    if await sql.run(meta.upload_expiry.acquire):
        try:
            await _expire_uploads(services, time.time() if now is None else now)
        finally:
            await sql.run(meta.upload_expiry.release)
    try:
        async with housekeeping.Collection(meta, sql):  # one process or replica at a time; the others skip a turn
            for text in await sql.run(meta.unlinked_blobs, limit=1000):
                await housekeeping.delete_unlinked(meta, sql, services.blobs, text)
    except housekeeping.CollectionRunning:
        pass


async def _expire_uploads(services: RegistryServices, now: float) -> None:
    meta, sql, ttl_s = services.meta, services.sql, services.limits.upload_session_ttl_s
    for upload_id in await sql.run(meta.expired_uploads, now - ttl_s):
        async with locks.uploads(upload_id):
            await sql.run(meta.delete_upload, upload_id)
            await services.blobs.abort(upload_id)
    # Upload files no session owns: a registry deleted with its sessions, a single-request upload cut off.
    await services.blobs.sweep(await sql.run(meta.upload_ids), older_than_s=max(ttl_s, 3600))


async def _sweep_forever(services: RegistryServices) -> None:
    interval = _sweep_interval(services.limits.upload_session_ttl_s)
    while True:
        await asyncio.sleep(interval)
        try:
            await sweep(services)
        except Exception:
            log.exception("registry sweep failed; retrying in %.0f s", interval)


async def on_startup(services: RegistryServices) -> None:
    """Called once the stores exist, before listeners open: drop a crash's leftovers, start the audit log's writer
    and the sweeper."""
    meta = services.meta
    sessions = meta.upload_ids()
    for upload_id in sessions:
        if await services.blobs.upload_size(upload_id) is None:
            meta.delete_upload(upload_id)
    removed = await services.blobs.sweep(sessions)
    if removed:
        log.info("removed %d upload files no session owned", removed)
    await sweep(services)
    try:
        async with housekeeping.Collection(meta, services.sql):
            await housekeeping.reconcile(meta, services.sql, services.blobs, services.limits.blob_gc_grace_s)
    except housekeeping.CollectionRunning:
        log.info("another process or replica is collecting garbage: blob files and rows are not reconciled now")
    services.audit.start()
    services.sweeper = asyncio.get_running_loop().create_task(_sweep_forever(services), name="registry.sweeper")


def start_audit(services: RegistryServices) -> None:
    """What a secondary process of the server (``up --workers``) starts: the audit log's writer, and none of the
    housekeeping (the primary's)."""
    services.audit.start()


async def on_shutdown(services: RegistryServices) -> None:
    """Called after listeners closed: stop the sweeper, write the audit events still queued."""
    await services.audit.stop()
    task, services.sweeper = services.sweeper, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
