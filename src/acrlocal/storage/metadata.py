"""Registry metadata in SQL: registries, repositories, manifests, tags, referrers, blob links, upload sessions.

Tables are SQLAlchemy Core on the shared :data:`acrlocal.storage.sql.metadata`; the same statements run on
SQLite and PostgreSQL. Every write that must be all-or-nothing (a manifest with its tag, its blob references
and its referrer entry) happens in one transaction, so a crash never leaves a half-visible manifest.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.errors import AcrLocalError, AlreadyExists, NotFound
from acrlocal.generations import Generations
from acrlocal.storage.sql import byte_ordered, metadata, racing_insert, unique_violation

registries = sa.Table(
    "registries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("port", sa.Integer, nullable=True, unique=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),
    # Which registry this is, unlike its name, which a registry deleted and made again shares: tokens name it.
    sa.Column("uid", sa.String(36), nullable=False),
    sa.Index("ix_registries_uid", "uid", unique=True),
)


@dataclass(frozen=True)
class RegistryRecord:
    """A registry as the data plane knows it. ``properties`` holds the settings the control plane manages
    (sku, adminUserEnabled, anonymousPullEnabled, ...). ``uid`` is its identity, which tokens name: a registry
    made again under a deleted one's name has another."""

    id: int
    name: str
    port: int | None
    created: float
    properties: dict[str, Any] = field(default_factory=dict)
    uid: str = ""


def _record(row: Any) -> RegistryRecord:
    return RegistryRecord(row.id, row.name, row.port, row.created, json.loads(row.properties or "{}"), row.uid)


