"""VM benchmarks: how long a VM takes from create to its first command, how long its Docker Engine takes to come
up on first use, and how much memory an idle VM costs, with and without Docker Engine.

Not a test: prints and records figures, asserts nothing about time. One ``acrlocal up`` on a fresh data dir; for
each of ``--vms`` VMs (made one after another through ARM, as the local administrator):

- ``create``: the ARM PUT of the VM (its principal, row and directory; nothing starts);
- ``first command``: ``true`` right after, run as ``acrlocal ssh vm -- true`` runs it (the ``console`` action and
  its WebSocket, here without the CLI's own start-up), which boots the VM (namespaces, mounts, the doors checked
  and served);
- ``warm command``: the same again (the console's own cost: the floor under ``first command``);
- ``dockerd``: the first ``docker version`` in the VM, which starts its daemon, against a second one;
- memory of the idle VM, before and after its Docker Engine started: the proportional set size (PSS) of every
  process in the VM's cgroup (the host-side monitor, PID 1 and, with Docker, ``dockerd`` and ``containerd``),
  read from ``/proc/<pid>/smaps_rollup``; and the growth of the server's own PSS per running VM.

Usage (from the repository root, as root, the dev virtualenv's Python)::

    python -m benchmarks.vms             # 5 VMs
    python -m benchmarks.vms --vms 2     # fewer

Writes ``benchmarks/results/vms-<UTC time>.json`` and prints a markdown table. The Docker figures need Debian's
docker.io on the host.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import requests

from benchmarks import ROOT, SRC
from benchmarks.report import machine
from benchmarks.servers import AcrLocal

PROC = Path("/proc")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def pss_kib(pid: int) -> int:
    try:
        for line in (PROC / str(pid) / "smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def vm_processes(vm_id: str) -> list[int]:
    """Every process in the VM's cgroup (``acrlocal-vm-<first 12 hex digits of its vmId>``)."""
    marker = f"acrlocal-vm-{vm_id.replace('-', '')[:12]}"
    found = []
    for entry in os.scandir(PROC):
        if entry.name.isdigit():
            try:
                if marker in (PROC / entry.name / "cgroup").read_text():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class Bench:
    def __init__(self, workdir: Path) -> None:
        self.server = AcrLocal(workdir)
        self.env: dict[str, str] = {}

    def start(self) -> None:
        registry = self.server.start()
        self.pid = registry.pid
        status = registry.info["status"]
        self.ca = str(registry.ca)
        self.base = status["endpoints"]["shared"]
        self.admin = json.loads((self.server.data_dir / "admin.json").read_text())
        self.env = {**os.environ, "PYTHONPATH": str(SRC), "ACRLOCAL_DATA_DIR": str(self.server.data_dir),
                    "ACRLOCAL_CONFIG_DIR": str(self.server.data_dir.parent / "cli-profile")}
        token = requests.post(f"{self.base}/{self.admin['tenantId']}/oauth2/v2.0/token", verify=self.ca, timeout=30,
                              data={"grant_type": "client_credentials", "client_id": self.admin["clientId"],
                                    "client_secret": self.admin["clientSecret"],
                                    "scope": "https://management.azure.com/.default"}).json()["access_token"]
        self.headers = {"Authorization": f"Bearer {token}"}
        self.group = f"/subscriptions/{self.admin['subscriptionId']}/resourceGroups/bench"
        requests.put(f"{self.base}{self.group}", params={"api-version": "2022-09-01"}, json={"location": "westus"},
                     headers=self.headers, verify=self.ca, timeout=30).raise_for_status()

    def create(self, name: str) -> str:
        r = requests.put(f"{self.base}{self.group}/providers/Microsoft.Compute/virtualMachines/{name}",
                         params={"api-version": "2024-07-01"}, headers=self.headers, verify=self.ca, timeout=60,
                         json={"location": "westus", "identity": {"type": "SystemAssigned"}})
        r.raise_for_status()
        return str(r.json()["properties"]["vmId"])

    def ssh(self, name: str, command: str) -> float:
        """Seconds to run ``command`` in the VM as ``acrlocal ssh vm`` does it (the ``console`` action, then its
        WebSocket), without the CLI's own start-up."""
        started = time.monotonic()
        r = requests.post(f"{self.base}{self.group}/providers/Microsoft.Compute/virtualMachines/{name}/console",
                          params={"api-version": "2024-07-01"}, json={"command": command}, headers=self.headers,
                          verify=self.ca, timeout=60)
        r.raise_for_status()
        url = "wss://" + self.base.split("://", 1)[1] + r.json()["path"]
        code = asyncio.run(_console(url, self.ca))
        if code != 0:
            raise RuntimeError(f"{command} in {name} exited {code}")
        return time.monotonic() - started


