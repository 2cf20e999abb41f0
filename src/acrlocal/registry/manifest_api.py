"""Manifest, tag, referrers and catalog endpoints (end-3, 7, 8a/8b, 9, 12a/12b, and ``/v2/_catalog``).

A manifest is stored with its tag, its references and its subject in one transaction (see
:class:`~acrlocal.storage.sql_metadata.SqlRegistryMetadata`), so it is either wholly visible or absent. The bytes the
client sent are what is hashed, stored and served. Reads are cached in process and the cache is dropped on every
write to the repository, which keeps ``HEAD`` on a manifest to a dictionary lookup.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import hdrs, web

from acrlocal import inbound
from acrlocal.registry import audit, guards
from acrlocal.registry.authz import CATALOG, DELETE, OVERWRITE, PULL, PUSH
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.manifests import OCI_INDEX, parse_manifest
from acrlocal.registry.names import check_repository, parse_digest, parse_reference
from acrlocal.registry.paths import Route
from acrlocal.registry.services import RegistryServices
from acrlocal.registry.wire import API_VERSION, API_VERSION_VALUE, CONTENT_DIGEST, JSON, empty, next_link, page_size
from acrlocal.storage.digest import Digest
from acrlocal.storage.metadata import ManifestInUse, ManifestRecord, NewManifest, UnknownReferences
from acrlocal.storage.registries import RegistryRecord

OCI_SUBJECT = "OCI-Subject"
FILTERS_APPLIED = "OCI-Filters-Applied"


def _manifest_location(name: str, digest: str) -> str:
    return f"/v2/{name}/manifests/{digest}"


async def get_manifest(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                       route: Route) -> web.Response:
    """GET/HEAD by tag or digest: the stored bytes with their media type and digest; MANIFEST_UNKNOWN (404), also
    for a reference that is neither a tag nor a digest (nothing can be stored under it; Distribution and the OCI
    conformance suite answer 404 there too)."""
    name = check_repository(route.name)
    try:
        reference = parse_reference(route.ref)
    except RegistryError as err:
        raise RegistryError(
            "MANIFEST_UNKNOWN", f"manifest {route.ref[:200]!r} is not in repository {name!r}: {err.message}",
            {"reference": route.ref[:200]},
        ) from err
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (PULL,)))
    tag = reference if isinstance(reference, str) else None

    def read() -> ManifestRecord | None:  # one call, so one hop to PostgreSQL's SQL thread, not two
        found = services.meta.get_manifest(registry.id, name, str(reference))
        if found is not None:
            guards.check_pull(services.artifacts, registry.id, name, tag, found.digest)
        return found

    record = await services.sql.run(read)
    if record is None:
        raise RegistryError(
            "MANIFEST_UNKNOWN", f"manifest {reference} is not in repository {name!r}", {"reference": str(reference)}
        )
    if request.method == "GET":
        services.audit.repository_event(request, registry.name, "Pull", name, tag=tag, digest=record.digest,
                                        media_type=record.media_type, size=record.size)
    headers = {
        hdrs.CONTENT_TYPE: record.media_type,
        CONTENT_DIGEST: record.digest,
        hdrs.ETAG: f'"{record.digest}"',
        API_VERSION: API_VERSION_VALUE,
    }
    if request.method == "HEAD":
        headers[hdrs.CONTENT_LENGTH] = str(record.size)
        return web.Response(status=200, headers=headers)
    return web.Response(status=200, body=record.body, headers=headers)


async def _read_capped(request: web.Request, limit: int) -> bytes:
    """The request body, or MANIFEST_TOO_LARGE (413) as soon as it passes ``limit`` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise RegistryError(
            "MANIFEST_TOO_LARGE", f"manifest of {request.content_length} bytes is larger than the {limit} allowed"
        )
    parts: list[bytes] = []
    received = 0
    async for chunk in inbound.body_chunks(request):
        received += len(chunk)
        if received > limit:
            raise RegistryError("MANIFEST_TOO_LARGE", f"manifest is larger than the {limit} bytes allowed")
        parts.append(chunk)
    return b"".join(parts)


async def put_manifest(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                       route: Route) -> web.Response:
    """PUT by tag or digest (201). The action asked of the authorizer includes ``overwrite`` when the tag
    already exists. Errors: MANIFEST_INVALID, DIGEST_INVALID (body does not hash to the digest in the URL),
    MANIFEST_TOO_LARGE (413), MANIFEST_BLOB_UNKNOWN (a config, layer or child manifest is not in the
    repository; ``subject`` need not be)."""
    name = check_repository(route.name)
    reference = parse_reference(route.ref)
    tag = reference if isinstance(reference, str) else None
    actions: tuple[str, ...] = (PULL, PUSH)
    if tag is not None and (await services.sql.run(services.meta.tag_exists, registry.id, name, tag)):
        actions += (OVERWRITE,)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, actions))
    await services.sql.run(guards.check_write, services.artifacts, registry.id, name, tag)

    body = await _read_capped(request, services.limits.manifest_max_bytes)
    parsed = parse_manifest(body, request.headers.get(hdrs.CONTENT_TYPE))
    if isinstance(reference, Digest):
        digest = Digest.of(body, reference.algorithm)
        if digest != reference:
            raise RegistryError(
                "DIGEST_INVALID",
                f"manifest body has digest {digest}, not the {reference} in the URL",
                {"expected": str(reference), "actual": str(digest)},
            )
    else:
        digest = Digest.of(body)
    manifest = NewManifest(
        digest=str(digest),
        media_type=parsed.media_type,
        body=body,
        blobs=tuple(str(d) for d in parsed.blobs),
        manifests=tuple(str(d) for d in parsed.manifests),
        subject=str(parsed.subject) if parsed.subject else None,
        artifact_type=parsed.artifact_type,
        annotations=parsed.annotations,
    )
    try:
        await services.sql.run(services.meta.put_manifest, registry.id, name, manifest, tag)
    except UnknownReferences as exc:
        raise RegistryError(
            "MANIFEST_BLOB_UNKNOWN",
            f"manifest references what repository {name!r} does not have: {', '.join(exc.digests)}",
            [{"digest": d} for d in exc.digests],
        ) from exc
    services.audit.repository_event(request, registry.name, "Push", name, tag=tag, digest=str(digest),
                                    media_type=parsed.media_type, size=len(body))
    headers = {"Location": _manifest_location(name, str(digest)), CONTENT_DIGEST: str(digest)}
    if parsed.subject is not None:
        headers[OCI_SUBJECT] = str(parsed.subject)
    return empty(201, headers)


