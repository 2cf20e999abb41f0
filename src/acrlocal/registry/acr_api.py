"""ACR's own data-plane API under ``/acr/v1/``: what azure-containerregistry and ``az acr repository`` call.

- ``GET /acr/v1/_catalog`` (``n``, ``last``, ``Link``), needs ``registry:catalog:*``;
- ``GET|PATCH|DELETE /acr/v1/{name}``: repository properties, attributes, deletion of the whole repository;
- ``GET /acr/v1/{name}/_tags`` (``n``, ``last``, ``orderby=timedesc|timeasc``, ``digest``) and
  ``GET|PATCH|DELETE /acr/v1/{name}/_tags/{tag}``;
- ``GET /acr/v1/{name}/_manifests`` (``n``, ``last``, ``orderby``) and
  ``GET|PATCH|DELETE /acr/v1/{name}/_manifests/{digest}``.

Reads need ``metadata_read`` on the repository, PATCH ``metadata_write``, DELETE ``delete``, asked of the same
authorizer as ``/v2/`` once names are checked and before storage is touched. Bodies carry exactly the fields the
SDK requires (``registry``, ``imageName``, ``createdTime``, ``lastUpdateTime``, counts, ``changeableAttributes``);
times are ISO 8601 UTC. DELETE answers 202 (the SDK also tolerates 404). Errors are the OCI ``errors`` body:
NAME_UNKNOWN / TAG_UNKNOWN / MANIFEST_UNKNOWN (404), UNSUPPORTED (400) for a bad query or PATCH body, and
REGISTRY_DISALLOWED_OPERATION (405) when a lock forbids a deletion.

``architecture`` and ``os`` of an image manifest come from its config blob (read once, cached by digest);
``references`` of an index list its children with their platforms.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from aiohttp import hdrs, web

from acrlocal import inbound
from acrlocal.inbound import MalformedRequest, parse_json
from acrlocal.registry import audit, guards
from acrlocal.registry.authz import DELETE, METADATA_READ, METADATA_WRITE
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.manifest_api import catalog_page
from acrlocal.registry.names import check_repository, check_tag, parse_digest
from acrlocal.registry.paths import Route
from acrlocal.registry.services import RegistryServices
from acrlocal.registry.wire import API_VERSION, API_VERSION_VALUE, JSON, page_size
from acrlocal.storage.artifacts import ATTRIBUTE_COLUMNS, Blocked, ManifestInfo, Order, TagInfo
from acrlocal.storage.digest import Digest
from acrlocal.storage.metadata import ManifestInUse
from acrlocal.storage.registries import RegistryRecord

IMAGE_CONFIGS = ("application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json")
CONFIG_MAX_BYTES = 1024 * 1024
ORDERS = {o.value: o for o in Order}


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _answer(document: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    out = {API_VERSION: API_VERSION_VALUE, hdrs.CONTENT_TYPE: JSON, **(headers or {})}
    return web.Response(status=status, body=json.dumps(document).encode(), headers=out)


def _login_server(request: web.Request) -> str:
    return request.host


def _order(request: web.Request) -> Order:
    value = request.query.get("orderby", "") or ""
    order = ORDERS.get(value.lower())
    if order is None:
        raise RegistryError("UNSUPPORTED", f"orderby={value[:40]!r} is not one of timedesc, timeasc",
                            {"orderby": value[:40]}, status=400)
    return order


def _link(path: str, n: int, last: str, order: Order) -> str:
    query = f"last={quote(last, safe='')}&n={n}"
    if order is not Order.KEY:
        query += f"&orderby={order.value}"
    return f'<{path}?{query}>; rel="next"'


def _repo_path(name: str) -> str:
    return f"/acr/v1/{quote(name, safe='/')}"


def _unknown_repository(name: str) -> RegistryError:
    return RegistryError("NAME_UNKNOWN", f"repository {name!r} is not known to registry", {"name": name})


def _unknown_tag(name: str, tag: str) -> RegistryError:
    return RegistryError("TAG_UNKNOWN", f"tag {tag!r} is not in repository {name!r}", {"name": name, "tag": tag})


def _unknown_manifest(name: str, digest: str) -> RegistryError:
    return RegistryError("MANIFEST_UNKNOWN", f"manifest {digest} is not in repository {name!r}",
                         {"name": name, "digest": digest})


async def _not_found(services: RegistryServices, registry: RegistryRecord, name: str,
                     otherwise: RegistryError) -> RegistryError:
    """What a tag or manifest that was not found answers: NAME_UNKNOWN if the repository itself does not exist,
    else ``otherwise``."""
    if not await _exists(services, registry, name):
        return _unknown_repository(name)
    return otherwise


async def _exists(services: RegistryServices, registry: RegistryRecord, name: str) -> bool:
    return (await services.sql.run(services.artifacts.repository, registry.id, name)) is not None


# -- catalog ---------------------------------------------------------------------------------------------


async def catalog(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                  route: Route) -> web.Response:
    """Repository names in order (those with listing enabled), ``n`` at most, after ``last``."""
    found, more = await catalog_page(request, services, registry)
    headers = {"Link": f'</acr/v1/_catalog?last={quote(found[-1], safe="")}&n={more}>; rel="next"'} if more else {}
    return _answer({"repositories": found}, headers=headers)


# -- repositories ----------------------------------------------------------------------------------------


async def _repository_body(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                           name: str) -> dict[str, Any]:
    info = await services.sql.run(services.artifacts.repository, registry.id, name)
    if info is None:
        raise _unknown_repository(name)
    return {
        "registry": _login_server(request),
        "imageName": info.name,
        "createdTime": iso(info.created),
        "lastUpdateTime": iso(info.updated),
        "manifestCount": info.manifest_count,
        "tagCount": info.tag_count,
        "changeableAttributes": info.attributes.render(),
    }


async def get_repository(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                         route: Route) -> web.Response:
    name = check_repository(route.name)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_READ,)))
    return _answer(await _repository_body(request, services, registry, name))


async def _attribute_changes(request: web.Request) -> dict[str, bool]:
    """The PATCH body: a JSON object of changeable attributes with boolean values; UNSUPPORTED (400) otherwise.
    ``teleportEnabled`` (an ACR preview feature) is accepted and ignored."""
    raw = await inbound.read_body(request)
    try:
        body = parse_json(raw or b"{}")
    except MalformedRequest as exc:
        raise RegistryError("UNSUPPORTED", str(exc), status=400) from None
    if not isinstance(body, dict):
        raise RegistryError("UNSUPPORTED", "the request body must be a JSON object of changeable attributes",
                            status=400)
    changes: dict[str, bool] = {}
    for key, value in body.items():
        if key == "teleportEnabled":
            continue
        if key not in ATTRIBUTE_COLUMNS:
            raise RegistryError("UNSUPPORTED", f"{str(key)[:60]!r} is not a changeable attribute; expected "
                                f"{', '.join(ATTRIBUTE_COLUMNS)}", {"attribute": str(key)[:60]}, status=400)
        if not isinstance(value, bool):
            raise RegistryError("UNSUPPORTED", f"{key} must be true or false, not {json.dumps(value)[:40]}",
                                {"attribute": key}, status=400)
        changes[key] = value
    return changes


async def patch_repository(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                           route: Route) -> web.Response:
    name = check_repository(route.name)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_WRITE,)))
    changes = await _attribute_changes(request)
    if (await services.sql.run(services.artifacts.repository, registry.id, name)) is None:
        raise _unknown_repository(name)
    await services.sql.run(services.artifacts.set_attributes, registry.id, name, changes)
    return _answer(await _repository_body(request, services, registry, name))


async def delete_repository(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                            route: Route) -> web.Response:
    """202 with the manifests and tags deleted; REGISTRY_DISALLOWED_OPERATION if anything in it is locked."""
    name = check_repository(route.name)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (DELETE,)))
    try:
        deleted = await services.sql.run_long(services.artifacts.delete_repository, registry.id, name)
    except Blocked as exc:
        raise guards.disallowed(exc.what, "deleteEnabled") from None
    if deleted is None:
        raise _unknown_repository(name)
    services.audit.repository_event(request, registry.name, "Delete", name, description=(
        f"repository deleted with {len(deleted.manifests)} manifests and {len(deleted.tags)} tags"))
    return _answer({"manifestsDeleted": deleted.manifests, "tagsDeleted": deleted.tags}, status=202)


# -- tags ------------------------------------------------------------------------------------------------


def _tag_json(tag: TagInfo) -> dict[str, Any]:
    return {
        "name": tag.name,
        "digest": tag.digest,
        "createdTime": iso(tag.created),
        "lastUpdateTime": iso(tag.updated),
        "signed": False,
        "changeableAttributes": tag.attributes.render(),
    }


async def list_tags(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                    route: Route) -> web.Response:
    name = check_repository(route.name)
    n = page_size(request.query.get("n"), services.limits.page_size_max)
    last = request.query.get("last") or None
    order = _order(request)
    digest_param = request.query.get("digest")
    digest = str(parse_digest(digest_param)) if digest_param else None
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_READ,)))
    found = (await services.sql.run(services.artifacts.tags, registry.id, name, last, n + 1, order, digest)
             if n else [])
    if found is None or (not found and not await _exists(services, registry, name)):
        raise _unknown_repository(name)
    headers: dict[str, str] = {}
    if n and len(found) > n:
        found = found[:n]
        headers["Link"] = _link(f"{_repo_path(name)}/_tags", n, found[-1].name, order)
    body = {"registry": _login_server(request), "imageName": name, "tags": [_tag_json(t) for t in found]}
    return _answer(body, headers=headers)


async def _tag_body(request: web.Request, services: RegistryServices, registry: RegistryRecord, name: str,
                   tag: str) -> dict[str, Any]:
    info = await services.sql.run(services.artifacts.tag, registry.id, name, tag)
    if info is None:
        raise await _not_found(services, registry, name, _unknown_tag(name, tag))
    return {"registry": _login_server(request), "imageName": name, "tag": _tag_json(info)}


async def get_tag(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                  route: Route) -> web.Response:
    name = check_repository(route.name)
    tag = check_tag(route.ref)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_READ,)))
    return _answer(await _tag_body(request, services, registry, name, tag))


async def patch_tag(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                    route: Route) -> web.Response:
    name = check_repository(route.name)
    tag = check_tag(route.ref)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_WRITE,)))
    changes = await _attribute_changes(request)
    await _tag_body(request, services, registry, name, tag)  # 404 before any change
    await services.sql.run(services.artifacts.set_attributes, registry.id, name, changes, tag=tag)
    return _answer(await _tag_body(request, services, registry, name, tag))


async def delete_tag(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                     route: Route) -> web.Response:
    """Untag (the manifest stays); 202, TAG_UNKNOWN, or REGISTRY_DISALLOWED_OPERATION if locked."""
    name = check_repository(route.name)
    tag = check_tag(route.ref)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (DELETE,)))

    def delete() -> bool:  # checked and deleted in one call, so no lock set meanwhile is missed
        guards.check_tag_delete(services.artifacts, registry.id, name, tag)
        return services.meta.delete_tag(registry.id, name, tag)

    if not await services.sql.run(delete):
        raise await _not_found(services, registry, name, _unknown_tag(name, tag))
    services.audit.repository_event(request, registry.name, "Untag", name, tag=tag)
    return _answer({}, status=202)


# -- manifests -------------------------------------------------------------------------------------------

_CONFIG_CACHE: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
_CONFIG_CACHE_MAX = 4096


async def _platform(services: RegistryServices, registry: RegistryRecord, name: str, config: dict[str, Any]) -> tuple[
        str | None, str | None]:
    """``(architecture, os)`` from an image's config blob; ``(None, None)`` when it is not an image config, is
    missing or unreadable (listing must not fail because of one odd manifest)."""
    digest_text = config.get("digest")
    if config.get("mediaType") not in IMAGE_CONFIGS or not isinstance(digest_text, str):
        return None, None
    if digest_text in _CONFIG_CACHE:
        _CONFIG_CACHE.move_to_end(digest_text)
        return _CONFIG_CACHE[digest_text]
    size = await services.sql.run(services.meta.blob_size, registry.id, name, digest_text)
    if size is None or size > CONFIG_MAX_BYTES:
        return None, None
    try:
        digest = Digest.parse(digest_text)
        parts = [chunk async for chunk in services.blobs.read(digest)]
        document = json.loads(b"".join(parts))
    except Exception:  # a broken config only loses the platform fields
        return None, None
    found = (document.get("architecture"), document.get("os")) if isinstance(document, dict) else (None, None)
    result = (found[0] if isinstance(found[0], str) else None, found[1] if isinstance(found[1], str) else None)
    _CONFIG_CACHE[digest_text] = result
    if len(_CONFIG_CACHE) > _CONFIG_CACHE_MAX:
        _CONFIG_CACHE.popitem(last=False)
    return result


async def _manifest_json(services: RegistryServices, registry: RegistryRecord, name: str,
                         info: ManifestInfo) -> dict[str, Any]:
    out: dict[str, Any] = {
        "digest": info.digest,
        "imageSize": info.size,
        "createdTime": iso(info.created),
        "lastUpdateTime": iso(info.updated),
        "mediaType": info.media_type,
        "tags": list(info.tags),
        "changeableAttributes": info.attributes.render(),
    }
    try:
        document = json.loads(info.body)
    except ValueError:
        document = {}
    if not isinstance(document, dict):
        return out
    config = document.get("config")
    if isinstance(config, dict):
        out["configMediaType"] = config.get("mediaType")
        layers_value = document.get("layers")
        layers: list[Any] = layers_value if isinstance(layers_value, list) else []
        sizes = [d.get("size") for d in [config, *layers] if isinstance(d, dict)]
        out["imageSize"] = info.size + sum(s for s in sizes if isinstance(s, int))
        architecture, os_name = await _platform(services, registry, name, config)
        if architecture:
            out["architecture"] = architecture
        if os_name:
            out["os"] = os_name
    children = document.get("manifests")
    if isinstance(children, list):
        references = []
        for child in children:
            if not isinstance(child, dict) or not isinstance(child.get("digest"), str):
                continue
            platform_value = child.get("platform")
            platform: dict[str, Any] = platform_value if isinstance(platform_value, dict) else {}
            references.append({"digest": child["digest"], "architecture": platform.get("architecture"),
                               "os": platform.get("os")})
        out["references"] = references
    return out


async def list_manifests(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                         route: Route) -> web.Response:
    name = check_repository(route.name)
    n = page_size(request.query.get("n"), services.limits.page_size_max)
    last = request.query.get("last") or None
    order = _order(request)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_READ,)))
    found = (await services.sql.run(services.artifacts.manifests, registry.id, name, last, n + 1, order)
             if n else [])
    if found is None or (not found and not await _exists(services, registry, name)):
        raise _unknown_repository(name)
    headers: dict[str, str] = {}
    if n and len(found) > n:
        found = found[:n]
        headers["Link"] = _link(f"{_repo_path(name)}/_manifests", n, found[-1].digest, order)
    items = [await _manifest_json(services, registry, name, m) for m in found]
    return _answer({"registry": _login_server(request), "imageName": name, "manifests": items}, headers=headers)


async def _manifest_body(request: web.Request, services: RegistryServices, registry: RegistryRecord, name: str,
                         digest: str) -> dict[str, Any]:
    info = await services.sql.run(services.artifacts.manifest, registry.id, name, digest)
    if info is None:
        raise await _not_found(services, registry, name, _unknown_manifest(name, digest))
    manifest = await _manifest_json(services, registry, name, info)
    return {"registry": _login_server(request), "imageName": name, "manifest": manifest}


async def get_manifest(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                       route: Route) -> web.Response:
    name = check_repository(route.name)
    digest = str(parse_digest(route.ref))
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_READ,)))
    return _answer(await _manifest_body(request, services, registry, name, digest))


async def patch_manifest(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                         route: Route) -> web.Response:
    name = check_repository(route.name)
    digest = str(parse_digest(route.ref))
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (METADATA_WRITE,)))
    changes = await _attribute_changes(request)
    await _manifest_body(request, services, registry, name, digest)  # 404 before any change
    await services.sql.run(services.artifacts.set_attributes, registry.id, name, changes, digest=digest)
    return _answer(await _manifest_body(request, services, registry, name, digest))


async def delete_manifest(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                          route: Route) -> web.Response:
    """The manifest and every tag on it; 202, MANIFEST_UNKNOWN, or REGISTRY_DISALLOWED_OPERATION if locked."""
    name = check_repository(route.name)
    digest = str(parse_digest(route.ref))
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (DELETE,)))

    def delete() -> bool:  # checked and deleted in one call, so no lock set meanwhile is missed
        guards.check_manifest_delete(services.artifacts, registry.id, name, digest)
        return services.meta.delete_manifest(registry.id, name, digest)

    try:
        found = await services.sql.run_long(delete)  # the manifest's tags, however many
    except ManifestInUse as exc:
        raise guards.named_by_index(exc) from exc
    if not found:
        raise await _not_found(services, registry, name, _unknown_manifest(name, digest))
    services.audit.repository_event(request, registry.name, "Delete", name, digest=digest)
    return _answer({}, status=202)

