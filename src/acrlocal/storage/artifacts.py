"""ACR's view of a registry's content: repository, tag and manifest properties, their changeable attributes
(``deleteEnabled``, ``writeEnabled``, ``readEnabled``, ``listEnabled``), and repository deletion.

It reads and writes the tables of :mod:`acrlocal.storage.content_tables` (the attributes are columns there) and
shares that store's per-repository cache: every write drops the repository's cached manifests and locks together, so a
lock set here is enforced by the very next request. :meth:`SqlArtifacts.locks` is what the data plane asks on
every pull and push: the repository's attributes (one indexed query), then those of exactly the tag and the
manifest the request names (one indexed query each, remembered until the next write to the repository), so the
cost of a check does not grow with the number of tags or manifests.

Lists use keyset pagination: ``last`` is the name (tags) or digest (manifests) of the last item of the previous
page; with a time order the position is the (update time, key) pair of that item, so pages never overlap or skip.
``timeasc`` is (update time, key) ascending and ``timedesc`` its exact reverse, both read in order from the
``(repository_id, updated, key)`` indexes: a page costs its size, not the repository's.
Methods return ``None`` for a repository (or item) that does not exist and let the caller choose the error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

import sqlalchemy as sa

from acrlocal.errors import AcrLocalError
from acrlocal.storage.content_tables import locked, manifest_references, manifests, repositories, repository_blobs, tags
from acrlocal.storage.sql_metadata import SqlRegistryMetadata

ATTRIBUTE_COLUMNS = {
    "deleteEnabled": "delete_enabled",
    "writeEnabled": "write_enabled",
    "readEnabled": "read_enabled",
    "listEnabled": "list_enabled",
}


@dataclass(frozen=True, slots=True)
class Attributes:
    """Changeable attributes of a repository, tag or manifest (all enabled by default)."""

    delete_enabled: bool = True
    write_enabled: bool = True
    read_enabled: bool = True
    list_enabled: bool = True

    def render(self) -> dict[str, bool]:
        return {
            "deleteEnabled": self.delete_enabled,
            "writeEnabled": self.write_enabled,
            "readEnabled": self.read_enabled,
            "listEnabled": self.list_enabled,
        }

    @property
    def default(self) -> bool:
        return self.delete_enabled and self.write_enabled and self.read_enabled and self.list_enabled

    @property
    def deletable(self) -> bool:
        """ACR refuses deleting what is write-locked as well as what is delete-locked."""
        return self.delete_enabled and self.write_enabled


ENABLED = Attributes()


def _attrs(row: Any) -> Attributes:
    return Attributes(bool(row.delete_enabled), bool(row.write_enabled), bool(row.read_enabled),
                      bool(row.list_enabled))


class RepositoryLocks:
    """The attributes of one repository, and of its tags and manifests as they are asked for: each is read once
    (``load(kind, key)``, one indexed query) and remembered while this object lives, which is until the next write
    to the repository. At most :attr:`MEMO` items are remembered; past that the memo starts again.

    ``any(question)`` answers whether anything in the repository is locked that way (``undeletable``: a tag or
    manifest delete- or write-locked; ``unreadable``: a read-locked manifest), once, from the partial indexes of
    locked rows (``ix_tags_locked``, ``ix_manifests_locked``): what lets checks skip their queries for the
    repositories that have no locks, at a cost that follows the locked rows, not the repository."""

    MEMO = 4096

    def __init__(self, repository: Attributes = ENABLED, load: Callable[[str, str], Attributes] | None = None,
                 ask: Callable[[str], bool] | None = None) -> None:
        self.repository = repository
        self._load = load
        self._ask = ask
        self._memo: dict[tuple[str, str], Attributes] = {}
        self._answers: dict[str, bool] = {}

    def _get(self, kind: str, key: str) -> Attributes:
        if self._load is None:
            return ENABLED
        found = self._memo.get((kind, key))
        if found is None:
            if len(self._memo) >= self.MEMO:
                self._memo.clear()
            found = self._memo[(kind, key)] = self._load(kind, key)
        return found

    def tag(self, name: str) -> Attributes:
        return self._get("tag", name)

    def manifest(self, digest: str) -> Attributes:
        return self._get("manifest", digest)

    def any(self, question: str) -> bool:
        """``"undeletable"`` or ``"unreadable"`` (see the class)."""
        if self._ask is None:
            return False
        answer = self._answers.get(question)
        if answer is None:
            answer = self._answers[question] = self._ask(question)
        return answer


UNLOCKED = RepositoryLocks()


class Order(Enum):
    """``orderby`` of the tag and manifest lists: by key (the default), or by last update time."""

    KEY = ""
    TIME_DESC = "timedesc"
    TIME_ASC = "timeasc"


@dataclass(frozen=True, slots=True)
class RepositoryInfo:
    name: str
    created: float
    updated: float
    manifest_count: int
    tag_count: int
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class TagInfo:
    name: str
    digest: str
    created: float
    updated: float
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class ManifestInfo:
    digest: str
    size: int
    media_type: str
    body: bytes
    created: float
    updated: float
    tags: tuple[str, ...]
    attributes: Attributes


@dataclass(frozen=True, slots=True)
class DeletedRepository:
    manifests: list[str]
    tags: list[str]


class Blocked(AcrLocalError, PermissionError):
    """A deletion refused because something in it is locked; ``what`` names it (``tag 'v1'``...)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is locked: deleting it needs deleteEnabled and writeEnabled to be true")
        self.what = what


