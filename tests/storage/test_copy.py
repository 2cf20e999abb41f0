"""``acrlocal migrate``: a data directory's state copied from SQLite into PostgreSQL (and back), then served from
there; refused while its server runs and into a database that has rows."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from acrlocal.storage.copy import TargetNotEmpty, copy_database
from acrlocal.storage.sql import metadata, open_engine
from tests import postgres
from tests.harness import AcrLocal
from tests.registry.conftest import RegistryClient

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def arm_session(server: AcrLocal):  # type: ignore[no-untyped-def]
    arm = server.session()
    arm.headers["Authorization"] = "Bearer " + server.admin_token("https://management.azure.com/.default")
    return arm


def test_a_data_directory_moves_to_postgresql_and_is_served_from_there(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = AcrLocal(data, backend="sqlite")
    server.start()
    try:
        pushed = RegistryClient(server).push_image("moved/app", "v1")
        arm = arm_session(server)
        sub = server.admin_credential()["subscriptionId"]
        group = f"{server.shared}/subscriptions/{sub}/resourceGroups/moved"
        assert arm.put(group, params={"api-version": "2022-09-01"}, json={"location": "westus"}).status_code == 201
        identity = arm.put(f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/mover",
                           params={"api-version": "2023-01-31"}, json={"location": "westus"})
        assert identity.status_code == 201, identity.text
        refused = server.cli("migrate", "--data-dir", str(data), "--to", "postgresql://nowhere/x", check=False)
        assert refused.returncode == 1 and "stop it first" in refused.stderr
    finally:
        server.stop()

    url = postgres.shared().create_database("moved")
    moved = server.cli("migrate", "--data-dir", str(data), "--to", url)
    summary = json.loads(moved.stdout)
    assert summary["tables"]["manifests"] == 1 and summary["tables"]["principals"] >= 2
    assert summary["rows"] == sum(summary["tables"].values())
    assert "manifests: 1/1 rows" in moved.stderr and postgres.shared().password not in moved.stdout + moved.stderr
    again = server.cli("migrate", "--data-dir", str(data), "--to", url, check=False)
    assert again.returncode == 1 and "not empty" in again.stderr

    (data / "acrlocal.db").rename(data / "acrlocal.db.before")  # the server must not read the old file
    on_postgres = AcrLocal(data, "--database-url", url, backend="sqlite")
    on_postgres.start()
    try:
        registry = RegistryClient(on_postgres)
        r = registry.request("GET", "/v2/moved/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == pushed.digest
        layer = json.loads(pushed.body)["layers"][0]["digest"]
        assert registry.request("GET", f"/v2/moved/app/blobs/{layer}").status_code == 200
        registry.push_image("moved/new", "v1")  # new rows get keys past the copied ones
        registry.push_image("moved/app", "v2")
        assert registry.request("GET", "/v2/moved/app/tags/list").json()["tags"] == ["v1", "v2"]
        arm = arm_session(on_postgres)
        got = arm.get(f"{on_postgres.shared}/subscriptions/{sub}/resourceGroups/moved/providers/"
                      "Microsoft.ManagedIdentity/userAssignedIdentities/mover", params={"api-version": "2023-01-31"})
        assert got.status_code == 200 and got.json()["properties"]["principalId"] == \
            identity.json()["properties"]["principalId"]
    finally:
        on_postgres.stop()


def test_postgresql_back_into_sqlite_and_an_empty_target_only(tmp_path: Path) -> None:
    import acrlocal.server  # noqa: F401  (declares every room's tables)
    from acrlocal.identity.directory import Directory

    url = postgres.shared().create_database("back")
    source = open_engine(url)
    directory = Directory(source)
    tenant = directory.create_tenant(f"t-{uuid.uuid4().hex[:6]}")
    directory.create_service_principal(tenant.id, "app")
    back = open_engine(f"sqlite:///{tmp_path / 'back.db'}")
    seen: list[tuple[str, int, int]] = []
    copied = copy_database(source, back, metadata, lambda *a: seen.append(a))
    assert copied.tables["tenants"] == 1 and copied.tables["principals"] == 1
    assert ("principals", 1, 1) in seen
    with back.connect() as conn:
        assert conn.execute(sa.text("SELECT display_name FROM principals")).scalar_one() == "app"
    with pytest.raises(TargetNotEmpty, match="tenants"):
        copy_database(source, back, metadata)
    source.dispose()
    back.dispose()
