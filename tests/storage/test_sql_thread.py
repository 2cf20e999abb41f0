"""The SqlThread's order on SQLite: calls run inline, except while a long one (``run_long``) is in the thread; then
the calls made meanwhile follow it there, in order, and the event loop goes on."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from acrlocal.storage.sql import SqlThread, open_engine

BOUND_S = 30.0


def test_on_sqlite_calls_made_while_a_long_one_runs_follow_it_in_order(tmp_path: Path) -> None:
    engine = open_engine(f"sqlite:///{tmp_path / 'acrlocal.db'}", upgrade=False)
    sql = SqlThread(engine)
    release = threading.Event()
    order: list[tuple[str, bool]] = []
    loop_thread = threading.get_ident()

    def call(name: str) -> None:
        if name == "long":
            assert release.wait(BOUND_S), "the loop never released the long call"
        order.append((name, threading.get_ident() == loop_thread))

    async def main() -> None:
        long = asyncio.create_task(sql.run_long(call, "long"))
        await asyncio.sleep(0)  # the long call is in the thread
        short = asyncio.create_task(sql.run(call, "short"))
        await asyncio.sleep(0)
        assert order == [], "a call ran beside the long one"  # the loop goes on meanwhile: this line ran
        release.set()
        await asyncio.gather(long, short)
        await sql.run(call, "after")

    try:
        asyncio.run(main())
    finally:
        sql.close()
        engine.dispose()
    assert order == [("long", False), ("short", False), ("after", True)]