class RegistryTable:
    """The list of registries this server hosts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self) -> list[RegistryRecord]:
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(sa.select(registries).order_by(registries.c.id))]

    def get(self, name: str) -> RegistryRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(registries).where(registries.c.name == name.lower())).first()
        if row is None:
            raise NotFound(f"registry {name!r} does not exist")
        return _record(row)

    def add(self, name: str, port: int | None, properties: dict[str, Any]) -> RegistryRecord:
        """A new registry; :class:`AlreadyExists` if the name is taken (also by a replica that has just made it)."""
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(sa.select(registries.c.id).where(registries.c.name == name.lower())).first()
                if exists:
                    raise AlreadyExists(f"registry {name!r} already exists")
                conn.execute(
                    sa.insert(registries).values(
                        name=name.lower(), port=port, created=time.time(), properties=json.dumps(properties),
                        uid=str(uuid.uuid4()),
                    )
                )
        except sa.exc.IntegrityError as exc:
            if not unique_violation(exc):
                raise
            raise AlreadyExists(f"registry {name!r} already exists") from None
        return self.get(name)

    def set_port(self, name: str, port: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(registries).where(registries.c.name == name.lower()).values(port=port))

    def update_properties(self, name: str, changes: dict[str, Any]) -> RegistryRecord:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(registries).where(registries.c.name == name.lower())).first()
            if row is None:
                raise NotFound(f"registry {name!r} does not exist")
            props = json.loads(row.properties or "{}")
            props.update(changes)
            conn.execute(
                sa.update(registries).where(registries.c.id == row.id).values(properties=json.dumps(props))
            )
        return self.get(name)

    def remove(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(registries).where(registries.c.name == name.lower()))


# -- the content of registries -----------------------------------------------------------------------------
#
# A registry has repositories; a repository has manifests (bytes in the row), tags pointing at manifests, and
# links to blobs. A blob's bytes are stored once (``blobs`` row + file) however many repositories link it; a
# repository may only serve blobs it links. ``manifest_references`` records what each manifest needs;
# ``manifests.subject`` makes the referrers API one indexed query. Changeable attributes (ACR's
# deleteEnabled/writeEnabled/readEnabled/listEnabled) exist on repositories, tags and manifests for /acr/v1.


def _attributes() -> list[sa.Column[Any]]:
    return [
        sa.Column(name, sa.Boolean, nullable=False, default=True, server_default=sa.true())
        for name in ("delete_enabled", "write_enabled", "read_enabled", "list_enabled")
    ]


_LOCKED = "NOT ({0}delete_enabled AND {0}write_enabled AND {0}read_enabled AND {0}list_enabled)"


def locked(table: sa.Table) -> sa.TextClause:
    """Rows with an attribute that is not enabled: the predicate of the partial index ``ix_<table>_locked``, which
    holds the locked rows only. A query with this condition reads that index (the planners match the predicate as
    written, so it is text: SQLAlchemy would write SQLite's booleans as ``= 1``)."""
    return sa.text(_LOCKED.format(f"{table.name}."))


def _locked_index(table: str) -> sa.Index:
    predicate = sa.text(_LOCKED.format(""))
    return sa.Index(f"ix_{table}_locked", "repository_id", sqlite_where=predicate, postgresql_where=predicate)


DIGEST = sa.String(200)

repositories = sa.Table(
    "repositories",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("registry_id", sa.Integer, sa.ForeignKey("registries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", byte_ordered(256), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    *_attributes(),
    sa.UniqueConstraint("registry_id", "name", name="uq_repositories_name"),
)

blobs = sa.Table(
    "blobs",
    metadata,
    sa.Column("digest", DIGEST, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)

repository_blobs = sa.Table(
    "repository_blobs",
    metadata,
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("digest", DIGEST, sa.ForeignKey("blobs.digest"), primary_key=True),
    sa.Column("created", sa.Float, nullable=False),
    # When the link was last used (linked again, mounted, read); NULL: not since it was created. Garbage collection
    # spares links used within its grace period (acrlocal.registry.housekeeping).
    sa.Column("used", sa.Float, nullable=True),
    sa.Index("ix_repository_blobs_digest", "digest"),
)

manifests = sa.Table(
    "manifests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("digest", DIGEST, nullable=False),
    sa.Column("media_type", sa.String(255), nullable=False),
    sa.Column("artifact_type", sa.String(255), nullable=True),
    sa.Column("subject", DIGEST, nullable=True),
    sa.Column("annotations", sa.Text, nullable=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    *_attributes(),
    sa.UniqueConstraint("repository_id", "digest", name="uq_manifests_digest"),
    sa.Index("ix_manifests_subject", "repository_id", "subject"),
    sa.Index("ix_manifests_updated", "repository_id", "updated", "digest"),
    _locked_index("manifests"),
)

tags = sa.Table(
    "tags",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("repository_id", sa.Integer, sa.ForeignKey("repositories.id", ondelete="CASCADE"), nullable=False),
    sa.Column("name", byte_ordered(128), nullable=False),
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    *_attributes(),
    sa.UniqueConstraint("repository_id", "name", name="uq_tags_name"),
    sa.Index("ix_tags_manifest", "manifest_id"),
    sa.Index("ix_tags_updated", "repository_id", "updated", "name"),
    _locked_index("tags"),
)

manifest_references = sa.Table(
    "manifest_references",
    metadata,
    sa.Column("manifest_id", sa.Integer, sa.ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),  # "blob" or "manifest"
    sa.Column("digest", DIGEST, primary_key=True),
    # What references a digest (a lock's reach: the locked manifests a blob or child manifest belongs to).
    sa.Index("ix_manifest_references_digest", "digest", "kind"),
)

upload_sessions = sa.Table(
    "upload_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("registry_id", sa.Integer, sa.ForeignKey("registries.id", ondelete="CASCADE"), nullable=False),
    sa.Column("repository", sa.String(256), nullable=False),
    sa.Column("principal", sa.String(200), nullable=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
    # Bytes the session's acknowledged chunks carried; the upload file may hold more after a crash mid-chunk, and is
    # cut back to this. NULL on sessions opened before it was kept: then the file's size is the session's.
    sa.Column("size", sa.BigInteger, nullable=True),
    sa.Index("ix_upload_sessions_updated", "updated"),
    sa.Index("ix_upload_sessions_principal", "registry_id", "principal"),
)


class UnknownReferences(AcrLocalError, LookupError):
    """A manifest names blobs or child manifests that its repository does not have; nothing was stored."""

    def __init__(self, digests: list[str]) -> None:
        super().__init__(f"not in the repository: {', '.join(digests)}")
        self.digests = digests


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


class RegistryMetadata(Protocol):
    """What the data plane asks of its metadata. Digests are strings (``algorithm:encoded``), names are
    already validated. Every method is one transaction: it happens entirely or not at all."""

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
        keep theirs); ``(repository, digest)`` of each."""
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
        """Delete a manifest and the tags that point at it; ``False`` if there was no such manifest."""
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


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an INSERT returns the new row's key"
    return int(key[0])


#: A repository's and its registry's generations, as read before a query (see :class:`_ManifestCache`).
Stamp = tuple[int, int]


class _ManifestCache:
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


class SqlRegistryMetadata:
    """:class:`RegistryMetadata` in SQL (SQLAlchemy Core), with manifest reads cached in process.

    Calls are synchronous and short (indexed lookups), made from the event loop; each write is one
    ``engine.begin()`` transaction, so a failure or a crash leaves either all of it or none of it.
    """

    def __init__(self, engine: Engine, generations: Generations | None = None) -> None:
        self.engine = engine
        self.cache = _ManifestCache(generations)

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _repository_id(conn: sa.Connection, registry_id: int, name: str) -> int | None:
        row = conn.execute(
            sa.select(repositories.c.id).where(repositories.c.registry_id == registry_id, repositories.c.name == name)
        ).first()
        return None if row is None else int(row.id)

    def _ensure_repository(self, conn: sa.Connection, registry_id: int, name: str, now: float) -> int:
        repo_id = self._repository_id(conn, registry_id, name)
        if repo_id is None:
            conn.execute(
                racing_insert(conn, repositories)
                .values(registry_id=registry_id, name=name, created=now, updated=now)
                .on_conflict_do_nothing(index_elements=["registry_id", "name"])
            )
            repo_id = self._repository_id(conn, registry_id, name)
            assert repo_id is not None
        return repo_id

    # -- repositories ------------------------------------------------------------------------------

    def list_repositories(self, registry_id: int, last: str | None, limit: int) -> list[str]:
        has_manifest = sa.exists().where(manifests.c.repository_id == repositories.c.id)
        query = sa.select(repositories.c.name).where(
            repositories.c.registry_id == registry_id, repositories.c.list_enabled == sa.true(), has_manifest
        )
        if last is not None:
            query = query.where(repositories.c.name > last)
        query = query.order_by(repositories.c.name).limit(limit)
        with self.engine.connect() as conn:
            return [row.name for row in conn.execute(query)]

    # -- blobs -------------------------------------------------------------------------------------

    def blob_size(self, registry_id: int, repository: str, digest: str, *,
                  refresh_before: float | None = None) -> int | None:
        last_used = sa.func.coalesce(repository_blobs.c.used, repository_blobs.c.created)
        query = (
            sa.select(blobs.c.size, repository_blobs.c.repository_id, last_used.label("used"))
            .select_from(
                repositories.join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id).join(
                    blobs, blobs.c.digest == repository_blobs.c.digest
                )
            )
            .where(
                repositories.c.registry_id == registry_id,
                repositories.c.name == repository,
                repository_blobs.c.digest == digest,
            )
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        if refresh_before is not None and row.used < refresh_before:
            with self.engine.begin() as conn:
                conn.execute(sa.update(repository_blobs).where(
                    repository_blobs.c.repository_id == row.repository_id, repository_blobs.c.digest == digest,
                ).values(used=time.time()))
        return int(row.size)

    @staticmethod
    def _link(conn: sa.Connection, repo_id: int, digest: str, now: float) -> None:
        where = (repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest)
        if not conn.execute(sa.update(repository_blobs).where(*where).values(used=now)).rowcount:
            conn.execute(racing_insert(conn, repository_blobs).values(repository_id=repo_id, digest=digest, created=now)
                         .on_conflict_do_nothing(index_elements=["repository_id", "digest"]))

    def link_blob(self, registry_id: int, repository: str, digest: str, size: int) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            if conn.execute(sa.select(blobs.c.digest).where(blobs.c.digest == digest)).first() is None:
                conn.execute(racing_insert(conn, blobs).values(digest=digest, size=size, created=now)
                             .on_conflict_do_nothing(index_elements=["digest"]))
            repo_id = self._ensure_repository(conn, registry_id, repository, now)
            self._link(conn, repo_id, digest, now)

    def mount_blob(self, registry_id: int, source: str, target: str, digest: str) -> int | None:
        now = time.time()
        with self.engine.begin() as conn:
            source_id = self._repository_id(conn, registry_id, source)
            if source_id is None:
                return None
            row = conn.execute(
                sa.select(blobs.c.size)
                .select_from(repository_blobs.join(blobs, blobs.c.digest == repository_blobs.c.digest))
                .where(repository_blobs.c.repository_id == source_id, repository_blobs.c.digest == digest)
            ).first()
            if row is None:
                return None
            target_id = self._ensure_repository(conn, registry_id, target, now)
            self._link(conn, target_id, digest, now)
            return int(row.size)

    def unlink_blob(self, registry_id: int, repository: str, digest: str) -> bool:
        with self.engine.begin() as conn:
            repo_id = self._repository_id(conn, registry_id, repository)
            if repo_id is None:
                return False
            result = conn.execute(
                sa.delete(repository_blobs).where(
                    repository_blobs.c.repository_id == repo_id, repository_blobs.c.digest == digest
                )
            )
            return bool(result.rowcount)

    def forget_blob_if_unlinked(self, digest: str) -> bool:
        with self.engine.begin() as conn:
            linked = conn.execute(
                sa.select(repository_blobs.c.digest).where(repository_blobs.c.digest == digest).limit(1)
            ).first()
            if linked is not None:
                return False
            conn.execute(sa.delete(blobs).where(blobs.c.digest == digest))
            return True

    def unlinked_blobs(self, limit: int) -> list[str]:
        linked = sa.exists().where(repository_blobs.c.digest == blobs.c.digest)
        with self.engine.connect() as conn:
            return [r.digest for r in conn.execute(sa.select(blobs.c.digest).where(~linked).limit(limit))]

    def unlink_unreferenced(self, registry_id: int, used_before: float, limit: int) -> list[tuple[str, str]]:
        referenced = sa.exists().where(
            manifest_references.c.digest == repository_blobs.c.digest, manifest_references.c.kind == "blob",
            manifests.c.id == manifest_references.c.manifest_id,
            manifests.c.repository_id == repository_blobs.c.repository_id,
        )
        last_used = sa.func.coalesce(repository_blobs.c.used, repository_blobs.c.created)
        query = (
            sa.select(repository_blobs.c.repository_id, repository_blobs.c.digest, repositories.c.name)
            .select_from(repository_blobs.join(repositories, repositories.c.id == repository_blobs.c.repository_id))
            .where(repositories.c.registry_id == registry_id, repositories.c.delete_enabled == sa.true(),
                   repositories.c.write_enabled == sa.true(), last_used < used_before, ~referenced)
            .limit(limit)
        )
        with self.engine.begin() as conn:
            rows = list(conn.execute(query))
            for row in rows:
                conn.execute(sa.delete(repository_blobs).where(
                    repository_blobs.c.repository_id == row.repository_id, repository_blobs.c.digest == row.digest))
        return [(row.name, row.digest) for row in rows]

    def blob_page(self, after: str | None, limit: int) -> list[str]:
        query = sa.select(blobs.c.digest)
        if after is not None:
            query = query.where(blobs.c.digest > after)
        with self.engine.connect() as conn:
            return [r.digest for r in conn.execute(query.order_by(blobs.c.digest).limit(limit))]

    def known_blobs(self, digests: list[str]) -> set[str]:
        if not digests:
            return set()
        with self.engine.connect() as conn:
            return {r.digest for r in conn.execute(sa.select(blobs.c.digest).where(blobs.c.digest.in_(digests)))}

    def forget_lost_blob(self, digest: str) -> int:
        with self.engine.begin() as conn:
            links = conn.execute(sa.delete(repository_blobs).where(repository_blobs.c.digest == digest)).rowcount
            conn.execute(sa.delete(blobs).where(blobs.c.digest == digest))
            return int(links or 0)

    # -- manifests and tags ------------------------------------------------------------------------

    _RECORD_COLUMNS = (manifests.c.digest, manifests.c.media_type, manifests.c.size, manifests.c.body)

    def get_manifest(self, registry_id: int, repository: str, reference: str) -> ManifestRecord | None:
        hit, record = self.cache.get(registry_id, repository, reference)
        if hit:
            return record
        stamp = self.cache.stamp(registry_id, repository)
        repo_match = (repositories.c.registry_id == registry_id, repositories.c.name == repository)
        if ":" in reference:
            query = (
                sa.select(*self._RECORD_COLUMNS)
                .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
                .where(*repo_match, manifests.c.digest == reference)
            )
        else:
            query = (
                sa.select(*self._RECORD_COLUMNS)
                .select_from(
                    tags.join(manifests, manifests.c.id == tags.c.manifest_id).join(
                        repositories, repositories.c.id == tags.c.repository_id
                    )
                )
                .where(*repo_match, tags.c.name == reference)
            )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        record = None if row is None else ManifestRecord(row.digest, row.media_type, int(row.size), bytes(row.body))
        self.cache.put(registry_id, repository, reference, record, stamp)
        return record

    def tag_exists(self, registry_id: int, repository: str, tag: str) -> bool:
        query = (
            sa.select(tags.c.id)
            .select_from(tags.join(repositories, repositories.c.id == tags.c.repository_id))
            .where(repositories.c.registry_id == registry_id, repositories.c.name == repository, tags.c.name == tag)
        )
        with self.engine.connect() as conn:
            return conn.execute(query).first() is not None

    def put_manifest(self, registry_id: int, repository: str, manifest: NewManifest, tag: str | None) -> None:
        now = time.time()
        try:
            with self.engine.begin() as conn:
                repo_id = self._ensure_repository(conn, registry_id, repository, now)
                missing: list[str] = []
                if manifest.blobs:
                    have = {
                        r.digest
                        for r in conn.execute(
                            sa.select(repository_blobs.c.digest).where(
                                repository_blobs.c.repository_id == repo_id,
                                repository_blobs.c.digest.in_(manifest.blobs),
                            )
                        )
                    }
                    missing += [d for d in manifest.blobs if d not in have]
                if manifest.manifests:
                    have = {
                        r.digest
                        for r in conn.execute(
                            sa.select(manifests.c.digest).where(
                                manifests.c.repository_id == repo_id, manifests.c.digest.in_(manifest.manifests)
                            )
                        )
                    }
                    missing += [d for d in manifest.manifests if d not in have]
                if missing:
                    raise UnknownReferences(missing)

                row = conn.execute(
                    sa.select(manifests.c.id).where(
                        manifests.c.repository_id == repo_id, manifests.c.digest == manifest.digest
                    )
                ).first()
                if row is None:  # insert it, unless another writer has just done so
                    row = conn.execute(
                        racing_insert(conn, manifests)
                        .values(
                            repository_id=repo_id,
                            digest=manifest.digest,
                            media_type=manifest.media_type,
                            artifact_type=manifest.artifact_type,
                            subject=manifest.subject,
                            annotations=json.dumps(manifest.annotations) if manifest.annotations else None,
                            size=len(manifest.body),
                            body=manifest.body,
                            created=now,
                            updated=now,
                        )
                        .on_conflict_do_nothing(index_elements=["repository_id", "digest"])
                        .returning(manifests.c.id)
                    ).first()
                    inserted = row is not None
                    if row is None:
                        row = conn.execute(
                            sa.select(manifests.c.id).where(
                                manifests.c.repository_id == repo_id, manifests.c.digest == manifest.digest
                            )
                        ).one()
                else:
                    inserted = False
                manifest_id = int(row.id)
                if inserted:
                    refs = [{"manifest_id": manifest_id, "kind": "blob", "digest": d} for d in manifest.blobs]
                    refs += [{"manifest_id": manifest_id, "kind": "manifest", "digest": d} for d in manifest.manifests]
                    if refs:
                        conn.execute(sa.insert(manifest_references), refs)
                else:
                    conn.execute(sa.update(manifests).where(manifests.c.id == manifest_id).values(updated=now))
                if tag is not None:
                    conn.execute(
                        racing_insert(conn, tags)
                        .values(repository_id=repo_id, name=tag, manifest_id=manifest_id, created=now, updated=now)
                        .on_conflict_do_update(index_elements=["repository_id", "name"],
                                               set_={"manifest_id": manifest_id, "updated": now})
                    )
                conn.execute(sa.update(repositories).where(repositories.c.id == repo_id).values(updated=now))
        finally:
            self.cache.drop(registry_id, repository)

    def delete_manifest(self, registry_id: int, repository: str, digest: str) -> bool:
        try:
            with self.engine.begin() as conn:
                repo_id = self._repository_id(conn, registry_id, repository)
                if repo_id is None:
                    return False
                row = conn.execute(
                    sa.select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                ).first()
                if row is None:
                    return False
                conn.execute(sa.delete(tags).where(tags.c.manifest_id == row.id))
                conn.execute(sa.delete(manifest_references).where(manifest_references.c.manifest_id == row.id))
                conn.execute(sa.delete(manifests).where(manifests.c.id == row.id))
                conn.execute(
                    sa.update(repositories).where(repositories.c.id == repo_id).values(updated=time.time())
                )
                return True
        finally:
            self.cache.drop(registry_id, repository)

    def delete_tag(self, registry_id: int, repository: str, tag: str) -> bool:
        try:
            with self.engine.begin() as conn:
                repo_id = self._repository_id(conn, registry_id, repository)
                if repo_id is None:
                    return False
                result = conn.execute(sa.delete(tags).where(tags.c.repository_id == repo_id, tags.c.name == tag))
                return bool(result.rowcount)
        finally:
            self.cache.drop(registry_id, repository)

    def list_tags(self, registry_id: int, repository: str, last: str | None, limit: int) -> list[str] | None:
        with self.engine.connect() as conn:
            repo_id = self._repository_id(conn, registry_id, repository)
            if repo_id is None:
                return None
            query = sa.select(tags.c.name).where(tags.c.repository_id == repo_id, tags.c.list_enabled == sa.true())
            if last is not None:
                query = query.where(tags.c.name > last)
            return [r.name for r in conn.execute(query.order_by(tags.c.name).limit(limit))]

    def referrers(
        self, registry_id: int, repository: str, subject: str, artifact_type: str | None, last: str | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        query = (
            sa.select(
                manifests.c.digest, manifests.c.media_type, manifests.c.size, manifests.c.artifact_type,
                manifests.c.annotations,
            )
            .select_from(manifests.join(repositories, repositories.c.id == manifests.c.repository_id))
            .where(
                repositories.c.registry_id == registry_id,
                repositories.c.name == repository,
                manifests.c.subject == subject,
            )
        )
        if artifact_type is not None:
            query = query.where(manifests.c.artifact_type == artifact_type)
        if last is not None:
            query = query.where(manifests.c.digest > last)
        query = query.order_by(manifests.c.digest).limit(limit)
        out: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for row in conn.execute(query):
                entry: dict[str, Any] = {"mediaType": row.media_type, "digest": row.digest, "size": int(row.size)}
                if row.artifact_type:
                    entry["artifactType"] = row.artifact_type
                if row.annotations:
                    entry["annotations"] = json.loads(row.annotations)
                out.append(entry)
        return out

    # -- upload sessions ---------------------------------------------------------------------------

    def create_upload(self, upload_id: str, registry_id: int, repository: str, principal: str | None) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(upload_sessions).values(
                    id=upload_id, registry_id=registry_id, repository=repository, principal=principal,
                    created=now, updated=now, size=0,
                )
            )

    def get_upload(self, upload_id: str) -> UploadSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(upload_sessions).where(upload_sessions.c.id == upload_id)).first()
        if row is None:
            return None
        return UploadSession(row.id, row.registry_id, row.repository, row.principal, row.created, row.updated,
                             None if row.size is None else int(row.size))

    def count_uploads(self, registry_id: int, principal: str | None, limit: int) -> int:
        owner = upload_sessions.c.principal.is_(None) if principal is None else upload_sessions.c.principal == principal
        sessions = sa.select(upload_sessions.c.id).where(upload_sessions.c.registry_id == registry_id, owner)
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(sessions.limit(limit).subquery()))
                       .scalar_one())

    def touch_upload(self, upload_id: str, size: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(upload_sessions).where(upload_sessions.c.id == upload_id)
                .values(updated=time.time(), size=size)
            )

    def delete_upload(self, upload_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(upload_sessions).where(upload_sessions.c.id == upload_id))

    def expired_uploads(self, updated_before: float) -> list[str]:
        with self.engine.connect() as conn:
            query = sa.select(upload_sessions.c.id).where(upload_sessions.c.updated < updated_before)
            return [r.id for r in conn.execute(query)]

    def upload_ids(self) -> set[str]:
        with self.engine.connect() as conn:
            return {r.id for r in conn.execute(sa.select(upload_sessions.c.id))}

    # -- registries --------------------------------------------------------------------------------

    def delete_registry(self, registry_id: int) -> None:
        try:
            with self.engine.begin() as conn:
                repo_ids = sa.select(repositories.c.id).where(repositories.c.registry_id == registry_id)
                manifest_ids = sa.select(manifests.c.id).where(manifests.c.repository_id.in_(repo_ids))
                conn.execute(sa.delete(tags).where(tags.c.repository_id.in_(repo_ids)))
                conn.execute(sa.delete(manifest_references).where(manifest_references.c.manifest_id.in_(manifest_ids)))
                conn.execute(sa.delete(manifests).where(manifests.c.repository_id.in_(repo_ids)))
                conn.execute(sa.delete(repository_blobs).where(repository_blobs.c.repository_id.in_(repo_ids)))
                conn.execute(sa.delete(repositories).where(repositories.c.registry_id == registry_id))
                conn.execute(sa.delete(upload_sessions).where(upload_sessions.c.registry_id == registry_id))
        finally:
            self.cache.drop_registry(registry_id)
