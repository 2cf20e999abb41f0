"""The ARM store's look-ups that run on every acr create, registry delete and start: answered from an index on the
key they look for, whatever the number of other resources (SQLite's query plans; the answers on every backend)."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from acrlocal.arm.store import ArmStore, Resource
from acrlocal.storage.sql import open_engine

REGISTRY = "Microsoft.ContainerRegistry/registries"
SUB = str(uuid.uuid4())


def registry(name: str) -> Resource:
    return Resource(id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/{REGISTRY}/{name}", type=REGISTRY,
                    name=name, subscription_id=SUB, group="rg")


def test_names_and_children_are_found_by_index(database_url: str) -> None:
    engine = open_engine(database_url)
    store = ArmStore(engine)
    for i in range(20):
        parent = registry(f"Registry{i}")
        store.put_resource(parent)
        store.put_resource(Resource(id=f"{parent.id}/scopeMaps/map", type=f"{REGISTRY}/scopeMaps", name="map",
                                    subscription_id=SUB, group="rg", parent_id=parent.id))
    statements: list[tuple[str, object]] = []

    def record(_conn: object, _cursor: object, statement: str, parameters: object, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        assert [r.name for r in store.resources_named(REGISTRY, "registry7")] == ["Registry7"]  # any case
        assert [r.name for r in store.resources_named(REGISTRY, "REGISTRY7")] == ["Registry7"]
        assert store.resources_named(REGISTRY, "registry") == []
        children = store.resources(SUB, parent_id=registry("registry3").id)
        assert [c.id for c in children] == [f"{registry('Registry3').id}/scopeMaps/map"]
        assert store.resources(str(uuid.uuid4()), parent_id=registry("Registry3").id) == []  # another subscription
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        for statement, parameters in statements:
            plan = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)]
            assert any("ix_arm_resources_name" in p or "ix_arm_resources_parent" in p for p in plan), plan
