"""Identity benchmarks: IMDS managed-identity tokens per second, and the Entra token endpoint's rate.

Not a test: prints and records figures, asserts nothing about time. For each configuration a fresh ``acrlocal up``
is started (throttling off, so the server's own speed is measured), a VM with a system-assigned identity is made
through ARM, and ``wrk`` (2 threads) keeps 8 connections busy for 10 s per workload:

- ``imds-cached``: ``GET http://169.254.169.254/metadata/identity/oauth2/token`` from inside the VM (``wrk`` runs in
  the VM's namespaces, started through ``acrlocal ssh vm``), one resource, the token cache on;
- ``imds-uncached``: the same with ``--no-imds-token-cache``: every answer signs a new RS256 token;
- ``entra-secret``: ``POST /{tenant}/oauth2/v2.0/token`` over https from the host, client credentials with a
  secret (every answer signs a new token).

Before VMs had their own network namespaces, IMDS answered on a loopback port of the host: 26,669 tokens/s cached
(docs/benchmarks.md, :data:`LOOPBACK_IMDS_CACHED`); the table gives the namespace's figure against it.

Usage (from the repository root, the dev virtualenv's Python)::

    python -m benchmarks.identity               # 3 repetitions
    python -m benchmarks.identity --quick       # 1 repetition, fewer requests
    python -m benchmarks.identity --workloads entra-secret --workers 2   # no VM needed

With ``--workers N`` the server CPU counts all N processes.

Writes ``benchmarks/results/identity-<UTC time>.json`` and prints a markdown table. Needs ``wrk`` (a C client: at
these rates ``hey`` costs more CPU than the server and caps what is measured).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from benchmarks import ROOT, SRC, servers
from benchmarks.procstat import CLK_TCK
from benchmarks.report import machine
from benchmarks.servers import AcrLocal

CONCURRENCY = 8
ARM_RESOURCE = "https://management.azure.com"
#: IMDS tokens/s (cached) when every VM had a loopback port on the host (docs/benchmarks.md, quiet machine).
LOOPBACK_IMDS_CACHED = 26_669.0


@dataclass(frozen=True)
class Sample:
    workload: str
    rep: int
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_s: float
    client_cpu_s: float | None = None  # wrk's own CPU seconds, when it runs on the host (not in the VM)


def _own_cpu(pid: int) -> float:
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def server_cpu_seconds(pid: int) -> float:
    """The CPU seconds of the server's processes (``pid`` and, with ``--workers``, its ``acrlocal _worker``
    children), without their other descendants: a VM's processes (``wrk`` in the VM among them) are the server's
    descendants too. (The executor threads that sign tokens are the server's own.)"""
    total = _own_cpu(pid)
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        try:
            if b"_worker" in Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0"):
                total += _own_cpu(int(child))
        except OSError:
            continue
    return total


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


Runner = Callable[[list[str], str], str]


def _local(cmd: list[str], script: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        return subprocess.run([*cmd[:-1], "-s", lua.name, cmd[-1]], capture_output=True, text=True,
                              timeout=600, check=True).stdout


def wrk(url: str, seconds: int, headers: dict[str, str], method: str = "GET", body: str | None = None,
        runner: Runner = _local) -> tuple[int, float, float, float]:
    """``(requests, requests/s, p50 ms, p99 ms)`` of a ``wrk`` run with :data:`CONCURRENCY` connections on 2
    threads (started by ``runner(argv, lua script)``: here, or in a VM); RuntimeError if any answer was not a 2xx
    or a socket failed."""
    script = ""
    if method != "GET" or body is not None:
        script = f"wrk.method = {json.dumps(method)}\n"
        if body is not None:
            script += f"wrk.body = {json.dumps(body)}\n"
            script += 'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
    cmd = ["wrk", "-t", "2", "-c", str(CONCURRENCY), "-d", f"{seconds}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = runner([*cmd, url], script)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk: some requests failed\n{out[-1500:]}")
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: _ms(v) for p, v in re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M)}
    return total, rps, pct["50"], pct["99"]


