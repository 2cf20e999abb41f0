"""On SQLite, a deletion whose cost grows with the data it touches (a repository with every tag in it, a manifest
with every tag on it) runs off the event loop (``SqlThread.run_long``), and so does any write that finds another
writer's lock held (another process of the server writing): while it waits for the database, the same process
answers requests that need none. Before, it ran on the event loop: deleting a repository of 100,000 tags
stopped every tenant's requests for about a second, and one that waited for another writer's lock stopped them
until SQLite's busy timeout gave up, failing the deletion.

Each case holds SQLite's write lock in a connection of the test's own, waits until the server's deletion waits for
it (SQLite's busy handler sleeping in a thread of the server's process), checks that the server answers
``/healthz``, then lets the lock go: the deletion completes with its usual answer.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.harness import AcrLocal
from tests.registry.conftest import repository_writer
from tests.table_locks import BOUND_S, wait_until

REPO = "long/deletion"


def waiting_for_a_lock(pid: int) -> bool:
    """Whether a thread of process ``pid`` sleeps in the kernel's ``nanosleep``: SQLite's busy handler, between its
    tries for a lock another connection holds (an idle server's threads wait in ``epoll_wait`` and on futexes)."""
    tasks = Path(f"/proc/{pid}/task")
    for task in tasks.iterdir():
        try:
            if (task / "wchan").read_text() == "hrtimer_nanosleep":
                return True
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[AcrLocal]:
    """One process on SQLite (the case the test is about, whatever ``--backend`` says)."""
    running = AcrLocal(tmp_path / "data", "--workers", "1", backend="sqlite")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def served_while_locked(server: AcrLocal, send: Callable[[], requests.Response], what: str) -> requests.Response:
    """Hold SQLite's one write lock in a connection of the test's own, ``send()`` in a thread and wait until the
    server waits for the lock; check that the same process answers ``/healthz`` meanwhile; then let the lock go and
    return what ``send()`` got."""
    holder = sqlite3.connect(server.data_dir / "acrlocal.db", isolation_level=None, timeout=BOUND_S)
    holder.execute("BEGIN IMMEDIATE")
    held = True
    try:
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(send)
            wait_until(lambda: waiting_for_a_lock(server.status["pid"]), f"{what} waits for the write lock", pending)
            probe = server.session().get(f"{server.shared}/healthz", timeout=BOUND_S)
            assert probe.status_code == 200, probe.text
            holder.execute("ROLLBACK")
            held = False
            return pending.result(timeout=BOUND_S * 2)
    finally:
        if held:
            holder.execute("ROLLBACK")
        holder.close()


@pytest.mark.parametrize("deletion", ["repository", "manifest"])
def test_a_long_deletion_waits_for_the_database_off_the_event_loop(server: AcrLocal, deletion: str) -> None:
    base, client, auth = repository_writer(server, REPO)
    manifest = client.push_image(REPO, "v1")
    for tag in ("v2", "v3"):
        assert client.push_manifest(REPO, tag, manifest).status_code == 201
    path = f"/acr/v1/{REPO}" if deletion == "repository" else f"/v2/{REPO}/manifests/{manifest.digest}"
    answer = served_while_locked(server, lambda: client.http.delete(base + path, headers=auth, timeout=BOUND_S * 2),
                                 f"the {deletion}'s deletion")
    # With the deletion on the event loop, /healthz waited until SQLite's busy timeout failed the deletion.
    assert answer.status_code == 202, answer.text
    for tag in ("v1", "v2", "v3"):
        assert client.head(f"/v2/{REPO}/manifests/{tag}").status_code == 404


def test_a_write_that_finds_the_lock_held_waits_off_the_event_loop(server: AcrLocal) -> None:
    """A push of a tag is a short write, run inline; with another writer holding the lock it runs again in the
    thread and waits there (before: on the event loop, until the busy timeout failed it with 503)."""
    base, client, auth = repository_writer(server, REPO)
    manifest = client.push_image(REPO, "v1")
    answer = served_while_locked(server, lambda: client.http.put(
        f"{base}/v2/{REPO}/manifests/v2", data=manifest.body, headers={**auth, "Content-Type": manifest.media_type},
        timeout=BOUND_S * 2), "the push")
    assert answer.status_code == 201, answer.text
    assert client.head(f"/v2/{REPO}/manifests/v2").headers["Docker-Content-Digest"] == manifest.digest
