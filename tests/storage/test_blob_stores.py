"""The ``BlobStore`` contract on both implementations: files under a directory, and an Azure Blob Storage container
on a private Azurite (``tests/azurite.py``); then what only the Azure store has to get right: sessions continued by
another replica (another store object, as another process would be), two replicas racing on one session, and the
redirect URL, and the requests each call sends to storage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from acrlocal.blob_location import parse_location
from acrlocal.errors import NotFound
from acrlocal.storage import azure_blobs, blobs, sha256state
from acrlocal.storage.azure_blobs import AzureBlobStore
from acrlocal.storage.blobs import BlobStore, DigestMismatch, FileBlobStore, UploadRaced, UploadTooLarge
from acrlocal.storage.digest import Digest
from tests import azurite

StoreFactory = Callable[[], Awaitable[BlobStore]]


@pytest.fixture(scope="module")
def azurite_server() -> Iterator[azurite.AzuriteServer]:
    with azurite.private(access_log=True) as server:
        yield server


@pytest.fixture
def container_url(azurite_server: azurite.AzuriteServer) -> str:
    return azurite_server.container_url()


def _azure(url: str, server: azurite.AzuriteServer) -> StoreFactory:
    async def make() -> BlobStore:
        return await AzureBlobStore.open(parse_location(url), key=server.key, ca=server.ca)
    return make


@pytest.fixture(params=["files", "azurite"])
def new_store(request: pytest.FixtureRequest, tmp_path: Path) -> StoreFactory:
    """Makes a store on one place each call: a second call is another replica on the same storage."""
    if request.param == "files":
        async def files() -> BlobStore:
            return FileBlobStore(tmp_path / "blobs")
        return files
    server = request.getfixturevalue("azurite_server")
    return _azure(server.container_url(), server)


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


async def pieces(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def sha256(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def read_all(store: BlobStore, digest: Digest, offset: int = 0, length: int | None = None) -> bytes:
    return b"".join([bytes(p) async for p in store.read(digest, offset, length)])


def test_an_upload_in_chunks_publishes_the_blob_and_reads_back_in_ranges(new_store: StoreFactory) -> None:
    data = os.urandom(azure_blobs.BLOCK_SIZE + 12345)  # more than one block, and a short last one

    async def go() -> None:
        store = await new_store()
        try:
            await store.start_upload("u1")
            assert await store.upload_size("u1") == 0
            assert await store.append("u1", pieces(data[:1000])) == 1000
            assert await store.append("u1", pieces(data[1000:5000], data[5000:])) == len(data)
            assert await store.upload_size("u1") == len(data)
            digest = sha256(data)
            assert await store.commit("u1", digest) == len(data)
            assert await store.upload_size("u1") is None
            assert await store.size(digest) == len(data)
            assert await store.exists(digest)
            assert await read_all(store, digest) == data
            assert await read_all(store, digest, 7, 100) == data[7:107]
            assert await read_all(store, digest, len(data) - 5) == data[-5:]
            assert [d async for d, _ in store.stored()] == [digest]
            await store.delete(digest)
            assert await store.size(digest) is None
            assert not await store.exists(digest)
            with pytest.raises(NotFound):
                await read_all(store, digest)
        finally:
            await store.close()

    run(go())


def test_an_empty_blob_and_a_second_upload_of_a_stored_digest(new_store: StoreFactory) -> None:
    async def go() -> None:
        store = await new_store()
        try:
            await store.start_upload("empty")
            assert await store.commit("empty", sha256(b"")) == 0
            assert await read_all(store, sha256(b"")) == b""
            for upload_id in ("a", "b"):
                await store.start_upload(upload_id)
                await store.append(upload_id, pieces(b"same bytes"))
                assert await store.commit(upload_id, sha256(b"same bytes")) == 10
            assert await read_all(store, sha256(b"same bytes")) == b"same bytes"
        finally:
            await store.close()

    run(go())


def test_a_digest_mismatch_discards_the_upload(new_store: StoreFactory) -> None:
    async def go() -> None:
        store = await new_store()
        try:
            await store.start_upload("u")
            await store.append("u", pieces(b"what was sent"))
            with pytest.raises(DigestMismatch) as caught:
                await store.commit("u", sha256(b"what was claimed"))
            assert caught.value.actual == sha256(b"what was sent")
            assert await store.upload_size("u") is None
            assert not await store.exists(sha256(b"what was claimed"))
        finally:
            await store.close()

    run(go())


def test_sha512_digests_are_checked_too(new_store: StoreFactory) -> None:
    data = b"x" * 1000
    digest = Digest("sha512", hashlib.sha512(data).hexdigest())

    async def go() -> None:
        store = await new_store()
        try:
            await store.start_upload("u")
            await store.append("u", pieces(data))
            assert await store.commit("u", digest) == 1000
            assert await read_all(store, digest) == data
            await store.start_upload("v")
            await store.append("v", pieces(data + b"!"))
            with pytest.raises(DigestMismatch):
                await store.commit("v", digest)
        finally:
            await store.close()

    run(go())


def test_past_the_limit_an_append_is_refused_and_truncate_goes_back(new_store: StoreFactory) -> None:
    async def go() -> None:
        store = await new_store()
        try:
            await store.start_upload("u")
            await store.append("u", pieces(b"0123456789"))
            with pytest.raises(UploadTooLarge):
                await store.append("u", pieces(b"abc", b"def"), limit=4)
            await store.truncate("u", 10)
            assert await store.upload_size("u") == 10
            await store.append("u", pieces(b"abc"))
            await store.truncate("u", 10)  # the last append undone (a chunk the registry refused)
            assert await store.upload_size("u") == 10
            await store.append("u", pieces(b"XYZ"))
            assert await store.commit("u", sha256(b"0123456789XYZ")) == 13
        finally:
            await store.close()

    run(go())


def test_uploads_no_session_keeps_are_swept(new_store: StoreFactory) -> None:
    async def go() -> None:
        store = await new_store()
        try:
            for upload_id in ("kept", "orphan"):
                await store.start_upload(upload_id)
            assert await store.sweep({"kept", "orphan"}) == 0
            assert await store.sweep({"kept"}, older_than_s=3600) == 0  # too recent
            assert await store.sweep({"kept"}) == 1
            assert await store.upload_size("kept") == 0
            assert await store.upload_size("orphan") is None
        finally:
            await store.close()

    run(go())


# -- Files only: worker processes on one directory ---------------------------------------------------------


def _counting_read_backs(store: FileBlobStore) -> list[int]:
    """The offsets from which ``store`` hashes an upload by reading it from the file."""
    offsets: list[int] = []
    real = store._read_back

    def counted(path: Path, state: Any) -> None:
        offsets.append(state.offset)
        real(path, state)
    store._read_back = counted  # type: ignore[method-assign]
    return offsets


@pytest.mark.skipif(not sha256state.available(), reason="this libcrypto cannot save SHA-256 states")
def test_another_worker_continues_the_session_and_its_digest_without_reading_it_back(tmp_path: Path) -> None:
    """Each chunk and the commit through a store of its own, as through another worker process: the running
    SHA-256 is saved beside the upload, so none of them reads the upload back, and nothing is left after."""
    chunks = [os.urandom(n) for n in (1, 63, 64, 65, 5000, 3 * 1024 * 1024 + 1)]
    data = b"".join(chunks)

    async def go() -> None:
        await FileBlobStore(tmp_path).start_upload("u")
        read_backs: list[int] = []
        for chunk in chunks:
            worker = FileBlobStore(tmp_path)
            read_backs += _counting_read_backs(worker)
            await worker.append("u", pieces(chunk))
        last = FileBlobStore(tmp_path)
        read_backs += _counting_read_backs(last)
        assert await last.commit("u", sha256(data)) == len(data)
        assert read_backs == []
        assert await read_all(last, sha256(data)) == data
        assert sorted(os.listdir(tmp_path / "_uploads")) == []

    run(go())


def test_a_worker_whose_hash_counts_bytes_another_cut_off_checks_the_bytes_there(tmp_path: Path) -> None:
    """One worker appends; another cuts the upload back (a chunk that never arrived whole) and appends as many
    other bytes; the first commits. It must check the bytes that are in the file, not the ones it hashed."""
    async def go() -> None:
        first, second = FileBlobStore(tmp_path), FileBlobStore(tmp_path)
        await first.start_upload("u")
        await first.append("u", pieces(b"0123456789"))
        await second.truncate("u", 5)
        await second.append("u", pieces(b"abcde"))
        with pytest.raises(DigestMismatch):
            await first.commit("u", sha256(b"0123456789"))
        await first.start_upload("v")
        await first.append("v", pieces(b"0123456789"))
        await second.truncate("v", 5)
        await second.append("v", pieces(b"abcde"))
        assert await first.commit("v", sha256(b"01234abcde")) == 10
        assert await read_all(first, sha256(b"01234abcde")) == b"01234abcde"

    run(go())


@pytest.mark.skipif(not sha256state.available(), reason="this libcrypto cannot save SHA-256 states")
def test_a_state_saved_in_another_boot_or_unreadable_is_not_trusted(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash of the machine can lose written bytes that a saved state counts: a state from another boot is
    ignored and the upload read back; so is a state file that does not parse."""
    data = os.urandom(100_000)

    async def go() -> None:
        store = FileBlobStore(tmp_path)
        await store.start_upload("u")
        await store.append("u", pieces(data))
        monkeypatch.setattr(blobs, "_boot_id", lambda: b"00000000-0000-0000-0000-000000000000")
        after_reboot = FileBlobStore(tmp_path)
        read_backs = _counting_read_backs(after_reboot)
        assert await after_reboot.commit("u", sha256(data)) == len(data)
        assert read_backs == [0]
        await after_reboot.start_upload("v")
        await after_reboot.append("v", pieces(data))
        (tmp_path / "_uploads" / f"v{blobs.STATE_SUFFIX}").write_bytes(b"00000000-0000-0000-0000-000000000000\nxx")
        read_backs = _counting_read_backs(after_reboot)
        assert await after_reboot.commit("v", sha256(data)) == len(data)
        assert read_backs == [0]

    run(go())


