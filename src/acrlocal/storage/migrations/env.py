"""Alembic's environment for acrlocal: migrations run on the connection :mod:`acrlocal.storage.schema` hands in,
in batch mode (SQLite rebuilds a table for what its ALTER TABLE cannot do); a new revision is compared against the
tables it hands in (every room's)."""

from __future__ import annotations

from alembic import context

connection = context.config.attributes.get("connection")
if connection is None:
    raise SystemExit("acrlocal's migrations run through acrlocal: `acrlocal db upgrade`, or "
                     "`acrlocal db revision -m MESSAGE` for a new one")
context.configure(connection=connection, target_metadata=context.config.attributes.get("tables"), render_as_batch=True,
                  compare_type=True)
with context.begin_transaction():
    context.run_migrations()
