"""HTTP entry point of the data plane: one function per request, ``handle(request, registry)``.

The server finds the registry (by local port or by host name) and calls :func:`handle`; everything below is
the registry's own routing. Errors are :class:`~acrlocal.registry.errors.RegistryError` and are rendered here.
"""

from __future__ import annotations

from aiohttp import web

from acrlocal.context import Context
from acrlocal.registry.errors import RegistryError
from acrlocal.storage.metadata import RegistryRecord

API_VERSION_HEADER = {"Docker-Distribution-Api-Version": "registry/2.0"}


def error_response(err: RegistryError) -> web.Response:
    headers = {**API_VERSION_HEADER, **err.headers}
    return web.Response(status=err.status, body=err.body(), content_type="application/json", headers=headers)


async def handle(request: web.Request, registry: RegistryRecord) -> web.StreamResponse:
    try:
        if request.path in ("/v2", "/v2/"):
            if request.method not in ("GET", "HEAD"):
                raise RegistryError("UNSUPPORTED")
            return web.json_response({}, headers=API_VERSION_HEADER)
        raise RegistryError("NAME_UNKNOWN")
    except RegistryError as err:
        return error_response(err)


async def on_startup(ctx: Context) -> None:
    """Called once the stores exist, before listeners open."""


async def on_shutdown(ctx: Context) -> None:
    """Called after listeners closed."""
