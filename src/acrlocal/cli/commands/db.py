"""``db current`` and ``db upgrade``: the schema revision of the server's database, and migrating it without
starting a server (``up`` migrates at start too). Both take the data directory's SQLite database unless
``--database-url`` names another."""

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
