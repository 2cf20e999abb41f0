"""ACR's view of registry content on a real SQLite file, where its cost could grow with the data: time-ordered pages
read in order from an index, and lock checks that read only the tag and manifest a request names."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from acrlocal.storage.artifacts import Blocked, Order, SqlArtifacts
from acrlocal.storage.content_tables import tags
from acrlocal.storage.metadata import NewManifest
from acrlocal.storage.registries import RegistryTable
from acrlocal.storage.sql import open_engine
from acrlocal.storage.sql_metadata import SqlRegistryMetadata

D1, D2 = ("sha256:" + c * 64 for c in "12")


@pytest.fixture
def catalog(tmp_path: Path) -> tuple[SqlArtifacts, int]:
    engine = open_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    registry = RegistryTable(engine).add("registryone", None, {})
    return SqlArtifacts(SqlRegistryMetadata(engine)), registry.id


def walk(catalog: SqlArtifacts, reg: int, order: Order, n: int) -> list[str]:
    names: list[str] = []
    last = None
    while True:
        page = catalog.tags(reg, "app", last, n, order)
        assert page is not None
        names += [t.name for t in page]
        if len(page) < n:
            return names
        last = page[-1].name


def test_time_pages_are_exact_reverses_even_with_equal_times(catalog: tuple[SqlArtifacts, int]) -> None:
    artifacts, reg = catalog
    meta = artifacts.meta
    names = [f"t{i:02d}" for i in range(9)]
    for name in names:
        meta.put_manifest(reg, "app", NewManifest(D1, "m", b"{}"), name)
    with artifacts.engine.begin() as conn:  # three tags share each update time: the name breaks the tie
        for i, name in enumerate(names):
            conn.execute(sa.update(tags).where(tags.c.name == name).values(updated=1000.0 + i // 3))
    ascending = walk(artifacts, reg, Order.TIME_ASC, 2)
    assert ascending == names
    for n in (1, 2, 4, 50):
        assert walk(artifacts, reg, Order.TIME_DESC, n) == list(reversed(names))
        assert walk(artifacts, reg, Order.TIME_ASC, n) == names


def test_time_ordered_page_reads_the_index_in_order(catalog: tuple[SqlArtifacts, int]) -> None:
    artifacts, _ = catalog
    seen: list[str] = []

    @sa.event.listens_for(artifacts.engine, "before_cursor_execute")
    def plan(conn: sa.Connection, cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.startswith("SELECT tags.name") and "ORDER BY tags.updated" in statement:
            seen.extend(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                parameters).fetchall())  # type: ignore[arg-type]

    artifacts.meta.put_manifest(catalog[1], "app", NewManifest(D1, "m", b"{}"), "v1")
    for order in (Order.TIME_DESC, Order.TIME_ASC):
        artifacts.tags(catalog[1], "app", "v1", 10, order)
    assert seen and all("TEMP B-TREE" not in step for step in seen), seen
    assert any("ix_tags_updated" in step for step in seen), seen


def test_locks_are_read_per_tag_and_manifest_and_dropped_on_write(catalog: tuple[SqlArtifacts, int]) -> None:
    artifacts, reg = catalog
    meta = artifacts.meta
    meta.put_manifest(reg, "app", NewManifest(D1, "m", b"one"), "v1")
    meta.put_manifest(reg, "app", NewManifest(D2, "m", b"two"), "v2")
    assert artifacts.locks(reg, "app").tag("v1").write_enabled
    assert artifacts.set_attributes(reg, "app", {"writeEnabled": False}, tag="v1")
    locks = artifacts.locks(reg, "app")
    assert not locks.tag("v1").write_enabled and locks.tag("v2").write_enabled
    assert locks.tag("nosuchtag").write_enabled and locks.manifest(D2).read_enabled
    assert artifacts.set_attributes(reg, "app", {"readEnabled": False}, digest=D2)
    assert not artifacts.locks(reg, "app").manifest(D2).read_enabled
    assert artifacts.locks(reg, "other").tag("v1").write_enabled  # no such repository: nothing is locked
    assert artifacts.manifest_deletion_blocker(reg, "app", D1) == "tag 'v1'"
    assert artifacts.manifest_deletion_blocker(reg, "app", D2) is None
    with pytest.raises(Blocked, match="tag 'v1'"):
        artifacts.delete_repository(reg, "app")
    assert artifacts.set_attributes(reg, "app", {"writeEnabled": True}, tag="v1")
    assert artifacts.set_attributes(reg, "app", {"deleteEnabled": False}, digest=D2)
    with pytest.raises(Blocked, match="manifest"):
        artifacts.delete_repository(reg, "app")
    assert artifacts.set_attributes(reg, "app", {"deleteEnabled": True}, digest=D2)
    deleted = artifacts.delete_repository(reg, "app")
    assert deleted is not None and deleted.tags == ["v1", "v2"]


def test_whether_anything_is_locked_is_read_from_the_locked_rows_only(catalog: tuple[SqlArtifacts, int]) -> None:
    artifacts, reg = catalog
    meta = artifacts.meta
    plans: list[str] = []

    @sa.event.listens_for(artifacts.engine, "before_cursor_execute")
    def plan(conn: sa.Connection, cursor: object, statement: str, parameters: object, *_: object) -> None:
        if "NOT (" in statement and statement.startswith("SELECT"):
            plans.extend(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement,
                                                                 parameters).fetchall())  # type: ignore[arg-type]

    meta.put_manifest(reg, "app", NewManifest(D1, "m", b"one"), "v1")
    meta.put_manifest(reg, "app", NewManifest(D2, "m", b"two"), "v2")
    locks = artifacts.locks(reg, "app")
    assert not locks.any("undeletable") and not locks.any("unreadable")
    assert artifacts.set_attributes(reg, "app", {"listEnabled": False}, tag="v1")  # locked, but deletable
    assert not artifacts.locks(reg, "app").any("undeletable")
    assert artifacts.set_attributes(reg, "app", {"deleteEnabled": False}, tag="v1")
    assert artifacts.locks(reg, "app").any("undeletable") and not artifacts.locks(reg, "app").any("unreadable")
    assert artifacts.set_attributes(reg, "app", {"readEnabled": False}, digest=D2)
    assert artifacts.locks(reg, "app").any("unreadable")
    assert plans and all("_locked" in step for step in plans if step.startswith("SEARCH")), plans
