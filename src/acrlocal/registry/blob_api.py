"""Blob endpoints: pull (end-2), delete (end-10), and uploads (end-4a/4b, 5, 6, 11, 13, 14).

Each handler checks the name and digest grammar, then asks the authorizer, then touches storage. Uploads:

- A session is a row (id, registry, repository, caller) plus an upload file in the blob store. The id is 256
  random bits (``secrets.token_urlsafe``) and is only valid under the registry and repository that opened it,
  for the caller that opened it: used anywhere else it is BLOB_UPLOAD_UNKNOWN. Rows survive a restart; the blob
  store rebuilds the running hash from the file. Abandoned sessions are swept after the configured TTL.
- Chunks are appended under a per-upload lock, so two requests on one session never interleave. A chunk with
  ``Content-Range`` must start where the upload ends (416 otherwise, nothing written); one that is shorter or
  longer than announced is cut back off (SIZE_INVALID). A chunk is all or nothing: one whose request ends early
  (the client disconnects) is cut back off too, and the session row records the size after each acknowledged
  chunk, so after a crash mid-chunk the upload file is cut back to it. A status ``GET`` waits for a chunk in
  progress, so it never reports half of one.
- Quotas (``limits``): a principal holds at most ``upload_sessions_max`` open sessions in a registry (429
  TOOMANYREQUESTS), a blob grows to at most ``blob_max_bytes`` (DENIED), and the store refuses writes that would
  leave its disk with less than ``min_free_bytes`` free, or that the disk has no room for (ENOSPC): DENIED, the
  chunk cut off, the session as it was.
- Completion publishes the blob only if it hashes to the client's digest (DIGEST_INVALID otherwise: the upload is
  discarded, nothing is linked), then links it to the repository. Publication and deletion of one digest are
  serialised, so a blob is never deleted from under a link made at the same moment.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
from collections.abc import Iterator

from aiohttp import hdrs, web

from acrlocal import inbound
from acrlocal.errors import NotFound
from acrlocal.registry import audit, guards, housekeeping, locks
from acrlocal.registry.authz import DELETE, PULL, PUSH, Caller
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.names import check_repository, parse_digest
from acrlocal.registry.paths import Route
from acrlocal.registry.services import RegistryServices
from acrlocal.registry.wire import (
    API_VERSION,
    API_VERSION_VALUE,
    CONTENT_DIGEST,
    UPLOAD_UUID,
    empty,
    parse_byte_range,
    parse_content_range,
)
from acrlocal.storage.blobs import DigestMismatch, StorageFull, StorageUnavailable, UploadRaced, UploadTooLarge
from acrlocal.storage.digest import Digest
from acrlocal.storage.metadata import UploadSession
from acrlocal.storage.registries import RegistryRecord
from acrlocal.storage.sql import LockLost

log = logging.getLogger(__name__)

UPLOAD_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}\Z")
OCTET_STREAM = "application/octet-stream"
# Over TLS a blob is sent in pieces (``FileBlobStore.READ_CHUNK``) that uvloop encrypts at once; by default it lets
# 512 KiB of encrypted data wait per connection before pausing the sender. 64 KiB pauses it after one piece: with
# 16 blob streams (4 parallel skopeo pulls) peak RSS fell by about 4 MiB, throughput unchanged.
BLOB_WRITE_HIGH_WATER = 64 * 1024
# Requests that need FileResponse's handling (partial content, conditional requests).
FILE_RESPONSE_HEADERS = (hdrs.RANGE, hdrs.IF_RANGE, hdrs.IF_MATCH, hdrs.IF_NONE_MATCH, hdrs.IF_MODIFIED_SINCE,
                         hdrs.IF_UNMODIFIED_SINCE)


def blob_location(name: str, digest: Digest | str) -> str:
    return f"/v2/{name}/blobs/{digest}"


def upload_location(name: str, upload_id: str) -> str:
    return f"/v2/{name}/blobs/uploads/{upload_id}"


def _range(size: int) -> str:
    # Distribution's convention: an empty upload is "0-0" too.
    return f"0-{max(size - 1, 0)}"


def _upload_headers(name: str, upload_id: str, size: int) -> dict[str, str]:
    return {"Location": upload_location(name, upload_id), "Range": _range(size), UPLOAD_UUID: upload_id}


# -- pull and delete -------------------------------------------------------------------------------------


async def get_blob(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                   route: Route) -> web.StreamResponse:
    """GET/HEAD a blob the repository links (BLOB_UNKNOWN otherwise, even if another repository has it).

    HEAD answers from the metadata, never the content. A GET is sent to the store's own short-lived URL with a 307
    when the store has one (Azure Blob Storage with the account key or a managed identity, as ACR redirects to its
    storage) unless ``up --blob-downloads stream``. Otherwise: a plain GET over TLS (always, for acrlocal's own
    listeners) streams the store's pieces: sendfile is impossible through TLS, and the file store reads cached pieces
    without a thread hop (see ``FileBlobStore.read``). A GET with ``Range`` or a conditional header, or over plain
    http, gets aiohttp's ``FileResponse`` for a local file (206 and ``Content-Range``, sendfile). A store without
    local files streams, a single ``Range`` as 206 reading only that range. Memory stays constant either way.
    """
    name = check_repository(route.name)
    digest = parse_digest(route.ref)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (PULL,)))
    size = await services.sql.run(services.meta.blob_size, registry.id, name, str(digest),
                                  refresh_before=housekeeping.refresh_before(services.limits))
    if size is None:
        raise RegistryError("BLOB_UNKNOWN", f"blob {digest} is not in repository {name!r}", {"digest": str(digest)})
    await services.sql.run(guards.check_blob_read, services.artifacts, registry.id, name)
    headers = {CONTENT_DIGEST: str(digest), API_VERSION: API_VERSION_VALUE, hdrs.ACCEPT_RANGES: "bytes"}
    if request.method == "HEAD":
        headers[hdrs.CONTENT_LENGTH] = str(size)
        headers[hdrs.CONTENT_TYPE] = OCTET_STREAM
        return web.Response(status=200, headers=headers)
    await services.sql.run(guards.check_blob_content_read, services.artifacts, registry.id, name, str(digest))
    if services.blob_redirect and (url := await services.blobs.download_url(digest)) is not None:
        headers[hdrs.LOCATION] = url
        return web.Response(status=307, headers=headers)
    if request.transport is not None:
        request.transport.set_write_buffer_limits(high=BLOB_WRITE_HIGH_WATER)
    path = services.blobs.local_path(digest)
    if path is not None and (not request.secure or any(h in request.headers for h in FILE_RESPONSE_HEADERS)):
        response = web.FileResponse(path, headers=headers)
        response.content_type = OCTET_STREAM
        return response
    return await _stream(request, services, digest, size, headers)


async def _stream(request: web.Request, services: RegistryServices, digest: Digest, size: int,
                  headers: dict[str, str]) -> web.StreamResponse:
    """The blob from the store, whole or the one range asked for (``If-Range`` must name its ETag, the digest).
    The first piece is read before the response starts, so a store that cannot be reached is a 503; one lost
    later cuts the response off (the client sees a short body and retries)."""
    first, last = 0, size - 1
    status = 200
    etag = f'"{digest}"'
    headers[hdrs.ETAG] = etag
    range_header = request.headers.get(hdrs.RANGE)
    if range_header is not None and request.headers.get(hdrs.IF_RANGE, etag) == etag:
        byte_range = parse_byte_range(range_header, size)
        if byte_range is not None:
            first, last = byte_range
            status = 206
            headers[hdrs.CONTENT_RANGE] = f"bytes {first}-{last}/{size}"
    length = last - first + 1
    pieces = services.blobs.read(digest, first, length).__aiter__()
    try:
        piece = await anext(pieces, None)
    except NotFound as exc:
        raise RegistryError("BLOB_UNKNOWN", f"blob {digest} has no content in storage", {"digest": str(digest)}) \
            from exc
    stream = web.StreamResponse(status=status, headers=headers)
    stream.content_type = OCTET_STREAM
    stream.content_length = length
    await stream.prepare(request)
    try:
        while piece is not None:
            await stream.write(piece)
            piece = await anext(pieces, None)
    except StorageUnavailable as exc:
        log.warning("GET blob %s cut off: %s", digest, exc)
        raise ConnectionResetError(f"blob storage went away while sending {digest}") from exc
    await stream.write_eof()
    return stream


async def delete_blob(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                      route: Route) -> web.Response:
    """Unlink a blob from the repository (202); its bytes go when no repository links it any more."""
    name = check_repository(route.name)
    digest = parse_digest(route.ref)
    audit.remember(request, await services.authorizer.authorize(request, registry, name, (DELETE,)))
    key = str(digest)
    def unlink() -> bool:
        # Checked and unlinked in one call, so no lock set meanwhile is missed.
        guards.check_blob_delete(services.artifacts, registry.id, name, key)
        if not services.meta.unlink_blob(registry.id, name, key):
            raise RegistryError("BLOB_UNKNOWN", f"blob {digest} is not in repository {name!r}", {"digest": key})
        return services.meta.forget_blob_if_unlinked(key)

    async with locks.digests(key) as held:
        if await services.sql.run_long(unlink):  # two commits (the link, then the blob's row): see run_long
            try:
                await held.verify()
            except LockLost:  # another replica may be publishing it: its bytes stay, reconcile removes them
                log.warning("kept the bytes of %s: its lock went with a cut connection", digest)
            else:
                await services.blobs.delete(digest)
    return empty(202, {CONTENT_DIGEST: key})


@contextlib.contextmanager
def _room() -> Iterator[None]:
    """The store's :class:`StorageFull` as DENIED, with its message (what is free, what is kept)."""
    try:
        yield
    except StorageFull as exc:
        raise RegistryError("DENIED", f"upload refused: {exc}") from exc


