"""ARM GET rate: ``hey`` with 8 concurrent clients against the control plane, each request authenticated (RS256
token verified) and authorized by RBAC.

    python -m benchmarks.arm            # 3 workloads of 4,000 requests, about 20 s on 2 cores
    python -m benchmarks.arm --quick    # 800 requests each

Workloads: GET of one registry resource; the generic resource list with a ``resourceType`` filter (what
``az acr login`` sends); the role assignments at a registry's scope. Prints a markdown table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import ssl
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

from benchmarks.clients import hey
from benchmarks.procstat import cpu_seconds
from benchmarks.servers import AcrLocal

CONCURRENCY = 8


def arm_token(shared: str, ca: Path, admin: dict[str, str]) -> str:
    form = urllib.parse.urlencode({
        "grant_type": "client_credentials", "client_id": admin["clientId"], "client_secret": admin["clientSecret"],
        "scope": "https://management.azure.com/.default"}).encode()
    ctx = ssl.create_default_context(cafile=str(ca))
    with urllib.request.urlopen(f"{shared}/{admin['tenantId']}/oauth2/v2.0/token", form, context=ctx) as r:
        return str(json.loads(r.read())["access_token"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 800 if args.quick else 4000
    with tempfile.TemporaryDirectory(prefix="arm-bench-") as tmp:
        server = AcrLocal(Path(tmp))
        reg = server.start()
        try:
            status = reg.info["status"]
            shared = status["endpoints"]["shared"]
            admin = json.loads((server.data_dir / "admin.json").read_text())
            headers = {"Authorization": f"Bearer {arm_token(shared, reg.ca, admin)}"}
            sub = admin["subscriptionId"]
            registry = f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/" \
                       "registries/acrlocal"
            workloads = {
                "GET registry": f"{registry}?api-version=2023-07-01",
                "GET resources?$filter=resourceType": f"/subscriptions/{sub}/resources?api-version=2024-11-01&"
                "$filter=resourceType%20eq%20%27Microsoft.ContainerRegistry%2Fregistries%27",
                "GET roleAssignments at registry": f"{registry}/providers/Microsoft.Authorization/roleAssignments"
                "?api-version=2022-04-01",
            }
            print(f"| workload ({CONCURRENCY} clients, {n} requests) | req/s | p50 ms | p99 ms | server CPU ms/req |")
            print("|---|---|---|---|---|")
            for name, path in workloads.items():
                hey(shared + path, 400, CONCURRENCY, "GET", headers)  # warm-up
                cpu0 = cpu_seconds(reg.pid)
                result = hey(shared + path, n, CONCURRENCY, "GET", headers)
                cpu = (cpu_seconds(reg.pid) - cpu0) * 1000 / n
                print(f"| {name} | {result.requests_per_s:,.0f} | {result.p50_ms:.1f} | {result.p99_ms:.1f} | "
                      f"{cpu:.2f} |")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
