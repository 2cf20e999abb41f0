"""Registry metadata in SQL: registries, repositories, manifests, tags, referrers, blob links, upload sessions.

Tables are SQLAlchemy Core on the shared :data:`acrlocal.storage.sql.metadata`; the same statements run on
SQLite and PostgreSQL. Every write that must be all-or-nothing (a manifest with its tag, its blob references
and its referrer entry) happens in one transaction, so a crash never leaves a half-visible manifest.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.storage.sql import metadata

registries = sa.Table(
    "registries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("port", sa.Integer, nullable=True, unique=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),
)


@dataclass(frozen=True)
class RegistryRecord:
    """A registry as the data plane knows it. ``properties`` holds the settings the control plane manages
    (sku, adminUserEnabled, anonymousPullEnabled, ...)."""

    id: int
    name: str
    port: int | None
    created: float
    properties: dict[str, Any] = field(default_factory=dict)


def _record(row: Any) -> RegistryRecord:
    return RegistryRecord(row.id, row.name, row.port, row.created, json.loads(row.properties or "{}"))


class RegistryTable:
    """The list of registries this server hosts."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def all(self) -> list[RegistryRecord]:
        with self.engine.connect() as conn:
            return [_record(r) for r in conn.execute(sa.select(registries).order_by(registries.c.id))]

    def get(self, name: str) -> RegistryRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(registries).where(registries.c.name == name.lower())).first()
        if row is None:
            raise NotFound(f"registry {name!r} does not exist")
        return _record(row)

    def add(self, name: str, port: int | None, properties: dict[str, Any]) -> RegistryRecord:
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(registries.c.id).where(registries.c.name == name.lower())).first()
            if exists:
                raise AlreadyExists(f"registry {name!r} already exists")
            conn.execute(
                sa.insert(registries).values(
                    name=name.lower(), port=port, created=time.time(), properties=json.dumps(properties)
                )
            )
        return self.get(name)

    def set_port(self, name: str, port: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(registries).where(registries.c.name == name.lower()).values(port=port))

    def update_properties(self, name: str, changes: dict[str, Any]) -> RegistryRecord:
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(registries).where(registries.c.name == name.lower())).first()
            if row is None:
                raise NotFound(f"registry {name!r} does not exist")
            props = json.loads(row.properties or "{}")
            props.update(changes)
            conn.execute(
                sa.update(registries).where(registries.c.id == row.id).values(properties=json.dumps(props))
            )
        return self.get(name)

    def remove(self, name: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.delete(registries).where(registries.c.name == name.lower()))