class ArtifactCatalog(Protocol):
    """What ``/acr/v1`` and the lock checks of the data plane ask of storage."""

    def locks(self, registry_id: int, repository: str) -> RepositoryLocks: ...

    def repository(self, registry_id: int, repository: str) -> RepositoryInfo | None: ...

    def tag(self, registry_id: int, repository: str, tag: str) -> TagInfo | None: ...

    def tags(
        self, registry_id: int, repository: str, last: str | None, limit: int, order: Order, digest: str | None = None
    ) -> list[TagInfo] | None: ...

    def manifest(self, registry_id: int, repository: str, digest: str) -> ManifestInfo | None: ...

    def manifests(
        self, registry_id: int, repository: str, last: str | None, limit: int, order: Order
    ) -> list[ManifestInfo] | None: ...

    def set_attributes(
        self, registry_id: int, repository: str, changes: dict[str, bool], *, tag: str | None = None,
        digest: str | None = None,
    ) -> bool: ...

    def manifest_deletion_blocker(self, registry_id: int, repository: str, digest: str) -> str | None: ...

    def content_deletion_blocker(self, registry_id: int, repository: str, digest: str, kind: str) -> str | None: ...

    def blob_read_blocker(self, registry_id: int, repository: str, digest: str) -> str | None: ...

    def delete_repository(self, registry_id: int, repository: str) -> DeletedRepository | None: ...


