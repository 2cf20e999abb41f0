"""acrlocal against the reference registry (Distribution 2.8.2), same workloads, one run.

    python -m benchmarks.registry [--quick] [--reps N] [--targets distribution,acrlocal[,acrlocal-shared]] [--keep]

``acrlocal-shared`` is acrlocal as a shared service runs it: its metadata on PostgreSQL (a private Debian server on
loopback, ``tests/postgres.py``, a fresh database a repetition) and its blobs on Azure Blob Storage (a private
Azurite, ``tests/azurite.py``, a fresh container a repetition; blob GETs redirected to it, as the default is), beside
the same server on SQLite and files and beside Distribution. Its server CPU and RSS are acrlocal's alone: PostgreSQL
and Azurite are not counted.

Each repetition starts every server on fresh storage, runs each workload of :mod:`benchmarks.workloads` on one
server and then on the other (alternating which goes first between repetitions), and stops them. Prints markdown
tables and writes the samples, the summary and the machine to ``benchmarks/results/registry-<UTC time>.json``.
Exits non-zero only if the harness itself cannot run (a server that will not start, a client that is missing); a
workload that fails is reported as such and the run goes on. Never asserts timings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import ROOT, servers
from benchmarks.clients import add_head_client_option, use_head_client
from benchmarks.images import Image, build_image
from benchmarks.report import machine, markdown, summarise
from benchmarks.servers import AcrLocal, Distribution
from benchmarks.workloads import FULL, QUICK, Sample, Sizes, WorkloadRunner

RESULTS = ROOT / "benchmarks" / "results"
TARGETS = ("distribution", "acrlocal", "acrlocal-shared")
DEFAULT_TARGETS = ("distribution", "acrlocal")
REQUIRED = ("skopeo", "curl", "/usr/bin/docker-registry")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.registry", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, one repetition: a smoke run")
    p.add_argument("--workers", type=int, default=1, help="acrlocal up --workers (default 1)")
    p.add_argument("--reps", type=int, help="repetitions (default 3, or 1 with --quick)")
    p.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                   help="comma-separated subset of: " + ", ".join(TARGETS))
    p.add_argument("--keep", action="store_true", help="keep the scratch directory (logs, configs, storage)")
    p.add_argument("--scratch", type=Path, help="parent of the scratch directory (default: the system temp dir)")
    p.add_argument("--profile", type=Path, metavar="DIR",
                   help="record a py-spy profile of acrlocal for each workload step into DIR (slows it down)")
    p.add_argument("--profile-native", action="store_true", help="with --profile: include native frames (C, Cython)")
    p.add_argument("--steps", help="comma-separated subset of: " + ", ".join(WorkloadRunner.STEPS))
    p.add_argument("--out", type=Path, help="JSON results file (default: benchmarks/results/registry-<time>.json)")
    add_head_client_option(p)
    return p.parse_args(argv)


class SharedBackends:
    """The PostgreSQL server and the Azurite of ``acrlocal-shared``, started once a run; :meth:`server` gives a
    repetition an acrlocal on a fresh database and container of theirs. :meth:`stop` stops both by PID."""

    def __init__(self) -> None:
        from tests import azurite, postgres  # the tests' private servers: loopback, temp dirs, stopped by PID

        self.postgres = postgres.PostgresServer()
        self.azurite = azurite.AzuriteServer()
        self.postgres.start()
        try:
            self.azurite.start()
        except BaseException:
            self.postgres.stop()
            raise

    def server(self, workdir: Path) -> AcrLocal:
        container, key, ca = self.azurite.store("bench")
        # Credentials go through the environment, off the command line.
        return AcrLocal(workdir, extra_args=("--blob-store", container, "--blob-store-ca", ca),
                        env={"ACRLOCAL_DATABASE_URL": self.postgres.create_database("bench"),
                             "ACRLOCAL_BLOB_STORE_KEY": key},
                        kind="acrlocal-shared", extra_cas=(Path(ca),))

    def stop(self) -> None:
        try:
            self.azurite.stop()
        finally:
            self.postgres.stop()


def run_rep(rep: int, reps: int, targets: list[str], sizes: Sizes, big: Image, small: Image, scratch: Path,
            args: argparse.Namespace, shared: SharedBackends | None = None) -> tuple[list[Sample], list[str]]:
    """Start every target on fresh storage, then run each workload step on all of them back to back (the order
    alternates between repetitions), so a pair of figures is measured under the same load from other work."""
    order = targets if rep % 2 else list(reversed(targets))
    servers: list[Distribution | AcrLocal] = []
    runners: list[WorkloadRunner] = []
    try:
        for kind in order:
            workdir = scratch / f"rep{rep}" / kind
            workdir.mkdir(parents=True)
            server: Distribution | AcrLocal
            if kind == "distribution":
                server = Distribution(workdir)
            elif kind == "acrlocal-shared":
                assert shared is not None
                server = shared.server(workdir)
            else:
                server = AcrLocal(workdir)
            servers.append(server)
            log(f"rep {rep}/{reps}: starting {kind}")
            reg = server.start()
            runner = WorkloadRunner(reg, sizes, big, small, workdir / "scratch", rep, log)
            runner.profile_dir = args.profile
            runner.profile_native = args.profile_native
            runners.append(runner)
        steps: tuple[str, ...] = WorkloadRunner.STEPS
        if args.steps:
            # Later steps read what the first one pushed, so it always runs.
            steps = tuple(s for s in WorkloadRunner.STEPS if s == steps[0] or s in args.steps.split(","))
        for step in steps:
            for runner in runners:
                runner.run_step(step)
    finally:
        for server in servers:
            server.stop()
        if not args.keep:
            shutil.rmtree(scratch / f"rep{rep}", ignore_errors=True)
    return [s for r in runners for s in r.samples], [e for r in runners for e in r.errors]


def run(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    servers.WORKERS = args.workers
    use_head_client(args.client)
    missing = [c for c in REQUIRED if shutil.which(c) is None]
    if missing:
        raise SystemExit(f"missing clients: {', '.join(missing)} (./scripts/test installs them)")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        raise SystemExit(f"unknown target(s) {sorted(unknown)}; expected some of {list(TARGETS)}")
    sizes = QUICK if args.quick else FULL
    reps = args.reps or (1 if args.quick else 3)
    info = machine()
    scratch = Path(tempfile.mkdtemp(prefix="acrlocal-bench-", dir=args.scratch))
    samples: list[Sample] = []
    errors: list[str] = []
    t_start = time.perf_counter()
    shared: SharedBackends | None = None
    try:
        if "acrlocal-shared" in targets:
            log("starting PostgreSQL and Azurite for acrlocal-shared")
            shared = SharedBackends()
        log(f"building images in {scratch} ...")
        big = build_image(scratch / "images" / "big", [sizes.big_layer] * sizes.big_layers)
        small = build_image(scratch / "images" / "small", [sizes.small_layer] * sizes.small_layers)
        for rep in range(1, reps + 1):
            samples_rep, errors_rep = run_rep(rep, reps, targets, sizes, big, small, scratch, args, shared)
            samples += samples_rep
            errors += errors_rep
    finally:
        if shared is not None:
            shared.stop()
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            log(f"scratch kept in {scratch}")
    info["loadavg_end"] = os.getloadavg()
    info["elapsed_s"] = round(time.perf_counter() - t_start, 1)
    rows = summarise(samples)
    result = {
        "machine": info,
        "mode": "quick" if args.quick else "full",
        "reps": reps,
        "sizes": sizes.__dict__,
        "targets": targets,
        "tls": "every server over TLS 1.2+ with an ECDSA P-256 certificate from a local CA",
        "summary": rows,
        "samples": [s.as_dict() for s in samples],
        "errors": errors,
    }
    out = args.out or RESULTS / f"registry-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(rows))
    print()
    print(f"{info['nproc']} CPUs ({info['cpu_model']}), kernel {info['kernel']}, Python {info['python']}; "
          f"load {info['loadavg_start'][0]:.2f} → {info['loadavg_end'][0]:.2f}; {info['elapsed_s']} s; "
          f"{reps} repetition(s), {result['mode']} sizes. Results: {out}")
    for e in errors:
        print(f"ERROR {e[:1500]}")
    if args.profile:
        print(f"profiles (collapsed stacks) in {args.profile}; summarise with: python -m benchmarks.profiling FILE...")
    return result


def main() -> None:
    run()


if __name__ == "__main__":
    main()
