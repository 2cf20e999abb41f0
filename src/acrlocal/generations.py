"""Generations: how the processes of one server (``acrlocal up --workers N``) tell each other that something they
may have cached has changed, in the time of a memory read.

A :class:`Generations` is an array of 64-bit slots in a file that every process maps (``<data dir>/generations``),
or in memory for a server of one process. A key (a repository, ``"directory"``, ``"registries"``...) falls in one
slot, found by a hash that is the same in every process. Whoever changes what a key covers writes a fresh random
value into its slot *after* its transaction commits (:meth:`bump`); whoever caches something derived from the
database reads the slot *before* its query (:meth:`current`) and keeps the value with what it cached; the cached
thing is good for as long as the slot still holds that value. A reader that raced a writer either cached the
old state under the old value (dropped at the writer's bump) or the new state under the old value (dropped too,
needlessly): never old state under the new value. Writes need no lock: every write changes the value (a repeat of
the same 64 random bits is left to chance). Keys that share a slot only invalidate each other's caches.

The file is shared by the processes of one machine; replicas on several machines over one PostgreSQL database
also tell each other through it (:class:`acrlocal.storage.shared.DatabaseGenerations`).

A process that dies after a commit and before its bump leaves that change unannounced: every process that starts
(a restarted worker, a replica, the whole server) first bumps every slot (:meth:`Generations.bump_all`).
"""

from __future__ import annotations

import mmap
import os
import random
import zlib
from collections.abc import Hashable
from pathlib import Path

SLOTS = 1 << 14
_SIZE = SLOTS * 8


def slot_of(key: Hashable) -> int:
    """The slot ``key`` falls in, the same in every process."""
    return zlib.crc32(repr(key).encode("utf-8", "surrogatepass")) % SLOTS


class Generations:
    """Shared slots in ``path`` (made if missing), or private ones when ``path`` is ``None``."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._map: mmap.mmap | None = None
        if path is None:
            self._slots = memoryview(bytearray(_SIZE)).cast("Q")
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)
            self._map = mmap.mmap(fd, _SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self._view = memoryview(self._map)
        self._slots = self._view.cast("Q")

    def current(self, key: Hashable) -> int:
        """The value of ``key``'s slot now: read it before the query whose result is cached under it."""
        return int(self._slots[slot_of(key)])

    def bump(self, key: Hashable) -> None:
        """Mark what ``key`` covers as changed, after the change is committed."""
        self._slots[slot_of(key)] = random.getrandbits(64)

    def bump_all(self) -> None:
        """Mark everything as changed: every slot gets a fresh value, and every process reads what it cached
        again. A process that starts calls it (the server's assembly): a process that died between a commit and
        its :meth:`bump` left the others' caches of that change stale, and its successor's start ends that."""
        fresh = memoryview(random.randbytes(_SIZE)).cast("Q")
        self._slots[:] = fresh

    def set_slot(self, slot: int, value: int) -> None:
        """Write ``value`` into ``slot`` (what another replica bumped, as :meth:`bump` would have)."""
        self._slots[slot] = value

    def close(self) -> None:
        if self._map is not None:
            self._slots.release()
            self._view.release()
            self._map.close()
            self._map = None