class SqlArtifacts:
    """:class:`ArtifactCatalog` on the registry metadata tables, sharing :class:`SqlRegistryMetadata`'s cache."""

    MAX_CACHED_REPOSITORIES = 20_000

    def __init__(self, meta: SqlRegistryMetadata) -> None:
        self.meta = meta
        self.engine = meta.engine

    def _repo_row(self, conn: sa.Connection, registry_id: int, name: str) -> Any:
        return conn.execute(
            sa.select(repositories).where(repositories.c.registry_id == registry_id, repositories.c.name == name)
        ).first()

    # -- locks -------------------------------------------------------------------------------------

    def locks(self, registry_id: int, repository: str) -> RepositoryLocks:
        cache = self.meta.cache
        found = cache.derived(registry_id, repository)
        if isinstance(found, RepositoryLocks):
            return found
        stamp = cache.stamp(registry_id, repository)
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
        if repo is None:
            result = UNLOCKED
        else:
            repo_id = int(repo.id)

            def load(kind: str, name: str) -> Attributes:
                table, column = (tags, tags.c.name) if kind == "tag" else (manifests, manifests.c.digest)
                with self.engine.connect() as conn:
                    row = conn.execute(sa.select(*_attribute_columns(table)).where(
                        table.c.repository_id == repo_id, column == name)).first()
                return ENABLED if row is None else _attrs(row)

            def ask(question: str) -> bool:
                if question == "undeletable":
                    queries = [sa.select(t.c.id).where(t.c.repository_id == repo_id, locked(t), _undeletable(t))
                               for t in (tags, manifests)]
                else:
                    unreadable = manifests.c.read_enabled == sa.false()
                    queries = [sa.select(manifests.c.id).where(
                        manifests.c.repository_id == repo_id, locked(manifests), unreadable)]
                with self.engine.connect() as conn:
                    return any(conn.execute(q.limit(1)).first() is not None for q in queries)

            result = RepositoryLocks(_attrs(repo), load, ask)
        cache.keep_derived(registry_id, repository, result, stamp, self.MAX_CACHED_REPOSITORIES)
        return result

    # -- reads -------------------------------------------------------------------------------------

    def repository(self, registry_id: int, repository: str) -> RepositoryInfo | None:
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
            if repo is None:
                return None
            manifest_count = conn.execute(
                sa.select(sa.func.count()).select_from(manifests).where(manifests.c.repository_id == repo.id)
            ).scalar_one()
            tag_count = conn.execute(
                sa.select(sa.func.count()).select_from(tags).where(tags.c.repository_id == repo.id)
            ).scalar_one()
        if not manifest_count:
            return None  # a repository with only blobs is not one ACR shows
        return RepositoryInfo(repo.name, repo.created, repo.updated, int(manifest_count), int(tag_count), _attrs(repo))

    _TAG_COLUMNS = (tags.c.name, manifests.c.digest, tags.c.created, tags.c.updated, *(
        tags.c[c] for c in ATTRIBUTE_COLUMNS.values()))

    @staticmethod
    def _tag(row: Any) -> TagInfo:
        return TagInfo(row.name, row.digest, row.created, row.updated, _attrs(row))

    def tag(self, registry_id: int, repository: str, tag: str) -> TagInfo | None:
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
            if repo is None:
                return None
            row = conn.execute(
                sa.select(*self._TAG_COLUMNS)
                .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                .where(tags.c.repository_id == repo.id, tags.c.name == tag)
            ).first()
        return None if row is None else self._tag(row)

    def tags(
        self, registry_id: int, repository: str, last: str | None, limit: int, order: Order, digest: str | None = None
    ) -> list[TagInfo] | None:
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
            if repo is None:
                return None
            query = (
                sa.select(*self._TAG_COLUMNS)
                .select_from(tags.join(manifests, manifests.c.id == tags.c.manifest_id))
                .where(tags.c.repository_id == repo.id, tags.c.list_enabled == sa.true())
            )
            if digest is not None:
                query = query.where(manifests.c.digest == digest)
            position = None
            if last is not None and order is not Order.KEY:
                position = conn.execute(
                    sa.select(tags.c.updated).where(tags.c.repository_id == repo.id, tags.c.name == last)
                ).first()
            query = _page(query, tags.c.updated, tags.c.name, last, position, order).limit(limit)
            return [self._tag(r) for r in conn.execute(query)]

    _MANIFEST_COLUMNS = (manifests.c.id, manifests.c.digest, manifests.c.size, manifests.c.media_type, manifests.c.body,
                         manifests.c.created, manifests.c.updated, *(
                             manifests.c[c] for c in ATTRIBUTE_COLUMNS.values()))

    def _manifest_infos(self, conn: sa.Connection, rows: list[Any]) -> list[ManifestInfo]:
        ids = [r.id for r in rows]
        names: dict[int, list[str]] = {i: [] for i in ids}
        if ids:
            for t in conn.execute(
                sa.select(tags.c.manifest_id, tags.c.name).where(tags.c.manifest_id.in_(ids)).order_by(tags.c.name)
            ):
                names[t.manifest_id].append(t.name)
        return [
            ManifestInfo(r.digest, int(r.size), r.media_type, bytes(r.body), r.created, r.updated,
                         tuple(names[r.id]), _attrs(r))
            for r in rows
        ]

    def manifest(self, registry_id: int, repository: str, digest: str) -> ManifestInfo | None:
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
            if repo is None:
                return None
            row = conn.execute(
                sa.select(*self._MANIFEST_COLUMNS).where(
                    manifests.c.repository_id == repo.id, manifests.c.digest == digest
                )
            ).first()
            return None if row is None else self._manifest_infos(conn, [row])[0]

    def manifests(
        self, registry_id: int, repository: str, last: str | None, limit: int, order: Order
    ) -> list[ManifestInfo] | None:
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
            if repo is None:
                return None
            query = sa.select(*self._MANIFEST_COLUMNS).where(
                manifests.c.repository_id == repo.id, manifests.c.list_enabled == sa.true()
            )
            position = None
            if last is not None and order is not Order.KEY:
                position = conn.execute(
                    sa.select(manifests.c.updated).where(
                        manifests.c.repository_id == repo.id, manifests.c.digest == last
                    )
                ).first()
            query = _page(query, manifests.c.updated, manifests.c.digest, last, position, order).limit(limit)
            return self._manifest_infos(conn, list(conn.execute(query)))

    # -- writes ------------------------------------------------------------------------------------

    def set_attributes(
        self, registry_id: int, repository: str, changes: dict[str, bool], *, tag: str | None = None,
        digest: str | None = None,
    ) -> bool:
        """Apply ``changes`` (API names, ``writeEnabled``...) to the repository, or to one of its tags or
        manifests; ``False`` if it does not exist. Unknown names are the caller's to refuse."""
        values = {ATTRIBUTE_COLUMNS[k]: bool(v) for k, v in changes.items()}
        try:
            with self.engine.begin() as conn:
                repo = self._repo_row(conn, registry_id, repository)
                if repo is None:
                    return False
                if tag is not None:
                    where: Any = (tags.c.repository_id == repo.id, tags.c.name == tag)
                    table = tags
                elif digest is not None:
                    where = (manifests.c.repository_id == repo.id, manifests.c.digest == digest)
                    table = manifests
                else:
                    where = (repositories.c.id == repo.id,)
                    table = repositories
                if values:
                    result = conn.execute(sa.update(table).where(*where).values(**values))
                    return bool(result.rowcount)
                return conn.execute(sa.select(table.c.id).where(*where)).first() is not None
        finally:
            self.meta.cache.drop(registry_id, repository)

    def manifest_deletion_blocker(self, registry_id: int, repository: str, digest: str) -> str | None:
        """What forbids deleting a manifest (the repository, the manifest or a tag on it locked), or ``None``."""
        locks = self.locks(registry_id, repository)
        if not locks.repository.deletable:
            return f"repository {repository!r}"
        if not locks.manifest(digest).deletable:
            return f"manifest {digest}"
        with self.engine.connect() as conn:
            on_manifest = conn.execute(
                sa.select(tags.c.name)
                .select_from(
                    tags.join(manifests, manifests.c.id == tags.c.manifest_id).join(
                        repositories, repositories.c.id == tags.c.repository_id
                    )
                )
                .where(
                    repositories.c.registry_id == registry_id,
                    repositories.c.name == repository,
                    manifests.c.digest == digest,
                    _undeletable(tags),
                )
                .order_by(tags.c.name)
            ).first()
        if on_manifest is not None:
            return f"tag {on_manifest.name!r}"
        return None

    def _referencing(self, conn: sa.Connection, repo_id: int, digests: set[str], kind: str) -> list[Any]:
        """The manifests of the repository that reference one of ``digests`` (a ``kind`` of reference: ``blob``
        or ``manifest``), with their attributes: one query on ``ix_manifest_references_digest``."""
        return list(conn.execute(
            sa.select(manifests.c.id, manifests.c.digest, *_attribute_columns(manifests))
            .select_from(manifest_references.join(manifests, manifests.c.id == manifest_references.c.manifest_id))
            .where(manifest_references.c.digest.in_(sorted(digests)), manifest_references.c.kind == kind,
                   manifests.c.repository_id == repo_id)
        ))

    def content_deletion_blocker(self, registry_id: int, repository: str, digest: str, kind: str) -> str | None:
        """What forbids deleting a blob (``kind="blob"``) or a child manifest (``kind="manifest"``) of the
        repository because a locked manifest needs it: a delete- or write-locked manifest of the repository that
        references it, directly or through the indexes above it, or such a manifest under a locked tag. ``None``
        when nothing locked needs it.

        A repository without such locks (the cached :meth:`locks`) costs no query; otherwise each level of
        indexes above the digest is one indexed query for the manifests referencing it and one for locked tags
        on them, so the cost follows what references the digest, not the size of the repository."""
        if not self.locks(registry_id, repository).any("undeletable"):
            return None
        locked = sa.or_(sa.not_(tags.c.delete_enabled), sa.not_(tags.c.write_enabled))
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
            if repo is None:
                return None
            seen: set[str] = set()
            frontier = {digest}
            while frontier:
                rows = [r for r in self._referencing(conn, repo.id, frontier, kind) if r.digest not in seen]
                for row in rows:
                    if not _attrs(row).deletable:
                        return f"manifest {row.digest}, which references {digest}"
                if rows:
                    tag = conn.execute(
                        sa.select(tags.c.name, tags.c.manifest_id)
                        .where(tags.c.manifest_id.in_([r.id for r in rows]), locked).limit(1)
                    ).first()
                    if tag is not None:
                        held = next(r.digest for r in rows if r.id == tag.manifest_id)
                        return f"tag {tag.name!r} of manifest {held}, which references {digest}"
                frontier = {r.digest for r in rows}
                seen |= frontier
                kind = "manifest"
        return None

    def blob_read_blocker(self, registry_id: int, repository: str, digest: str) -> str | None:
        """What forbids reading a blob's bytes: it is referenced in the repository, and only by read-locked
        manifests (``readEnabled=false`` on the manifest; a tag's read lock covers only reads by that tag). A
        blob that no manifest references yet, or that a readable manifest also references, is readable. No query
        unless the repository has a read-locked manifest."""
        if not self.locks(registry_id, repository).any("unreadable"):
            return None
        with self.engine.connect() as conn:
            repo = self._repo_row(conn, registry_id, repository)
            if repo is None:
                return None
            rows = self._referencing(conn, repo.id, {digest}, "blob")
        if rows and not any(r.read_enabled for r in rows):
            return f"manifest {rows[0].digest}, which references {digest}"
        return None

    def delete_repository(self, registry_id: int, repository: str) -> DeletedRepository | None:
        """Delete the repository with every manifest, tag and blob link in one transaction; ``None`` if it does
        not exist. Raises :class:`Blocked` (nothing deleted) if it or anything in it is delete- or write-locked;
        the blobs' bytes go later, when the sweeper finds them unlinked."""
        try:
            with self.engine.begin() as conn:
                repo = self._repo_row(conn, registry_id, repository)
                if repo is None:
                    return None
                if not _attrs(repo).deletable:
                    raise Blocked(f"repository {repository!r}")
                tag = conn.execute(sa.select(tags.c.name).where(
                    tags.c.repository_id == repo.id, _undeletable(tags)).order_by(tags.c.name)).first()
                if tag is not None:
                    raise Blocked(f"tag {tag.name!r}")
                manifest = conn.execute(sa.select(manifests.c.digest).where(
                    manifests.c.repository_id == repo.id, _undeletable(manifests)).order_by(manifests.c.digest)).first()
                if manifest is not None:
                    raise Blocked(f"manifest {manifest.digest}")
                digests = [r.digest for r in conn.execute(
                    sa.select(manifests.c.digest).where(manifests.c.repository_id == repo.id)
                    .order_by(manifests.c.digest))]
                names = [r.name for r in conn.execute(
                    sa.select(tags.c.name).where(tags.c.repository_id == repo.id).order_by(tags.c.name))]
                if not digests:
                    return None
                manifest_ids = sa.select(manifests.c.id).where(manifests.c.repository_id == repo.id)
                conn.execute(sa.delete(tags).where(tags.c.repository_id == repo.id))
                conn.execute(sa.delete(manifest_references).where(manifest_references.c.manifest_id.in_(manifest_ids)))
                conn.execute(sa.delete(manifests).where(manifests.c.repository_id == repo.id))
                conn.execute(sa.delete(repository_blobs).where(repository_blobs.c.repository_id == repo.id))
                conn.execute(sa.delete(repositories).where(repositories.c.id == repo.id))
            return DeletedRepository(digests, names)
        finally:
            self.meta.cache.drop(registry_id, repository)


def _attribute_columns(table: sa.Table) -> list[sa.ColumnElement[Any]]:
    return [table.c[c] for c in ATTRIBUTE_COLUMNS.values()]


def _undeletable(table: sa.Table) -> sa.ColumnElement[bool]:
    """Rows ACR refuses to delete: delete- or write-locked."""
    return sa.or_(table.c.delete_enabled == sa.false(), table.c.write_enabled == sa.false())


def _page(
    query: sa.Select[Any], time_col: sa.ColumnElement[Any], key_col: sa.ColumnElement[Any], last: str | None,
    position: Any, order: Order,
) -> sa.Select[Any]:
    if order is Order.KEY:
        if last is not None:
            query = query.where(key_col > last)
        return query.order_by(key_col)
    descending = order is Order.TIME_DESC
    if position is not None:
        at = sa.tuple_(time_col, key_col)
        query = query.where(at < (position[0], last) if descending else at > (position[0], last))
    if descending:
        return query.order_by(time_col.desc(), key_col.desc())
    return query.order_by(time_col.asc(), key_col.asc())