async def _console(url: str, ca: str) -> int:
    code = -1
    context = ssl.create_default_context(cafile=ca)
    async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=context) as ws:
        await ws.send_bytes(b"\x00")  # end of standard input
        async for message in ws:
            if message.type == aiohttp.WSMsgType.BINARY and message.data[:1] == b"\x03":
                code = int(json.loads(message.data[1:])["exit"])
    return code


def run(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--vms", type=int, default=5)
    args = parser.parse_args(argv)
    docker = shutil.which("dockerd") is not None
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="acrlocal-bench-vms-") as tmp:
        bench = Bench(Path(tmp))
        bench.start()
        try:
            server_before = pss_kib(bench.pid)
            for i in range(args.vms):
                name = f"vm{i}"
                started = time.monotonic()
                vm_id = bench.create(name)
                create_s = time.monotonic() - started
                first_s = bench.ssh(name, "true")
                warm_s = bench.ssh(name, "true")
                time.sleep(1)
                idle = sum(pss_kib(p) for p in vm_processes(vm_id))
                sample: dict[str, Any] = {"vm": name, "create_s": create_s, "first_command_s": first_s,
                                          "warm_command_s": warm_s,
                          "idle_pss_kib": idle}
                if docker:
                    sample["docker_first_s"] = bench.ssh(name, "docker version >/dev/null")
                    sample["docker_warm_s"] = bench.ssh(name, "docker version >/dev/null")
                    time.sleep(2)
                    sample["idle_with_docker_pss_kib"] = sum(pss_kib(p) for p in vm_processes(vm_id))
                samples.append(sample)
                line = (f"  {name}: create {create_s * 1000:.0f} ms, first command {first_s * 1000:.0f} ms "
                        f"(warm {warm_s * 1000:.0f} ms), idle {idle / 1024:.1f} MiB")
                if docker:
                    line += (f", dockerd {float(sample['docker_first_s']) * 1000:.0f} ms (warm "
                             f"{float(sample['docker_warm_s']) * 1000:.0f} ms), with Docker "
                             f"{float(sample['idle_with_docker_pss_kib']) / 1024:.1f} MiB")
                log(line)
            server_after = pss_kib(bench.pid)
        finally:
            bench.server.stop()

    def med(key: str) -> float:
        return statistics.median(s[key] for s in samples) if samples and key in samples[0] else float("nan")

    summary = {
        "create_ms": med("create_s") * 1000, "first_command_ms": med("first_command_s") * 1000,
        "warm_command_ms": med("warm_command_s") * 1000,
        "boot_ms": (med("first_command_s") - med("warm_command_s")) * 1000,
        "dockerd_ms": (med("docker_first_s") - med("docker_warm_s")) * 1000,
        "idle_mib": med("idle_pss_kib") / 1024, "idle_with_docker_mib": med("idle_with_docker_pss_kib") / 1024,
        "server_mib_per_running_vm": (server_after - server_before) / 1024 / max(1, len(samples)),
    }
    result = {"machine": machine(), "vms": args.vms, "samples": samples, "summary": summary}
    out = ROOT / "benchmarks" / "results" / f"vms-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(table(summary))
    log(f"results: {out}")
    return result


def table(s: dict[str, float]) -> str:
    return "\n".join([
        "| figure (median) | value |", "|---|---:|",
        f"| VM create (ARM PUT) | {s['create_ms']:.0f} ms |",
        f"| create to first command (`true` through the console, boot included) | "
        f"{s['create_ms'] + s['first_command_ms']:.0f} ms |",
        f"| of which the boot (first command minus warm command) | {s['boot_ms']:.0f} ms |",
        f"| a command in a running VM (through the console) | {s['warm_command_ms']:.0f} ms |",
        f"| Docker Engine started on first use (first `docker version` minus second) | {s['dockerd_ms']:.0f} ms |",
        f"| memory of an idle VM (PSS of its processes) | {s['idle_mib']:.1f} MiB |",
        f"| ... with its Docker Engine running | {s['idle_with_docker_mib']:.1f} MiB |",
        f"| the server's own memory per running VM | {s['server_mib_per_running_vm']:.2f} MiB |",
    ])


def main() -> None:
    started = time.monotonic()
    run()
    log(f"done in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
