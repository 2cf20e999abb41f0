"""The registry metadata store on a real SQLite file: transactions, links, cache invalidation, registry deletion."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from acrlocal.storage import schema
from acrlocal.storage.artifacts import SqlArtifacts
from acrlocal.storage.content_tables import blobs, manifests, repositories, tags, upload_sessions
from acrlocal.storage.metadata import NewManifest, UnknownReferences
from acrlocal.storage.registries import RegistryTable
from acrlocal.storage.sql import open_engine
from acrlocal.storage.sql_metadata import SqlRegistryMetadata

D1, D2, D3 = ("sha256:" + c * 64 for c in "123")


@pytest.fixture
def store(tmp_path: Path, database_url: str) -> tuple[SqlRegistryMetadata, int, int]:
    engine = open_engine(database_url)
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


def test_lock_reach_is_indexed_queries(store: tuple[SqlRegistryMetadata, int, int]) -> None:
    """Whether a locked manifest needs a blob or child manifest is answered by lookups on what references it: no
    statement the check runs scans a table or walks the repository's manifests (SQLite's query plans)."""
    meta, reg, _ = store
    if meta.engine.dialect.name != "sqlite":
        pytest.skip("reads SQLite's query plans")
    artifacts = SqlArtifacts(meta)
    layer, child, top = D1, D2, D3
    meta.link_blob(reg, "app", layer, 10)
    meta.put_manifest(reg, "app", NewManifest(child, "m", b"child", blobs=(layer,)), None)
    meta.put_manifest(reg, "app", NewManifest(top, "i", b"index", manifests=(child,)), "v1")
    for n in range(50):  # other content the check must not read through
        digest = f"sha256:{n:064x}"
        meta.link_blob(reg, "app", digest, 1)
        meta.put_manifest(reg, "app", NewManifest(f"sha256:{n + 1000:064x}", "m", b"x%d" % n, blobs=(digest,)),
                          f"t{n}")
    assert artifacts.content_deletion_blocker(reg, "app", layer, "blob") is None  # no locks: no query at all
    assert artifacts.set_attributes(reg, "app", {"deleteEnabled": False}, tag="v1")
    artifacts.locks(reg, "app")

    statements: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    sa.event.listen(meta.engine, "before_cursor_execute", record)
    try:
        assert artifacts.content_deletion_blocker(reg, "app", layer, "blob") == (
            f"tag 'v1' of manifest {top}, which references {layer}")
        assert artifacts.content_deletion_blocker(reg, "app", child, "manifest") is not None
        assert artifacts.content_deletion_blocker(reg, "app", "sha256:" + "0" * 63 + "7", "blob") is None
    finally:
        sa.event.remove(meta.engine, "before_cursor_execute", record)
    assert statements
    if meta.engine.dialect.name != "sqlite":
        return  # the plans read below are SQLite's
    with meta.engine.connect() as conn:
        for statement, parameters in statements:
            plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
            details = [row[-1] for row in plan]
            # neither a table scan nor a walk through the whole repository (a search on repository_id alone, but
            # in the partial index of its locked rows)
            broad = [d for d in details if d.startswith("SCAN") or (
                re.search(r"\(repository_id=\?\)$", d) and "_locked " not in d)]
            assert not broad, (statement, details)


def test_registries_have_an_identity_of_their_own_also_in_an_older_database(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'old.sqlite'}", upgrade=False)
    schema.upgrade(engine, "0003")  # before registries had a uid
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO registries (id, name, port, created, properties) "
                             "VALUES (1, 'oldregistry', NULL, 0, '{}'), (2, 'another', NULL, 0, '{}')"))
    schema.upgrade(engine)
    table = RegistryTable(engine)
    old = table.get("oldregistry")
    assert len(old.uid) == 36 and old.uid != table.get("another").uid
    table.remove("oldregistry")
    again = table.add("oldregistry", None, {})
    assert again.uid and again.uid != old.uid


def test_concurrent_writers_of_the_same_names_end_in_one_serial_order(
        store: tuple[SqlRegistryMetadata, int, int]) -> None:
    """Replicas (here: threads, each with connections of its own) pushing the same blob, manifest and tag into a
    repository that does not exist yet: every push succeeds, and the result is that of some serial order (one
    repository, one blob row and link, one manifest, the tag on one of the pushed manifests)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    meta, reg, _ = store
    writers = 6
    for round_ in range(8):
        repo = f"race/r{round_}"
        barrier = threading.Barrier(writers)

        def push(i: int, repo: str = repo, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            meta.link_blob(reg, repo, D1, 10)
            meta.mount_blob(reg, repo, f"{repo}-mounted", D1)
            meta.put_manifest(reg, repo, NewManifest(D2, "m", b"same", blobs=(D1,)), "latest")
            meta.put_manifest(reg, repo, NewManifest(f"sha256:{i:064x}", "m", b"own"), "moving")

        with ThreadPoolExecutor(writers) as pool:
            list(pool.map(push, range(writers)))
        with meta.engine.connect() as conn:
            names = conn.execute(sa.select(repositories.c.name).where(repositories.c.name.like(f"{repo}%"))).all()
            assert sorted(r.name for r in names) == [repo, f"{repo}-mounted"]
        assert meta.get_manifest(reg, repo, "latest").digest == D2  # type: ignore[union-attr]
        assert meta.get_manifest(reg, repo, "moving").digest in {f"sha256:{i:064x}" for i in range(writers)}  # type: ignore[union-attr]
        assert meta.list_tags(reg, repo, None, 10) == ["latest", "moving"]
    assert count(meta, blobs) == 1


def test_names_list_in_byte_order_on_every_backend(store: tuple[SqlRegistryMetadata, int, int]) -> None:
    """OCI's lexical order, and pages after ``last`` in it, whatever the database's collation sorts text by (the
    test PostgreSQL server sorts as en-US, which puts "a" before "B" and punctuation first)."""
    meta, reg, _ = store
    tag_names = ["B", "a", "_x", "Z", "a-b", "ab", "a.b", "A1", "a_b"]
    for i, tag in enumerate(tag_names):
        meta.put_manifest(reg, "order/app", NewManifest(f"sha256:{i:064x}", "m", b"%d" % i), tag)
    assert meta.list_tags(reg, "order/app", None, 100) == sorted(tag_names)
    assert meta.list_tags(reg, "order/app", "Z", 100) == [t for t in sorted(tag_names) if t > "Z"]
    repository_names = ["order/a-b", "order/a.b", "order/a_b", "order/ab", "order/a/b", "order/a0"]
    for name in repository_names:
        meta.put_manifest(reg, name, NewManifest(D1, "m", b"x"), "v1")
    listed = [n for n in meta.list_repositories(reg, None, 100) if n.startswith("order/")]
    assert listed == sorted([*repository_names, "order/app"])
    assert [n for n in meta.list_repositories(reg, "order/a.b", 100) if n.startswith("order/")] == \
        [n for n in listed if n > "order/a.b"]


def test_replicas_creating_the_same_registry_at_once_get_already_exists(database_url: str) -> None:
    """acr create of one name on two replicas at once: one registry, the others told it exists (a 409 in ARM)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from acrlocal.errors import AlreadyExists

    engine = open_engine(database_url)
    table = RegistryTable(engine)
    writers = 6
    for round_ in range(5):
        barrier = threading.Barrier(writers)

        def add(_: int, name: str = f"racereg{round_}", barrier: threading.Barrier = barrier) -> str:
            barrier.wait()
            try:
                table.add(name, None, {})
                return "made"
            except AlreadyExists:
                return "exists"

        with ThreadPoolExecutor(writers) as pool:
            outcomes = sorted(pool.map(add, range(writers)))
        assert outcomes == ["exists"] * (writers - 1) + ["made"]
    engine.dispose()
