"""``db current`` and ``db upgrade``: the schema revision of the server's database, and migrating it without
starting a server (``up`` migrates at start too). Both take the data directory's SQLite database unless
``--database-url`` names another. ``db revision`` writes a new migration (for acrlocal's own developers).
``migrate`` copies the state into another database (SQLite to PostgreSQL, or back), and the blobs into an Azure Blob
Storage container (or back), with progress on stderr."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import click
from sqlalchemy.engine import Engine, make_url

from acrlocal.cli.commands.server import _alive, _settings_from, data_dir_option
from acrlocal.cli.errors import CLIError
from acrlocal.cli.framework import AzCommand, AzGroup
from acrlocal.config import Settings

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
@click.option("--to", "target_url",
              help="SQLAlchemy URL of the new, empty database, e.g. postgresql://user@host/acrlocal (a password is "
                   "better in ~/.pgpass or PGPASSWORD than on the command line).")
@click.option("--from", "source_url", help="SQLAlchemy URL to copy from (default: the data directory's database).")
@click.option("--blobs-to", metavar="URL",
              help="Copy the data directory's blobs into this Azure Blob Storage container "
                   "(https://<account>.blob.core.windows.net/<container>, as `up --blob-store`).")
@click.option("--blobs-from", metavar="URL", help="Copy the blobs of this container into the data directory.")
@click.option("--blob-store-key", envvar="ACRLOCAL_BLOB_STORE_KEY", metavar="KEY",
              help="The storage account's key (prefer the environment variable ACRLOCAL_BLOB_STORE_KEY).")
@click.option("--blob-store-sas", envvar="ACRLOCAL_BLOB_STORE_SAS", metavar="SAS",
              help="A SAS for the container with rwdlac (prefer ACRLOCAL_BLOB_STORE_SAS).")
@click.option("--blob-store-identity", is_flag=True, envvar="ACRLOCAL_BLOB_STORE_IDENTITY",
              help="Authenticate with this host's managed identity, as `up --blob-store-identity`.")
@click.option("--blob-store-identity-client-id", envvar="ACRLOCAL_BLOB_STORE_IDENTITY_CLIENT_ID", metavar="ID",
              help="The client id of the user-assigned identity to use (implies --blob-store-identity).")
@click.option("--blob-store-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="A CA bundle the blob store's certificate chains to (an emulator's own; real Azure needs none).")
def migrate(data_dir: str | None, target_url: str | None, source_url: str | None, blobs_to: str | None,
            blobs_from: str | None, blob_store_key: str | None, blob_store_sas: str | None,
            blob_store_identity: bool, blob_store_identity_client_id: str | None, blob_store_ca: str | None) -> Any:
    """Copy the server's state elsewhere, with progress on stderr: its metadata (registries, manifests and tags,
    identities, role assignments, ARM resources...) into another database with --to (e.g. from the data directory's
    SQLite into PostgreSQL, or back with --from), its blobs into an Azure Blob Storage container with --blobs-to (or
    back into the data directory with --blobs-from). Stop the server first; then start it with `acrlocal up
    --database-url <the --to URL>` or `--blob-store <the --blobs-to URL>`. A blob copy that stopped can be run again:
    blobs already there are skipped."""
    if target_url is None and blobs_to is None and blobs_from is None:
        raise click.UsageError("say what to copy: --to URL (the metadata), --blobs-to URL or --blobs-from URL (the "
                               "blobs)")
    if blobs_to is not None and blobs_from is not None:
        raise click.UsageError("--blobs-to and --blobs-from go one way each: give one of them")
    settings = _settings_from(data_dir)
    status = settings.data_dir / "server.json"
    if status.exists():
        with contextlib.suppress(ValueError, OSError, KeyError):
            pid = int(json.loads(status.read_text())["pid"])
            if _alive(pid):
                raise CLIError(f"acrlocal is running on {settings.data_dir} (pid {pid}): stop it first "
                               "(acrlocal down), so that nothing changes while it is copied.")
    result: dict[str, Any] = {}
    if target_url is not None:
        result.update(_migrate_database(settings, target_url, source_url))
    if blobs_to is not None or blobs_from is not None:
        identity = blob_store_identity or blob_store_identity_client_id is not None
        result.update(asyncio.run(_migrate_blobs(settings, blobs_to, blobs_from, blob_store_key, blob_store_sas,
                                                 blob_store_ca, identity, blob_store_identity_client_id)))
    return result


def _migrate_database(settings: Settings, target_url: str, source_url: str | None) -> dict[str, Any]:
    import acrlocal.server  # noqa: F401  (the assembled server: importing it declares every room's tables)
    from acrlocal.storage.copy import copy_database
    from acrlocal.storage.sql import metadata, open_engine

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


async def _migrate_blobs(settings: Settings, blobs_to: str | None, blobs_from: str | None, key: str | None,
                         sas: str | None, ca: str | None, identity: bool, client_id: str | None) -> dict[str, Any]:
    from acrlocal.blob_location import parse_location
    from acrlocal.storage.azure_blobs import AzureBlobStore, managed_identity
    from acrlocal.storage.blob_copy import copy_blobs
    from acrlocal.storage.blobs import BlobStore, FileBlobStore

    location = parse_location(blobs_to or blobs_from or "")
    if blobs_to is not None and not (settings.blob_dir / "sha256").is_dir():
        raise CLIError(f"{settings.data_dir} has no blobs ({settings.blob_dir}) to copy; give --data-dir.")
    token = managed_identity(client_id) if identity else None
    container = await AzureBlobStore.open(location, key=key, sas=sas, token=token, redirects=False, ca=ca)
    files = FileBlobStore(settings.blob_dir, min_free_bytes=settings.limits.min_free_bytes)
    source: BlobStore = files if blobs_to is not None else container
    target: BlobStore = container if blobs_to is not None else files
    names = (str(settings.blob_dir), location.url) if blobs_to is not None else (location.url, str(settings.blob_dir))
    click.echo(f"Copying the blobs of {names[0]} into {names[1]}...", err=True)
    last = [0.0]

    def progress(done: int, total: int, done_bytes: int, total_bytes: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 1.0:
            last[0] = now
            click.echo(f"  blobs: {done}/{total} ({_mib(done_bytes)} of {_mib(total_bytes)})", err=True)

    try:
        copied = await copy_blobs(source, target, progress)
    finally:
        await container.close()
    for digest in copied.damaged:
        click.echo(f"WARNING: {digest} in {names[0]} does not hold the bytes its name says: not copied", err=True)
    for digest in copied.vanished:
        click.echo(f"WARNING: {digest} went from {names[0]} while it was copied: not copied", err=True)
    then = (f"`acrlocal up --blob-store {location.url}`" if blobs_to is not None else
            "`acrlocal up` without --blob-store (it serves the data directory's blobs)")
    click.echo(f"Done: {copied.copied} blobs copied ({_mib(copied.bytes)}), {copied.skipped} already there. Start "
               f"the server with {then}.", err=True)
    return {"blobSource": names[0], "blobTarget": names[1], **copied.render()}


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def _hidden(engine: Engine) -> str:
    return make_url(str(engine.url)).render_as_string(hide_password=True)
