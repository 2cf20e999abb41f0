"""``FileBlobStore`` publication: a blob's new directories are fsynced in their parents, so the blob's path survives
a crash as well as its bytes (observed by watching the real fsync calls)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from acrlocal.storage.blobs import FileBlobStore
from acrlocal.storage.digest import Digest


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The paths of the file descriptors ``os.fsync`` is called on (it still syncs them)."""
    paths: list[str] = []
    real = os.fsync

    def watching(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", watching)
    yield paths


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _publish(store: FileBlobStore, data: bytes, upload_id: str) -> Digest:
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())

    async def put() -> None:
        await store.start_upload(upload_id)
        await store.append(upload_id, _chunks(data))
        await store.commit(upload_id, digest)

    asyncio.run(put())
    return digest


def test_new_blob_directories_are_fsynced_in_their_parents(tmp_path: Path, fsynced: list[str]) -> None:
    root = tmp_path / "blobs"
    store = FileBlobStore(root)
    digest = _publish(store, b"first", "u1")
    prefix = root / "sha256" / digest.encoded[:2]
    assert fsynced == [str(root), str(root / "sha256"), str(prefix)]  # sha256/ in root, xx/ in sha256/, the blob
    fsynced.clear()
    again = _publish(store, b"second", "u2")
    expected = [str(root / "sha256"), str(root / "sha256" / again.encoded[:2])]
    if again.encoded[:2] == digest.encoded[:2]:
        expected = expected[1:]
    assert fsynced == expected
    assert store.path(again).read_bytes() == b"second"