def test_sweeping_keeps_a_kept_uploads_state_and_removes_an_orphans(tmp_path: Path) -> None:
    async def go() -> None:
        store = FileBlobStore(tmp_path)
        for upload_id in ("kept", "orphan"):
            await store.start_upload(upload_id)
            await store.append(upload_id, pieces(b"some bytes"))
        before = set(os.listdir(tmp_path / "_uploads"))
        assert await store.sweep({"kept"}) == len(before) // 2
        assert set(os.listdir(tmp_path / "_uploads")) == {n for n in before if n.startswith("kept")}
        assert await store.commit("kept", sha256(b"some bytes")) == 10

    run(go())


def test_an_upload_id_with_a_dot_names_no_upload(tmp_path: Path) -> None:
    """``<id>.sha256`` is an upload's state, never an upload of its own (ids are URL-safe base64: no dots)."""
    async def go() -> None:
        store = FileBlobStore(tmp_path)
        await store.start_upload("u")
        await store.append("u", pieces(b"x"))
        for name in (f"u{blobs.STATE_SUFFIX}", ".u", "u.x"):
            assert await store.upload_size(name) is None
            with pytest.raises(NotFound):
                await store.append(name, pieces(b"y"))
            await store.abort(name)
        assert await store.commit("u", sha256(b"x")) == 1

    run(go())


