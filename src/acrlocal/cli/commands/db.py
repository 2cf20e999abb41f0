"""``db current`` and ``db upgrade``: the schema revision of the server's database, and migrating it without
starting a server (``up`` migrates at start too). Both take the data directory's SQLite database unless
``--database-url`` names another. ``db revision`` writes a new migration (for acrlocal's own developers)."""

from __future__ import annotations

from typing import Any

import click
from sqlalchemy.engine import Engine, make_url

from acrlocal.cli.commands.server import _settings_from, data_dir_option
from acrlocal.cli.framework import AzGroup

database_url_option = click.option("--database-url", envvar="ACRLOCAL_DATABASE_URL",
                                   help="SQLAlchemy URL (default: the data directory's SQLite database).")


@click.group("db", cls=AzGroup)
def db() -> None:
    """The server's database: its schema revision and migrations."""


def _engine(data_dir: str | None, database_url: str | None) -> Engine:
    from acrlocal.storage.sql import open_engine

    settings = _settings_from(data_dir, database_url=database_url)
    if settings.database_url is None:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    return open_engine(settings.db_url, upgrade=False)


def _state(engine: Engine) -> dict[str, Any]:
    from acrlocal.storage import schema

    at, newest = schema.current(engine), schema.head()
    return {"database": make_url(str(engine.url)).render_as_string(hide_password=True), "current": at,
            "head": newest, "upToDate": at == newest}


@db.command("current")
@data_dir_option
@database_url_option
def current(data_dir: str | None, database_url: str | None) -> Any:
    """Show the database's schema revision and the newest this acrlocal has ("current": null: not migrated yet)."""
    engine = _engine(data_dir, database_url)
    try:
        return _state(engine)
    finally:
        engine.dispose()


@db.command("upgrade")
@data_dir_option
@database_url_option
def upgrade(data_dir: str | None, database_url: str | None) -> Any:
    """Migrate the database to the newest schema revision (what `acrlocal up` does at start)."""
    from acrlocal.storage import schema

    engine = _engine(data_dir, database_url)
    try:
        schema.upgrade(engine)
        return _state(engine)
    finally:
        engine.dispose()


@db.command("revision")
@click.option("-m", "--message", required=True, help="What the migration changes, e.g. \"index tags by time\".")
def revision(message: str) -> Any:
    """Write a new migration (storage/migrations/versions/NNNN_*.py) taking a database at the newest revision to
    the tables every room declares now: for acrlocal's developers, after changing a table. Read it before use."""
    import acrlocal.server  # noqa: F401  (the assembled server: importing it declares every room's tables)
    from acrlocal.storage import schema, sql

    return {"migration": str(schema.revision(message, sql.metadata))}
