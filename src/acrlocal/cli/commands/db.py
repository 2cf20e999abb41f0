"""``db current`` and ``db upgrade``: the schema revision of the server's database, and migrating it without
starting a server (``up`` migrates at start too). Both take the data directory's SQLite database unless
``--database-url`` names another. ``db revision`` writes a new migration (for acrlocal's own developers).
``migrate`` copies the state into another database (SQLite to PostgreSQL, or back), with progress on stderr."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import click
from sqlalchemy.engine import Engine, make_url

from acrlocal.cli.commands.server import _alive, _settings_from, data_dir_option
from acrlocal.cli.errors import CLIError
from acrlocal.cli.framework import AzCommand, AzGroup

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


@click.command("migrate", cls=AzCommand)
@data_dir_option
@click.option("--to", "target_url", required=True,
              help="SQLAlchemy URL of the new, empty database, e.g. postgresql://user@host/acrlocal (a password is "
                   "better in ~/.pgpass or PGPASSWORD than on the command line).")
@click.option("--from", "source_url", help="SQLAlchemy URL to copy from (default: the data directory's database).")
def migrate(data_dir: str | None, target_url: str, source_url: str | None) -> Any:
    """Copy the server's state (metadata: registries, manifests and tags, identities, role assignments, ARM
    resources...) into another database, e.g. from the data directory's SQLite into PostgreSQL. Blobs stay in the
    data directory. Stop the server first; then start it with `acrlocal up --database-url <the --to URL>`."""
    import acrlocal.server  # noqa: F401  (the assembled server: importing it declares every room's tables)
    from acrlocal.storage.copy import copy_database
    from acrlocal.storage.sql import metadata, open_engine

    settings = _settings_from(data_dir)
    status = settings.data_dir / "server.json"
    if status.exists():
        with contextlib.suppress(ValueError, OSError, KeyError):
            pid = int(json.loads(status.read_text())["pid"])
            if _alive(pid):
                raise CLIError(f"acrlocal is running on {settings.data_dir} (pid {pid}): stop it first "
                               "(acrlocal down), so that nothing changes while it is copied.")
    if source_url is None and not (settings.data_dir / "acrlocal.db").exists():
        raise CLIError(f"{settings.data_dir} has no database (acrlocal.db) to copy; give --from or --data-dir.")
    source = open_engine(source_url or settings.db_url, upgrade=False)
    target = open_engine(target_url, upgrade=False)
    shown = _hidden(source), _hidden(target)
    click.echo(f"Copying {shown[0]} into {shown[1]}...", err=True)
    last: dict[str, float] = {}

    def progress(table: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last.get(table, 0.0) >= 1.0:
            last[table] = now
            click.echo(f"  {table}: {done}/{total} rows", err=True)

    try:
        copied = copy_database(source, target, metadata, progress)
    finally:
        source.dispose()
        target.dispose()
    click.echo(f"Done: {copied.rows} rows in {len(copied.tables)} tables. Start the server on it with "
               f"`acrlocal up --database-url ...` (the same data directory keeps the blobs).", err=True)
    return {"source": shown[0], "target": shown[1], "rows": copied.rows, "tables": copied.tables}


def _hidden(engine: Engine) -> str:
    return make_url(str(engine.url)).render_as_string(hide_password=True)
