"""Copy every published blob of one :class:`~acrlocal.storage.blobs.BlobStore` into another: a data directory's
files into an Azure Blob Storage container (``acrlocal migrate --blobs-to``), or back (``--blobs-from``).

Each blob goes through the target's own upload path (``start_upload``, ``append``, ``commit``), so the target checks
its digest as it would a push's: a source file whose bytes no longer match its name is reported, not copied, and
the copy goes on. A blob the target already has is skipped, so a copy that was interrupted (or run twice) continues
where it stopped. Upload sessions in progress are not copied (their clients start them again). A few blobs are
copied at once (:data:`AT_ONCE`): storage over a network is bound by latency more than by bandwidth. ``progress``
is called after each blob with the blobs and bytes done and the totals.

Errors: the stores' own (:class:`~acrlocal.storage.blobs.StorageUnavailable`, :class:`OSError`) end the copy; what
was copied stays, and the next run skips it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from acrlocal.errors import NotFound
from acrlocal.storage.blobs import BlobStore, DigestMismatch
from acrlocal.storage.digest import Digest

AT_ONCE = 4

#: ``(blobs done, blobs in all, bytes done, bytes in all)``
BlobProgress = Callable[[int, int, int, int], None]


@dataclass
class CopiedBlobs:
    copied: int = 0
    skipped: int = 0  # the target had them already
    bytes: int = 0
    damaged: list[str] = field(default_factory=list)  # in the source, bytes that do not match their digest
    vanished: list[str] = field(default_factory=list)  # listed, then gone before they were read

    def render(self) -> dict[str, object]:
        return {"blobsCopied": self.copied, "blobsAlreadyThere": self.skipped, "bytesCopied": self.bytes,
                "damagedBlobs": self.damaged, "vanishedBlobs": self.vanished}


async def _pieces(source: BlobStore, digest: Digest) -> AsyncIterator[bytes]:
    async for piece in source.read(digest):
        yield piece if isinstance(piece, bytes) else bytes(piece)


async def copy_blobs(source: BlobStore, target: BlobStore, progress: BlobProgress | None = None) -> CopiedBlobs:
    """Copy what ``source`` stores into ``target`` (see the module's description)."""
    listed = [digest async for digest, _ in source.stored()]
    sizes: dict[Digest, int] = {}
    for digest in listed:
        size = await source.size(digest)
        if size is not None:
            sizes[digest] = size
    total_bytes = sum(sizes.values())
    result = CopiedBlobs()
    done = [0, 0]  # blobs, bytes
    queue: asyncio.Queue[Digest] = asyncio.Queue()
    for digest in listed:
        queue.put_nowait(digest)

    async def one(digest: Digest) -> None:
        size = sizes.get(digest)
        if size is None:
            result.vanished.append(str(digest))
            return
        if await target.exists(digest):
            result.skipped += 1
            return
        upload_id = f"migrate-{secrets.token_hex(12)}"
        await target.start_upload(upload_id)
        try:
            await target.append(upload_id, _pieces(source, digest))
            await target.commit(upload_id, digest)
        except DigestMismatch:
            result.damaged.append(str(digest))
            return
        except NotFound:
            result.vanished.append(str(digest))
            return
        finally:
            await target.abort(upload_id)  # nothing left behind, whatever happened (a no-op once committed)
        result.copied += 1
        result.bytes += size

    async def worker() -> None:
        while not queue.empty():
            digest = queue.get_nowait()
            await one(digest)
            done[0] += 1
            done[1] += sizes.get(digest, 0)
            if progress is not None:
                progress(done[0], len(listed), done[1], total_bytes)

    if progress is not None and not listed:
        progress(0, 0, 0, 0)
    await asyncio.gather(*(worker() for _ in range(min(AT_ONCE, len(listed)))))
    return result