async def delete_manifest(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                          route: Route) -> web.Response:
    """DELETE by tag (removes only the tag) or by digest (the manifest and every tag on it); 202, or
    MANIFEST_UNKNOWN (404)."""
    name = check_repository(route.name)
    reference = parse_reference(route.ref)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (DELETE,)))

    def delete() -> bool:  # checked and deleted in one call, so no lock set meanwhile is missed
        if isinstance(reference, Digest):
            guards.check_manifest_delete(services.artifacts, registry.id, name, str(reference))
            return services.meta.delete_manifest(registry.id, name, str(reference))
        guards.check_tag_delete(services.artifacts, registry.id, name, reference)
        return services.meta.delete_tag(registry.id, name, reference)

    try:
        # By digest: the manifest's tags, however many.
        found = await (services.sql.run_long(delete) if isinstance(reference, Digest) else services.sql.run(delete))
    except ManifestInUse as exc:
        raise guards.named_by_index(exc) from exc
    if not found:
        raise RegistryError(
            "MANIFEST_UNKNOWN", f"manifest {reference} is not in repository {name!r}", {"reference": str(reference)}
        )
    if isinstance(reference, Digest):
        services.audit.repository_event(request, registry.name, "Delete", name, digest=str(reference))
    else:
        services.audit.repository_event(request, registry.name, "Untag", name, tag=reference)
    return empty(202, {})


def _json(document: dict[str, Any], headers: dict[str, str], content_type: str = JSON) -> web.Response:
    """A JSON body with exactly ``content_type`` (no charset parameter: the spec asks for none)."""
    headers[API_VERSION] = API_VERSION_VALUE
    headers[hdrs.CONTENT_TYPE] = content_type
    return web.Response(body=json.dumps(document).encode(), headers=headers)


async def list_tags(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                    route: Route) -> web.Response:
    """Tags in lexical order, ``n`` at most (clamped to the server's page size), after ``last``; ``Link`` to the
    next page when there is one. NAME_UNKNOWN (404) for a repository that does not exist."""
    name = check_repository(route.name)
    n = page_size(request.query.get("n"), services.limits.page_size_max)
    last = request.query.get("last") or None
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (PULL,)))
    found = await services.sql.run(services.meta.list_tags, registry.id, name, last, n + 1 if n else 0)
    if found is None:
        raise RegistryError("NAME_UNKNOWN", f"repository {name!r} is not known to registry", {"name": name})
    headers: dict[str, str] = {}
    if n and len(found) > n:
        found = found[:n]
        headers["Link"] = next_link(f"/v2/{name}/tags/list", n, found[-1])
    return _json({"name": name, "tags": found}, headers)


async def catalog_page(request: web.Request, services: RegistryServices,
                       registry: RegistryRecord) -> tuple[list[str], int | None]:
    """The page of repository names (those listing is enabled for) that ``n`` and ``last`` ask for, once the caller
    is authorized for the catalog; and ``n`` if there is a next page. ``/v2/_catalog`` and ``/acr/v1/_catalog``
    differ only in how they answer it."""
    n = page_size(request.query.get("n"), services.limits.page_size_max)
    last = request.query.get("last") or None
    audit.remember(request, await services.authorizer.authorize(request, registry, None, (CATALOG,)))
    found = (await services.sql.run(services.meta.list_repositories, registry.id, last, n + 1)) if n else []
    if n and len(found) > n:
        return found[:n], n
    return found, None


async def catalog(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                  route: Route) -> web.Response:
    """Repositories with at least one manifest, paginated like the tag list."""
    found, more = await catalog_page(request, services, registry)
    headers = {"Link": next_link("/v2/_catalog", more, found[-1])} if more else {}
    return _json({"repositories": found}, headers)


async def referrers(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                    route: Route) -> web.Response:
    """An OCI index of the manifests whose ``subject`` is the digest, filtered by ``artifactType`` if asked
    (confirmed by ``OCI-Filters-Applied``). Never 404: an unknown subject or repository has no referrers."""
    name = check_repository(route.name)
    subject = parse_digest(route.ref)
    artifact_type = request.query.get("artifactType") or None
    last = request.query.get("last") or None
    limit = services.limits.page_size_max
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (PULL,)))
    found = await services.sql.run(services.meta.referrers, registry.id, name, str(subject), artifact_type, last,
                                   limit + 1)
    headers: dict[str, str] = {}
    if artifact_type is not None:
        headers[FILTERS_APPLIED] = "artifactType"
    if len(found) > limit:
        found = found[:limit]
        extra = {"artifactType": artifact_type} if artifact_type else {}
        headers["Link"] = next_link(f"/v2/{name}/referrers/{subject}", limit, found[-1]["digest"], **extra)
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": found}
    return _json(document, headers, content_type=OCI_INDEX)
