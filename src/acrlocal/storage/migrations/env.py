"""Alembic's environment for acrlocal: migrations run on the connection :mod:`acrlocal.storage.schema` hands in,
in batch mode (SQLite rebuilds a table for what its ALTER TABLE cannot do), compared against every room's tables."""

from __future__ import annotations

from alembic import context

from acrlocal.storage.sql import load_tables

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("acrlocal's migrations run through acrlocal: `acrlocal db upgrade`, or "
                     "`python -m acrlocal.storage.schema revision -m MESSAGE` for a new one")
context.configure(connection=connection, target_metadata=load_tables(), render_as_batch=True, compare_type=True)
with context.begin_transaction():
    context.run_migrations()
