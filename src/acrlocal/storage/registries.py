"""The list of registries this server hosts (the ``registries`` table): each one's name, port, identity and the
settings the control plane manages."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.storage.sql import metadata, unique_violation

registries = sa.Table(
    "registries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(50), nullable=False, unique=True),
    sa.Column("port", sa.Integer, nullable=True, unique=True),
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("properties", sa.Text, nullable=False, default="{}"),
    # Which registry this is, unlike its name, which a registry deleted and made again shares: tokens name it.
    sa.Column("uid", sa.String(36), nullable=False),
    sa.Index("ix_registries_uid", "uid", unique=True),
)


@dataclass(frozen=True)
class RegistryRecord:
    """A registry as the data plane knows it. ``properties`` holds the settings the control plane manages
    (sku, adminUserEnabled, anonymousPullEnabled, ...). ``uid`` is its identity, which tokens name: a registry
    made again under a deleted one's name has another."""

    id: int
    name: str
    port: int | None
    created: float
    properties: dict[str, Any] = field(default_factory=dict)
    uid: str = ""


def _record(row: Any) -> RegistryRecord:
    return RegistryRecord(row.id, row.name, row.port, row.created, json.loads(row.properties or "{}"), row.uid)


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
        """A new registry; :class:`AlreadyExists` if the name is taken (also by a replica that has just made it)."""
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(sa.select(registries.c.id).where(registries.c.name == name.lower())).first()
                if exists:
                    raise AlreadyExists(f"registry {name!r} already exists")
                conn.execute(
                    sa.insert(registries).values(
                        name=name.lower(), port=port, created=time.time(), properties=json.dumps(properties),
                        uid=str(uuid.uuid4()),
                    )
                )
        except sa.exc.IntegrityError as exc:
            if not unique_violation(exc):
                raise
            raise AlreadyExists(f"registry {name!r} already exists") from None
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
