"""``FileBlobStore`` publication: a blob's new directories are fsynced in their parents, so the blob's path survives
a crash as well as its bytes (observed by watching the real fsync calls), and an upload's bytes start on their way
to the disk as they are written (the real ``sync_file_range`` calls, watched)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from acrlocal.storage import blobs
from acrlocal.storage.blobs import CHUNK, FileBlobStore
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


def test_each_piece_of_an_upload_starts_its_writeback_as_it_is_written(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[tuple[int, int, bool]] = []
    real = blobs.start_writeback

    def watching(fd: int, offset: int, length: int) -> bool:
        result = real(fd, offset, length)
        started.append((offset, length, result))
        return result

    monkeypatch.setattr(blobs, "start_writeback", watching)
    store = FileBlobStore(tmp_path / "blobs")
    first, second = os.urandom(3 * CHUNK + 1000), os.urandom(CHUNK // 2)

    async def pieces(data: bytes) -> AsyncIterator[bytes]:
        for at in range(0, len(data), 64 * 1024):
            yield data[at:at + 64 * 1024]

    async def upload() -> Digest:
        await store.start_upload("u1")
        await store.append("u1", pieces(first))
        await store.append("u1", pieces(second))  # a second chunk of the session goes on where the first ended
        digest = Digest("sha256", hashlib.sha256(first + second).hexdigest())
        await store.commit("u1", digest)
        return digest

    digest = asyncio.run(upload())
    assert store.path(digest).read_bytes() == first + second
    covered = 0
    for offset, length, result in started:
        assert (offset, result) == (covered, True)  # in order, no gap, and the kernel took each range
        covered += length
    assert covered == len(first) + len(second)
    assert len(started) >= 4  # piece by piece, not once at the end


def test_writeback_is_best_effort_on_what_cannot_take_it() -> None:
    read, write = os.pipe()
    try:
        assert blobs.start_writeback(read, 0, 4096) is False  # ESPIPE: refused, not raised
    finally:
        os.close(read)
        os.close(write)
