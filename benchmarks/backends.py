"""The registry's token endpoint and manifest HEADs on SQLite against the same on PostgreSQL: server CPU per request.

Not a test: prints and records figures, asserts nothing about time. Two servers are started once (``acrlocal up``
on SQLite, and on a private PostgreSQL cluster of this harness: Debian's server on loopback in a temporary
directory, as the tests start it, ``tests/postgres.py``), each given one small image. Then, in each round (which
server goes first alternates, so that the machine's other load falls on both alike; ratios are taken within a
round), on each server:

- ``token``: ``wrk`` keeping 8 connections busy on ``GET /oauth2/token?service=..&scope=repository:bench/app:pull``
  with ``Authorization: Basic <all-zero user>:<refresh token>``, as :mod:`benchmarks.tokens` does;
- ``manifest-head``: 24,000 HEADs over 32 connections (``ab``, or ``hey`` with ``--client hey``) on the manifest by
  tag with a bearer token.

Server CPU per request (the server's CPU time over the requests it answered, from ``/proc``; PostgreSQL's own
processes are not the server's and are not counted) is the figure to compare: it moves far less with the machine's
other load than the rates. ``--profile DIR`` attaches py-spy to the PostgreSQL server during a token run and a run
of HEADs before the rounds and prints where its time went (profiled figures are slower and left out of the summary).

Usage (repository root, the dev virtualenv's Python)::

    python -m benchmarks.backends [--quick] [--reps ROUNDS] [--profile DIR] [--client ab|hey]

Writes ``benchmarks/results/backends-<UTC time>.json`` and prints a markdown table. Needs ``wrk``, ``ab`` (or
``hey``) and Debian's ``postgresql``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.clients import add_head_client_option, use_head_client
from benchmarks.profiling import PySpy, summarise
from benchmarks.report import machine
from benchmarks.servers import AcrLocal
from benchmarks.tokens import (
    OCI_MANIFEST,
    REPO,
    Sample,
    Target,
    acrlocal_access_token,
    measure_head,
    measure_tokens,
    push_image,
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start(scratch: Path, kind: str, database_url: str | None) -> Target:
    workdir = scratch / kind
    workdir.mkdir(parents=True)
    server = AcrLocal(workdir, extra_args=("--database-url", database_url) if database_url else ())
    reg = server.start()
    try:
        assert reg.password is not None
        token = acrlocal_access_token(reg, reg.password, f"repository:{REPO}:pull,push")
        push_image(reg, token)
    except BaseException:
        server.stop()
        raise
    headers = {"Accept": OCI_MANIFEST, "Authorization": f"Bearer {token}"}
    return Target(kind, reg, headers, server.stop, reg.password)


def summarise_samples(samples: list[Sample]) -> dict[str, Any]:
    """Medians per server and workload, and per round the PostgreSQL/SQLite ratio of CPU per request."""
    rows = []
    for workload in ("token", "manifest-head"):
        row: dict[str, Any] = {"workload": workload}
        for kind in ("sqlite", "postgresql"):
            mine = [s for s in samples if s.target == kind and s.workload == workload]
            row[kind] = {"rps": [round(s.requests_per_s) for s in mine],
                         "cpu_ms": [round(s.server_cpu_ms_per_request, 3) for s in mine]}
        ratios = []
        for rnd in sorted({s.rep for s in samples}):
            pair = {s.target: s for s in samples if s.workload == workload and s.rep == rnd}
            if len(pair) == 2:
                ratios.append(round(pair["postgresql"].server_cpu_ms_per_request
                                    / pair["sqlite"].server_cpu_ms_per_request, 2))
        row["cpu_ratio"] = ratios
        row["cpu_ratio_median"] = statistics.median(ratios) if ratios else None
        rows.append(row)
    return {"rows": rows}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.backends", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, help="rounds (default 4, or 1 with --quick)")
    p.add_argument("--profile", type=Path,
                   help="write py-spy profiles of the PostgreSQL server's token and HEAD runs here")
    p.add_argument("--head-requests", type=int, help="HEADs a run (default 24,000, or 2,048 with --quick)")
    p.add_argument("--out", type=Path)
    add_head_client_option(p)
    args = p.parse_args(argv)
    use_head_client(args.client)
    missing = [c for c in ("wrk",) if shutil.which(c) is None]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (./scripts/test installs them)")
    sys.path.insert(0, str(ROOT))
    from tests.postgres import PostgresServer

    rounds = args.reps or (1 if args.quick else 4)
    head_n = args.head_requests or (2048 if args.quick else 24_000)
    seconds = 3 if args.quick else 5
    info = machine()
    samples: list[Sample] = []
    scratch = Path(tempfile.mkdtemp(prefix="acrlocal-backends-bench-"))
    cluster = PostgresServer()
    targets: list[Target] = []
    try:
        log(f"starting PostgreSQL and two acrlocal servers in {scratch} ...")
        cluster.start()
        targets = [start(scratch, "sqlite", None), start(scratch, "postgresql", cluster.create_database())]
        if args.profile:
            for workload, run in (("token", lambda: measure_tokens(targets[1], 0, seconds)),
                                  ("manifest-head", lambda: measure_head(targets[1], 0, head_n))):
                out = args.profile / f"{workload}-postgresql.txt"
                with PySpy(targets[1].reg.pid, out) as spy:
                    run()
                log(spy.error or summarise(out))
        for rnd in range(1, rounds + 1):
            for target in targets if rnd % 2 else list(reversed(targets)):
                samples.append(measure_tokens(target, rnd, seconds))
                samples.append(measure_head(target, rnd, head_n))
            log(f"round {rnd}/{rounds}: " + ", ".join(
                f"{s.target} {s.workload} {s.requests_per_s:,.0f}/s {s.server_cpu_ms_per_request:.3f} ms"
                for s in samples if s.rep == rnd))
    finally:
        for target in targets:
            target.stop()
        cluster.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise_samples(samples)
    result = {"machine": info, "load_average": os.getloadavg(), "rounds": rounds, "quick": args.quick,
              "summary": summary, "samples": [asdict(s) for s in samples]}
    out = args.out or ROOT / "benchmarks" / "results" / f"backends-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| workload | SQLite req/s | SQLite CPU ms/req | PostgreSQL req/s | PostgreSQL CPU ms/req | CPU ratio |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in summary["rows"]:
        s, g = row["sqlite"], row["postgresql"]
        print(f"| {row['workload']} | {' / '.join(map(str, s['rps']))} | {' / '.join(map(str, s['cpu_ms']))} | "
              f"{' / '.join(map(str, g['rps']))} | {' / '.join(map(str, g['cpu_ms']))} | "
              f"{' / '.join(map(str, row['cpu_ratio']))} |")


if __name__ == "__main__":
    main()
