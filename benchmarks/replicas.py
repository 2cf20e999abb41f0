"""Replicas behind HAProxy: manifest HEAD with tokens through the load balancer with 1 and 2 replicas on this machine.

Not a test: prints and records figures, asserts nothing about time. Two sets are started once, side by side, each
on a database of its own on one private PostgreSQL server (``tests/postgres.py``) and behind a HAProxy of its own
(TCP mode, round robin, as ``tests/replicas`` runs them): one replica, and two replicas. One small image is
pushed to each; then, in each round (the order of the sets alternating, so the machine's other load falls on both
alike), N HEADs over 32 connections (``ab -k -i``, or ``hey`` with ``--client hey``) on the manifest by tag
with a bearer token, through HAProxy.

Recorded per sample: requests per second, p50/p99, and CPU per request of the replicas (every acrlocal process),
of PostgreSQL (its whole server) and of HAProxy. The scaling factor is the two-replica rate over the one-replica
rate of the same round (median over rounds), printed beside the bound that sharing two cores sets on it,
2c / (c + o) with c the replicas' CPU a request and o everyone else's: a replica that costs less a request gets less
from a second core here, where the client and the balancer take their share of both.

``--replica-cpus X`` gives each replica a CPU quota of X cores (a cgroup of its own, :mod:`benchmarks.cpulimit`; root
and a cgroup file system needed): each replica then behaves like a machine of X cores, and the factor says whether
the replicas scale when the client and the balancer do not take the cores they would run on (with X = 0.5, two
replicas take one core, and the rest of the machine has the other).

Usage (repository root, the dev virtualenv's Python)::

    python -m benchmarks.replicas [--reps ROUNDS] [--requests N] [--client ab|hey] [--replica-cpus X]

Writes ``benchmarks/results/replicas-<UTC time>.json`` and prints a markdown table. Needs ``ab`` (or ``hey``),
``haproxy`` and PostgreSQL's server binaries.
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
import time
from pathlib import Path
from typing import Any

import requests
from tests import postgres
from tests.registry.conftest import RegistryClient
from tests.replicas.conftest import Replicas, start_replicas, stop_replicas

from benchmarks.clients import add_head_client_option, head_load, use_head_client
from benchmarks.cpulimit import CpuLimit
from benchmarks.procstat import children_cpu_seconds, cpu_seconds

RESULTS = Path(__file__).parent / "results"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _token(replicas: Replicas, scope: str) -> str:
    server = replicas.front
    base = f"https://{server.login_server()}"
    r = requests.get(f"{base}/oauth2/token", params={"service": server.login_server(), "scope": scope},
                     auth=server.registry_credentials(), verify=server.ca, timeout=60)
    r.raise_for_status()
    return str(r.json()["access_token"])


def _postmaster(pg: postgres.PostgresServer) -> int:
    return int((pg.data / "postmaster.pid").read_text().split()[0])


def measure(replicas: Replicas, pg: postgres.PostgresServer, url: str, token: str, n: int) -> dict[str, Any]:
    pids = [s.proc.pid for s in replicas.servers if s.proc is not None]
    lb = replicas.lb.proc
    assert lb is not None
    before = ([cpu_seconds(p) for p in pids], cpu_seconds(_postmaster(pg)), cpu_seconds(lb.pid),
              children_cpu_seconds())
    result = head_load(url, n, 32, {"Authorization": f"Bearer {token}"})
    after = ([cpu_seconds(p) for p in pids], cpu_seconds(_postmaster(pg)), cpu_seconds(lb.pid),
             children_cpu_seconds())
    answered = sum(result.statuses.values())
    return {
        "rps": result.requests_per_s, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms, "requests": answered,
        "replica_cpu_ms_per_req": 1000 * (sum(after[0]) - sum(before[0])) / answered,
        "replica_cpu_ms_per_req_each": [1000 * (a - b) / answered for a, b in zip(after[0], before[0], strict=True)],
        "postgres_cpu_ms_per_req": 1000 * (after[1] - before[1]) / answered,
        "haproxy_cpu_ms_per_req": 1000 * (after[2] - before[2]) / answered,
        "client_cpu_ms_per_req": 1000 * (after[3] - before[3]) / answered,  # the client, on the same two cores
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--requests", type=int, default=8000, help="HEAD requests per sample (default 8000)")
    parser.add_argument("--replica-cpus", type=float, help="each replica's CPU quota, in cores (default: none)")
    add_head_client_option(parser)
    args = parser.parse_args(argv)
    use_head_client(args.client)
    pg = postgres.shared()
    scratch = Path(tempfile.mkdtemp(prefix="acrlocal-bench-replicas-"))
    sets: dict[str, Replicas] = {}
    samples: list[dict[str, Any]] = []
    limits: list[CpuLimit] = []
    try:
        for count in (1, 2):
            log(f"starting {count} replica(s) behind HAProxy")
            replicas = sets[f"{count} replica(s)"] = start_replicas(
                scratch / f"set{count}", "--registry-rate-limit", "off", count=count)
            for i, server in enumerate(replicas.servers):
                if args.replica_cpus and server.proc is not None:
                    limits.append(CpuLimit(f"acrlocal-bench-{os.getpid()}-{count}-{i}", args.replica_cpus))
                    limits[-1].add(server.proc.pid)
        targets: dict[str, tuple[str, str]] = {}
        for name, replicas in sets.items():
            RegistryClient(replicas.front).push_image("bench/app", "v1")
            url = f"https://{replicas.front.login_server()}/v2/bench/app/manifests/v1"
            targets[name] = (url, _token(replicas, "repository:bench/app:pull"))
            measure(replicas, pg, url, targets[name][1], 2000)  # warm up
        for rnd in range(args.reps):
            order = list(sets) if rnd % 2 == 0 else list(reversed(sets))
            for name in order:
                sample = {"round": rnd, "set": name, **measure(sets[name], pg, *targets[name], args.requests)}
                samples.append(sample)
                log(f"round {rnd} {name}: {sample['rps']:.0f} req/s, replicas {sample['replica_cpu_ms_per_req']:.3f} "
                    f"ms CPU/req, PostgreSQL {sample['postgres_cpu_ms_per_req']:.3f}, HAProxy "
                    f"{sample['haproxy_cpu_ms_per_req']:.3f}")
                time.sleep(0.5)
    finally:
        for replicas in sets.values():
            stop_replicas(replicas)
        for limit in limits:
            limit.close()
        postgres.stop_shared()
        shutil.rmtree(scratch, ignore_errors=True)
    ratios = []
    for rnd in range(args.reps):
        one, two = ([s for s in samples if s["round"] == rnd and s["set"] == name] for name in sets)
        ratios.append(two[0]["rps"] / one[0]["rps"])
    summary: dict[str, Any] = {"scaling_factor_median": statistics.median(ratios), "scaling_factors": ratios,
                               "replica_cpus": args.replica_cpus}
    for name in sets:
        mine = [s for s in samples if s["set"] == name]
        summary[name] = {key: statistics.median(s[key] for s in mine) for key in (
            "rps", "p50_ms", "p99_ms", "replica_cpu_ms_per_req", "postgres_cpu_ms_per_req", "haproxy_cpu_ms_per_req",
            "client_cpu_ms_per_req")}
    # Two replicas on two cores that they share with the balancer, the client and PostgreSQL rise at most to
    # 2c / (c + o): c the replicas' CPU a request, o everyone else's (the one replica keeps one core busy).
    two = summary[list(sets)[-1]]
    c = two["replica_cpu_ms_per_req"]
    o = two["postgres_cpu_ms_per_req"] + two["haproxy_cpu_ms_per_req"] + two["client_cpu_ms_per_req"]
    summary["scaling_bound"] = 2.0 if args.replica_cpus else 2 * c / (c + o)
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    (RESULTS / f"replicas-{stamp}.json").write_text(json.dumps({"head_client": args.client, "samples": samples,
                                                                "summary": summary}, indent=2))
    print("| set | HEAD req/s | p50 ms | p99 ms | replicas' CPU ms/req | PostgreSQL CPU ms/req | HAProxy CPU ms/req "
          f"| {args.client}'s CPU ms/req |")
    print("|---|---|---|---|---|---|---|---|")
    for name in sets:
        m = summary[name]
        print(f"| {name} | {m['rps']:.0f} | {m['p50_ms']:.1f} | {m['p99_ms']:.1f} | "
              f"{m['replica_cpu_ms_per_req']:.3f} | {m['postgres_cpu_ms_per_req']:.3f} | "
              f"{m['haproxy_cpu_ms_per_req']:.3f} | {m['client_cpu_ms_per_req']:.3f} |")
    factor = (f"\nscaling factor (2 replicas over 1, median of {args.reps} rounds): "
              f"{summary['scaling_factor_median']:.2f}x ({', '.join(f'{r:.2f}' for r in ratios)})")
    if args.replica_cpus:
        print(f"{factor}, each replica limited to {args.replica_cpus:g} cores")
    else:
        print(f"{factor}; on these shared cores at most 2c / (c + o) = {summary['scaling_bound']:.2f}x (c: the "
              "replicas' CPU a request, o: everyone else's, with 2 replicas)")


if __name__ == "__main__":
    main()