# -- Azure only ---------------------------------------------------------------------------------------------


def test_another_replica_continues_the_session_and_its_digest(container_url: str,
                                                              azurite_server: azurite.AzuriteServer) -> None:
    """Each chunk through a store of its own (as each request could reach another replica): the running SHA-256
    travels in storage, and the blob verifies without being read back."""
    make = _azure(container_url, azurite_server)
    chunks = [os.urandom(n) for n in (1, 63, 64, 65, 5000, azure_blobs.BLOCK_SIZE + 1)]
    data = b"".join(chunks)

    async def go() -> None:
        first = await make()
        await first.start_upload("u")
        await first.close()
        for chunk in chunks:
            replica = await make()
            await replica.append("u", pieces(chunk))
            await replica.close()
        last = await make()
        try:
            reads: list[Any] = []
            real = last._hash_committed  # type: ignore[attr-defined]

            async def counted(*args: Any) -> str:
                reads.append(args)
                return str(await real(*args))
            last._hash_committed = counted  # type: ignore[attr-defined]
            assert await last.commit("u", sha256(data)) == len(data)
            assert reads == []  # verified from the saved state
            assert await read_all(last, sha256(data)) == data
        finally:
            await last.close()

    run(go())


def test_without_saved_states_the_upload_is_hashed_by_reading_it_back(
        container_url: str, azurite_server: azurite.AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sha256state, "available", lambda: False)
    make = _azure(container_url, azurite_server)

    async def go() -> None:
        store = await make()
        try:
            await store.start_upload("u")
            await store.append("u", pieces(b"hello "))
            await store.append("u", pieces(b"world"))
            assert await store.commit("u", sha256(b"hello world")) == 11
            await store.start_upload("v")
            await store.append("v", pieces(b"hello"))
            with pytest.raises(DigestMismatch):
                await store.commit("v", sha256(b"hello world"))
            assert await store.upload_size("v") is None
        finally:
            await store.close()

    run(go())


