"""The revocation check's own cost (issue 8, item 13): how long :meth:`Revocations.refused` takes for an admin
user's access token on SQLite when the database has not changed since the last answer (one ``PRAGMA
data_version`` read), and when it has or no version can be read (the look-up: the registry's row by name and its
JSON), next to a principal's token (no look-up at all).

Not a test: prints figures, asserts nothing about time. In-process, on a fresh SQLite file made by the server's
own migrations. ``python -m benchmarks.revocation [--n CALLS]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import ROOT

sys.path.insert(0, str(ROOT / "src"))

from acrlocal.registry.revocation import Revocations
from acrlocal.storage.registries import RegistryTable
from acrlocal.storage.sql import DataVersion, SqlThread, open_engine


async def per_call_us(fn: Any, n: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time of ``n`` awaited calls, in microseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(n):
            await fn()
        samples.append((time.perf_counter() - start) / n * 1e6)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.revocation", description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=20_000)
    args = p.parse_args(argv)
    print(asyncio.run(_table(args.n)))


async def _table(n: int) -> str:
    with tempfile.TemporaryDirectory(prefix="acrlocal-revocation-bench-") as scratch:
        engine = open_engine(f"sqlite:///{Path(scratch) / 'acrlocal.db'}")
        table = RegistryTable(engine)
        registry = table.add("benchregistry", None, {"adminUserEnabled": True})
        version = DataVersion(engine)
        sql = SqlThread(engine)  # inline on SQLite, as the server runs it
        kept, looked_up = Revocations(table, None, sql, version), Revocations(table, None, sql)
        assert await kept.refused(registry, "admin", registry.name) is None
        rows = {
            "principal's token (no look-up)": await per_call_us(
                lambda: kept.refused(registry, "principal", "oid"), n),
            "admin token, database unchanged (PRAGMA data_version)": await per_call_us(
                lambda: kept.refused(registry, "admin", registry.name), n),
            "admin token, look-up (database changed, or no version)": await per_call_us(
                lambda: looked_up.refused(registry, "admin", registry.name), n // 4),
        }
        version.close()
        engine.dispose()
    lines = ["| revocation check | µs per call (median of 5) |", "|---|---:|"]
    lines += [f"| {name} | {us:.1f} |" for name, us in rows.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
