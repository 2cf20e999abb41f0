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
import sqlite3
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

import acrlocal.server  # noqa: F401  (declares every room's tables)
from acrlocal.arm.store import ArmStore, StoredAssignment
from acrlocal.errors import AlreadyExists
from acrlocal.identity.directory import Directory
from acrlocal.storage import schema
from acrlocal.storage.sql import metadata, open_engine
from tests.harness import AcrLocal
from tests.ports import free_port

LEGACY = Path(__file__).with_name("legacy")
DUMPS = sorted(p.name for p in LEGACY.glob("*.sql"))
LEGACY_MANIFEST = "sha256:4e8247ee8ced308c963c616a0c8b6ed7eff21ea48158048b60b13186a3e93ad7"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def differences(engine: sa.Engine) -> list[object]:
    """What Alembic's autogenerate would change to make the database match the tables as declared. SQLite's
    expression indexes (the registries' one unretired token key) cannot be reflected, so Alembic skips them there,
    with a warning this leaves out; PostgreSQL's are compared."""
    with engine.connect() as conn, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*expression-based index.*")
        return list(compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata))


def legacy_database(path: Path, dump: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.executescript((LEGACY / dump).read_text())
    conn.close()
    return path


def free_registry_ports(path: Path) -> None:
    """Give the dump's registries ports free on this machine now, each its own (the dump names the ports they had
    when it was made, which another process may hold), from below the ephemeral range: the server binds them
    seconds later, when an outgoing connection could have taken one from that range."""
    given: set[int] = set()
    with sqlite3.connect(path) as conn:
        for (registry_id,) in conn.execute("SELECT id FROM registries WHERE port IS NOT NULL").fetchall():
            port = free_port()
            while port in given:
                port = free_port()
            given.add(port)
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


# Run in a new interpreter: this module imports Alembic, and open_engine upgrades in-process where it is loaded.
FRESH_PROCESS = """
import sys
import sqlalchemy as sa
from acrlocal.storage.sql import open_engine
engine = open_engine(sys.argv[1])
with engine.connect() as conn:
    print(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one())
print("alembic" in sys.modules, "mako" in sys.modules)
"""

REFUSED = """
import sys
from acrlocal.storage.schema import SchemaError
from acrlocal.storage.sql import open_engine
try:
    open_engine(sys.argv[1])
except SchemaError as exc:
    print("refused:", exc)
"""


def test_a_process_that_makes_its_database_does_not_keep_alembic(each_database_url: str) -> None:
    """The upgrade runs in a forked child: the server's process keeps none of Alembic's or Mako's memory."""
    done = subprocess.run([sys.executable, "-c", FRESH_PROCESS, each_database_url], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == [schema.head(), "False False"], done.stdout


def test_a_schema_error_in_the_upgrade_process_is_the_callers(tmp_path: Path) -> None:
    """A database at a revision this acrlocal does not know: the child's SchemaError reaches the caller, as it is."""
    url = f"sqlite:///{tmp_path / 'acrlocal.db'}"
    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    done = subprocess.run([sys.executable, "-c", REFUSED, url], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: the database is at schema revision '9999'"), done.stdout


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


def test_duplicate_role_assignments_keep_the_oldest_and_the_grant_is_unique_after(each_database_url: str) -> None:
    """A database at 0011 holding assignments of one role to one principal at one scope under several names (what
    two replicas that both checked could store before the unique key): 0012 keeps the oldest of each grant, and the
    store refuses another one after."""
    engine = open_engine(each_database_url, upgrade=False)
    schema.upgrade(engine, "0011")
    store = ArmStore(engine)
    scope = "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/RG"
    principal, other = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"
    pull, push = "7f951dda-4ed3-4680-a7ca-43fe172d538d", "8311e382-0749-4cb8-b61a-304f252e45ec"

    def add(name: str, created: str, scope: str = scope, role: str = pull, who: str = principal) -> None:
        store.add_assignment(StoredAssignment(f"00000000-0000-0000-0000-{name:0>12}", scope, role, who,
                                              "ServicePrincipal", created_on=created, updated_on=created))

    add("3", "2026-01-02T00:00:00Z")
    add("1", "2026-01-03T00:00:00Z", scope.lower())  # the same scope in other case: the same grant
    add("2", "2026-01-01T00:00:00Z")  # the oldest
    add("4", "2026-01-01T00:00:00Z", role=push)  # another role, principal or scope: grants of their own
    add("5", "2026-01-01T00:00:00Z", who=other)
    add("7", "2026-01-05T00:00:00Z", scope + "/providers/Microsoft.ContainerRegistry/registries/r")
    add("6", "2026-01-05T00:00:00Z", scope + "/providers/Microsoft.ContainerRegistry/registries/r")  # same time
    schema.upgrade(engine)
    assert schema.current(engine) == schema.head()
    assert differences(engine) == []
    assert sorted(a.name[-1] for a in store.assignments()) == ["2", "4", "5", "6"]
    with pytest.raises(AlreadyExists):
        add("8", "2026-02-01T00:00:00Z", scope.upper())
    with pytest.raises(AlreadyExists):
        add("2", "2026-02-01T00:00:00Z", role=push, who=other)  # a name taken
    assert len(store.assignments()) == 4
    engine.dispose()


def test_tenants_of_one_name_keep_the_oldests_key_and_the_name_is_unique_after(each_database_url: str) -> None:
    """A database at 0013 holding two tenants named alike (in another case): 0014 gives the older the name's key and
    the other one of its own, and the directory refuses another tenant of that name after, in any case."""
    engine = open_engine(each_database_url, upgrade=False)
    schema.upgrade(engine, "0013")
    older, newer, other = (str(uuid.uuid4()) for _ in range(3))
    with engine.begin() as conn:
        for tenant_id, name, created in ((newer, "Contoso", 2.0), (older, "contoso", 1.0), (other, "fabrikam", 3.0)):
            conn.execute(sa.text("INSERT INTO tenants (id, display_name, is_default, created) VALUES (:i, :n, :d, "
                                 ":c)"), {"i": tenant_id, "n": name, "d": False, "c": created})
    schema.upgrade(engine)
    assert differences(engine) == []
    with engine.connect() as conn:
        keys = dict(conn.execute(sa.text("SELECT id, name_key FROM tenants")).all())
    assert keys == {older: "contoso", newer: f"contoso#{newer}", other: "fabrikam"}
    directory = Directory(engine)
    with pytest.raises(AlreadyExists):
        directory.create_tenant("CONTOSO")
    assert directory.create_tenant("northwind").display_name == "northwind"
    engine.dispose()


def test_several_unretired_signing_keys_keep_the_newest_and_a_second_one_is_refused_after(
        each_database_url: str) -> None:
    """A database at 0014 where rotations that raced left a tenant three unretired keys, and the registries three:
    0015 keeps the newest of each signing and retires the others now (they stay published until their tokens
    expire), leaves a key retired before as it was, and the database refuses a second unretired key after."""
    engine = open_engine(each_database_url, upgrade=False)
    schema.upgrade(engine, "0014")
    tenant = str(uuid.uuid4())
    keys = (("gone", 0.5, 0.6), ("old", 1.0, None), ("twin", 2.0, None), ("new", 3.0, None))
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, display_name, is_default, created, name_key) VALUES (:i, "
                             "'races', :d, 1.0, 'races')"), {"i": tenant, "d": False})
        for kid, created, retired in keys:
            row = {"k": kid, "t": tenant, "c": created, "r": retired}
            conn.execute(sa.text("INSERT INTO signing_keys (kid, tenant_id, private_pem, created, retired) VALUES "
                                 "(:k, :t, 'pem', :c, :r)"), row)
            conn.execute(sa.text("INSERT INTO registry_token_keys (kid, private_pem, created, retired) VALUES "
                                 "(:k, 'pem', :c, :r)"), row)
    before = time.time()
    schema.upgrade(engine)
    assert differences(engine) == []
    for table in ("signing_keys", "registry_token_keys"):
        with engine.connect() as conn:
            retired = dict(conn.execute(sa.text(f"SELECT kid, retired FROM {table}")).all())
        assert retired["new"] is None and retired["gone"] == 0.6, table
        assert retired["old"] >= before and retired["twin"] >= before, table
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO signing_keys (kid, tenant_id, private_pem, created) VALUES ('more', :t, "
                             "'pem', 4.0)"), {"t": tenant})
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO registry_token_keys (kid, private_pem, created) VALUES ('more', 'pem', "
                             "4.0)"))
    engine.dispose()