def _too_large(services: RegistryServices, size: int) -> RegistryError:
    limit = services.limits.blob_max_bytes
    return RegistryError("DENIED", f"upload refused: the blob would be {size} bytes or more, larger than the {limit} "
                                   "a blob may be (acrlocal up --blob-max-size)")


async def publish(services: RegistryServices, registry: RegistryRecord, name: str, upload_id: str,
                  digest: Digest) -> None:
    """Commit an upload under ``digest`` and link it to the repository; DIGEST_INVALID if it does not match."""
    async with locks.digests(str(digest)) as held:
        try:
            with _room():
                size = await services.blobs.commit(upload_id, digest)
        except DigestMismatch as exc:
            raise RegistryError(
                "DIGEST_INVALID", str(exc), {"expected": str(exc.expected), "actual": str(exc.actual)}
            ) from exc
        except NotFound as exc:
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} has no data any more") from exc
        except UploadRaced as exc:
            raise RegistryError("BLOB_UPLOAD_INVALID", str(exc)) from exc
        await held.verify()  # published bytes no row names yet are a crash's leftovers, which reconcile removes
        await services.sql.run(services.meta.link_blob, registry.id, name, str(digest), size)


# -- uploads ---------------------------------------------------------------------------------------------


async def _append(services: RegistryServices, request: web.Request, name: str, upload_id: str, size: int) -> int:
    """Append the request body to the upload; returns the new size. Checks ``Content-Range`` if given. If the
    body does not arrive whole (a disconnect, a wrong length), what it wrote is cut off again and the error
    raised: the upload is as it was."""
    try:
        with _room():
            return await _append_chunk(services, request, name, upload_id, size)
    except UploadRaced as exc:  # another replica's chunk got in first: nothing of this one was kept
        raise RegistryError("RANGE_INVALID", f"{exc}; ask for the upload's status and resume from its end",
                            headers=_upload_headers(name, upload_id, size)) from exc
    except BaseException:
        with contextlib.suppress(NotFound):
            await services.blobs.truncate(upload_id, size)
        raise


