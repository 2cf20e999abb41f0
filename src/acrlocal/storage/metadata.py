"""What the registry's data plane asks of its content store (:class:`RegistryMetadata`), and the records it gets.

The store in SQL is :class:`acrlocal.storage.sql_metadata.SqlRegistryMetadata`; its tables are in
:mod:`acrlocal.storage.content_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from acrlocal.errors import AcrLocalError


class UnknownReferences(AcrLocalError, LookupError):
    """A manifest names blobs or child manifests that its repository does not have; nothing was stored."""

    def __init__(self, digests: list[str]) -> None:
        super().__init__(f"not in the repository: {', '.join(digests)}")
        self.digests = digests


class ManifestInUse(AcrLocalError, PermissionError):
    """A manifest that an index (a manifest list) of its repository names cannot be deleted; nothing was deleted."""

    def __init__(self, digest: str, index: str) -> None:
        super().__init__(f"manifest {digest} is named by index {index} of its repository; delete the index first")
        self.digest, self.index = digest, index


@dataclass(frozen=True, slots=True)
class ManifestRecord:
    """A stored manifest as the data plane serves it."""

    digest: str
    media_type: str
    size: int
    body: bytes


@dataclass(frozen=True, slots=True)
class NewManifest:
    """A validated manifest to store; ``blobs`` and ``manifests`` must already be in the repository."""

    digest: str
    media_type: str
    body: bytes
    blobs: tuple[str, ...] = ()
    manifests: tuple[str, ...] = ()
    subject: str | None = None
    artifact_type: str | None = None
    annotations: dict[str, str] | None = None


@dataclass(frozen=True, slots=True)
class UploadSession:
    id: str
    registry_id: int
    repository: str
    principal: str | None
    created: float
    updated: float
    size: int | None = None


class ExclusiveLock(Protocol):
    """One holder at a time across every process and replica of the store (:class:`acrlocal.storage.sql.NamedLock`).
    Both calls block for a round trip at most."""

    def acquire(self) -> bool:
        """Take it if nobody holds it; ``False`` if somebody does."""
        ...

    def verify(self) -> None:
        """Return if it is still held; raise the database's error if it was lost with its connection."""
        ...

    def release(self) -> None: ...


class RegistryMetadata(Protocol):
    """What the data plane asks of its metadata. Digests are strings (``algorithm:encoded``), names are
    already validated. Every method is one transaction: it happens entirely or not at all."""

    @property
    def collection(self) -> ExclusiveLock:
        """Held by whoever collects garbage (housekeeping): one collection at a time across replicas."""
        ...

    @property
    def upload_expiry(self) -> ExclusiveLock:
        """Held by whoever expires idle upload sessions (the sweeper): one sweep at a time across replicas."""
        ...

    # repositories
    def list_repositories(self, registry_id: int, last: str | None, limit: int) -> list[str]:
        """Names of repositories with at least one manifest and listing enabled, in order, after ``last``, at
        most ``limit``."""
        ...

    # blobs
    def blob_size(self, registry_id: int, repository: str, digest: str, *,
                  refresh_before: float | None = None) -> int | None:
        """The size of a blob linked to the repository, ``None`` if it is not linked there. With
        ``refresh_before``, a link last used before that time is marked used now."""
        ...

    def link_blob(self, registry_id: int, repository: str, digest: str, size: int) -> None:
        """Record a stored blob and link it to the repository (created if needed)."""
        ...

    def mount_blob(self, registry_id: int, source: str, target: str, digest: str) -> int | None:
        """Link a blob of ``source`` to ``target``; its size, or ``None`` (nothing done) if ``source`` lacks it."""
        ...

    def unlink_blob(self, registry_id: int, repository: str, digest: str) -> bool:
        """Remove the repository's link to a blob; ``False`` if there was none."""
        ...

    def forget_blob_if_unlinked(self, digest: str) -> bool:
        """Delete the blob's row if no repository links it; ``True`` if the caller should delete its bytes."""
        ...

    def unlinked_blobs(self, limit: int) -> list[str]: ...

    def unlink_unreferenced(self, registry_id: int, used_before: float, limit: int) -> list[tuple[str, str]]:
        """Remove at most ``limit`` links of the registry's repositories that no manifest of their repository
        references and that were last used before ``used_before`` (repositories that are delete- or write-locked
        keep theirs); ``(repository, digest)`` of each. A :meth:`put_manifest` running meanwhile either commits
        first, and its links stay, or finds them gone (:class:`UnknownReferences`), whatever process runs it."""
        ...

    def blob_page(self, after: str | None, limit: int) -> list[str]:
        """Digests of blob rows in order, after ``after``, at most ``limit`` (to walk them all in pages)."""
        ...

    def known_blobs(self, digests: list[str]) -> set[str]:
        """Those of ``digests`` that have a blob row."""
        ...

    def forget_lost_blob(self, digest: str) -> int:
        """Delete a blob's row and its links (its bytes are lost); how many repositories linked it."""
        ...

    # manifests and tags
    def get_manifest(self, registry_id: int, repository: str, reference: str) -> ManifestRecord | None:
        """The manifest a tag or digest names in the repository, or ``None``."""
        ...

    def tag_exists(self, registry_id: int, repository: str, tag: str) -> bool: ...

    def put_manifest(self, registry_id: int, repository: str, manifest: NewManifest, tag: str | None) -> None:
        """Store a manifest (and point ``tag`` at it). Raises :class:`UnknownReferences` (nothing stored) if
        the repository lacks one of its blobs or child manifests."""
        ...

    def delete_manifest(self, registry_id: int, repository: str, digest: str) -> bool:
        """Delete a manifest and the tags that point at it; ``False`` if there was no such manifest. Raises
        :class:`ManifestInUse` (nothing deleted) if an index of the repository names it."""
        ...

    def delete_tag(self, registry_id: int, repository: str, tag: str) -> bool: ...

    def list_tags(self, registry_id: int, repository: str, last: str | None, limit: int) -> list[str] | None:
        """Names of the tags with listing enabled, in order after ``last``, at most ``limit``; ``None`` if the
        repository does not exist."""
        ...

    def referrers(
        self, registry_id: int, repository: str, subject: str, artifact_type: str | None, last: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose subject is ``subject``, ordered by digest, after ``last``."""
        ...

    # upload sessions
    def create_upload(self, upload_id: str, registry_id: int, repository: str, principal: str | None) -> None: ...

    def get_upload(self, upload_id: str) -> UploadSession | None: ...

    def count_uploads(self, registry_id: int, principal: str | None, limit: int) -> int:
        """How many sessions ``principal`` has open in the registry, counting no further than ``limit``."""
        ...

    def touch_upload(self, upload_id: str, size: int) -> None:
        """Record an acknowledged chunk: the session now holds ``size`` bytes."""
        ...

    def delete_upload(self, upload_id: str) -> None: ...

    def expired_uploads(self, updated_before: float) -> list[str]: ...

    def upload_ids(self) -> set[str]: ...

    # registries
    def delete_registry(self, registry_id: int) -> None:
        """Delete everything a registry holds (its blobs' bytes are collected later as unlinked blobs)."""
        ...