class World:
    """A running server with one VM (system-assigned identity), reached as the local administrator."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...], with_vm: bool = True) -> None:
        self.server = AcrLocal(workdir, extra_args=("--imds-rate-limit", "0", *extra_args))
        self.with_vm = with_vm
        self.pid = 0
        self.status: dict[str, Any] = {}

    def __enter__(self) -> World:
        registry = self.server.start()
        self.pid = registry.pid
        self.status = registry.info["status"]
        self.ca = str(registry.ca)
        self.admin = json.loads((self.server.data_dir / "admin.json").read_text())
        self.base = self.status["endpoints"]["shared"]
        self.vm = self._make_vm() if self.with_vm else {}
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()

    def token_form(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "client_id": self.admin["clientId"],
                "client_secret": self.admin["clientSecret"], "scope": ARM_RESOURCE + "/.default"}

    def _make_vm(self) -> dict[str, Any]:
        s = requests.Session()
        token = s.post(f"{self.base}/{self.admin['tenantId']}/oauth2/v2.0/token", data=self.token_form(),
                       verify=self.ca, timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        group = f"/subscriptions/{self.admin['subscriptionId']}/resourceGroups/bench"
        s.put(f"{self.base}{group}", params={"api-version": "2022-09-01"}, json={"location": "westeurope"},
              headers=headers, verify=self.ca, timeout=30).raise_for_status()
        r = s.put(f"{self.base}{group}/providers/Microsoft.Compute/virtualMachines/bench-vm",
                  params={"api-version": "2024-07-01"}, headers=headers, verify=self.ca, timeout=30,
                  json={"location": "westeurope", "identity": {"type": "SystemAssigned"}})
        r.raise_for_status()
        vm: dict[str, Any] = r.json()
        return vm

    def in_vm(self, cmd: list[str], script: str) -> str:
        """Run ``cmd`` in the VM (through ``acrlocal ssh vm``), with ``script`` as its Lua file; its output."""
        line = "cat > /tmp/bench.lua; " + shlex.join([*cmd[:-1], "-s", "/tmp/bench.lua", cmd[-1]])
        env = {**os.environ, "PYTHONPATH": str(SRC), "ACRLOCAL_DATA_DIR": str(self.server.data_dir),
               "ACRLOCAL_CONFIG_DIR": str(self.server.data_dir.parent / "cli-profile")}
        proc = subprocess.run([sys.executable, "-m", "acrlocal", "ssh", "vm", "-g", "bench", "-n", "bench-vm", "--",
                               line], input=script, capture_output=True, text=True, timeout=600, env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"in the VM: {line} exited {proc.returncode}:\n{proc.stderr[-1500:]}")
        return proc.stdout


def measure(world: World, workload: str, rep: int, seconds: int) -> Sample:
    query = f"api-version=2018-02-01&resource={urllib.parse.quote(ARM_RESOURCE, safe='')}"
    method, body, runner = "GET", None, _local
    if workload.startswith("imds"):
        url, headers = f"http://169.254.169.254/metadata/identity/oauth2/token?{query}", {"Metadata": "true"}
        runner = world.in_vm
    else:
        url, headers = f"{world.base}/{world.admin['tenantId']}/oauth2/v2.0/token", {}
        method, body = "POST", urllib.parse.urlencode(world.token_form())
    wrk(url, 1, headers, method, body, runner)  # warm-up: the VM's boot, connections, caches, the first token
    cpu0, used0 = server_cpu_seconds(world.pid), resource.getrusage(resource.RUSAGE_CHILDREN)
    n, rps, p50, p99 = wrk(url, seconds, headers, method, body, runner)
    cpu, used = server_cpu_seconds(world.pid) - cpu0, resource.getrusage(resource.RUSAGE_CHILDREN)
    client = used.ru_utime + used.ru_stime - used0.ru_utime - used0.ru_stime if runner is _local else None
    log(f"  {workload} rep {rep}: {rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, server CPU {cpu:.1f} s "
        f"({1000 * cpu / n:.3f} ms a request), load average {os.getloadavg()[0]:.1f}")
    return Sample(workload, rep, n, rps, p50, p99, cpu, client)


CONFIGS = {  # workload -> (server flags, seconds of load in a full run)
    "imds-cached": ((), 10),
    "imds-uncached": (("--no-imds-token-cache",), 10),
    "entra-secret": ((), 10),
}


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1 repetition of 2 s per workload")
    parser.add_argument("--workers", type=int, default=1, help="acrlocal up --workers (default 1)")
    parser.add_argument("--workloads", default=",".join(CONFIGS),
                        help="comma-separated, of: " + ", ".join(CONFIGS) + " (default all)")
    args = parser.parse_args(argv)
    chosen = [w.strip() for w in args.workloads.split(",") if w.strip()]
    if not chosen or any(w not in CONFIGS for w in chosen):
        parser.error(f"--workloads takes some of {', '.join(CONFIGS)}, not {args.workloads!r}")
    servers.WORKERS = args.workers
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (./scripts/test installs it)")
    reps = 1 if args.quick else args.reps
    samples: list[Sample] = []
    info = machine()
    for rep in range(reps):
        for flags in dict.fromkeys(CONFIGS[w][0] for w in chosen):
            needs_vm = any(w.startswith("imds") for w in chosen if CONFIGS[w][0] == flags)
            with tempfile.TemporaryDirectory(prefix="acrlocal-bench-identity-") as tmp, \
                    World(Path(tmp), flags, with_vm=needs_vm) as world:
                for workload in chosen:
                    wflags, n = CONFIGS[workload]
                    if wflags == flags:
                        samples.append(measure(world, workload, rep, 2 if args.quick else n))
    summary = []
    for workload in chosen:
        rows = [s for s in samples if s.workload == workload]
        summary.append({"workload": workload, "requests_per_s": statistics.median(s.requests_per_s for s in rows),
                        "p50_ms": statistics.median(s.p50_ms for s in rows),
                        "p99_ms": statistics.median(s.p99_ms for s in rows),
                        "p99_ms_max": max(s.p99_ms for s in rows),
                        "cpu_ms_per_request": statistics.median(1000 * s.server_cpu_s / s.requests for s in rows),
                        "client_cpu_ms_per_request": statistics.median(
                            1000 * s.client_cpu_s / s.requests for s in rows if s.client_cpu_s is not None)
                        if all(s.client_cpu_s is not None for s in rows) else None,
                        "reps": len(rows)})
    result = {"machine": info, "concurrency": CONCURRENCY, "samples": [asdict(s) for s in samples],
              "summary": summary}
    out = ROOT / "benchmarks" / "results" / f"identity-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(summary))
    log(f"results: {out}")
    return result


def table(summary: list[dict[str, Any]]) -> str:
    lines = ["| workload | req/s (median) | p50 ms | p99 ms (median / worst) | server CPU ms per request | "
             "wrk's CPU ms per request |", "|---|---:|---:|---:|---:|---:|"]
    for row in summary:
        client = row.get("client_cpu_ms_per_request")
        lines.append(f"| {row['workload']} | {row['requests_per_s']:,.0f} | {row['p50_ms']:.2f} | "
                     f"{row['p99_ms']:.2f} / {row['p99_ms_max']:.2f} | {row['cpu_ms_per_request']:.3f} | "
                     f"{'(in the VM)' if client is None else f'{client:.3f}'} |")
    cached = next((r for r in summary if r["workload"] == "imds-cached"), None)
    if cached:
        lines.append(f"\nIMDS in the VM's namespace against the loopback port of before "
                     f"({LOOPBACK_IMDS_CACHED:,.0f}/s): {cached['requests_per_s'] / LOOPBACK_IMDS_CACHED:.2f}x")
    return "\n".join(lines)


def main() -> None:
    started = time.monotonic()
    run()
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
