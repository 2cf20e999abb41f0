"""Secrets at rest: the database (with its -wal and -shm files) and admin.json are 0600 whatever the umask, also in
a data directory made before that was so, and admin.json is written with fsync (file, rename, directory)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from acrlocal.identity.bootstrap import AdminCredential
from tests.harness import AcrLocal, running
from tests.registry.conftest import RegistryClient


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """A umask that takes nothing away (what a careless shell profile leaves), for the servers started here."""
    before = os.umask(0)
    try:
        yield
    finally:
        os.umask(before)


def test_database_and_admin_credential_are_0600_whatever_the_umask(tmp_path: Path, open_umask: None) -> None:
    data = tmp_path / "data"
    with running(data) as server:
        RegistryClient(server).push_blob("secrets/app", b"a write, so the -wal file has content")
        database = data / "acrlocal.db"
        files = [database, data / "admin.json", *(database.with_name(database.name + s) for s in ("-wal", "-shm"))]
        if server.database_url.startswith("sqlite"):
            for path in files:
                assert mode(path) == 0o600, (path, oct(mode(path)))
        else:
            assert mode(data / "admin.json") == 0o600


def test_a_database_made_readable_before_is_narrowed_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = AcrLocal(data)
    if not server.database_url.startswith("sqlite"):
        pytest.skip("the database is not a file of the data directory")
    server.start()
    server.stop()
    database = data / "acrlocal.db"
    for path in (database, database.with_name("acrlocal.db-wal"), database.with_name("acrlocal.db-shm")):
        if path.exists():
            path.chmod(0o644)
    with running(data):
        for path in (database, database.with_name("acrlocal.db-wal"), database.with_name("acrlocal.db-shm")):
            assert mode(path) == 0o600, path


def test_admin_json_is_fsynced_and_renamed_into_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      open_umask: None) -> None:
    synced: list[str] = []
    real = os.fsync

    def watching(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", watching)
    path = tmp_path / "admin.json"
    stale = tmp_path / ".admin.json.tmp"
    stale.write_text("a crash's leftover")
    stale.chmod(0o666)
    credential = AdminCredential(tenantId="t", subscriptionId="s", clientId="c", objectId="o", clientSecret="secret")
    credential.write(path)
    assert synced == [str(stale), str(tmp_path)]  # the new content under its temporary name, then the rename
    assert mode(path) == 0o600 and not stale.exists()
    assert AdminCredential.read(path) == credential