async def _append_chunk(services: RegistryServices, request: web.Request, name: str, upload_id: str, size: int) -> int:
    blob_max = services.limits.blob_max_bytes
    announced = request.content_length or 0
    if size + announced > blob_max:
        raise _too_large(services, size + announced)
    services.blobs.check_room(announced)
    content_range = request.headers.get(hdrs.CONTENT_RANGE)
    if content_range is None:
        try:
            return await services.blobs.append(upload_id, inbound.body_chunks(request), limit=blob_max - size)
        except UploadTooLarge as exc:
            raise _too_large(services, blob_max + 1) from exc
    try:
        start, end = parse_content_range(content_range)
    except RegistryError as err:
        err.headers.update(_upload_headers(name, upload_id, size))
        raise
    if start != size:
        raise RegistryError(
            "RANGE_INVALID",
            f"chunk {start}-{end} does not start where the upload ends (next byte is {size})",
            {"uploaded": size},
            headers=_upload_headers(name, upload_id, size),
        )
    length = end - start + 1
    if end + 1 > blob_max:
        raise _too_large(services, end + 1)
    if request.content_length is not None and request.content_length != length:
        raise RegistryError(
            "SIZE_INVALID",
            f"Content-Length {request.content_length} does not match Content-Range {start}-{end} ({length} bytes)",
        )
    try:
        new_size = await services.blobs.append(upload_id, inbound.body_chunks(request), limit=length)
    except UploadTooLarge:
        new_size = -1
    if new_size != end + 1:
        raise RegistryError("SIZE_INVALID", f"chunk {start}-{end} did not carry {length} bytes; it was discarded")
    return new_size


