"""Content-addressed blob storage behind :class:`BlobStore`, and its file-system implementation.

A blob becomes visible only through :meth:`BlobStore.commit`, which checks the digest of what was written and
then publishes it atomically; until then it lives in an upload area that is invisible to readers. A failed,
cancelled or mismatched upload therefore leaves nothing visible, and a process killed at any moment leaves at
worst an orphaned upload that :meth:`FileBlobStore.sweep` removes. Each blob is stored once, however many
repositories link to it: repository membership is metadata, not storage.

The other implementation is :class:`acrlocal.storage.azure_blobs.AzureBlobStore` (``acrlocal up --blob-store``):
uploads are staged blocks, ``commit`` a block-list commit plus a copy to the digest's name, ``local_path`` is
``None`` (readers use ``read``, or the client is sent to ``download_url``). Storage that cannot be reached raises
:class:`StorageUnavailable` from any method.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Protocol

from acrlocal.errors import AcrLocalError, NotFound
from acrlocal.storage import sha256state
from acrlocal.storage.digest import ALGORITHMS, Digest

CHUNK = 1024 * 1024
#: Beside ``_uploads/<id>``: the upload's saved running SHA-256 (:class:`FileBlobStore`).
STATE_SUFFIX = ".sha256"
# Reads for responses. Over TLS each piece in flight is held about three times (the piece, its encrypted copy
# waiting in the TLS layer, and what the socket did not take yet). Measured with 4 parallel skopeo pulls (16 blob
# streams): server peak RSS 101-102 MiB with 256 KiB pieces, 93-94 MiB with 128 KiB, server CPU the same (no
# thread hop per piece any more); 4 parallel curl GETs equally fast within the noise.
READ_CHUNK = 128 * 1024


class DigestMismatch(AcrLocalError, ValueError):
    """What was uploaded does not hash to the digest the client named."""

    def __init__(self, expected: Digest, actual: Digest) -> None:
        super().__init__(f"uploaded content has digest {actual}, not the {expected} the client gave")
        self.expected = expected
        self.actual = actual


class UploadTooLarge(AcrLocalError, ValueError):
    """An upload went past the size the caller allowed."""


class StorageFull(AcrLocalError, OSError):
    """The store has no room for what is being written: its disk is below the free space it must keep, or the
    disk is full (ENOSPC, EDQUOT). What the failed write added is the caller's to cut off (``truncate``)."""


class StorageUnavailable(AcrLocalError, OSError):
    """The store cannot be reached or answers with a server error now; the request may be tried again later (the
    registry answers 503 with ``Retry-After``)."""


