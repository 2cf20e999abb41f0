"""A tenant's signing keys are read by index, whatever the number of other tenants (SQLite's query plans; the
answers on every backend). The one whole read is of the published key ids (no private keys), once per process
until keys change somewhere: what lets a forged token's unknown kid, or a tenant with no keys, be answered from
memory."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from acrlocal.identity.bootstrap import bootstrap
from acrlocal.identity.directory import Directory
from acrlocal.identity.keys import KeyRing
from acrlocal.storage.sql import open_engine


def test_a_tenants_keys_are_read_by_index(tmp_path: Path, database_url: str) -> None:
    engine = open_engine(database_url)
    directory = Directory(engine)
    bootstrap(directory, tmp_path)
    tenants = [directory.create_tenant(f"tenant {i}").id for i in range(5)]
    kids = {tenant: KeyRing(engine).active(tenant).kid for tenant in tenants}
    statements: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "signing_keys" in statement:
            statements.append((statement, parameters))

    keys = KeyRing(engine)  # nothing cached: every read goes to the table
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        for tenant in tenants:
            assert [k["kid"] for k in keys.jwks(tenant)["keys"]] == [kids[tenant]]
            assert keys.active(tenant).kid == kids[tenant]
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert statements
    whole = [st for st, _ in statements if "WHERE" not in st.upper()]
    assert len(whole) == 1 and "private_pem" not in whole[0], whole  # the key ids, once
    statements = [(st, params) for st, params in statements if "WHERE" in st.upper()]
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            for statement, parameters in statements:
                plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
                assert any("ix_signing_keys_tenant" in step or "PRIMARY KEY" in step or "sqlite_autoindex" in step
                           for step in plan), (statement, plan)
    engine.dispose()
