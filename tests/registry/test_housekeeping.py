"""Blob files and blob rows kept in step: what a crash leaves (a file no row names, a row whose file is gone) is
reconciled at start, files only once they are older than the grace period."""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

import sqlalchemy as sa

from acrlocal.storage.sql import NamedLock
from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.harness import AcrLocal
from tests.ocitools import config_blob, image, sha256, tar_layer
from tests.registry.conftest import RegistryClient, StorageProbe, error_code, files_only


def plant(storage: StorageProbe, data: bytes, age_s: float) -> str:
    """A blob file written as a crash between publishing and committing its row leaves it, ``age_s`` old."""
    digest = sha256(data)
    path = storage.blob_file(digest)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    then = time.time() - age_s
    os.utime(path, (then, then))
    return digest


@files_only
def test_start_reconciles_blob_files_and_rows(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry, storage = RegistryClient(fresh_acrlocal), StorageProbe(fresh_acrlocal)
    kept = registry.push_blob("crash/reconcile", b"a blob with its row and file")
    lost = registry.push_blob("crash/reconcile", b"a blob whose file the disk lost")
    elsewhere = registry.push_blob("crash/other", b"a blob whose file the disk lost")
    assert lost == elsewhere
    fresh_acrlocal.stop()

    storage.remove_blob(lost)
    old_orphan = plant(storage, b"published, then the server died before its row", age_s=2 * 3600)
    new_orphan = plant(storage, b"published a moment ago", age_s=0)
    not_a_blob = storage.data_dir / "blobs" / "sha256" / "notes.txt"
    not_a_blob.write_text("left alone")

    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    assert not storage.has_blob(old_orphan)  # older than the grace period (1 h by default)
    assert storage.has_blob(new_orphan)  # within it
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
    assert not storage.has_blob(new_orphan)
    assert RegistryClient(fresh_acrlocal).get(f"/v2/crash/reconcile/blobs/{kept}").status_code == 200


def age_links(server: AcrLocal, repository: str, seconds: float) -> None:
    """Make a repository's blob links look ``seconds`` older (the grace period passing, without waiting for it)."""
    engine = server.database()
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(
                "UPDATE repository_blobs SET created = created - :s, used = used - :s WHERE repository_id IN "
                "(SELECT id FROM repositories WHERE name = :name)"), {"s": seconds, "name": repository})
    finally:
        engine.dispose()


def gc(server: AcrLocal) -> dict[str, Any]:
    [result] = json.loads(server.cli("admin", "gc", "--registry", "acrlocal").stdout)
    return dict(result)


def test_gc_deletes_unreferenced_blobs_and_spares_a_push_in_progress(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    registry, storage = RegistryClient(fresh_acrlocal), StorageProbe(fresh_acrlocal)
    kept = registry.push_image("gc/app", "v1")
    kept_blobs = [json.loads(kept.body)["config"]["digest"], *(x["digest"] for x in json.loads(kept.body)["layers"])]
    gone = registry.push_image("gc/app", "v2")
    gone_blobs = {json.loads(gone.body)["config"]["digest"], *(x["digest"] for x in json.loads(gone.body)["layers"])}
    assert registry.delete(f"/v2/gc/app/manifests/{gone.digest}").status_code == 202
    stray = registry.push_blob("gc/app", b"uploaded, never in a manifest")
    # A push in progress: its layer is uploaded, the manifest not yet pushed.
    layer, config = tar_layer({"f": b"a push in progress"}), config_blob(architecture="inprogress")
    registry.push_blob("gc/app", layer)
    registry.push_blob("gc/app", config)

    # Within the grace period nothing goes, referenced or not.
    result = gc(fresh_acrlocal)
    assert result["linksRemoved"] == [] and result["blobsDeleted"] == [] and result["graceSeconds"] == 3600

    # An hour later: the unreferenced blobs go (links, rows and bytes), the referenced ones stay.
    age_links(fresh_acrlocal, "gc/app", 3 * 3600)
    # The client of the push in progress checks its layer (docker HEADs each layer before pushing it) just as the
    # collection starts: that use marks the link, and the collection spares it.
    assert registry.head(f"/v2/gc/app/blobs/{layer.digest}").status_code == 200
    assert registry.head(f"/v2/gc/app/blobs/{config.digest}").status_code == 200
    result = gc(fresh_acrlocal)
    removed = {entry["digest"] for entry in result["linksRemoved"]}
    assert removed == {stray, *gone_blobs}
    assert set(result["blobsDeleted"]) == removed and result["bytesFreed"] > 0
    for digest in removed:
        assert registry.head(f"/v2/gc/app/blobs/{digest}").status_code == 404
        assert not storage.has_blob(digest)
    for digest in kept_blobs:
        assert registry.get(f"/v2/gc/app/blobs/{digest}").status_code == 200
    assert registry.push_manifest("gc/app", "v3", image(config, [layer])).status_code == 201  # the push completes
    # Without that use, the same push would have lost its layer to the collection:
    late_layer = tar_layer({"f": b"a push that waited too long"})
    registry.push_blob("gc/app", late_layer)
    age_links(fresh_acrlocal, "gc/app", 3 * 3600)
    assert {e["digest"] for e in gc(fresh_acrlocal)["linksRemoved"]} == {late_layer.digest}
    r = registry.push_manifest("gc/app", "v4", image(config, [late_layer]))
    assert r.status_code == 404 and error_code(r) == "MANIFEST_BLOB_UNKNOWN"


def test_gc_needs_permission_on_the_registry(acrlocal: AcrLocal) -> None:
    admin = Arm(acrlocal, admin_of(acrlocal).token(acrlocal))
    url = (f"/subscriptions/{subscription_of(acrlocal)}/resourceGroups/acrlocal/providers/"
           "Microsoft.ContainerRegistry/registries/acrlocal/garbageCollect")
    assert admin.call("POST", url).status_code == 200
    anonymous = acrlocal.session().post(acrlocal.shared + url + "?api-version=2025-04-01")
    assert anonymous.status_code == 401


def test_gc_waits_for_a_collection_another_process_runs(fresh_acrlocal: AcrLocal) -> None:
    """One collection at a time across processes and replicas: while another holds the database's collection lock
    (here the test, as another replica would), ``admin gc`` waits, and runs once it is released."""
    fresh_acrlocal.start()
    registry = RegistryClient(fresh_acrlocal)
    stray = registry.push_blob("gc/wait", b"uploaded, never in a manifest")
    age_links(fresh_acrlocal, "gc/wait", 3 * 3600)
    engine = fresh_acrlocal.database()
    other = NamedLock(engine, "garbage-collection")
    result: dict[str, Any] = {}
    waiting = threading.Thread(target=lambda: result.update(gc(fresh_acrlocal)), daemon=True)
    try:
        assert other.acquire()
        waiting.start()
        waiting.join(3)
        assert waiting.is_alive() and not result  # still waiting for the other collection
        assert registry.head(f"/v2/gc/wait/blobs/{stray}").status_code == 200  # nothing collected meanwhile
        age_links(fresh_acrlocal, "gc/wait", 3 * 3600)  # (that HEAD used the link: age it again)
    finally:
        other.release()
        engine.dispose()
    waiting.join(120)
    assert {e["digest"] for e in result["linksRemoved"]} == {stray} and result["blobsDeleted"] == [stray]