class UploadRaced(AcrLocalError, RuntimeError):
    """Another request (possibly on another replica) changed the upload at the same time; this one's change was not
    kept, and the upload is as the other request left it."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def _full_disk_is_storage_full(what: str) -> Iterator[None]:
    try:
        yield
    except StorageFull:
        raise
    except OSError as exc:
        if exc.errno in _FULL:
            raise StorageFull(f"no room on the registry's disk for {what}: {os.strerror(exc.errno)}") from exc
        raise


class BlobStore(Protocol):
    """Where blob bytes live. Every method is safe to call concurrently for different uploads and digests."""

    async def size(self, digest: Digest) -> int | None:
        """The blob's size, or ``None`` if it is not stored."""

    def local_path(self, digest: Digest) -> Path | None:
        """A file the server may ``sendfile`` from, or ``None`` if this store is not on the local disk."""

    def read(self, digest: Digest, offset: int = 0, length: int | None = None) -> AsyncIterator[bytes | bytearray]:
        """The blob's bytes from ``offset``, in pieces the caller may keep; raises :class:`NotFound` if it is not
        stored."""

    async def download_url(self, digest: Digest) -> str | None:
        """A short-lived URL a client may read the blob from directly (the registry redirects to it), or ``None``
        if this store has none; :class:`StorageUnavailable` if making one needs storage, which cannot be reached."""

    def check_room(self, nbytes: int) -> None:
        """Raise :class:`StorageFull` if writing ``nbytes`` more would leave less free space than the store keeps."""

    async def close(self) -> None:
        """Release connections (the server calls it once, at shutdown)."""

    async def start_upload(self, upload_id: str) -> None: ...

    async def upload_size(self, upload_id: str) -> int | None:
        """Bytes received so far, or ``None`` if there is no such upload."""

    async def append(self, upload_id: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int:
        """Append ``chunks`` to the upload and return its new size. ``limit`` caps the bytes taken from
        ``chunks`` (:class:`UploadTooLarge` past it); :class:`StorageFull` when the disk has no room;
        :class:`UploadRaced` when another request appended at the same time (nothing of ``chunks`` is kept). On
        other errors the upload keeps what was written before, and possibly part of ``chunks``."""

    async def truncate(self, upload_id: str, size: int) -> None:
        """Cut an upload back to ``size`` bytes (to undo a chunk that did not arrive as announced)."""

    async def commit(self, upload_id: str, digest: Digest) -> int:
        """Check the upload hashes to ``digest``, publish it under that digest and forget the upload.

        Returns the blob's size. Raises :class:`DigestMismatch` (the upload is then discarded) or
        :class:`NotFound` for an unknown upload."""

    async def abort(self, upload_id: str) -> None:
        """Discard an upload; unknown ids are ignored."""

    async def delete(self, digest: Digest) -> None:
        """Remove a blob's bytes; readers that already opened it finish their read."""

    async def sweep(self, keep: set[str], older_than_s: float = 0.0) -> int:
        """Discard uploads whose id is not in ``keep`` and that were idle ``older_than_s``; how many."""

    def stored(self) -> AsyncIterator[tuple[Digest, float]]:
        """Every published blob with the time it was written."""

    async def exists(self, digest: Digest) -> bool:
        """Whether the blob is stored."""


#: ``sync_file_range``'s flag that starts writing a range's dirty pages back and returns (linux/fs.h).
SYNC_FILE_RANGE_WRITE = 2


@functools.cache
def _sync_file_range() -> Any:
    """libc's ``sync_file_range`` (Linux; ``os`` has no binding), or ``None`` where there is none."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def start_writeback(fd: int, offset: int, length: int) -> bool:
    """Start writing the range's dirty pages to the disk, without waiting for them (as PostgreSQL's
    ``backend_flush_after`` does), so that the ``fdatasync`` that publishes the upload finds little left to do.
    Best effort, never raises: where ``sync_file_range`` is missing or refuses the file (``False``), it is all left
    to that ``fdatasync``."""
    fn = _sync_file_range()
    return fn is not None and fn(fd, offset, length, SYNC_FILE_RANGE_WRITE) == 0


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _boot_id() -> bytes:
    """This boot of the machine: a saved hash state is trusted only within the boot that wrote it, since a crash of
    the machine may lose written bytes that the state counts. ``b""`` where the kernel does not say."""
    try:
        with open("/proc/sys/kernel/random/boot_id", "rb") as f:
            return f.read(64).strip()
    except OSError:
        return b""


class _Hashing:
    """Running sha256 of an upload's first ``offset`` bytes."""

    __slots__ = ("hasher", "offset")

    def __init__(self, hasher: Any = None, offset: int = 0) -> None:
        self.hasher = hasher if hasher is not None else hashlib.sha256()
        self.offset = offset


