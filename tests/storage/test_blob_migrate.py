"""``acrlocal migrate --blobs-to``/``--blobs-from``: a data directory's blobs copied into an Azure Blob Storage
container (a private Azurite) and served from there, then copied back into files and served from those; an
interrupted or repeated copy skips what is there, a file whose bytes do not match its name is reported and not
copied, and the account key shows nowhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import azurite
from tests.harness import AcrLocal
from tests.registry.conftest import RegistryClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def storage_server() -> Iterator[azurite.AzuriteServer]:
    with azurite.private() as server:
        yield server


def _blobs_of(registry: RegistryClient, repo: str, tag: str) -> list[str]:
    r = registry.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
    assert r.status_code == 200, r.text
    manifest = r.json()
    return [manifest["config"]["digest"], *(layer["digest"] for layer in manifest["layers"])]


def _pull_all(registry: RegistryClient, repo: str, digests: list[str]) -> None:
    for digest in digests:
        r = registry.get(f"/v2/{repo}/blobs/{digest}")
        assert r.status_code == 200, (digest, r.status_code, r.text[:200])
        assert "sha256:" + hashlib.sha256(r.content).hexdigest() == digest


def test_blobs_move_into_blob_storage_and_back(tmp_path: Path, storage_server: azurite.AzuriteServer) -> None:
    data = tmp_path / "data"
    url, key, ca = storage_server.store("migrated")
    blob_args = ("--blob-store-ca", ca)
    env = {"ACRLOCAL_BLOB_STORE_KEY": key}

    on_files = AcrLocal(data, backend="sqlite", blob_backend="files")
    on_files.start()
    try:
        registry = RegistryClient(on_files)
        registry.push_image("moved/app", "v1")
        big = os.urandom(5 * 1024 * 1024 + 7)  # more than one staged block
        big_digest = registry.push_blob("moved/app", big)
        v1 = _blobs_of(registry, "moved/app", "v1")
        refused = on_files.cli("migrate", "--data-dir", str(data), "--blobs-to", url, *blob_args, env=env,
                               check=False)
        assert refused.returncode == 1 and "stop it first" in refused.stderr
    finally:
        on_files.stop()
    # A file named like a blob whose bytes are not that blob's: reported, not copied.
    damaged = "ab" + "0" * 62
    (data / "blobs" / "sha256" / "ab").mkdir(exist_ok=True)
    (data / "blobs" / "sha256" / "ab" / damaged).write_bytes(b"not what the name says")

    moved = on_files.cli("migrate", "--data-dir", str(data), "--blobs-to", url, *blob_args, env=env)
    summary = json.loads(moved.stdout)
    assert summary["blobsCopied"] == len(v1) + 1 and summary["blobsAlreadyThere"] == 0
    assert summary["bytesCopied"] > len(big) and summary["damagedBlobs"] == ["sha256:" + damaged]
    assert f"blobs: {len(v1) + 2}/{len(v1) + 2}" in moved.stderr and "sha256:" + damaged in moved.stderr
    assert key not in moved.stdout + moved.stderr
    again = json.loads(on_files.cli("migrate", "--data-dir", str(data), "--blobs-to", url, *blob_args,
                                    env=env).stdout)
    assert again["blobsCopied"] == 0 and again["blobsAlreadyThere"] == len(v1) + 1

    shutil.move(data / "blobs", tmp_path / "blobs-before")  # the server must not read the old files
    on_azure = AcrLocal(data, backend="sqlite", blob_store=(url, key, ca))
    on_azure.start()
    try:
        registry = RegistryClient(on_azure)
        _pull_all(registry, "moved/app", [*v1, big_digest])
        registry.push_image("moved/app", "v2")  # written to the container
        v2 = _blobs_of(registry, "moved/app", "v2")
    finally:
        on_azure.stop()

    back = on_azure.cli("migrate", "--data-dir", str(data), "--blobs-from", url, *blob_args, env=env)
    summary = json.loads(back.stdout)
    assert summary["blobsCopied"] == len(v1) + 1 + len(v2) and not summary["damagedBlobs"]
    assert key not in back.stdout + back.stderr

    on_files_again = AcrLocal(data, backend="sqlite", blob_backend="files")
    on_files_again.start()
    try:
        registry = RegistryClient(on_files_again)
        _pull_all(registry, "moved/app", [*v1, big_digest, *v2])
    finally:
        on_files_again.stop()


def test_migrate_says_what_it_needs(tmp_path: Path, storage_server: azurite.AzuriteServer) -> None:
    server = AcrLocal(tmp_path / "data", backend="sqlite", blob_backend="files")
    nothing = server.cli("migrate", "--data-dir", str(tmp_path / "data"), check=False)
    assert nothing.returncode != 0 and "--to" in nothing.stderr and "--blobs-to" in nothing.stderr
    url, key, ca = storage_server.store("nokey")
    no_blobs = server.cli("migrate", "--data-dir", str(tmp_path / "data"), "--blobs-to", url, "--blob-store-ca", ca,
                          check=False, env={"ACRLOCAL_BLOB_STORE_KEY": key})
    assert no_blobs.returncode == 1 and "has no blobs" in no_blobs.stderr
    no_key = server.cli("migrate", "--data-dir", str(tmp_path / "data"), "--blobs-from", url, "--blob-store-ca", ca,
                        check=False, env={"ACRLOCAL_BLOB_STORE_KEY": "", "ACRLOCAL_BLOB_STORE_SAS": ""})
    assert no_key.returncode == 1 and "credential" in no_key.stderr and "Traceback" not in no_key.stderr
    both = server.cli("migrate", "--blobs-from", url, "--blobs-to", url, check=False)
    assert both.returncode != 0 and "one of them" in both.stderr
