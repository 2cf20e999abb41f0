"""The registry metadata store on a real SQLite file: transactions, links, cache invalidation, registry deletion."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from acrlocal.storage.metadata import (
    NewManifest,
    RegistryTable,
    SqlRegistryMetadata,
    UnknownReferences,
    blobs,
    manifests,
    repositories,
    tags,
    upload_sessions,
)
from acrlocal.storage.sql import open_engine

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@pytest.fixture
def store(tmp_path: Path) -> tuple[SqlRegistryMetadata, int, int]:
    engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    table = RegistryTable(engine)
    one, two = table.add("registryone", None, {}), table.add("registrytwo", None, {})
    return SqlRegistryMetadata(engine), one.id, two.id


def count(store: SqlRegistryMetadata, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_manifest_with_missing_reference_stores_nothing(store: tuple[SqlRegistryMetadata, int, int]) -> None:
    meta, reg, _ = store
    meta.link_blob(reg, "app", D1, 10)
    with pytest.raises(UnknownReferences) as info:
        meta.put_manifest(reg, "fresh/repo", NewManifest(D3, "m", b"{}", blobs=(D1,)), "v1")
    assert info.value.digests == [D1]  # linked to "app", not to "fresh/repo"
    assert count(meta, manifests) == 0 and count(meta, tags) == 0
    assert count(meta, repositories) == 1  # the repository the failed push would have created is rolled back


def test_cache_is_dropped_on_every_write(store: tuple[SqlRegistryMetadata, int, int]) -> None:
    meta, reg, _ = store
    assert meta.get_manifest(reg, "app", "v1") is None  # a cached miss
    meta.put_manifest(reg, "app", NewManifest(D1, "m", b"one"), "v1")
    assert meta.get_manifest(reg, "app", "v1").body == b"one"  # type: ignore[union-attr]
    meta.put_manifest(reg, "app", NewManifest(D2, "m", b"two"), "v1")
    assert meta.get_manifest(reg, "app", "v1").body == b"two"  # type: ignore[union-attr]
    assert meta.delete_tag(reg, "app", "v1")
    assert meta.get_manifest(reg, "app", "v1") is None
    assert meta.get_manifest(reg, "app", D1) is not None
    assert meta.delete_manifest(reg, "app", D1)
    assert meta.get_manifest(reg, "app", D1) is None


def test_blob_links_and_unlinked_blobs(store: tuple[SqlRegistryMetadata, int, int]) -> None:
    meta, reg, other = store
    meta.link_blob(reg, "a", D1, 5)
    assert meta.mount_blob(reg, "a", "b", D1) == 5
    assert meta.mount_blob(reg, "a", "c", D2) is None
    meta.link_blob(other, "a", D1, 5)
    assert meta.blob_size(reg, "b", D1) == 5 and meta.blob_size(reg, "c", D1) is None
    assert count(meta, blobs) == 1
    assert meta.unlink_blob(reg, "a", D1) and meta.unlink_blob(reg, "b", D1)
    assert not meta.forget_blob_if_unlinked(D1)  # still linked in the other registry
    assert meta.unlinked_blobs(10) == []


def test_delete_registry_removes_all_its_content_and_only_its_own(store: tuple[SqlRegistryMetadata, int, int]) -> None:
    meta, reg, other = store
    for registry in (reg, other):
        meta.link_blob(registry, "app", D1, 3)
        meta.put_manifest(registry, "app", NewManifest(D2, "m", b"{}", blobs=(D1,), subject=D3), "v1")
        meta.create_upload(f"upload-{registry}-0123456789", registry, "app", None)
    meta.link_blob(reg, "solo", D3, 4)
    assert meta.get_manifest(reg, "app", "v1") is not None
    meta.delete_registry(reg)
    assert meta.get_manifest(reg, "app", "v1") is None
    assert meta.list_repositories(reg, None, 100) == []
    assert meta.get_upload(f"upload-{reg}-0123456789") is None
    assert meta.get_manifest(other, "app", "v1") is not None
    assert meta.list_repositories(other, None, 100) == ["app"]
    assert count(meta, upload_sessions) == 1
    assert meta.unlinked_blobs(10) == [D3]  # its bytes go at the next sweep; D1 is still used by the other


def test_registry_row_removal_cascades(store: tuple[SqlRegistryMetadata, int, int], tmp_path: Path) -> None:
    meta, reg, _ = store
    meta.link_blob(reg, "app", D1, 3)
    meta.put_manifest(reg, "app", NewManifest(D2, "m", b"{}", blobs=(D1,)), "v1")
    RegistryTable(meta.engine).remove("registryone")
    assert count(meta, repositories) == 0 and count(meta, manifests) == 0 and count(meta, tags) == 0
