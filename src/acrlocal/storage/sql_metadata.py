"""Registry metadata in SQL (:class:`SqlRegistryMetadata`): repositories, manifests, tags, referrers, blob links,
upload sessions.

Statements are SQLAlchemy Core on the tables of :mod:`acrlocal.storage.content_tables`; the same statements run
on SQLite and PostgreSQL. Every write that must be all-or-nothing (a manifest with its tag, its blob references
and its referrer entry) happens in one transaction, so a crash never leaves a half-visible manifest.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.generations import Generations
from acrlocal.storage.content_tables import (
    blobs,
    manifest_references,
    manifests,
    repositories,
    repository_blobs,
    tags,
    upload_sessions,
)
from acrlocal.storage.manifest_cache import ManifestCache
from acrlocal.storage.metadata import ManifestInUse, ManifestRecord, NewManifest, UnknownReferences, UploadSession
from acrlocal.storage.sql import NamedLock, dialect_insert, racing_insert, write_transaction

# -- the statements of every blob request, built once --------------------------------------------------------
# Building a Core statement and its cache key costs SQLAlchemy more than SQLite takes to run it (about 70 of a
# call's 150 microseconds), so the statements that a push or a pull runs for each of its blobs are built here, once,
# with bound parameters. A parameter stored in a column is named after it, so the length check on writes
# (``acrlocal.storage.sql``) sees it; the ones that only select rows have names of their own.

_REPOSITORY_ID = sa.select(repositories.c.id).where(
    repositories.c.registry_id == sa.bindparam("registry_id"), repositories.c.name == sa.bindparam("name"))
_BLOB_SIZE = (
    sa.select(blobs.c.size, repository_blobs.c.repository_id,
              sa.func.coalesce(repository_blobs.c.used, repository_blobs.c.created).label("used"))
    .select_from(repositories.join(repository_blobs, repository_blobs.c.repository_id == repositories.c.id)
                 .join(blobs, blobs.c.digest == repository_blobs.c.digest))
    .where(repositories.c.registry_id == sa.bindparam("registry_id"), repositories.c.name == sa.bindparam("name"),
           repository_blobs.c.digest == sa.bindparam("blob"))
)
_BLOB_KNOWN = sa.select(blobs.c.digest).where(blobs.c.digest == sa.bindparam("blob"))
#: SET ``used`` (the parameter of that name) of one repository's link to a blob.
_TOUCH_LINK = sa.update(repository_blobs).where(
    repository_blobs.c.repository_id == sa.bindparam("repo_id"), repository_blobs.c.digest == sa.bindparam("blob"))
_UPLOAD = sa.select(upload_sessions).where(upload_sessions.c.id == sa.bindparam("upload_id"))
_NEW_UPLOAD = sa.insert(upload_sessions)
#: SET the columns given as parameters of one upload session.
_UPDATE_UPLOAD = sa.update(upload_sessions).where(upload_sessions.c.id == sa.bindparam("upload_id"))
_DELETE_UPLOAD = sa.delete(upload_sessions).where(upload_sessions.c.id == sa.bindparam("upload_id"))


def _count_uploads(owned: bool) -> sa.Select[Any]:
    owner = upload_sessions.c.principal == sa.bindparam("owner") if owned else upload_sessions.c.principal.is_(None)
    registry = upload_sessions.c.registry_id == sa.bindparam("registry_id")
    sessions = sa.select(upload_sessions.c.id).where(registry, owner)
    return sa.select(sa.func.count()).select_from(sessions.limit(sa.bindparam("most")).subquery())


_COUNT_UPLOADS = {owned: _count_uploads(owned) for owned in (True, False)}


@functools.cache
def _insert_once(dialect: str, table: sa.Table, *key: str) -> Any:
    """An INSERT into ``table`` that does nothing where a row of the same ``key`` exists, for ``dialect``."""
    return dialect_insert(dialect, table).on_conflict_do_nothing(index_elements=list(key))


def _new_id(result: sa.CursorResult[Any]) -> int:
    key = result.inserted_primary_key
    assert key is not None, "an INSERT returns the new row's key"
    return int(key[0])


class SqlRegistryMetadata:
    """:class:`RegistryMetadata` in SQL (SQLAlchemy Core), with manifest reads cached in process.

    Calls are synchronous and short (indexed lookups), made from the event loop; each write is one
    ``engine.begin()`` transaction, so a failure or a crash leaves either all of it or none of it.
    """

    def __init__(self, engine: Engine, generations: Generations | None = None) -> None:
        self.engine = engine
        self.cache = ManifestCache(generations)
        self.collection = NamedLock(engine, "garbage-collection")
        self.upload_expiry = NamedLock(engine, "upload-expiry")

    # -- helpers -----------------------------------------------------------------------------------

    @staticmethod
    def _repository_id(conn: sa.Connection, registry_id: int, name: str) -> int | None:
        row = conn.execute(_REPOSITORY_ID, {"registry_id": registry_id, "name": name}).first()
        return None if row is None else int(row.id)

    def _ensure_repository(self, conn: sa.Connection, registry_id: int, name: str, now: float) -> int:
        repo_id = self._repository_id(conn, registry_id, name)
        if repo_id is None:
            conn.execute(_insert_once(conn.dialect.name, repositories, "registry_id", "name"),
                         {"registry_id": registry_id, "name": name, "created": now, "updated": now})
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
        with self.engine.connect() as conn:
            row = conn.execute(_BLOB_SIZE, {"registry_id": registry_id, "name": repository, "blob": digest}).first()
        if row is None:
            return None
        if refresh_before is not None and row.used < refresh_before:
            with self.engine.begin() as conn:
                conn.execute(_TOUCH_LINK, {"repo_id": row.repository_id, "blob": digest, "used": time.time()})
        return int(row.size)

    @staticmethod
    def _link(conn: sa.Connection, repo_id: int, digest: str, now: float) -> None:
        if not conn.execute(_TOUCH_LINK, {"repo_id": repo_id, "blob": digest, "used": now}).rowcount:
            conn.execute(_insert_once(conn.dialect.name, repository_blobs, "repository_id", "digest"),
                         {"repository_id": repo_id, "digest": digest, "created": now})

    def link_blob(self, registry_id: int, repository: str, digest: str, size: int) -> None:
        now = time.time()
        with self.engine.begin() as conn:
            if conn.execute(_BLOB_KNOWN, {"blob": digest}).first() is None:
                conn.execute(_insert_once(conn.dialect.name, blobs, "digest"),
                             {"digest": digest, "size": size, "created": now})
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
        keys = sa.tuple_(repository_blobs.c.repository_id, repository_blobs.c.digest)
        while True:
            with self.engine.begin() as conn:
                # Lock the candidates (PostgreSQL; SQLite's writers take turns), skipping links a manifest PUT
                # holds right now, then delete those still unreferenced: this DELETE reads what committed before it
                # started, so a manifest that named a link before the lock was taken is seen, and one that names it
                # later waits for this transaction and then finds it gone (MANIFEST_BLOB_UNKNOWN).
                rows = list(conn.execute(query.with_for_update(of=repository_blobs, skip_locked=True)))
                if not rows:
                    return []
                names = {row.repository_id: row.name for row in rows}
                deleted = conn.execute(
                    sa.delete(repository_blobs)
                    .where(keys.in_([(row.repository_id, row.digest) for row in rows]), last_used < used_before,
                           ~referenced)
                    .returning(repository_blobs.c.repository_id, repository_blobs.c.digest)
                ).all()
            if deleted:  # else every candidate was spared (named or used meanwhile): the next batch may have more
                return sorted((names[row.repository_id], row.digest) for row in deleted)

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
                # What the manifest names is checked under the lock its write commits under, so garbage collection
                # (unlink_unreferenced) cannot remove a link between the check and the commit: on SQLite the
                # database's write lock from here on, on PostgreSQL a share lock on each link row it needs.
                write_transaction(conn)
                repo_id = self._ensure_repository(conn, registry_id, repository, now)
                missing: list[str] = []
                if manifest.blobs:
                    have = {
                        r.digest
                        for r in conn.execute(
                            sa.select(repository_blobs.c.digest).where(
                                repository_blobs.c.repository_id == repo_id,
                                repository_blobs.c.digest.in_(manifest.blobs),
                            ).order_by(repository_blobs.c.digest).with_for_update(read=True)
                        )
                    }
                    missing += [d for d in manifest.blobs if d not in have]
                if manifest.manifests:
                    have = {
                        r.digest
                        for r in conn.execute(
                            sa.select(manifests.c.digest).where(
                                manifests.c.repository_id == repo_id, manifests.c.digest.in_(manifest.manifests)
                            ).order_by(manifests.c.digest).with_for_update(read=True)  # see delete_manifest
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
                # Checked against the indexes that name it under the lock the delete commits under, so an index PUT
                # naming it either commits first (and the delete is refused) or finds it gone: on SQLite the
                # database's write lock from here on; on PostgreSQL the manifest's row, locked FOR UPDATE here and
                # FOR SHARE by the PUT's check of its children.
                write_transaction(conn)
                repo_id = self._repository_id(conn, registry_id, repository)
                if repo_id is None:
                    return False
                row = conn.execute(
                    sa.select(manifests.c.id).where(manifests.c.repository_id == repo_id, manifests.c.digest == digest)
                    .with_for_update()
                ).first()
                if row is None:
                    return False
                index = conn.execute(
                    sa.select(manifests.c.digest)
                    .join(manifest_references, manifest_references.c.manifest_id == manifests.c.id)
                    .where(manifest_references.c.kind == "manifest", manifest_references.c.digest == digest,
                           manifests.c.repository_id == repo_id)
                    .order_by(manifests.c.digest).limit(1)
                ).scalar()
                if index is not None:
                    raise ManifestInUse(digest, index)
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
            conn.execute(_NEW_UPLOAD, {"id": upload_id, "registry_id": registry_id, "repository": repository,
                                       "principal": principal, "created": now, "updated": now, "size": 0})

    def get_upload(self, upload_id: str) -> UploadSession | None:
        with self.engine.connect() as conn:
            row = conn.execute(_UPLOAD, {"upload_id": upload_id}).first()
        if row is None:
            return None
        return UploadSession(row.id, row.registry_id, row.repository, row.principal, row.created, row.updated,
                             None if row.size is None else int(row.size))

    def count_uploads(self, registry_id: int, principal: str | None, limit: int) -> int:
        query = _COUNT_UPLOADS[principal is not None]
        with self.engine.connect() as conn:
            return int(conn.execute(query, {"registry_id": registry_id, "owner": principal, "most": limit})
                       .scalar_one())

    def touch_upload(self, upload_id: str, size: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(_UPDATE_UPLOAD, {"upload_id": upload_id, "updated": time.time(), "size": size})

    def delete_upload(self, upload_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(_DELETE_UPLOAD, {"upload_id": upload_id})

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
