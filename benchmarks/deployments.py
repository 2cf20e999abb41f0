"""Deployment benchmarks with Microsoft's az: ``az vm create`` end to end (the tutorial's command), and a
20-resource template deployment, each beside a reference measured in the same run.

- ``az group show``: the floor of any az command here (az's start-up, sign-in from its cache, one ARM GET);
- ``az vm create ... --image UbuntuLTS --generate-ssh-keys``: validation look-ups, the 5-resource deployment and
  its polling, the instance view, the NIC and the public IP, as az does them;
- ``az deployment group create`` of 20 resources (12 identities, 4 public IP addresses, 4 network security
  groups), against the same 20 resources created by 20 direct ARM PUTs from one process (no az, no template).

Not a test: prints a markdown table and asserts nothing. az runs in a mount namespace whose ``/etc/resolv.conf``
names only 127.0.0.1, so nothing it looks up leaves this machine (as in tests/az).

    python -m benchmarks.deployments            # 3 repetitions
    python -m benchmarks.deployments --quick    # 1 repetition
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from benchmarks.arm import arm_token
from benchmarks.procstat import cpu_seconds
from benchmarks.servers import SRC, AcrLocal

REPO = Path(__file__).resolve().parents[1]
CONTAIN = 'mount --bind "$1" /etc/resolv.conf && shift && exec "$@"'


def find_az() -> str:
    for candidate in (os.environ.get("ACRLOCAL_TEST_AZ", ""), str(REPO / ".venv-az" / "bin" / "az")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    sys.exit("Microsoft's az was not found: run ./scripts/test once (it installs .venv-az) or set ACRLOCAL_TEST_AZ")


def twenty_resources() -> dict[str, Any]:
    resources: list[dict[str, Any]] = [
        {"type": "Microsoft.ManagedIdentity/userAssignedIdentities", "apiVersion": "2023-01-31",
         "name": "[format('id{0}', copyIndex())]", "location": "[resourceGroup().location]",
         "copy": {"name": "ids", "count": 12}},
        {"type": "Microsoft.Network/publicIPAddresses", "apiVersion": "2023-09-01",
         "name": "[format('ip{0}', copyIndex())]", "location": "[resourceGroup().location]",
         "sku": {"name": "Standard"}, "properties": {"publicIPAllocationMethod": "Static"},
         "copy": {"name": "ips", "count": 4}},
        {"type": "Microsoft.Network/networkSecurityGroups", "apiVersion": "2023-09-01",
         "name": "[format('nsg{0}', copyIndex())]", "location": "[resourceGroup().location]",
         "properties": {"securityRules": [{"name": "ssh", "properties": {
             "priority": 1000, "protocol": "Tcp", "access": "Allow", "direction": "Inbound",
             "sourceAddressPrefix": "*", "sourcePortRange": "*", "destinationAddressPrefix": "*",
             "destinationPortRange": "22"}}]}, "copy": {"name": "nsgs", "count": 4}},
    ]
    return {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0", "resources": resources}


def direct_bodies() -> list[tuple[str, str, dict[str, Any]]]:
    """The same 20 resources as (type path, api-version, body) for direct PUTs."""
    template = twenty_resources()["resources"]
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(12):
        out.append((f"Microsoft.ManagedIdentity/userAssignedIdentities/id{i}", "2023-01-31", {"location": "westus"}))
    for i in range(4):
        out.append((f"Microsoft.Network/publicIPAddresses/ip{i}", "2023-09-01",
                    {"location": "westus", "sku": {"name": "Standard"}, "properties": template[1]["properties"]}))
    for i in range(4):
        out.append((f"Microsoft.Network/networkSecurityGroups/nsg{i}", "2023-09-01",
                    {"location": "westus", "properties": template[2]["properties"]}))
    return out


class Az:
    def __init__(self, exe: str, home: Path, ca: Path, data_dir: Path) -> None:
        self.exe = exe
        self.resolv = home / "resolv.conf"
        home.mkdir(parents=True, exist_ok=True)
        self.resolv.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")
        self.env = {"PATH": f"{Path(exe).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}", "HOME": str(home),
                    "AZURE_CONFIG_DIR": str(home / ".azure"), "REQUESTS_CA_BUNDLE": str(ca), "LANG": "C.UTF-8",
                    "AZURE_CORE_COLLECT_TELEMETRY": "false", "ACRLOCAL_DATA_DIR": str(data_dir),
                    "PYTHONPATH": str(SRC), "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}

    def run(self, *args: str) -> float:
        unshare = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        argv = [*unshare, "sh", "-c", CONTAIN, "contain", str(self.resolv), *args]
        start = time.perf_counter()
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=600)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {proc.stderr[-2000:]}")
        return elapsed

    def az(self, *args: str) -> float:
        return self.run(self.exe, *args, "--output", "none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    reps = 1 if args.quick else 3
    exe = find_az()
    with tempfile.TemporaryDirectory(prefix="deploy-bench-") as tmp:
        server = AcrLocal(Path(tmp))
        reg = server.start()
        try:
            status = reg.info["status"]
            shared = status["endpoints"]["shared"]
            admin = json.loads((server.data_dir / "admin.json").read_text())
            az = Az(exe, Path(tmp) / "home", reg.ca, server.data_dir)
            az.run(sys.executable, "-m", "acrlocal", "az-setup", "--apply")
            az.az("login", "--service-principal", "--username", admin["clientId"], "--password",
                  admin["clientSecret"], "--tenant", admin["tenantId"])
            template = Path(tmp) / "twenty.json"
            template.write_text(json.dumps(twenty_resources()))
            token = arm_token(shared, reg.ca, admin)
            import ssl
            ctx = ssl.create_default_context(cafile=str(reg.ca))
            rows: dict[str, list[float]] = {"az group show": [], "az vm create (tutorial)": [],
                                            "az deployment group create, 20 resources": [],
                                            "20 direct ARM PUTs (reference)": []}
            cpu: dict[str, list[float]] = {k: [] for k in rows}
            for rep in range(reps):
                group = f"bench{rep}"
                az.az("group", "create", "-n", group, "-l", "westus")
                commands = {
                    "az group show": ("group", "show", "-n", group),
                    "az vm create (tutorial)": ("vm", "create", "--resource-group", group, "--name", "myDockerVM",
                                                "--image", "UbuntuLTS", "--admin-username", "azureuser",
                                                "--generate-ssh-keys"),
                    "az deployment group create, 20 resources": ("deployment", "group", "create", "-g", group, "-n",
                                                                 "twenty", "--template-file", str(template))}
                for name, command in commands.items():
                    before = cpu_seconds(reg.pid)
                    rows[name].append(az.az(*command))
                    cpu[name].append(cpu_seconds(reg.pid) - before)
                direct = f"direct{rep}"
                az.az("group", "create", "-n", direct, "-l", "westus")
                before = cpu_seconds(reg.pid)
                start = time.perf_counter()
                sub = admin["subscriptionId"]
                for path, version, body in direct_bodies():
                    namespace, type_, name = path.split("/")
                    url = f"{shared}/subscriptions/{sub}/resourceGroups/{direct}/providers/{namespace}/{type_}/" \
                          f"{name}?api-version={version}"
                    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="PUT", headers={
                        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                    with urllib.request.urlopen(req, context=ctx, timeout=60) as resp:
                        resp.read()
                rows["20 direct ARM PUTs (reference)"].append(time.perf_counter() - start)
                cpu["20 direct ARM PUTs (reference)"].append(cpu_seconds(reg.pid) - before)
            floor = statistics.median(rows["az group show"])
            print(f"| operation ({reps} runs) | median s | min s | server CPU s | vs az group show |")
            print("|---|---|---|---|---|")
            for name, values in rows.items():
                print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
                      f"{statistics.median(cpu[name]):.2f} | {statistics.median(values) / floor:.1f}x |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
