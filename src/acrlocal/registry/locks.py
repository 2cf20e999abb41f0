"""Per-key locks (one per upload id, one per blob digest) that hold across the processes of one server.

They serialise what must not interleave: two requests appending to one upload, and a blob's publication racing
its deletion (publish-if-absent then link, versus unlink then delete-if-unlinked). A key falls in one of
:data:`SLOTS` slots; within a process an asyncio lock per slot (kept only while someone holds or waits) orders the
coroutines, and once :meth:`KeyedLocks.share` has named a file, a POSIX record lock on the slot's byte of that file
orders the processes (``acrlocal up --workers``). The record lock is taken without blocking the event loop: tried,
and tried again after a short sleep (1 ms, doubling up to 20 ms) while another process holds it. Keys that share a
slot wait for each other; nothing else does. A process that dies releases its record locks with it. Replicas on
several machines over PostgreSQL hold a slot's advisory lock instead (:meth:`KeyedLocks.share_database`, see
:class:`acrlocal.storage.shared.AdvisoryLocks`). Such a lock goes with its connection if that is cut: work that
relies on the lock calls the held lock's :meth:`~_Held.verify` before it commits, which raises the database's 503
(:class:`acrlocal.storage.sql.LockLost`) if the lock went meanwhile. Record locks are not lost while their
process lives; their :meth:`~_Held.verify` does nothing.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import weakref
import zlib
from pathlib import Path
from types import TracebackType
from typing import Protocol

SLOTS = 1 << 16


class SharedLocks(Protocol):
    """Locks by number that hold across machines (PostgreSQL's advisory locks)."""

    async def acquire(self, key: int) -> None: ...

    async def verify(self, key: int) -> None: ...

    def release(self, key: int) -> None: ...


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()
        self._fd: int | None = None
        self._shared: SharedLocks | None = None

    def share_database(self, locks: SharedLocks | None) -> None:
        """Hold the locks across replicas too, through ``locks`` (instead of a file); ``None`` stops."""
        self._shared = locks

    def share(self, path: Path) -> None:
        """Hold the locks across processes too, through record locks on ``path`` (made if missing)."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = fd

    def __call__(self, key: str) -> _Held:
        slot = zlib.crc32(key.encode("utf-8", "surrogatepass")) % SLOTS
        lock = self._locks.get(slot)
        if lock is None:
            lock = self._locks[slot] = asyncio.Lock()
        return _Held(self, slot, lock)

    async def _lock_file(self, slot: int) -> None:
        if self._shared is not None:
            await self._shared.acquire(slot)
            return
        delay = 0.001
        while self._fd is not None:
            try:
                fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, slot)
                return
            except (BlockingIOError, PermissionError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.02)

    def _unlock_file(self, slot: int) -> None:
        if self._shared is not None:
            self._shared.release(slot)
        elif self._fd is not None:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, slot)


class _Held:
    """``async with``: the slot's asyncio lock, then its record lock; released in the reverse order."""

    def __init__(self, owner: KeyedLocks, slot: int, lock: asyncio.Lock) -> None:
        self.owner, self.slot, self.lock = owner, slot, lock  # a strong reference keeps the lock while held

    async def __aenter__(self) -> _Held:
        await self.lock.acquire()
        try:
            await self.owner._lock_file(self.slot)
        except BaseException:
            self.lock.release()
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            self.owner._unlock_file(self.slot)
        finally:
            self.lock.release()

    async def verify(self) -> None:
        """Return if the lock is still held across processes and replicas; raise (the database's 503) if it was
        lost with a cut connection, so that the caller stops before its work commits."""
        if self.owner._shared is not None:
            await self.owner._shared.verify(self.slot)

    def locked(self) -> bool:
        return self.lock.locked()


uploads = KeyedLocks()
digests = KeyedLocks()
