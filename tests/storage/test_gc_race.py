"""Garbage collection against a manifest PUT that names the blob it is unlinking (the mark-and-sweep race), on two
stores over one database: two replicas on PostgreSQL, or two processes of one server on SQLite. Each test stops
one side just before a statement, lets the other run as far as it can, then lets the first go on: whatever the
order, a stored manifest's blobs stay linked, and a PUT that loses fails with UnknownReferences having stored
nothing. One collection at a time: the collection lock has one holder across stores and processes."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from acrlocal.storage.content_tables import manifests, repositories, repository_blobs, tags
from acrlocal.storage.metadata import NewManifest, UnknownReferences
from acrlocal.storage.registries import RegistryTable
from acrlocal.storage.sql import NamedLock, database_unavailable, open_engine
from acrlocal.storage.sql_metadata import SqlRegistryMetadata

LAYER = "sha256:" + "a" * 64
MANIFEST = NewManifest("sha256:" + "b" * 64, "application/vnd.oci.image.manifest.v1+json", b"{}", blobs=(LAYER,))
WAIT_S = 60  # only ever reached when a side hangs: a failure, not a timing


class Stop:
    """Stops the thread that is about to run a statement on ``engine`` matching ``when`` (once), until :meth:`go`."""

    def __init__(self, engine: sa.Engine, when: Callable[[str], bool]) -> None:
        self.when, self.armed = when, True
        self.reached, self._go = threading.Event(), threading.Event()
        sa.event.listen(engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.armed and self.when(statement):
            self.armed = False
            self.reached.set()
            self._go.wait(WAIT_S)

    def go(self) -> None:
        self._go.set()


class Side(threading.Thread):
    """One store's call in a thread of its own; ``at_or_done`` is set when it is about to run a statement matching
    ``blocks_at`` (where it may wait for the other side's lock) or has returned."""

    def __init__(self, engine: sa.Engine, call: Callable[[], object], blocks_at: Callable[[str], bool]) -> None:
        super().__init__(daemon=True)
        self.call = call
        self.result: object = None
        self.error: Exception | None = None
        self.at_or_done = threading.Event()
        self.blocks_at = blocks_at
        sa.event.listen(engine, "before_cursor_execute", self._hook)

    def _hook(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.blocks_at(statement):
            self.at_or_done.set()

    def run(self) -> None:
        try:
            self.result = self.call()
        except Exception as exc:  # handed to the test
            self.error = exc
        finally:
            self.at_or_done.set()


@pytest.fixture
def replicas(database_url: str) -> Iterator[tuple[SqlRegistryMetadata, SqlRegistryMetadata, int]]:
    """A pusher's store and a collector's, on separate engines over one database, with a layer linked to ``app``
    long ago and referenced by nothing yet."""
    pusher, collector = (SqlRegistryMetadata(open_engine(database_url)) for _ in range(2))
    registry = RegistryTable(pusher.engine).add("registryone", None, {}).id
    pusher.link_blob(registry, "app", LAYER, 10)
    with pusher.engine.begin() as conn:
        conn.execute(sa.update(repository_blobs).values(created=time.time() - 7200))
    try:
        yield pusher, collector, registry
    finally:
        pusher.engine.dispose()
        collector.engine.dispose()


def state(meta: SqlRegistryMetadata) -> tuple[bool, bool, bool]:
    """Whether the layer is linked to ``app``, the manifest is stored, and tag ``v1`` exists."""
    app = sa.select(repositories.c.id).where(repositories.c.name == "app").scalar_subquery()
    with meta.engine.connect() as conn:
        linked = conn.execute(sa.select(repository_blobs.c.digest).where(
            repository_blobs.c.repository_id == app, repository_blobs.c.digest == LAYER)).first() is not None
        stored = conn.execute(sa.select(manifests.c.id).where(manifests.c.digest == MANIFEST.digest)).first()
        tagged = conn.execute(sa.select(tags.c.id).where(tags.c.name == "v1")).first()
    return linked, stored is not None, tagged is not None


def collect(meta: SqlRegistryMetadata, registry: int) -> list[tuple[str, str]]:
    return meta.unlink_unreferenced(registry, time.time() - 3600, 500)


def race(first: Side, stop: Stop, second: Side) -> None:
    """Run ``first`` up to ``stop``; run ``second`` until it finishes or reaches where it may wait; let ``first``
    go on; wait for both."""
    first.start()
    assert stop.reached.wait(WAIT_S), "the first side never reached its statement"
    second.start()
    assert second.at_or_done.wait(WAIT_S), "the second side neither finished nor reached its locking statement"
    stop.go()
    first.join(WAIT_S)
    second.join(WAIT_S)
    assert not first.is_alive() and not second.is_alive()


def is_manifest_insert(statement: str) -> bool:
    return statement.lstrip().upper().startswith("INSERT INTO MANIFESTS")


def is_unlink(statement: str) -> bool:
    return statement.lstrip().upper().startswith("DELETE FROM REPOSITORY_BLOBS")


def is_link_check(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT REPOSITORY_BLOBS.DIGEST")


def test_a_collection_during_a_manifest_put_spares_what_it_names(
    replicas: tuple[SqlRegistryMetadata, SqlRegistryMetadata, int],
) -> None:
    """The PUT has checked the layer's link and is about to write; the collection runs meanwhile."""
    pusher, collector, registry = replicas
    stop = Stop(pusher.engine, is_manifest_insert)
    push = Side(pusher.engine, lambda: pusher.put_manifest(registry, "app", MANIFEST, "v1"), lambda s: False)
    gc = Side(collector.engine, lambda: collect(collector, registry), is_unlink)
    race(push, stop, gc)
    assert push.error is None
    assert state(pusher) == (True, True, True)  # the manifest, and the link it needs
    assert gc.error is None and gc.result == []
    assert collector.forget_blob_if_unlinked(LAYER) is False  # the bytes stay


def test_a_manifest_put_during_a_collection_stores_nothing_or_keeps_its_blob(
    replicas: tuple[SqlRegistryMetadata, SqlRegistryMetadata, int],
) -> None:
    """The collection has found the layer unreferenced and is about to unlink it; the PUT runs meanwhile."""
    pusher, collector, registry = replicas
    stop = Stop(collector.engine, is_unlink)
    gc = Side(collector.engine, lambda: collect(collector, registry), lambda s: False)
    push = Side(pusher.engine, lambda: pusher.put_manifest(registry, "app", MANIFEST, "v1"), is_link_check)
    race(gc, stop, push)
    assert gc.error is None
    linked, stored, tagged = state(pusher)
    if isinstance(push.error, UnknownReferences):  # the collection first: the PUT stored nothing
        assert push.error.digests == [LAYER]
        assert (linked, stored, tagged) == (False, False, False) and gc.result == [("app", LAYER)]
        assert collector.forget_blob_if_unlinked(LAYER) is True
    else:  # the PUT first: the collection spared the link
        assert push.error is None
        assert (linked, stored, tagged) == (True, True, True) and gc.result == []
        assert collector.forget_blob_if_unlinked(LAYER) is False
    # Which of the two serial orders is the backend's locking: PostgreSQL's collection holds the link it is about
    # to delete, so the PUT waits for it and loses; SQLite's PUT takes the write lock and wins.
    backend = pusher.engine.dialect.name
    assert isinstance(push.error, UnknownReferences) if backend == "postgresql" else push.error is None


def _hold(url: str, held: Any, release: Any) -> None:
    engine = open_engine(url, upgrade=False)
    lock = NamedLock(engine, "garbage-collection")
    assert lock.acquire()
    held.set()
    release.wait(WAIT_S)
    lock.release()
    engine.dispose()


def test_one_collection_at_a_time_across_stores_and_processes(database_url: str) -> None:
    one, other = (SqlRegistryMetadata(open_engine(database_url)) for _ in range(2))
    try:
        assert one.collection.acquire()
        assert not other.collection.acquire()  # another replica
        assert not one.collection.acquire()  # the same process, from another task
        one.collection.release()
        assert other.collection.acquire()
        other.collection.release()

        ctx = multiprocessing.get_context("spawn")
        held, release = ctx.Event(), ctx.Event()
        process = ctx.Process(target=_hold, args=(database_url, held, release))
        process.start()
        try:
            assert held.wait(WAIT_S)
            assert not one.collection.acquire()
            release.set()
            process.join(WAIT_S)
            assert process.exitcode == 0
            assert one.collection.acquire()
            one.collection.release()
        finally:
            release.set()
            process.join(WAIT_S)
    finally:
        one.engine.dispose()
        other.engine.dispose()


def test_a_collection_lock_lost_with_its_connection_is_noticed_by_its_holder(database_url: str) -> None:
    """Cut the holder's connection (as a PostgreSQL restart does): another store takes the lock, and the first
    learns at its next check that it holds it no more (the database's 503), instead of collecting on."""
    one, other = (SqlRegistryMetadata(open_engine(database_url)) for _ in range(2))
    try:
        if one.engine.dialect.name != "postgresql":
            pytest.skip("a file lock is held while its process lives: nothing to lose")
        assert one.collection.acquire()
        one.collection.verify()
        with other.engine.connect() as conn:
            # This database's only named lock: pg_locks shows the whole cluster, where every server on PostgreSQL
            # holds a named lock of its own (its deployment runner's).
            pid = conn.execute(sa.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 24931 AND database = "
                "(SELECT oid FROM pg_database WHERE datname = current_database())")).scalar_one()
            # Returns once the backend has ended: its locks go with it, a moment after the signal.
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid, 30000)"), {"pid": pid}).scalar()
        assert other.collection.acquire()  # another replica's collection may start now
        with pytest.raises(sa.exc.OperationalError) as lost:
            one.collection.verify()
        assert database_unavailable(lost.value) and "garbage-collection" in str(lost.value)
        one.collection.release()  # nothing to give back
        assert not one.collection.acquire()
        other.collection.release()
        assert one.collection.acquire()
        one.collection.release()
    finally:
        one.engine.dispose()
        other.engine.dispose()


def test_a_process_that_dies_holding_the_collection_lock_releases_it(database_url: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    held, release = ctx.Event(), ctx.Event()
    process = ctx.Process(target=_hold, args=(database_url, held, release))
    process.start()
    assert held.wait(WAIT_S)
    process.kill()
    process.join(WAIT_S)
    meta = SqlRegistryMetadata(open_engine(database_url))
    try:
        for _ in range(200):  # PostgreSQL notices the closed session a moment after the kill
            if meta.collection.acquire():
                break
            time.sleep(0.05)
        else:
            pytest.fail("the collection lock outlived the process that held it")
        meta.collection.release()
    finally:
        meta.engine.dispose()
