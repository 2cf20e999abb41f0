"""Caches kept by several processes of one server (``up --workers``), modelled as two stores on one database and
one generations file: a write through one is seen by the next read through the other, however warm its cache."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import pytest

from acrlocal.generations import Generations
from acrlocal.storage.artifacts import SqlArtifacts
from acrlocal.storage.metadata import NewManifest
from acrlocal.storage.registries import RegistryTable
from acrlocal.storage.sql import open_engine
from acrlocal.storage.sql_metadata import SqlRegistryMetadata

D1, D2 = ("sha256:" + c * 64 for c in "12")


@pytest.fixture
def two(tmp_path: Path, database_url: str) -> tuple[SqlArtifacts, SqlArtifacts, int]:
    """Two processes' worth of stores: separate engines and caches, the same database and generations file."""
    stores = []
    for _ in range(2):
        meta = SqlRegistryMetadata(open_engine(database_url), Generations(tmp_path / "generations"))
        stores.append(SqlArtifacts(meta))
    registry = RegistryTable(stores[0].engine).add("registryone", None, {})
    return stores[0], stores[1], registry.id


def test_a_tag_moved_in_one_process_is_read_moved_in_another(two: tuple[SqlArtifacts, SqlArtifacts, int]) -> None:
    one, other, reg = two
    one.meta.put_manifest(reg, "app", NewManifest(D1, "m", b"one"), "v1")
    assert other.meta.get_manifest(reg, "app", "v1").body == b"one"  # type: ignore[union-attr]
    assert other.meta.get_manifest(reg, "app", "v2") is None  # a cached miss
    one.meta.put_manifest(reg, "app", NewManifest(D2, "m", b"two"), "v1")
    one.meta.put_manifest(reg, "app", NewManifest(D2, "m", b"two"), "v2")
    assert other.meta.get_manifest(reg, "app", "v1").body == b"two"  # type: ignore[union-attr]
    assert other.meta.get_manifest(reg, "app", "v2") is not None
    assert one.meta.delete_tag(reg, "app", "v2")
    assert other.meta.get_manifest(reg, "app", "v2") is None


def test_a_lock_set_in_one_process_holds_in_another(two: tuple[SqlArtifacts, SqlArtifacts, int]) -> None:
    one, other, reg = two
    one.meta.put_manifest(reg, "app", NewManifest(D1, "m", b"one"), "v1")
    assert other.locks(reg, "app").tag("v1").write_enabled  # cached
    assert one.set_attributes(reg, "app", {"writeEnabled": False}, tag="v1")
    assert not other.locks(reg, "app").tag("v1").write_enabled
    assert one.set_attributes(reg, "app", {"readEnabled": False})
    assert not other.locks(reg, "app").repository.read_enabled


def test_a_deleted_registry_leaves_nothing_cached_elsewhere(two: tuple[SqlArtifacts, SqlArtifacts, int]) -> None:
    one, other, reg = two
    one.meta.put_manifest(reg, "app", NewManifest(D1, "m", b"one"), "v1")
    assert other.meta.get_manifest(reg, "app", "v1") is not None
    one.meta.delete_registry(reg)
    assert other.meta.get_manifest(reg, "app", "v1") is None


def _bump(path: str) -> None:
    Generations(Path(path)).bump(("repository", 1, "app"))


def test_generations_are_shared_by_processes(tmp_path: Path) -> None:
    mine = Generations(tmp_path / "generations")
    before = mine.current(("repository", 1, "app"))
    other = mine.current(("repository", 1, "other"))
    process = multiprocessing.get_context("spawn").Process(target=_bump, args=(str(tmp_path / "generations"),))
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert mine.current(("repository", 1, "app")) != before
    assert mine.current(("repository", 1, "other")) == other  # (a different slot)
    private = Generations()
    private.bump("x")
    assert Generations().current("x") == 0  # private slots are private
    mine.close()