def test_two_replicas_racing_on_one_session_keep_one_serial_order(container_url: str,
                                                                  azurite_server: azurite.AzuriteServer) -> None:
    """Both read the session at size 5, both stage their chunk; one records it, the other is refused with nothing
    of its chunk kept, and the blob is the winner's bytes."""
    make = _azure(container_url, azurite_server)

    async def go() -> None:
        a, b = await make(), await make()
        try:
            await a.start_upload("u")
            await a.append("u", pieces(b"start"))
            gate = asyncio.Event()
            at_gate: list[bytes] = []

            async def slow(part: bytes) -> AsyncIterator[bytes]:
                yield part  # (asked for once the session is read)
                at_gate.append(part)
                await gate.wait()  # both have read the session before either records its chunk

            first = asyncio.create_task(a.append("u", slow(b"-from-a")))
            second = asyncio.create_task(b.append("u", slow(b"-from-b")))
            async with asyncio.timeout(60):
                while len(at_gate) < 2:
                    await asyncio.sleep(0.01)
            gate.set()
            results = await asyncio.gather(first, second, return_exceptions=True)
            raced = [r for r in results if isinstance(r, UploadRaced)]
            won = [r for r in results if r == 12]
            assert len(raced) == 1 and len(won) == 1, results
            winner = b"start-from-a" if results[0] == 12 else b"start-from-b"
            assert await b.upload_size("u") == 12
            assert await b.commit("u", sha256(winner)) == 12
            assert await read_all(a, sha256(winner)) == winner
        finally:
            await a.close()
            await b.close()

    run(go())


def test_the_download_url_reads_the_blob_and_only_it(container_url: str,
                                                     azurite_server: azurite.AzuriteServer) -> None:
    make = _azure(container_url, azurite_server)

    async def go() -> str:
        store = await make()
        try:
            await store.start_upload("u")
            await store.append("u", pieces(b"redirected"))
            await store.commit("u", sha256(b"redirected"))
            url = await store.download_url(sha256(b"redirected"))
            assert url is not None
            return url
        finally:
            await store.close()

    url = run(go())
    ca = azurite_server.ca
    assert url.startswith("https://") and "spr=https&" in url
    assert requests.get(url, timeout=10, verify=ca).content == b"redirected"
    assert requests.get(url, headers={"Range": "bytes=2-4"}, timeout=10, verify=ca).content == b"dir"
    put = requests.put(url, data=b"x", headers={"x-ms-blob-type": "BlockBlob"}, timeout=10, verify=ca)
    assert put.status_code == 403
    other = url.replace(sha256(b"redirected").encoded, sha256(b"other").encoded)
    assert requests.get(other, timeout=10, verify=ca).status_code == 403


