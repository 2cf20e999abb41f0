"""Per-key asyncio locks (one per upload id, one per blob digest), kept only while someone holds or waits.

They serialise what must not interleave inside this process: two requests appending to one upload, and a blob's
publication racing its deletion (publish-if-absent then link, versus unlink then delete-if-unlinked). One process
owns a data directory, so process-local locks are enough.
"""

from __future__ import annotations

import asyncio
import weakref


class KeyedLocks:
    def __init__(self) -> None:
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def __call__(self, key: str) -> asyncio.Lock:
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock


uploads = KeyedLocks()
digests = KeyedLocks()
