"""What a blob GET costs when acrlocal keeps blobs in Azure Blob Storage: a 307 to a SAS URL (ACR's way, the default)
against streaming through the server (``--blob-downloads stream``), beside acrlocal on files and Distribution.

Not a test: prints and records figures, asserts nothing about time. Started once, on loopback: a private Azurite
(``tests/azurite.py``: the npm package of ``tests/azurite``, https with a CA of its own) and four registries, each
given one small (64 KiB) and one large (16 MiB) random blob:

- ``redirect``: ``acrlocal up --blob-store`` on Azurite with the account key (GETs are a 307 to Azurite);
- ``stream``: the same with ``--blob-downloads stream``;
- ``files``: acrlocal on its data directory's files (the default);
- ``distribution``: Debian's ``docker-registry`` 2.8.2 on its file system (Debian builds it without the Azure storage
  driver, so it cannot run on the same Azurite).

Each round (the order of the registries alternates) runs ``hey`` on each: GETs of the small blob (``-c 16``) and of
the large one (``-c 4``), with a bearer token for acrlocal; hey follows the 307 as docker does (dropping the
registry's ``Authorization`` for the other host). Figures per request: acrlocal's CPU (its process tree, from
``/proc``), Azurite's CPU (node), and the client's; rates are end to end (the redirect's include Azurite's answer).

Usage (repository root, the dev virtualenv's Python)::

    python -m benchmarks.blob_get [--quick] [--reps ROUNDS]

Writes ``benchmarks/results/blob-get-<UTC time>.json`` and prints a markdown table. Needs ``hey``, Debian's
``docker-registry`` and Azurite installed in ``tests/azurite`` (``./scripts/test`` installs all three).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks import ROOT
from benchmarks.clients import hey
from benchmarks.procstat import cpu_seconds
from benchmarks.report import machine
from benchmarks.servers import AcrLocal, Distribution, Registry
from benchmarks.tokens import _request, acrlocal_access_token

REPO = "bench/blob"
SMALL, LARGE = 64 * 1024, 16 * 1024 * 1024
KINDS = ("redirect", "stream", "files", "distribution")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Target:
    kind: str
    reg: Registry
    headers: dict[str, str]
    blobs: dict[str, str]  # "small"/"large" -> digest
    stop: Callable[[], None]


@dataclass(frozen=True)
class Sample:
    target: str
    workload: str  # "small" or "large"
    rep: int
    requests: int
    requests_per_s: float
    mb_per_s: float
    p50_ms: float
    server_cpu_ms_per_request: float
    storage_cpu_ms_per_request: float  # Azurite's (0 where the registry does not use it)
    client_cpu_ms_per_request: float


def _push(reg: Registry, token: str | None, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    status, headers, body = _request(reg, "POST", f"/v2/{REPO}/blobs/uploads/", token, b"")
    if status != 202:
        raise RuntimeError(f"{reg.kind}: upload POST answered {status}: {body[:300]!r}")
    location = headers["Location"]
    path = location.split(reg.host, 1)[1] if location.startswith("http") else location
    sep = "&" if "?" in path else "?"
    status, _, body = _request(reg, "PUT", f"{path}{sep}digest={digest}", token, data,
                               {"Content-Type": "application/octet-stream"})
    if status != 201:
        raise RuntimeError(f"{reg.kind}: upload PUT answered {status}: {body[:300]!r}")
    return digest


def start(scratch: Path, kind: str, storage: Any, small: bytes, large: bytes) -> Target:
    workdir = scratch / kind
    workdir.mkdir(parents=True)
    server: AcrLocal | Distribution
    if kind == "distribution":
        server = Distribution(workdir)
    else:
        args: tuple[str, ...] = ()
        env: dict[str, str] = {}
        if kind in ("redirect", "stream"):
            url, key, ca = storage.store("bench")
            args = ("--blob-store", url, "--blob-store-ca", ca)
            env = {"ACRLOCAL_BLOB_STORE_KEY": key}
            if kind == "stream":
                args += ("--blob-downloads", "stream")
        server = AcrLocal(workdir, extra_args=args, env=env)
    reg = server.start()
    try:
        token = None
        if reg.password is not None:
            token = acrlocal_access_token(reg, reg.password, f"repository:{REPO}:pull,push")
        blobs = {"small": _push(reg, token, small), "large": _push(reg, token, large)}
    except BaseException:
        server.stop()
        raise
    return Target(kind, reg, {"Authorization": f"Bearer {token}"} if token else {}, blobs, server.stop)


def measure(target: Target, workload: str, rnd: int, n: int, concurrency: int, storage_pid: int) -> Sample:
    size = SMALL if workload == "small" else LARGE
    before, storage_before = cpu_seconds(target.reg.pid), cpu_seconds(storage_pid)
    result = hey(target.reg.url(f"/v2/{REPO}/blobs/{target.blobs[workload]}"), n, concurrency, "GET", target.headers)
    cpu, storage_cpu = cpu_seconds(target.reg.pid) - before, cpu_seconds(storage_pid) - storage_before
    sent = n // concurrency * concurrency
    return Sample(target.kind, workload, rnd, sent, result.requests_per_s, result.requests_per_s * size / 1e6,
                  result.p50_ms, cpu * 1000 / sent,
                  storage_cpu * 1000 / sent if target.kind in ("redirect", "stream") else 0.0,
                  result.cpu_s * 1000 / sent)


def summarise(samples: list[Sample]) -> list[dict[str, Any]]:
    rows = []
    for workload in ("small", "large"):
        for kind in KINDS:
            mine = [s for s in samples if s.target == kind and s.workload == workload]
            if not mine:
                continue
            rows.append({
                "workload": workload, "target": kind,
                "requests_per_s": statistics.median(s.requests_per_s for s in mine),
                "mb_per_s": statistics.median(s.mb_per_s for s in mine),
                "p50_ms": statistics.median(s.p50_ms for s in mine),
                "server_cpu_ms": statistics.median(s.server_cpu_ms_per_request for s in mine),
                "storage_cpu_ms": statistics.median(s.storage_cpu_ms_per_request for s in mine),
                "client_cpu_ms": statistics.median(s.client_cpu_ms_per_request for s in mine),
            })
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.blob_get", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, help="rounds (default 3, or 1 with --quick)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if shutil.which("hey") is None:
        raise SystemExit("missing: hey (./scripts/test installs it)")
    sys.path.insert(0, str(ROOT))
    from tests.azurite import AzuriteServer

    rounds = args.reps or (1 if args.quick else 3)
    small_n, large_n = (400, 64) if args.quick else (3200, 128)
    info = machine()
    samples: list[Sample] = []
    scratch = Path(tempfile.mkdtemp(prefix="acrlocal-blob-get-bench-"))
    storage = AzuriteServer()
    targets: list[Target] = []
    small, large = secrets.token_bytes(SMALL), secrets.token_bytes(LARGE)
    try:
        log(f"starting Azurite and four registries in {scratch} ...")
        storage.start()
        assert storage.proc is not None
        targets = [start(scratch, kind, storage, small, large) for kind in KINDS]
        for rnd in range(1, rounds + 1):
            for target in targets if rnd % 2 else list(reversed(targets)):
                samples.append(measure(target, "small", rnd, small_n, 16, storage.proc.pid))
                samples.append(measure(target, "large", rnd, large_n, 4, storage.proc.pid))
            log(f"round {rnd}/{rounds}: " + ", ".join(
                f"{s.target} {s.workload} {s.requests_per_s:,.0f}/s {s.server_cpu_ms_per_request:.2f} ms"
                for s in samples if s.rep == rnd))
    finally:
        for target in targets:
            target.stop()
        storage.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    rows = summarise(samples)
    result = {"machine": info, "load_average": os.getloadavg(), "rounds": rounds, "quick": args.quick,
              "summary": rows, "samples": [asdict(s) for s in samples]}
    out = args.out or ROOT / "benchmarks" / "results" / f"blob-get-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print("| blob | registry | req/s | MB/s | p50 ms | registry CPU ms/req | Azurite CPU ms/req | client CPU ms/req |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workload']} | {r['target']} | {r['requests_per_s']:,.0f} | {r['mb_per_s']:,.0f} | "
              f"{r['p50_ms']:.1f} | {r['server_cpu_ms']:.3f} | {r['storage_cpu_ms']:.3f} | "
              f"{r['client_cpu_ms']:.3f} |")


if __name__ == "__main__":
    main()