def test_a_sas_credential_works_and_makes_no_redirect_urls(container_url: str,
                                                           azurite_server: azurite.AzuriteServer) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    location = parse_location(container_url)
    import datetime as dt

    async def go() -> None:
        keyed = await AzureBlobStore.open(location, key=azurite_server.key, ca=azurite_server.ca)  # makes it
        await keyed.close()
        sas = generate_container_sas(location.account, location.container, account_key=azurite_server.key,
                                     permission=ContainerSasPermissions(read=True, add=True, create=True, write=True,
                                                                        delete=True, list=True),
                                     expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        store = await AzureBlobStore.open(parse_location(f"{container_url}?{sas}"), ca=azurite_server.ca)
        try:
            await store.start_upload("u")
            await store.append("u", pieces(b"via sas"))
            assert await store.commit("u", sha256(b"via sas")) == 7
            assert await read_all(store, sha256(b"via sas")) == b"via sas"
            assert await store.download_url(sha256(b"via sas")) is None
        finally:
            await store.close()

    run(go())


# -- Azure only: the requests each call makes ---------------------------------------------------------------------


async def in_task(call: Callable[[], Awaitable[Any]]) -> Any:
    """``call`` in a task of its own, as the registry runs each request."""
    return await asyncio.create_task(call())  # type: ignore[arg-type]


def test_a_request_reads_the_upload_state_once(container_url: str, azurite_server: azurite.AzuriteServer) -> None:
    """A push as the registry makes it, each request in a task of its own: every request but the first reads the
    session's state once (Get Blob Properties), and its append or commit goes on from what it read; the commit
    copies without asking first whether the blob exists."""
    make = _azure(container_url, azurite_server)
    data = b"a small layer"

    async def go() -> None:
        store = await make()
        try:
            async def patch() -> None:
                assert await store.upload_size("u") == 0
                assert await store.append("u", pieces(data)) == len(data)

            async def put() -> None:
                assert await store.upload_size("u") == len(data)
                assert await store.commit("u", sha256(data)) == len(data)

            await in_task(lambda: store.start_upload("u"))
            await in_task(patch)
            await in_task(put)
            assert await read_all(store, sha256(data)) == data
        finally:
            await store.close()

    run(go())
    assert [str(r) for r in azurite_server.answered(container_url)] == [
        "Put Blob upload 201",
        "Get Blob Properties upload 200", "Put Block upload 201", "Set Blob Metadata upload 200",
        "Get Blob Properties upload 200", "Get Block List upload 200", "Put Block List upload 201",
        "Copy Blob blob 202", "Delete Blob upload 202",
        "Get Blob blob 206",
    ]


def test_a_whole_blob_in_one_request_reads_no_state(container_url: str,
                                                    azurite_server: azurite.AzuriteServer) -> None:
    """Opened, appended to and completed in one request: the state Put Blob wrote and the one Set Blob Metadata
    wrote (with the ETags storage answered) are all the next call needs, and the commit need not list the blocks
    the request staged itself."""
    make = _azure(container_url, azurite_server)

    async def go() -> None:
        store = await make()
        try:
            async def post() -> None:
                await store.start_upload("u")
                await store.append("u", pieces(b"whole", b" blob"))
                assert await store.commit("u", sha256(b"whole blob")) == 10

            await in_task(post)
        finally:
            await store.close()

    run(go())
    assert [str(r) for r in azurite_server.answered(container_url)] == [
        "Put Blob upload 201", "Put Block upload 201", "Set Blob Metadata upload 200",
        "Put Block List upload 201", "Copy Blob blob 202", "Delete Blob upload 202",
    ]


def test_a_chunk_cut_back_and_sent_again_in_one_request_reads_the_state_once(
        container_url: str, azurite_server: azurite.AzuriteServer) -> None:
    """The ETag Set Blob Metadata answers (for an append, and for a cut back) is the one the next write is
    conditional on: a wrong one would be refused (UploadRaced). The request saw the upload empty, so it commits
    the blocks it staged without listing them: those the cut back left, and the one after."""
    make = _azure(container_url, azurite_server)

    async def go() -> None:
        store = await make()
        try:
            async def request() -> None:
                assert await store.upload_size("u") == 0
                assert await store.append("u", pieces(b"0123")) == 4
                await store.truncate("u", 0)
                assert await store.append("u", pieces(b"abcd")) == 4
                await store.truncate("u", 4)  # nothing to cut back
                assert await store.commit("u", sha256(b"abcd")) == 4

            await store.start_upload("u")
            await in_task(request)
            assert await read_all(store, sha256(b"abcd")) == b"abcd"
        finally:
            await store.close()

    run(go())
    assert [str(r) for r in azurite_server.answered(container_url)] == [
        "Put Blob upload 201",
        "Get Blob Properties upload 200", "Put Block upload 201", "Set Blob Metadata upload 200",
        "Set Blob Metadata upload 200", "Put Block upload 201", "Set Blob Metadata upload 200",
        "Put Block List upload 201", "Copy Blob blob 202", "Delete Blob upload 202",
        "Get Blob blob 206",
    ]


def test_blocks_staged_in_the_request_are_committed_without_listing_them(
        container_url: str, azurite_server: azurite.AzuriteServer) -> None:
    """Several blocks staged in the request that found the upload empty, the last append cut back and another
    staged: the commit sends the ids the request kept (no Get Block List), and the blob is the bytes hashed. A
    request that found blocks staged before lists them."""
    make = _azure(container_url, azurite_server)
    first = os.urandom(2 * azure_blobs.BLOCK_SIZE + 10)  # three blocks
    data = first + b"tail"

    async def go() -> None:
        store = await make()
        try:
            async def request(upload_id: str) -> None:
                assert await store.upload_size(upload_id) == 0
                assert await store.append(upload_id, pieces(first)) == len(first)
                assert await store.append(upload_id, pieces(b"cut off")) == len(first) + 7
                await store.truncate(upload_id, len(first))
                assert await store.append(upload_id, pieces(b"tail")) == len(data)
                assert await store.commit(upload_id, sha256(data)) == len(data)

            async def later(upload_id: str) -> None:
                assert await store.upload_size(upload_id) == len(first)
                assert await store.append(upload_id, pieces(b"tail")) == len(data)
                assert await store.commit(upload_id, sha256(data)) == len(data)

            await store.start_upload("u")
            await in_task(lambda: request("u"))
            assert await read_all(store, sha256(data)) == data
            await store.delete(sha256(data))
            await store.start_upload("v")
            await in_task(lambda: store.append("v", pieces(first)))
            await in_task(lambda: later("v"))
            assert await read_all(store, sha256(data)) == data
        finally:
            await store.close()

    run(go())
    listed = [r.blob for r in azurite_server.answered(container_url) if r.operation == "Get Block List"]
    assert listed == ["_uploads/v"]


def test_a_block_list_storage_refuses_is_a_lost_upload(container_url: str,
                                                       azurite_server: azurite.AzuriteServer) -> None:
    """Block ids the request kept naming a block storage does not have (which only storage losing it could cause)
    are refused whole (InvalidBlockList): the upload is lost (NotFound), nothing is published."""
    make = _azure(container_url, azurite_server)

    async def go() -> None:
        store = await make()
        try:
            async def request() -> None:
                assert await store.append("u", pieces(b"abc")) == 3
                key = (store.location.url, "u")  # type: ignore[attr-defined]
                known = azure_blobs._known_states()[key]
                assert known.chain() is not None
                nonce = known.step.head
                other = "f" * 16 if nonce != "f" * 16 else "e" * 16
                step = dataclasses.replace(known.step, head=other)
                azure_blobs._known_states()[key] = dataclasses.replace(
                    known, step=step, ids=(azure_blobs._block_id(0, other, azure_blobs._NO_BLOCK),))
                with pytest.raises(NotFound):
                    await store.commit("u", sha256(b"abc"))

            await store.start_upload("u")
            await in_task(request)
            assert not await store.exists(sha256(b"abc"))
        finally:
            await store.close()

    run(go())
    assert [str(r) for r in azurite_server.answered(container_url) if r.operation == "Put Block List"] == [
        "Put Block List upload 400"]


def test_a_failed_append_leaves_nothing_remembered(container_url: str,
                                                   azurite_server: azurite.AzuriteServer) -> None:
    """After an append that failed (here past its limit) the next call reads the state again."""
    make = _azure(container_url, azurite_server)

    async def go() -> None:
        store = await make()
        try:
            async def request() -> None:
                assert await store.upload_size("u") == 0
                with pytest.raises(UploadTooLarge):
                    await store.append("u", pieces(b"abc", b"def"), limit=4)
                await store.truncate("u", 0)
                assert await store.append("u", pieces(b"abc")) == 3

            await store.start_upload("u")
            await in_task(request)
        finally:
            await store.close()

    run(go())
    assert [str(r) for r in azurite_server.answered(container_url)] == [
        "Put Blob upload 201",
        "Get Blob Properties upload 200",  # the append failed before it staged anything
        "Get Blob Properties upload 200", "Put Block upload 201", "Set Blob Metadata upload 200",
    ]


def test_a_state_remembered_in_one_task_is_not_seen_by_another(container_url: str,
                                                               azurite_server: azurite.AzuriteServer) -> None:
    """A task made by one that remembers a state (as each aiohttp request's task is made by its connection's)
    copies its context, and with it the reference to what that task remembers; it must not use it. Here the state
    the parent remembered went stale (another replica appended): a child that used it would be refused."""
    make = _azure(container_url, azurite_server)

    async def go() -> None:
        store, replica = await make(), await make()
        try:
            await store.start_upload("u")  # remembered in this task
            assert await store.upload_size("u") == 0
            assert await in_task(lambda: replica.append("u", pieces(b"abc"))) == 3
            assert await in_task(lambda: store.append("u", pieces(b"def"))) == 6
            assert await in_task(lambda: store.commit("u", sha256(b"abcdef"))) == 6
            assert azure_blobs._known_states() is azure_blobs._known_states()  # kept within a task
        finally:
            await store.close()
            await replica.close()

    run(go())
    assert [str(r) for r in azurite_server.answered(container_url)] == [
        "Put Blob upload 201", "Get Blob Properties upload 200",
        "Get Blob Properties upload 200", "Put Block upload 201", "Set Blob Metadata upload 200",
        "Get Blob Properties upload 200", "Put Block upload 201", "Set Blob Metadata upload 200",
        "Get Blob Properties upload 200", "Get Block List upload 200", "Put Block List upload 201",
        "Copy Blob blob 202", "Delete Blob upload 202",
    ]


def test_outside_a_task_nothing_is_remembered() -> None:
    """A callback the loop runs is in no task: each call gets a dict nothing keeps."""
    seen: list[Any] = []

    def call() -> None:
        try:
            seen.append(dict(azure_blobs._known_states()))
            azure_blobs._known_states()[("container", "u")] = None  # type: ignore[assignment]
        except Exception as exc:
            seen.append(exc)

    async def go() -> None:
        loop = asyncio.get_running_loop()
        loop.call_soon(call)
        loop.call_soon(call)
        await asyncio.sleep(0.01)

    run(go())
    assert seen == [{}, {}]


def test_completing_a_digest_already_published_copies_nothing_over_it(
        container_url: str, azurite_server: azurite.AzuriteServer) -> None:
    """Copy Blob is conditional on the blob's absence (If-None-Match: *), checked by storage: with other bytes
    planted under the digest's name (which a content address never holds), they stay; storage refused the copy,
    and the upload is gone all the same."""
    make = _azure(container_url, azurite_server)
    data = b"the real bytes"

    async def go() -> None:
        store = await make()
        try:
            await store._blob(sha256(data)).upload_blob(b"planted", overwrite=False)  # type: ignore[attr-defined]
            await store.start_upload("u")
            await store.append("u", pieces(data))
            assert await store.commit("u", sha256(data)) == len(data)
            assert await read_all(store, sha256(data)) == b"planted"
            assert await store.upload_size("u") is None
        finally:
            await store.close()

    run(go())
    copies = [str(r) for r in azurite_server.answered(container_url) if r.operation == "Copy Blob"]
    assert copies == ["Copy Blob blob 201", "Copy Blob blob 409"]  # the first is the planting Put Blob
