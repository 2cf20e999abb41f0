"""``FileBlobStore.read``: exact bytes for every offset and length, from the page cache or through the executor."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from acrlocal.errors import NotFound
from acrlocal.storage.blobs import READ_CHUNK, FileBlobStore
from acrlocal.storage.digest import Digest


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _store_blob(root: Path, data: bytes) -> tuple[FileBlobStore, Digest]:
    store = FileBlobStore(root)
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())

    async def put() -> None:
        await store.start_upload("u1")
        await store.append("u1", _chunks(data))
        await store.commit("u1", digest)

    asyncio.run(put())
    return store, digest


def _read(store: FileBlobStore, digest: Digest, offset: int = 0, length: int | None = None) -> list[bytes]:
    async def read() -> list[bytes]:
        return [bytes(piece) async for piece in store.read(digest, offset, length)]

    return asyncio.run(read())


@pytest.mark.parametrize("nowait", [True, False], ids=["page-cache", "executor"])
def test_read_returns_exact_bytes_for_offsets_and_lengths(tmp_path: Path, nowait: bool) -> None:
    data = os.urandom(2 * READ_CHUNK + 777)
    store, digest = _store_blob(tmp_path, data)
    store._nowait = nowait and hasattr(os, "RWF_NOWAIT")
    pieces = _read(store, digest)
    assert b"".join(pieces) == data
    assert all(len(p) <= READ_CHUNK for p in pieces)
    for offset, length in [(0, 1), (5, READ_CHUNK), (READ_CHUNK - 1, 3), (len(data) - 10, None), (100, 0)]:
        expected = data[offset:] if length is None else data[offset:offset + length]
        assert b"".join(_read(store, digest, offset, length)) == expected
    assert _read(store, digest, len(data)) == []


def test_read_of_a_blob_not_stored_is_not_found(tmp_path: Path) -> None:
    store = FileBlobStore(tmp_path)
    with pytest.raises(NotFound, match="is not stored"):
        _read(store, Digest("sha256", "0" * 64))