class FileBlobStore:
    """Blobs under ``root/<algorithm>/<2 hex>/<hex>``; uploads under ``root/_uploads/<id>``.

    Publishing is ``fsync`` then ``rename`` then ``fsync`` of the directory, so a blob is either whole and
    named by its digest or absent. Each piece's writeback starts as it is written (:func:`start_writeback`), so
    that ``fsync`` mostly waits for writes already under way. File work runs in the default executor; hashing
    releases the GIL on large buffers, so uploads hash on both cores.

    The running SHA-256 of an upload is saved after each append in ``_uploads/<id>.sha256`` (OpenSSL's state,
    :mod:`acrlocal.storage.sha256state`, with the machine's boot id), so that whichever worker process takes the
    next chunk or the commit goes on from it instead of reading the upload back. The state is removed before an
    upload is cut back, and used only if it counts no more bytes than the file holds (what is past it is hashed
    from the file). Where libcrypto cannot save states, each process keeps its own in memory and reads back what
    another wrote.
    """

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = root
        self.uploads = root / "_uploads"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.min_free_bytes = min_free_bytes
        self._hashing: dict[str, _Hashing] = {}  # only where states cannot be saved
        self._resumable = sha256state.available()
        self._boot = _boot_id()
        self._nowait = hasattr(os, "RWF_NOWAIT")

    # -- room --------------------------------------------------------------------------------------

    def free_bytes(self) -> int:
        """Free space on the store's file system, as an unprivileged writer sees it."""
        stat = os.statvfs(self.root)
        return stat.f_bavail * stat.f_frsize

    def check_room(self, nbytes: int) -> None:
        """:class:`StorageFull` if ``nbytes`` more would leave less than ``min_free_bytes`` free (one statvfs)."""
        if not self.min_free_bytes:
            return
        free = self.free_bytes()
        if free - nbytes < self.min_free_bytes:
            raise StorageFull(
                f"the registry's disk has {free} bytes free; writing {nbytes} more would leave less than the "
                f"{self.min_free_bytes} it keeps free (acrlocal up --min-free-space)"
            )

    # -- reading -----------------------------------------------------------------------------------

    def path(self, digest: Digest) -> Path:
        return self.root / digest.algorithm / digest.encoded[:2] / digest.encoded

    def local_path(self, digest: Digest) -> Path | None:
        return self.path(digest)

    async def download_url(self, digest: Digest) -> str | None:
        return None

    async def close(self) -> None:
        """Nothing to release: files are opened per request."""

    async def size(self, digest: Digest) -> int | None:
        try:
            return os.stat(self.path(digest)).st_size
        except FileNotFoundError:
            return None

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes | bytearray]:
        """The blob's bytes in pieces of :data:`READ_CHUNK` (each a fresh ``bytearray``, never reused).

        Pieces already in the page cache are read on the event loop with ``RWF_NOWAIT``, which never blocks;
        only a piece that must come from the disk goes to the executor. A thread hop per piece cost more than
        the copy: serving blobs over TLS (4 parallel 128 MiB GETs with curl) took 38% less server CPU and ran
        43-53% faster this way (benchmarks/registry.py, same-run A/B).
        """
        try:
            fd = os.open(self.path(digest), os.O_RDONLY)
        except FileNotFoundError as exc:
            raise NotFound(f"blob {digest} is not stored") from exc
        loop = asyncio.get_running_loop()
        try:
            position = offset
            remaining = length
            while remaining is None or remaining > 0:
                n = READ_CHUNK if remaining is None else min(READ_CHUNK, remaining)
                buf = bytearray(n)
                got = -1
                if self._nowait:
                    try:
                        got = os.preadv(fd, [buf], position, os.RWF_NOWAIT)
                    except BlockingIOError:
                        pass  # not (all) in the page cache: read it in the executor
                    except OSError as exc:
                        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                            raise
                        self._nowait = False  # a file system without RWF_NOWAIT
                if got < 0:
                    got = await loop.run_in_executor(None, os.preadv, fd, [buf], position)
                if got == 0:
                    break
                position += got
                if remaining is not None:
                    remaining -= got
                yield buf if got == n else buf[:got]
        finally:
            os.close(fd)

    # -- uploads -----------------------------------------------------------------------------------

    def _upload_path(self, upload_id: str) -> Path:
        if not upload_id or "/" in upload_id or "." in upload_id:  # ids are token_urlsafe: no dots
            raise NotFound(f"upload {upload_id!r} does not exist")
        return self.uploads / upload_id

    def _state_path(self, upload_id: str) -> Path:
        return self.uploads / f"{upload_id}{STATE_SUFFIX}"

    async def start_upload(self, upload_id: str) -> None:
        path = self._upload_path(upload_id)
        self.check_room(0)
        with _full_disk_is_storage_full("a new upload"):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        if not self._resumable:
            self._hashing[upload_id] = _Hashing()

    async def upload_size(self, upload_id: str) -> int | None:
        try:
            return os.stat(self._upload_path(upload_id)).st_size
        except (FileNotFoundError, NotFound):
            return None

    def _hashing_for(self, upload_id: str, path: Path) -> _Hashing:
        """The running hash of all the upload's bytes: the saved state (or, where there is none, this process's),
        with whatever the file holds past it hashed from the file."""
        size = os.stat(path).st_size
        state = self._load_state(upload_id) if self._resumable else self._hashing.get(upload_id)
        if state is None or state.offset > size or (not self._resumable and state.offset != size):
            state = _Hashing(sha256state.ResumableSha256() if self._resumable else None)
        if state.offset < size:
            self._read_back(path, state)
        if not self._resumable:
            self._hashing[upload_id] = state
        return state

    def _read_back(self, path: Path, state: _Hashing) -> None:
        """Hash the file's bytes from ``state.offset`` on into ``state``."""
        with open(path, "rb") as f:
            f.seek(state.offset)
            while data := f.read(CHUNK):
                state.hasher.update(data)
                state.offset += len(data)

    def _load_state(self, upload_id: str) -> _Hashing | None:
        """The state :meth:`_save_state` wrote, or ``None`` if there is none, it does not parse, or another boot of
        the machine wrote it."""
        try:
            saved = self._state_path(upload_id).read_bytes()
        except FileNotFoundError:
            return None
        boot, _, state = saved.partition(b"\n")
        if not self._boot or boot != self._boot:
            return None
        try:
            hasher = sha256state.ResumableSha256.load(state)
        except sha256state.StateError:
            return None
        return _Hashing(hasher, hasher.length)

    def _save_state(self, upload_id: str, state: _Hashing) -> None:
        """Write the state beside the upload (a new file renamed over the old one: never half-written)."""
        final = self._state_path(upload_id)
        temporary = final.with_name(final.name + ".new")
        assert isinstance(state.hasher, sha256state.ResumableSha256)
        temporary.write_bytes(self._boot + b"\n" + state.hasher.save())
        os.replace(temporary, final)

    def _forget_state(self, upload_id: str) -> None:
        self._hashing.pop(upload_id, None)
        self._state_path(upload_id).unlink(missing_ok=True)

    async def append(self, upload_id: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int:
        path = self._upload_path(upload_id)
        loop = asyncio.get_running_loop()
        try:
            state = await loop.run_in_executor(None, self._hashing_for, upload_id, path)
        except FileNotFoundError as exc:
            raise NotFound(f"upload {upload_id!r} does not exist") from exc
        taken = 0

        def write(f: object, buf: bytes) -> None:
            self.check_room(len(buf))  # one statvfs a piece (1 MiB): microseconds, in the executor
            view = memoryview(buf)
            while view:  # an unbuffered write may take part of the piece
                view = view[f.write(view):]  # type: ignore[attr-defined]
            # The piece goes to the disk while the next ones arrive: the publishing fdatasync of a 128 MiB layer
            # cost its push 15% of its throughput when it had to write all of it (benchmarks/registry.py).
            start_writeback(f.fileno(), state.offset, len(buf))  # type: ignore[attr-defined]
            state.hasher.update(buf)
            state.offset += len(buf)

        # Double-buffered: while one 1 MiB piece is hashed and written in the executor, the event loop goes on
        # receiving (and decrypting) the next one, so the two run on both cores. Pieces are written in order.
        # Unbuffered, so that a full disk fails the write it belongs to, not a later flush.
        with _full_disk_is_storage_full(f"upload {upload_id}"), open(path, "ab", buffering=0) as f:
            pending: list[bytes] = []
            pending_size = 0
            in_flight: asyncio.Future[None] | None = None
            try:
                async for chunk in chunks:
                    taken += len(chunk)
                    if limit is not None and taken > limit:
                        raise UploadTooLarge(f"upload {upload_id} went past {limit} bytes")
                    pending.append(chunk)
                    pending_size += len(chunk)
                    if pending_size >= CHUNK:
                        buf = b"".join(pending)
                        pending, pending_size = [], 0
                        if in_flight is not None:
                            await in_flight
                        in_flight = loop.run_in_executor(None, write, f, buf)
            finally:
                if in_flight is not None:
                    await in_flight
                if pending:
                    await loop.run_in_executor(None, write, f, b"".join(pending))
        if self._resumable:
            await loop.run_in_executor(None, self._save_state, upload_id, state)
        return state.offset

    async def truncate(self, upload_id: str, size: int) -> None:
        path = self._upload_path(upload_id)
        self._forget_state(upload_id)  # first: it may count bytes that are cut off (rebuilt from the file)
        try:
            os.truncate(path, size)
        except FileNotFoundError as exc:
            raise NotFound(f"upload {upload_id!r} does not exist") from exc

    def _publish(self, upload_id: str, digest: Digest) -> int:
        path = self._upload_path(upload_id)
        if digest.algorithm == "sha256":
            state = self._hashing_for(upload_id, path)
        else:  # the running hash is SHA-256's: another algorithm reads the upload once, here
            state = _Hashing(hashlib.new(digest.algorithm))
            self._read_back(path, state)
        actual = Digest(digest.algorithm, state.hasher.hexdigest())
        if actual != digest:
            self._discard(upload_id)
            raise DigestMismatch(digest, actual)
        size = state.offset
        final = self.path(digest)
        if final.exists():
            self._discard(upload_id)
            return size
        with _full_disk_is_storage_full(f"blob {digest}"):
            self._make_parent(final.parent)
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(fd)
        finally:
            os.close(fd)
        os.replace(path, final)
        _fsync_directory(final.parent)
        self._forget_state(upload_id)
        return size

    @staticmethod
    def _make_parent(directory: Path) -> None:
        """Make a blob's directory (``<algorithm>/<2 hex>``) if needed, each new directory fsynced in its parent, so
        that the path of a blob published into it survives a crash."""
        for level in (directory.parent, directory):
            if level.is_dir():
                continue
            with contextlib.suppress(FileExistsError):
                level.mkdir()
            _fsync_directory(level.parent)

    async def commit(self, upload_id: str, digest: Digest) -> int:
        try:
            return await asyncio.get_running_loop().run_in_executor(None, self._publish, upload_id, digest)
        except FileNotFoundError as exc:
            raise NotFound(f"upload {upload_id!r} does not exist") from exc

    def _discard(self, upload_id: str) -> None:
        with contextlib.suppress(NotFound):
            self._upload_path(upload_id).unlink(missing_ok=True)
            self._forget_state(upload_id)

    async def abort(self, upload_id: str) -> None:
        self._discard(upload_id)

    async def delete(self, digest: Digest) -> None:
        self.path(digest).unlink(missing_ok=True)

    # -- housekeeping ------------------------------------------------------------------------------

    async def stored(self) -> AsyncIterator[tuple[Digest, float]]:
        """:meth:`stored_files`, walked in a thread."""
        for item in await asyncio.to_thread(lambda: list(self.stored_files())):
            yield item

    def stored_files(self) -> Iterator[tuple[Digest, float]]:
        """Files named like blobs (``<algorithm>/<2 hex>/<hex>`` with the hex starting with those 2), and their
        modification time; anything else under the root is not a blob and is left alone."""
        for algorithm in sorted(ALGORITHMS):
            base = self.root / algorithm
            if not base.is_dir():
                continue
            for prefix in sorted(os.listdir(base)):
                directory = base / prefix
                try:
                    names = sorted(os.listdir(directory))
                except (NotADirectoryError, FileNotFoundError):
                    continue
                for name in names:
                    if not name.startswith(prefix):
                        continue
                    try:
                        digest = Digest.parse(f"{algorithm}:{name}")
                        yield digest, os.stat(directory / name).st_mtime
                    except (ValueError, FileNotFoundError):
                        continue

    async def exists(self, digest: Digest) -> bool:
        return await asyncio.to_thread(self.path(digest).is_file)

    async def sweep(self, keep: set[str], older_than_s: float = 0.0) -> int:
        return await asyncio.to_thread(self.sweep_files, keep, older_than_s)

    def sweep_files(self, keep: set[str], older_than_s: float = 0.0) -> int:
        """Remove upload files whose id is not in ``keep`` (orphans of a crash). Returns how many."""
        removed = 0
        cutoff = time.time() - older_than_s
        for entry in self.uploads.iterdir():
            if entry.name.partition(".")[0] in keep:  # an upload and its saved state (<id>.sha256[.new])
                continue
            try:
                if entry.stat().st_mtime <= cutoff:
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
