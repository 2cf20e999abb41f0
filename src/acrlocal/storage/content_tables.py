"""The tables of registries' content, on the shared :data:`acrlocal.storage.sql.metadata`: repositories, blobs and
their links, manifests, tags, what manifests reference, and upload sessions. Read and written by
:mod:`acrlocal.storage.sql_metadata` and :mod:`acrlocal.storage.artifacts`."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from acrlocal.storage.sql import byte_ordered, metadata

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
