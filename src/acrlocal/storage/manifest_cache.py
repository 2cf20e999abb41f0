"""The content store's in-process cache of manifests, and of state derived from the same rows, kept right across
the processes of one server by :class:`~acrlocal.generations.Generations`."""

from __future__ import annotations

from typing import Any

from acrlocal.generations import Generations
from acrlocal.storage.metadata import ManifestRecord

#: A repository's and its registry's generations, as read before a query (see :class:`ManifestCache`).
Stamp = tuple[int, int]


class ManifestCache:
    """Recently served manifests (and misses) per repository, and state derived from the same rows.

    Every entry carries the :class:`~acrlocal.generations.Generations` stamp of its repository and registry, read
    before the query that filled it, and is good while the stamp stands. A write to a repository (in this process
    or another of the same server) bumps the repository's generation after it commits, and drops the entries here
    at once; deleting a registry bumps the registry's. Bounded by entries and bytes, and simply emptied when full
    (refilling costs one query a key).
    """

    MAX_ENTRIES = 20_000
    MAX_BYTES = 64 * 1024 * 1024

    def __init__(self, generations: Generations | None = None) -> None:
        self.generations = generations or Generations()
        self._repos: dict[tuple[int, str], tuple[Stamp, dict[str, ManifestRecord | None]]] = {}
        self._entries = 0
        self._bytes = 0
        # Per-repository state derived from the same rows (the changeable attributes the data plane enforces,
        # see acrlocal.storage.artifacts), under the same stamps and dropped with the repository's manifests.
        self._derived: dict[tuple[int, str], tuple[Stamp, Any]] = {}

    def stamp(self, registry_id: int, repository: str) -> Stamp:
        """The repository's generation now: read it before the query whose result is put here."""
        gen = self.generations
        return gen.current(("repository", registry_id, repository)), gen.current(("registry", registry_id))

    def get(self, registry_id: int, repository: str, reference: str) -> tuple[bool, ManifestRecord | None]:
        entry = self._repos.get((registry_id, repository))
        if entry is None or reference not in entry[1]:
            return False, None
        if entry[0] != self.stamp(registry_id, repository):
            self._forget(registry_id, repository)
            return False, None
        return True, entry[1][reference]

    def put(self, registry_id: int, repository: str, reference: str, record: ManifestRecord | None,
            stamp: Stamp) -> None:
        size = record.size if record else 0
        if self._entries >= self.MAX_ENTRIES or self._bytes + size > self.MAX_BYTES:
            self.clear()
        entry = self._repos.get((registry_id, repository))
        if entry is None or entry[0] != stamp:
            self._forget(registry_id, repository)
            entry = self._repos[(registry_id, repository)] = (stamp, {})
        entry[1][reference] = record
        self._entries += 1
        self._bytes += size

    def derived(self, registry_id: int, repository: str) -> Any:
        """The derived state kept for the repository, or ``None``."""
        entry = self._derived.get((registry_id, repository))
        if entry is None or entry[0] != self.stamp(registry_id, repository):
            return None
        return entry[1]

    def keep_derived(self, registry_id: int, repository: str, value: Any, stamp: Stamp,
                     limit: int = MAX_ENTRIES) -> None:
        if len(self._derived) >= limit:
            self._derived.clear()
        self._derived[(registry_id, repository)] = (stamp, value)

    def _forget(self, registry_id: int, repository: str) -> None:
        self._derived.pop((registry_id, repository), None)
        entry = self._repos.pop((registry_id, repository), None)
        if entry:
            self._entries -= len(entry[1])
            self._bytes -= sum(r.size for r in entry[1].values() if r)

    def drop(self, registry_id: int, repository: str) -> None:
        """After a write to the repository has committed (or failed): every process's entries for it go."""
        self.generations.bump(("repository", registry_id, repository))
        self._forget(registry_id, repository)

    def drop_registry(self, registry_id: int) -> None:
        """After a registry's content was deleted; safe from a thread (it iterates copies, each drop a ``pop``)."""
        self.generations.bump(("registry", registry_id))
        for key in [k for k in list(self._repos) if k[0] == registry_id]:
            self._forget(*key)
        for key in [k for k in list(self._derived) if k[0] == registry_id]:
            self._derived.pop(key, None)

    def clear(self) -> None:
        self._repos.clear()
        self._derived.clear()
        self._entries = 0
        self._bytes = 0
