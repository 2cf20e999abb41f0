"""Copy a database's state into another: a data directory's SQLite file into PostgreSQL (``acrlocal migrate``), or
back. Blobs are files in the data directory either way and are not touched.

Both databases are first brought to the newest schema revision. The target must hold no rows. Tables are copied in
foreign-key order, in pages of :data:`PAGE` rows ordered by primary key, all in one transaction on the target: a
failure (a value the target refuses, a lost connection) leaves it as empty as it was. On PostgreSQL the sequences
behind integer keys are moved past the copied rows, so rows added later get new keys. ``progress`` is called after
each page with the table, the rows copied of it and its row count.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.errors import ConfigError
from acrlocal.storage import schema

PAGE = 1000

Progress = Callable[[str, int, int], None]


class TargetNotEmpty(ConfigError):
    """The database to copy into already holds rows."""


@dataclass
class Copied:
    tables: dict[str, int] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


def _count(conn: sa.Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def copy_database(source: Engine, target: Engine, tables: sa.MetaData, progress: Progress | None = None) -> Copied:
    """Copy every row of ``tables`` from ``source`` into ``target`` (see the module's description). Raises
    :class:`TargetNotEmpty` naming a table that has rows, :class:`~acrlocal.errors.ValueTooLong` for a value the
    target's column cannot hold (SQLite never checked), and SQLAlchemy's errors for the databases' own failures."""
    schema.upgrade(source)
    schema.upgrade(target)
    copied = Copied()
    with source.connect() as reading, target.begin() as writing:
        for table in tables.sorted_tables:
            if _count(writing, table):
                raise TargetNotEmpty(f"the target database is not empty (table {table.name} has rows): copy into a "
                                     "new database")
        for table in tables.sorted_tables:
            total = _count(reading, table)
            done = 0
            order = list(table.primary_key.columns) or list(table.columns)
            query = sa.select(table).order_by(*order)
            for page in reading.execution_options(yield_per=PAGE).execute(query).partitions(PAGE):
                writing.execute(sa.insert(table), [dict(row._mapping) for row in page])
                done += len(page)
                if progress is not None:
                    progress(table.name, done, total)
            if progress is not None and total == 0:
                progress(table.name, 0, 0)
            copied.tables[table.name] = done
            if target.dialect.name == "postgresql" and done:
                _advance_sequence(writing, table)
    return copied


def _advance_sequence(conn: sa.Connection, table: sa.Table) -> None:
    column = table.autoincrement_column
    if column is None:
        return
    conn.execute(sa.text(
        f'SELECT setval(pg_get_serial_sequence(:table, :column), (SELECT max("{column.name}") FROM "{table.name}"))'
    ), {"table": table.name, "column": column.name})
