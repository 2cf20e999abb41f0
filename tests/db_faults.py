"""Faults injected into a running server's database: a trigger that makes one kind of row write fail, so a test
can see what a request leaves behind when its store write fails half-way (SQLite and PostgreSQL alike)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import requests
import sqlalchemy as sa

from tests.harness import AcrLocal


@contextmanager
def refused(server: AcrLocal, table: str, event: str, condition: str) -> Iterator[None]:
    """While the block runs, the server's database fails every ``event`` (``INSERT``, ``UPDATE`` or ``DELETE``) on
    ``table`` whose row matches ``condition`` (SQL on ``NEW`` or ``OLD``, written by the test itself)."""
    engine = server.database()
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.begin() as conn:
            if sqlite:
                conn.execute(sa.text(f"CREATE TRIGGER refused_write BEFORE {event} ON {table} WHEN {condition} "
                                     "BEGIN SELECT RAISE(ABORT, 'injected fault'); END"))
            else:
                returned = "OLD" if event == "DELETE" else "NEW"
                conn.execute(sa.text(
                    "CREATE FUNCTION refused_write() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                    f"IF {condition} THEN RAISE EXCEPTION 'injected fault'; END IF; RETURN {returned}; END $$"))
                conn.execute(sa.text(f"CREATE TRIGGER refused_write BEFORE {event} ON {table} FOR EACH ROW "
                                     "EXECUTE FUNCTION refused_write()"))
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TRIGGER refused_write" if sqlite else f"DROP TRIGGER refused_write ON {table}"))
            if not sqlite:
                conn.execute(sa.text("DROP FUNCTION refused_write()"))
        engine.dispose()


def failed(r: requests.Response) -> None:
    """The request a fault stopped was answered 5xx with the protocol's error JSON (ARM's and Graph's
    ``{"error": {"code"}}``), not the framework's page."""
    assert r.status_code >= 500, r.text
    assert r.json()["error"]["code"], r.text
