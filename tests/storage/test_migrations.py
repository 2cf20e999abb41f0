"""The schema is made by migrations: a new database gets the tables as declared, one made by acrlocal before it
had migrations is adopted with its rows, and a server started on such a data directory serves what it held.

``legacy/*.sql`` are SQLite dumps of data directories made by earlier acrlocal versions through their own APIs (a
resource group, a user-assigned identity with an AcrPull assignment on a registry, an image pushed as
``legacy/app:v1``): ``before-migrations.sql`` by the last version without migrations, ``graph-in-arm.sql`` by one
that still kept Graph applications in the control plane's ``arm_graph_applications`` table (with the application
``legacy-app``) and had fewer tables and columns.
"""

from __future__ import annotations

import json
import socket
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import acrlocal.server  # noqa: F401  (declares every room's tables)
from acrlocal.storage import schema
from acrlocal.storage.sql import metadata, open_engine
from tests.harness import AcrLocal

LEGACY = Path(__file__).with_name("legacy")
DUMPS = sorted(p.name for p in LEGACY.glob("*.sql"))
LEGACY_MANIFEST = "sha256:4e8247ee8ced308c963c616a0c8b6ed7eff21ea48158048b60b13186a3e93ad7"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def differences(engine: sa.Engine) -> list[object]:
    """What Alembic's autogenerate would change to make the database match the tables as declared."""
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))


