"""Keeping the blob store and the blob rows in step: reconciliation after a crash, and garbage collection.

:func:`collect` is the registry's garbage collection (the ARM action ``registries/{name}/garbageCollect``,
``acrlocal admin gc``), online: it removes the links of blobs that no manifest of their repository references and
that were not used for ``limits.blob_gc_grace_s``, then deletes the bytes of blobs no repository links any more.

The race of mark-and-sweep against a push (a client uploads or finds a layer, then pushes the manifest naming it) is
closed in the database, whichever process or replica serves the push: a manifest PUT checks the links it names under
the lock its write commits under (SQLite's write lock; on PostgreSQL a share lock on each link row), and each batch
of unlinking locks its candidate links (skipping those a PUT holds) and deletes only those still unreferenced by
what has committed. So the PUT either commits first and its links stay, or finds a link gone and fails with
MANIFEST_BLOB_UNKNOWN, storing nothing; never a manifest whose blob is gone. The grace period only makes that
failure rare: uploading, mounting or reading a blob (a client's ``HEAD`` before it skips an upload) marks its link
used (:func:`refresh_before`: at most once per half grace period, so ``HEAD`` stays a read). Bytes are deleted under
the digest's lock and only if the blob is still unlinked.

One collection runs at a time across every process and replica on the database (:class:`Collection`, the store's
``collection`` lock: an advisory lock on PostgreSQL, a file lock beside a SQLite database, verified at each batch so
that one lost with its connection stops the pass with the database's 503): the ARM action waits a
while for another to end (:class:`CollectionRunning` after that); the sweeper's and the start's passes skip a turn.

:func:`reconcile` runs at every start. A crash between publishing a blob's file and committing its row (or between
forgetting a row and unlinking its file) leaves a file that no row names: such files are removed once they are
older than ``limits.blob_gc_grace_s``. A row whose file is gone (the disk lost it, someone deleted it) is reported
in the log and forgotten with its links, so clients see BLOB_UNKNOWN and push the blob again instead of getting a
blob that cannot be read.

Every change to one digest happens under its lock (:data:`acrlocal.registry.locks.digests`), the lock publication
and deletion take, and is checked again under it (bytes are deleted only once the lock is verified still held: a
lock lost with a cut connection ends the pass with the database's 503), so this may run while the registry serves.
The store is listed once (a file store walks its files in a thread) and the database is asked in batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from acrlocal.config import Limits
from acrlocal.errors import AcrLocalError
from acrlocal.registry import locks
from acrlocal.storage.blobs import BlobStore
from acrlocal.storage.digest import Digest
from acrlocal.storage.metadata import RegistryMetadata
from acrlocal.storage.sql import SqlThread

log = logging.getLogger(__name__)

BATCH = 500


@dataclass
class Reconciled:
    """What :func:`reconcile` did: files no row named that it removed, those it kept as too recent, and rows whose
    file was gone that it forgot."""

    removed_files: list[str] = field(default_factory=list)
    recent_files: int = 0
    lost_blobs: list[str] = field(default_factory=list)

    def render(self) -> dict[str, object]:
        return {"orphanFilesRemoved": self.removed_files, "orphanFilesKept": self.recent_files,
                "lostBlobsForgotten": self.lost_blobs}


async def reconcile(meta: RegistryMetadata, sql: SqlThread, store: BlobStore, grace_s: float,
                    now: float | None = None) -> Reconciled:
    """Remove blob files no row names (older than ``grace_s``) and forget rows whose file is gone. The caller
    holds the :class:`Collection`; store calls run through ``sql``."""
    now = time.time() if now is None else now
    cutoff = now - grace_s
    result = Reconciled()

    files = [item async for item in store.stored()]
    listed = {str(digest) for digest, _ in files}
    for start in range(0, len(files), BATCH):
        await sql.run(meta.collection.verify)
        batch = files[start:start + BATCH]
        known = await sql.run(meta.known_blobs, [str(d) for d, _ in batch])
        for digest, written in batch:
            if str(digest) in known:
                continue
            if written > cutoff:
                result.recent_files += 1
                continue
            async with locks.digests(str(digest)) as held:
                if not await sql.run(meta.known_blobs, [str(digest)]):
                    await held.verify()
                    await store.delete(digest)
                    result.removed_files.append(str(digest))

    after: str | None = None
    while page := await sql.run(meta.blob_page, after, BATCH):
        await sql.run(meta.collection.verify)
        after = page[-1]
        # A row the listing lacks is checked again under its lock: its blob may have been published since.
        for digest in (Digest.parse(text) for text in page if text not in listed):
            async with locks.digests(str(digest)) as held:
                if await sql.run(meta.known_blobs, [str(digest)]) and not await store.exists(digest):
                    await held.verify()
                    links = await sql.run(meta.forget_lost_blob, str(digest))
                    result.lost_blobs.append(str(digest))
                    log.warning("blob %s had a row but no file (lost from the disk); forgot it and its %d "
                                "repository links: clients will push it again", digest, links)
    if result.removed_files:
        log.info("removed %d blob files that no row named (a crash's leftovers)", len(result.removed_files))
    return result


def refresh_before(limits: Limits) -> float:
    """Links last used before this time are marked used when a request uses them (half the grace period ago)."""
    return time.time() - limits.blob_gc_grace_s / 2


@dataclass
class Collected:
    unlinked: list[tuple[str, str]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    bytes_freed: int = 0

    def render(self) -> dict[str, object]:
        return {"linksRemoved": [{"repository": r, "digest": d} for r, d in self.unlinked],
                "blobsDeleted": self.deleted, "bytesFreed": self.bytes_freed}


class CollectionRunning(AcrLocalError, RuntimeError):
    """Another process or replica is collecting garbage on the same database, and did not finish in time."""


class Collection:
    """``async with Collection(meta, sql, wait_s)``: hold the store's collection lock, trying again (without
    blocking the event loop) for up to ``wait_s`` seconds while another holder has it, then raising
    :class:`CollectionRunning`; released on the way out, whatever happened inside."""

    def __init__(self, meta: RegistryMetadata, sql: SqlThread, wait_s: float = 0.0) -> None:
        self.meta, self.sql, self.wait_s = meta, sql, wait_s

    async def __aenter__(self) -> None:
        deadline = time.monotonic() + self.wait_s
        delay = 0.01
        while not await self.sql.run(self.meta.collection.acquire):
            if time.monotonic() >= deadline:
                raise CollectionRunning("another garbage collection is running on this registry's database (another "
                                        f"process or replica started it); it did not end within {self.wait_s:g} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

    async def __aexit__(self, *exc: object) -> None:
        await self.sql.run(self.meta.collection.release)


async def collect(meta: RegistryMetadata, sql: SqlThread, store: BlobStore, registry_id: int, grace_s: float,
                  now: float | None = None) -> Collected:
    """Unlink the registry's unreferenced blobs not used within ``grace_s``, then delete the bytes of every blob
    that no repository links. The caller holds the :class:`Collection`; store calls run through ``sql``."""
    now = time.time() if now is None else now
    result = Collected()
    while True:
        await sql.run(meta.collection.verify)  # each batch: a lock lost with its connection stops the collection
        batch = await sql.run(meta.unlink_unreferenced, registry_id, now - grace_s, BATCH)
        if not batch:
            break
        result.unlinked += batch
        await asyncio.sleep(0)  # let requests in between batches
    while True:
        await sql.run(meta.collection.verify)
        candidates = [d for d in await sql.run(meta.unlinked_blobs, BATCH) if d not in result.deleted]
        if not candidates:
            break
        for text in candidates:
            freed = await delete_unlinked(meta, sql, store, text)
            if freed is not None:
                result.deleted.append(text)
                result.bytes_freed += freed
    return result


async def delete_unlinked(meta: RegistryMetadata, sql: SqlThread, store: BlobStore, text: str) -> int | None:
    """Forget blob ``text`` and delete its bytes if no repository links it, checked again under its digest lock;
    the bytes freed (0 if the store cannot say), or ``None`` if it is linked again or already gone. A lock lost
    with a cut connection raises :class:`~acrlocal.storage.sql.LockLost` once the row is forgotten: the bytes
    stay, a leftover that :func:`reconcile` removes."""
    digest = Digest.parse(text)
    async with locks.digests(text) as held:
        if not await sql.run(meta.forget_blob_if_unlinked, text):
            return None
        await held.verify()
        size = await store.size(digest)  # the bytes are still there: nobody publishes the digest while it is held
        await store.delete(digest)
        return size or 0
