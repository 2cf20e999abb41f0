"""Deleting a registry (through ARM, which calls ``RegistryHosting.delete``) deletes its content: a registry created
again under the same name starts empty, and blob bytes no other registry links are swept."""

from __future__ import annotations

import json
from pathlib import Path

from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.harness import AcrLocal
from tests.registry.conftest import RegistryClient, StorageProbe
from tests.registry.test_persistence import wait_until

ACR = "Microsoft.ContainerRegistry/registries"


def refresh(server: AcrLocal) -> None:
    """Re-read the running server's endpoints (a registry was created or deleted)."""
    server.status = json.loads((server.data_dir / "server.json").read_text())


def test_deleted_registry_takes_its_content_along(tmp_path: Path) -> None:
    # A short upload TTL makes the sweeper run every second.
    server = AcrLocal(tmp_path / "data", "--upload-session-ttl", "4")
    server.start()
    try:
        admin = Arm(server, admin_of(server).token(server))
        group = f"/subscriptions/{subscription_of(server)}/resourceGroups/lifecycle"
        assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
        url = f"{group}/providers/{ACR}/contentreg"
        assert admin.call("PUT", url, {"location": "westus", "sku": {"name": "Standard"}}).status_code == 201
        refresh(server)
        registry = RegistryClient(server, "contentreg")
        manifest = registry.push_image("team/app", "v1")
        unique = registry.push_blob("team/app", b"only in contentreg")
        shared = registry.push_blob("team/app", b"also in the default registry")
        RegistryClient(server).push_blob("elsewhere", b"also in the default registry")
        upload = registry.post("/v2/team/app/blobs/uploads/").headers["Location"]
        storage = StorageProbe(server)
        assert registry.get("/v2/team/app/manifests/v1").content == manifest.body  # now cached

        [(registry_id,)] = storage.rows("SELECT id FROM registries WHERE name = 'contentreg'")
        assert storage.count("SELECT count(*) FROM repositories WHERE registry_id = ?", registry_id) == 1

        assert admin.call("DELETE", url).status_code == 200
        for table in ("repositories", "upload_sessions"):
            assert storage.count(f"SELECT count(*) FROM {table} WHERE registry_id = ?", registry_id) == 0
        assert storage.count("SELECT count(*) FROM upload_sessions WHERE id = ?", upload.rsplit("/", 1)[1]) == 0
        wait_until(lambda: not storage.has_blob(unique), "the sweeper to delete unlinked blob bytes")
        assert storage.has_blob(shared)

        assert admin.call("PUT", url, {"location": "westus", "sku": {"name": "Standard"}}).status_code == 201
        refresh(server)
        again = RegistryClient(server, "contentreg")
        assert again.get("/v2/team/app/manifests/v1").status_code == 404
        assert again.get("/v2/team/app/tags/list").status_code == 404
        assert again.get(f"/v2/team/app/blobs/{shared}").status_code == 404
        assert again.get("/v2/_catalog").json() == {"repositories": []}
    finally:
        server.stop()