async def start_upload(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                       route: Route) -> web.Response:
    """POST: mount from another repository (201), a whole blob in one request (201), or open a session (202).

    A whole blob's upload is discarded whenever it is not published (an error, a cancellation); a published one the
    store's commit removed already, so it is not discarded a second time (on Azure, a Delete Blob saved).
    """
    name = check_repository(route.name)
    query = request.query
    mount, source, digest_param = query.get("mount"), query.get("from"), query.get("digest")
    mount_digest = parse_digest(mount) if mount is not None else None
    source_name = check_repository(source) if mount is not None and source else None
    digest = parse_digest(digest_param) if digest_param is not None else None
    caller = audit.remember(request, await services.authorizer.authorize(request, registry, name, (PULL, PUSH)))
    await services.sql.run(guards.check_write, services.artifacts, registry.id, name)

    if mount_digest is not None and source_name is not None and await _mount(
        request, services, registry, caller, name, source_name, mount_digest
    ):
        return empty(201, {"Location": blob_location(name, mount_digest), CONTENT_DIGEST: str(mount_digest)})

    blob_max = services.limits.blob_max_bytes
    if digest is None:
        await _check_session_quota(services, registry, caller)
    elif (request.content_length or 0) > blob_max:
        raise _too_large(services, request.content_length or 0)
    upload_id = secrets.token_urlsafe(32)
    with _room():
        services.blobs.check_room(request.content_length or 0)
        await services.blobs.start_upload(upload_id)
    if digest is not None:
        published = False
        try:
            with _room():
                await services.blobs.append(upload_id, inbound.body_chunks(request), limit=blob_max)
            await publish(services, registry, name, upload_id, digest)
            published = True
        except UploadTooLarge as exc:
            raise _too_large(services, blob_max + 1) from exc
        finally:
            if not published:  # a published upload is gone already: the commit forgets it
                await services.blobs.abort(upload_id)
        return empty(201, {"Location": blob_location(name, digest), CONTENT_DIGEST: str(digest)})
    try:
        await services.sql.run(services.meta.create_upload, upload_id, registry.id, name, caller.principal)
    except BaseException:
        await services.blobs.abort(upload_id)
        raise
    return empty(202, _upload_headers(name, upload_id, 0))


async def _check_session_quota(services: RegistryServices, registry: RegistryRecord, caller: Caller) -> None:
    """429 TOOMANYREQUESTS when the caller already holds ``upload_sessions_max`` open sessions in the registry."""
    limit = services.limits.upload_sessions_max
    if (await services.sql.run(services.meta.count_uploads, registry.id, caller.principal, limit)) >= limit:
        raise RegistryError(
            "TOOMANYREQUESTS",
            f"too many open upload sessions: {caller.principal or 'this caller'} already has {limit} in registry "
            f"{registry.name!r}; complete or cancel some (idle ones expire after "
            f"{services.limits.upload_session_ttl_s} s; acrlocal up --upload-sessions-max)",
        )


async def _mount(
    request: web.Request,
    services: RegistryServices,
    registry: RegistryRecord,
    caller: Caller,
    name: str,
    source: str,
    digest: Digest,
) -> bool:
    """Link ``digest`` from ``source`` if the caller may pull ``source`` and ``source`` has it."""
    if source == name:
        return (await services.sql.run(services.meta.blob_size, registry.id, name, str(digest),
                                       refresh_before=housekeeping.refresh_before(services.limits))) is not None
    if not await services.authorizer.permits(request, caller, registry, source, (PULL,)):
        return False
    if not (await services.sql.run(services.artifacts.locks, registry.id, source)).repository.read_enabled:
        return False  # a read-locked repository lends nothing: the client uploads instead
    if (await services.sql.run(services.artifacts.blob_read_blocker, registry.id, source, str(digest))) is not None:
        return False  # nor does a read-locked manifest lend its layers
    async with locks.digests(str(digest)) as held:
        await held.verify()
        return (await services.sql.run(services.meta.mount_blob, registry.id, source, name, str(digest))) is not None


def _unknown(name: str, upload_id: str) -> RegistryError:
    return RegistryError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id[:80]!r} is not open in repository {name!r}")


async def _caller(
    request: web.Request, services: RegistryServices, registry: RegistryRecord, route: Route,
    actions: tuple[str, ...] = (PULL, PUSH),
) -> tuple[str, str, Caller]:
    """Name, upload id and caller of a request on an upload session, who must hold ``actions``;
    BLOB_UPLOAD_UNKNOWN for an id no upload can have. Whose the session is, :func:`_session` checks under the
    upload's lock."""
    name = check_repository(route.name)
    upload_id = route.ref
    if not UPLOAD_ID.fullmatch(upload_id):
        raise _unknown(name, upload_id)
    caller = audit.remember(request, await services.authorizer.authorize(request, registry, name, actions))
    return name, upload_id, caller