def legacy_database(path: Path, dump: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript((LEGACY / dump).read_text())
    conn.close()
    return path


def free_registry_ports(path: Path) -> None:
    """Give the dump's registries ports free on this machine now (the dump names the ports they had when it was
    made, which another process may hold)."""
    with sqlite3.connect(path) as conn:
        for (registry_id,) in conn.execute("SELECT id FROM registries WHERE port IS NOT NULL").fetchall():
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            conn.execute("UPDATE registries SET port = ? WHERE id = ?", (port, registry_id))
    conn.close()


def row_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {n: conn.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    conn.close()
    return counts


def test_migrations_make_the_tables_as_declared(each_database_url: str) -> None:
    engine = open_engine(each_database_url)
    assert schema.current(engine) == schema.head()
    assert differences(engine) == [], "a table changed without a migration: acrlocal db revision -m '...'"
    engine.dispose()
    again = open_engine(each_database_url)  # at the head: nothing to do
    assert schema.current(again) == schema.head()
    again.dispose()


def test_migrations_form_one_line() -> None:
    """Two migrations written in parallel on one head make two heads: renumber the later one after the other."""
    script = ScriptDirectory.from_config(schema.config())
    assert len(script.get_heads()) == 1, script.get_heads()
    revisions = list(script.walk_revisions())
    for rev in revisions:
        assert Path(rev.path).name.startswith(f"{rev.revision}_"), rev.path
    # Two files with one revision number: Alembic keeps one of them and silently drops the other.
    files = sorted(p.name for p in (schema.MIGRATIONS / "versions").glob("[0-9]*.py"))
    assert len(files) == len(revisions), files
    # The server reads the newest revision from the file names, without Alembic (sql.at_newest_migration).
    assert max(name.split("_")[0] for name in files) == script.get_current_head()


@pytest.mark.parametrize("dump", DUMPS)
def test_a_database_made_before_migrations_is_adopted(tmp_path: Path, dump: str) -> None:
    path = legacy_database(tmp_path / "acrlocal.db", dump)
    before = row_counts(path)
    engine = open_engine(f"sqlite:///{path}")
    assert schema.current(engine) == schema.head()
    assert differences(engine) == []
    after = row_counts(path)
    moved = before.pop("arm_graph_applications", 0)
    for table, count in before.items():
        expected = count + (moved if table == "applications" else 0)
        assert after[table] == expected, table
    with engine.connect() as conn:
        apps = conn.execute(sa.text("SELECT display_name FROM applications")).scalars().all()
    assert ("legacy-app" in apps) == (dump == "graph-in-arm.sql")
    assert "arm_graph_applications" not in after
    engine.dispose()
    # Opening it again changes nothing.
    assert schema.current(open_engine(f"sqlite:///{path}")) == schema.head()
    assert row_counts(path) == after


@pytest.mark.parametrize("dump", DUMPS)
def test_a_server_serves_a_data_directory_made_before_migrations(tmp_path: Path, dump: str) -> None:
    database = legacy_database(tmp_path / "data" / "acrlocal.db", dump)
    free_registry_ports(database)
    server = AcrLocal(tmp_path / "data", backend="sqlite")
    server.start()
    try:
        from tests.registry.conftest import RegistryClient

        registry = RegistryClient(server)
        r = registry.request("GET", "/v2/legacy/app/manifests/v1", headers={"Accept": OCI_MANIFEST})
        assert r.status_code == 200, r.text
        assert r.headers["Docker-Content-Digest"] == LEGACY_MANIFEST
        assert registry.request("GET", "/v2/legacy/app/tags/list").json()["tags"] == ["v1"]

        arm = server.session()
        arm.headers["Authorization"] = "Bearer " + server.admin_token("https://management.azure.com/.default")
        subscription = arm.get(f"{server.shared}/subscriptions?api-version=2022-12-01").json()["value"][0]
        group = f"{server.shared}/subscriptions/{subscription['subscriptionId']}/resourceGroups/legacy-rg"
        identity = arm.get(f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/legacy-id",
                           params={"api-version": "2023-01-31"})
        assert identity.status_code == 200, identity.text
        assignments = arm.get(f"{group}/providers/Microsoft.ContainerRegistry/registries/legacyreg/providers/"
                              "Microsoft.Authorization/roleAssignments", params={"api-version": "2022-04-01"})
        assert identity.json()["properties"]["principalId"] in \
            [a["properties"]["principalId"] for a in assignments.json()["value"]]
        if dump == "graph-in-arm.sql":
            graph = server.session()
            graph.headers["Authorization"] = "Bearer " + server.admin_token("https://graph.microsoft.com/.default")
            apps = graph.get(f"{server.shared}/v1.0/applications").json()["value"]
            assert "legacy-app" in [a["displayName"] for a in apps]
    finally:
        server.stop()


def test_db_commands_tell_and_upgrade_the_schema_revision(tmp_path: Path) -> None:
    data = tmp_path / "data"
    legacy_database(data / "acrlocal.db", DUMPS[0])
    server = AcrLocal(data, backend="sqlite")
    before = json.loads(server.cli("db", "current", "--data-dir", str(data)).stdout)
    assert (before["current"], before["upToDate"]) == (None, False)
    upgraded = json.loads(server.cli("db", "upgrade", "--data-dir", str(data)).stdout)
    assert (upgraded["current"], upgraded["upToDate"]) == (schema.head(), True)


def test_a_database_of_a_newer_acrlocal_is_refused_and_left_alone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = AcrLocal(data)
    assert server.cli("db", "upgrade", "--data-dir", str(data)).returncode == 0
    engine = server.database()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    refused = server.cli("db", "upgrade", "--data-dir", str(data), check=False)
    assert refused.returncode == 1
    assert "schema revision '9999'" in refused.stderr and "newer acrlocal" in refused.stderr
    with pytest.raises(RuntimeError, match="newer acrlocal"):
        server.start()


def test_replicas_starting_together_migrate_once(tmp_path: Path) -> None:
    """On PostgreSQL the migration holds an advisory lock: the second waits, then finds the head."""
    from concurrent.futures import ThreadPoolExecutor

    from tests import postgres

    url = postgres.shared().create_database()
    with ThreadPoolExecutor(4) as pool:
        engines = list(pool.map(lambda _: open_engine(url), range(4)))
    assert {schema.current(e) for e in engines} == {schema.head()}
    assert differences(engines[0]) == []
    for engine in engines:
        engine.dispose()
