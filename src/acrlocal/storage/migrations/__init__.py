"""Alembic migrations of acrlocal's database (see :mod:`acrlocal.storage.schema`)."""