async def _session(services: RegistryServices, registry: RegistryRecord, name: str, upload_id: str,
                   caller: Caller) -> UploadSession:
    """The session's row, read under the upload's lock (so no other replica's chunk lands between this read and
    the work that follows); BLOB_UPLOAD_UNKNOWN unless the session exists under this registry and repository and
    belongs to ``caller``."""
    session = await services.sql.run(services.meta.get_upload, upload_id)
    if (
        session is None
        or session.registry_id != registry.id
        or session.repository != name
        or session.principal != caller.principal
    ):
        raise _unknown(name, upload_id)
    return session


async def _size(services: RegistryServices, upload_id: str, session: UploadSession) -> int:
    """The bytes the session's acknowledged chunks carried (``session`` read under the upload's lock, which is
    held). What the upload holds beyond that (a chunk cut off by a crash) is cut off; an upload that lost
    acknowledged bytes is BLOB_UPLOAD_UNKNOWN."""
    stored = await services.blobs.upload_size(upload_id)
    acknowledged = stored if session.size is None else session.size
    if stored is None or acknowledged is None or stored < acknowledged:
        await services.sql.run(services.meta.delete_upload, upload_id)
        await services.blobs.abort(upload_id)
        raise RegistryError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} has no data any more")
    if stored > acknowledged:
        try:
            await services.blobs.truncate(upload_id, acknowledged)
        except NotFound as exc:
            await services.sql.run(services.meta.delete_upload, upload_id)
            await services.blobs.abort(upload_id)
            raise RegistryError("BLOB_UPLOAD_UNKNOWN", f"upload {upload_id} has no data any more") from exc
    return acknowledged


async def upload_status(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                        route: Route) -> web.Response:
    """GET: 204 with ``Range`` (bytes received so far) and ``Location``. A read, so it needs ``pull`` only (as in
    Distribution): a client that holds a pull token for its GETs, as the OCI conformance suite does, gets the
    status of the session it opened."""
    name, upload_id, caller = await _caller(request, services, registry, route, (PULL,))
    async with locks.uploads(upload_id):
        size = await _size(services, upload_id, await _session(services, registry, name, upload_id, caller))
    return empty(204, _upload_headers(name, upload_id, size))


async def patch_upload(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                       route: Route) -> web.Response:
    """PATCH: append a chunk (with ``Content-Range``) or a stream (without); 202 with the new ``Range``."""
    name, upload_id, caller = await _caller(request, services, registry, route)
    async with locks.uploads(upload_id) as held:
        size = await _size(services, upload_id, await _session(services, registry, name, upload_id, caller))
        size = await _append(services, request, name, upload_id, size)
        await held.verify()  # bytes past the acknowledged size are cut off by the next request
        await services.sql.run(services.meta.touch_upload, upload_id, size)
    return empty(202, _upload_headers(name, upload_id, size))


async def put_upload(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                     route: Route) -> web.Response:
    """PUT ?digest=: append a final chunk if the request has one, then publish; 201 with the blob's location.

    A digest mismatch discards the upload (DIGEST_INVALID); a malformed final chunk leaves the session open.
    """
    name, upload_id, caller = await _caller(request, services, registry, route)
    digest_param = request.query.get("digest")
    async with locks.uploads(upload_id) as held:
        session = await _session(services, registry, name, upload_id, caller)
        if digest_param is None:
            raise RegistryError("DIGEST_INVALID", "closing an upload needs ?digest=<digest> of the whole blob")
        digest = parse_digest(digest_param)
        await services.sql.run(guards.check_write, services.artifacts, registry.id, name)
        size = await _size(services, upload_id, session)
        if request.can_read_body:
            await _append(services, request, name, upload_id, size)
        await held.verify()
        try:
            await publish(services, registry, name, upload_id, digest)
        finally:
            with contextlib.suppress(NotFound):
                await services.sql.run(services.meta.delete_upload, upload_id)
    return empty(201, {"Location": blob_location(name, digest), CONTENT_DIGEST: str(digest)})


async def cancel_upload(request: web.Request, services: RegistryServices, registry: RegistryRecord,
                        route: Route) -> web.Response:
    """DELETE: discard the session and what it received (204)."""
    name, upload_id, caller = await _caller(request, services, registry, route)
    async with locks.uploads(upload_id):
        await _session(services, registry, name, upload_id, caller)
        await services.sql.run(services.meta.delete_upload, upload_id)
        await services.blobs.abort(upload_id)
    return empty(204, {})
