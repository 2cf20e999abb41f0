"""Blob files and blob rows kept in step: what a crash leaves (a file no row names, a row whose file is gone) is
reconciled at start, files only once they are older than the grace period."""

from __future__ import annotations

import os
import time

from tests.harness import AcrLocal
from tests.ocitools import sha256
from tests.registry.conftest import RegistryClient, StorageProbe, error_code


def plant(storage: StorageProbe, data: bytes, age_s: float) -> str:
    """A blob file written as a crash between publishing and committing its row leaves it, ``age_s`` old."""
    digest = sha256(data)
    path = storage.blob_file(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return digest


def test_start_reconciles_blob_files_and_rows(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry, storage = RegistryClient(fresh_acrlocal), StorageProbe(fresh_acrlocal)
    kept = registry.push_blob("crash/reconcile", b"a blob with its row and file")
    lost = registry.push_blob("crash/reconcile", b"a blob whose file the disk lost")
    elsewhere = registry.push_blob("crash/other", b"a blob whose file the disk lost")
    assert lost == elsewhere
    fresh_acrlocal.stop()

    storage.blob_file(lost).unlink()
    old_orphan = plant(storage, b"published, then the server died before its row", age_s=2 * 3600)
    new_orphan = plant(storage, b"published a moment ago", age_s=0)
    not_a_blob = storage.data_dir / "blobs" / "sha256" / "notes.txt"
    not_a_blob.write_text("left alone")

    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    assert not storage.blob_file(old_orphan).exists()  # older than the grace period (1 h by default)
    assert storage.blob_file(new_orphan).exists()  # within it
    assert not_a_blob.read_text() == "left alone"
    for repo in ("crash/reconcile", "crash/other"):  # the lost blob is unknown everywhere, not a broken read
        r = registry.get(f"/v2/{repo}/blobs/{lost}")
        assert r.status_code == 404 and error_code(r) == "BLOB_UNKNOWN"
    assert storage.count("SELECT count(*) FROM blobs WHERE digest = ?", lost) == 0
    assert f"blob {lost} had a row but no file" in fresh_acrlocal.log()
    assert registry.get(f"/v2/crash/reconcile/blobs/{kept}").content == b"a blob with its row and file"
    # a client pushes the lost blob again and it is whole
    assert registry.push_blob("crash/reconcile", b"a blob whose file the disk lost") == lost
    assert registry.get(f"/v2/crash/reconcile/blobs/{lost}").content == b"a blob whose file the disk lost"
    # with no grace period, the recent orphan goes at the next start too
    fresh_acrlocal.stop()
    fresh_acrlocal.extra_args = (*fresh_acrlocal.extra_args, "--blob-gc-grace", "0")
    fresh_acrlocal.start()
    assert not storage.blob_file(new_orphan).exists()
    assert RegistryClient(fresh_acrlocal).get(f"/v2/crash/reconcile/blobs/{kept}").status_code == 200
