"""Scale curves: what a request costs as the data it does not touch grows.

Not a test: prints and records figures, asserts nothing about time. Each curve populates a fresh ``acrlocal up``
through the stores' tables in bulk (one transaction of executemany inserts, the server stopped where it reads the
rows at start), then times requests over HTTP with keep-alive connections (median of several):

- ``vms``: N VM rows. Server start (to ``server.json``); ``acr create`` and ``acr delete`` (the ARM PUT and
  DELETE of a registry) and the ARM PUT of one more VM, with the longest wait of a ``/healthz`` polled every 5 ms
  meanwhile (what a request of another tenant waits while the event loop is busy).
- ``registries``: N registries (each serving on a port of its own). Server start (the second: the first gives
  each registry its ARM resource); ``acr create``/``acr delete``
  with the longest ``/healthz`` wait; a TLS handshake on the shared port (its certificate names the registries).
- ``tags``: one repository with N tags. Pushing a new tag (manifest PUT), the first HEAD after that write,
  ``/acr/v1/<repo>/_tags?orderby=timedesc&n=100`` (first page, and a page from the middle), ``tags/list?n=100``;
  then the repository's deletion (``DELETE /acr/v1/<repo>``) with the longest ``/healthz`` wait meanwhile.
- ``grants``: N repositories, each pulled with a token of its own (a HEAD of its manifest): the server's resident
  memory growth across the N HEADs and per repository (the authorizer's caches).
- ``roles``: N role assignments at the subscription. The first page of the subscription's role assignments (ARM
  pages 1,000 at a time), and a registry token for the local administrator (its assignments are read for RBAC).

Usage (from the repository root, the dev virtualenv's Python; ``vms`` needs root)::

    python -m benchmarks.scale                      # every curve at 10, 1,000 and 10,000
    python -m benchmarks.scale --large              # also 100,000 (tags, grants, roles) and 10,000 registries
    python -m benchmarks.scale --curves tags,roles --sizes 10,1000

Writes ``benchmarks/results/scale-<UTC time>.json`` and prints one markdown table per curve.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import socket
import ssl
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from benchmarks import ROOT
from benchmarks.report import machine
from benchmarks.servers import REFRESH_TOKEN_USER, AcrLocal, Registry

ARM_API = "2023-07-01"
CURVES = ("vms", "registries", "tags", "grants", "roles")
DEFAULT_SIZES = (10, 1_000, 10_000)
LARGE = {"vms": (10_000,), "registries": (10_000,), "tags": (100_000,), "grants": (100_000,), "roles": (100_000,)}
# Registries need a port and a file descriptor each: the default curve stops at 1,000 (--large: 10,000).
DEFAULT_CAP = {"registries": 1_000}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Bench:
    """One ``acrlocal up`` on a fresh data dir, with an ARM token and a registry login for the administrator."""

    def __init__(self, workdir: Path, extra_args: tuple[str, ...] = ()) -> None:
        self.server = AcrLocal(workdir, extra_args=extra_args)
        self.session = requests.Session()
        self.session.trust_env = False  # the server's CA, not REQUESTS_CA_BUNDLE's

    @property
    def db_url(self) -> str:
        return f"sqlite:///{self.server.data_dir / 'acrlocal.db'}"

    def engine(self) -> sa.Engine:
        from acrlocal.storage.sql import open_engine

        return open_engine(self.db_url)

    def start(self) -> float:
        """Start the server; the seconds until it wrote ``server.json`` and answered."""
        started = time.monotonic()
        self.reg = self.server.start(timeout=1800)
        elapsed = time.monotonic() - started
        self.pid = self.reg.pid
        self.ca = str(self.reg.ca)
        self.session.verify = self.ca
        status = self.reg.info["status"]
        self.base = status["endpoints"]["shared"]
        self.admin = json.loads((self.server.data_dir / "admin.json").read_text())
        self.sub = self.admin["subscriptionId"]
        r = self.session.post(f"{self.base}/{self.admin['tenantId']}/oauth2/v2.0/token", timeout=60, data={
            "grant_type": "client_credentials", "client_id": self.admin["clientId"],
            "client_secret": self.admin["clientSecret"], "scope": "https://management.azure.com/.default"})
        r.raise_for_status()
        self.arm_headers = {"Authorization": f"Bearer {r.json()['access_token']}"}
        return elapsed

    def stop(self) -> None:
        self.server.stop(timeout=120)

    def arm(self, method: str, path: str, body: dict[str, Any] | None = None, api: str = ARM_API) -> requests.Response:
        r = self.session.request(method, f"{self.base}{path}", params={"api-version": api}, json=body,
                                 headers=self.arm_headers, timeout=600)
        if r.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {r.status_code} {r.text[:500]}")
        return r

    def registry_token(self, scope: str, reg: Registry | None = None) -> str:
        reg = reg or self.reg
        r = self.session.get(reg.url("/oauth2/token"), params={"service": reg.host, "scope": scope},
                             auth=(REFRESH_TOKEN_USER, str(reg.password)), timeout=60)
        r.raise_for_status()
        return str(r.json()["access_token"])

    @contextlib.contextmanager
    def stall_probe(self) -> Iterator[list[float]]:
        """Poll ``/healthz`` every 5 ms on a connection of its own; yields the list its latencies go to."""
        waits: list[float] = []
        done = threading.Event()

        def poll() -> None:
            with requests.Session() as s:
                s.trust_env = False
                s.verify = self.ca
                while not done.is_set():
                    t = time.perf_counter()
                    s.get(f"{self.base}/healthz", timeout=600)
                    waits.append(time.perf_counter() - t)
                    done.wait(0.005)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        time.sleep(0.05)
        try:
            yield waits
        finally:
            done.set()
            thread.join()

    def registry_lifecycle(self, reps: int = 3) -> dict[str, float]:
        """``acr create`` and ``acr delete`` (ARM PUT/DELETE of a registry) ``reps`` times, with the longest
        ``/healthz`` wait meanwhile."""
        group = f"/subscriptions/{self.sub}/resourceGroups/acrlocal"
        creates, deletes = [], []
        with self.stall_probe() as waits:
            for i in range(reps):
                path = f"{group}/providers/Microsoft.ContainerRegistry/registries/benchnew{i}{uuid.uuid4().hex[:6]}"
                t = time.perf_counter()
                self.arm("PUT", path, {"location": "westus", "sku": {"name": "Standard"}})
                creates.append(time.perf_counter() - t)
                t = time.perf_counter()
                self.arm("DELETE", path)
                deletes.append(time.perf_counter() - t)
        return {"acr_create_ms": median_ms(creates), "acr_delete_ms": median_ms(deletes),
                "max_healthz_wait_ms": max(waits) * 1000 if waits else float("nan")}


# -- populating in bulk --------------------------------------------------------------------------------------

def insert(engine: sa.Engine, table: sa.Table, rows: Iterator[dict[str, Any]], batch: int = 5_000) -> None:
    with engine.begin() as conn:
        chunk: list[dict[str, Any]] = []
        for row in rows:
            chunk.append(row)
            if len(chunk) >= batch:
                conn.execute(sa.insert(table), chunk)
                chunk = []
        if chunk:
            conn.execute(sa.insert(table), chunk)


def image(seed: str) -> tuple[str, bytes, str, bytes]:
    """(config digest, config bytes, manifest digest, manifest bytes) of a small OCI image without layers."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": []}).encode()
    return config_digest, config, "sha256:" + hashlib.sha256(manifest).hexdigest(), manifest


MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"


def populate_repositories(engine: sa.Engine, registry: str, names: list[str], tags_per_repo: int = 1,
                          tag_names: Callable[[int], str] = lambda i: f"t{i:06d}") -> None:
    """``names`` repositories of ``registry``, each with the same small image under ``tags_per_repo`` tags."""
    from acrlocal.storage.content_tables import blobs, manifests, repositories, repository_blobs, tags
    from acrlocal.storage.registries import registries

    config_digest, config, digest, body = image("bench")
    now = time.time()
    with engine.begin() as conn:
        registry_id = conn.execute(sa.select(registries.c.id).where(registries.c.name == registry)).scalar_one()
        if conn.execute(sa.select(blobs.c.digest).where(blobs.c.digest == config_digest)).first() is None:
            conn.execute(sa.insert(blobs).values(digest=config_digest, size=len(config), created=now))
        first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(repositories.c.id), 0))).scalar_one() + 1
    insert(engine, repositories, ({"id": first + i, "registry_id": registry_id, "name": name, "created": now,
                                   "updated": now} for i, name in enumerate(names)))
    insert(engine, repository_blobs, ({"repository_id": first + i, "digest": config_digest, "created": now}
                                      for i in range(len(names))))
    with engine.connect() as conn:
        m_first = conn.execute(sa.select(sa.func.coalesce(sa.func.max(manifests.c.id), 0))).scalar_one() + 1
    insert(engine, manifests, ({"id": m_first + i, "repository_id": first + i, "digest": digest,
                                "media_type": MANIFEST_TYPE, "size": len(body), "body": body, "created": now,
                                "updated": now} for i in range(len(names))))
    insert(engine, tags, ({"repository_id": first + i, "name": tag_names(t), "manifest_id": m_first + i,
                           "created": now - tags_per_repo + t, "updated": now - tags_per_repo + t}
                          for i in range(len(names)) for t in range(tags_per_repo)))


# -- the curves ----------------------------------------------------------------------------------------------

def curve_vms(workdir: Path, n: int) -> dict[str, Any]:
    from acrlocal.compute.store import vms

    bench = Bench(workdir)
    bench.start()
    tenant = bench.admin["tenantId"]
    bench.arm("PUT", f"/subscriptions/{bench.sub}/resourceGroups/bench", {"location": "westus"}, api="2022-09-01")
    bench.stop()
    engine = bench.engine()
    now = time.time()
    group = f"/subscriptions/{bench.sub}/resourceGroups/bench/providers/Microsoft.Compute/virtualMachines"
    insert(engine, vms, ({
        "vm_id": str(uuid.uuid4()), "key": f"{group}/vm{i}".lower(), "resource_id": f"{group}/vm{i}",
        "name": f"vm{i}", "resource_group": "bench", "subscription_id": bench.sub, "tenant_id": tenant,
        "location": "westus", "system_principal_id": None, "user_assigned": "[]", "profile": "{}",
        "identity_secret": "", "created": now + i, "power_state": "running"} for i in range(n)))
    engine.dispose()
    try:
        startup = bench.start()
        row: dict[str, Any] = {"n": n, "startup_s": startup, **bench.registry_lifecycle()}
        creates = []
        with bench.stall_probe() as waits:
            for i in range(3):
                t = time.perf_counter()
                bench.arm("PUT", f"{group}/new{i}", {"location": "westus"}, api="2024-07-01")
                creates.append(time.perf_counter() - t)
        row["vm_create_ms"] = median_ms(creates)
        row["vm_create_max_healthz_wait_ms"] = max(waits) * 1000
        return row
    finally:
        bench.stop()


def handshake_ms(host: str, port: int, ca: str, reps: int = 20) -> float:
    ctx = ssl.create_default_context(cafile=ca)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        with socket.create_connection((host, port)) as raw, ctx.wrap_socket(raw, server_hostname="localhost"):
            pass
        times.append(time.perf_counter() - t)
    return median_ms(times)


def curve_registries(workdir: Path, n: int) -> dict[str, Any]:
    from acrlocal.storage.registries import registries

    # ports from a base below the ephemeral range, so that a restart finds its registries' ports free
    bench = Bench(workdir, ("--registry-port-base", "20000"))
    bench.start()
    bench.stop()
    engine = bench.engine()
    now = time.time()
    insert(engine, registries, ({"name": f"bench{i:06d}", "port": None, "created": now, "properties": "{}",
                                 "uid": str(uuid.uuid4())} for i in range(n)))
    engine.dispose()
    bench.start()  # the first start gives each registry its ARM resource (once): not what is measured
    bench.stop()
    try:
        startup = bench.start()
        port = int(urllib.parse.urlsplit(bench.base).port or 443)
        return {"n": n, "startup_s": startup, **bench.registry_lifecycle(),
                "shared_port_handshake_ms": handshake_ms("127.0.0.1", port, bench.ca),
                "server_json_kib": (bench.server.data_dir / "server.json").stat().st_size / 1024,
                "open_files": len(os.listdir(f"/proc/{bench.pid}/fd"))}
    finally:
        bench.stop()


def curve_tags(workdir: Path, n: int) -> dict[str, Any]:
    bench = Bench(workdir)
    bench.start()
    try:
        engine = bench.engine()
        populate_repositories(engine, "acrlocal", ["bench"], tags_per_repo=n)
        engine.dispose()
        token = bench.registry_token("repository:bench:pull,push,metadata_read")
        headers = {"Authorization": f"Bearer {token}"}
        s, reg = bench.session, bench.reg
        body = image("bench")[3]
        pushes, heads = [], []
        for i in range(30):
            t = time.perf_counter()
            r = s.put(reg.url(f"/v2/bench/manifests/new{i}"), data=body,
                      headers={**headers, "Content-Type": MANIFEST_TYPE}, timeout=60)
            pushes.append(time.perf_counter() - t)
            assert r.status_code == 201, r.text
            t = time.perf_counter()
            r = s.head(reg.url(f"/v2/bench/manifests/t{n // 2:06d}"), headers=headers, timeout=60)
            heads.append(time.perf_counter() - t)
            assert r.status_code == 200, r.status_code

        def timed(path: str, reps: int = 10) -> float:
            times = []
            for _ in range(reps):
                t = time.perf_counter()
                r = s.get(reg.url(path), headers=headers, timeout=60)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            return median_ms(times)

        figures = {"n": n, "push_tag_ms": median_ms(pushes), "first_head_after_write_ms": median_ms(heads),
                   "timedesc_first_page_ms": timed("/acr/v1/bench/_tags?orderby=timedesc&n=100"),
                   "timedesc_middle_page_ms": timed(f"/acr/v1/bench/_tags?orderby=timedesc&n=100&last=t{n // 2:06d}"),
                   "tags_list_page_ms": timed("/v2/bench/tags/list?n=100")}
        # Last, since it empties the repository: its deletion, and what another tenant's request waits meanwhile.
        deleter = {"Authorization": f"Bearer {bench.registry_token('repository:bench:delete')}"}
        with bench.stall_probe() as waits:
            t = time.perf_counter()
            r = s.delete(reg.url("/acr/v1/bench"), headers=deleter, timeout=600)
            figures["delete_repository_ms"] = (time.perf_counter() - t) * 1000
            time.sleep(0.05)
        assert r.status_code == 202, r.text
        figures["delete_repository_longest_healthz_ms"] = max(waits) * 1000
        return figures
    finally:
        bench.stop()


def curve_grants(workdir: Path, n: int) -> dict[str, Any]:
    import asyncio

    import aiohttp

    bench = Bench(workdir)
    bench.start()
    try:
        engine = bench.engine()
        names = [f"r{i:06d}" for i in range(n)]
        populate_repositories(engine, "acrlocal", names)
        engine.dispose()
        reg = bench.reg
        password = str(reg.password)

        async def run() -> tuple[float, float]:
            context = ssl.create_default_context(cafile=bench.ca)
            connector = aiohttp.TCPConnector(ssl=context, limit=8)
            basic = {"Authorization": "Basic " + base64.b64encode(f"{REFRESH_TOKEN_USER}:{password}".encode()).decode()}
            async with aiohttp.ClientSession(connector=connector) as session:
                queue: asyncio.Queue[str] = asyncio.Queue()
                for name in names:
                    queue.put_nowait(name)

                async def worker() -> None:
                    while not queue.empty():
                        name = queue.get_nowait()
                        async with session.get(reg.url("/oauth2/token"), headers=basic, params={
                                "service": reg.host, "scope": f"repository:{name}:pull"}) as r:
                            token = (await r.json())["access_token"]
                        for _ in range(2):  # the second HEAD is the cached decision
                            async with session.head(reg.url(f"/v2/{name}/manifests/t000000"),
                                                    headers={"Authorization": f"Bearer {token}"}) as r:
                                assert r.status == 200, r.status

                before = rss_mib(bench.pid)
                await asyncio.gather(*(worker() for _ in range(8)))
                return before, rss_mib(bench.pid)

        before, after = asyncio.run(run())
        return {"n": n, "rss_before_mib": before, "rss_after_mib": after, "growth_mib": after - before,
                "kib_per_repository": (after - before) * 1024 / n}
    finally:
        bench.stop()


def curve_roles(workdir: Path, n: int) -> dict[str, Any]:
    from acrlocal.arm.store import role_assignments

    bench = Bench(workdir)
    bench.start()
    try:
        engine = bench.engine()
        scope = f"/subscriptions/{bench.sub}"
        reader = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
        insert(engine, role_assignments, ({
            "name": str(uuid.uuid4()), "scope": scope, "scope_key": scope.lower(), "role_definition": reader,
            "principal_id": str(uuid.uuid4()), "principal_type": "ServicePrincipal",
            "created_on": f"2020-01-01T00:00:00.{i:06d}Z", "updated_on": "2020-01-01T00:00:00Z"} for i in range(n)))
        engine.dispose()
        pages, tokens = [], []
        size = 0
        for _ in range(5):
            t = time.perf_counter()
            r = bench.arm("GET", f"{scope}/providers/Microsoft.Authorization/roleAssignments", api="2022-04-01")
            pages.append(time.perf_counter() - t)
            size = len(r.content)
            t = time.perf_counter()
            bench.registry_token("repository:bench:pull")
            tokens.append(time.perf_counter() - t)
        return {"n": n, "first_page_ms": median_ms(pages), "first_page_kib": size / 1024,
                "registry_token_ms": median_ms(tokens)}
    finally:
        bench.stop()


RUNNERS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "vms": curve_vms, "registries": curve_registries, "tags": curve_tags, "grants": curve_grants,
    "roles": curve_roles,
}


def table(curve: str, rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    out = [f"### {curve}", "", "| " + " | ".join(keys) + " |", "|" + "---:|" * len(keys)]
    for row in rows:
        out.append("| " + " | ".join(f"{v:,.1f}" if isinstance(v, float) else f"{v:,}" for v in row.values()) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--curves", default=",".join(CURVES), help=f"comma-separated, of {', '.join(CURVES)}")
    parser.add_argument("--sizes", help="comma-separated sizes for every curve (default 10,1000,10000)")
    parser.add_argument("--large", action="store_true", help="add the largest sizes (minutes each)")
    args = parser.parse_args(argv)
    curves = [c.strip() for c in args.curves.split(",") if c.strip()]
    unknown = set(curves) - set(CURVES)
    if unknown:
        parser.error(f"unknown curves: {', '.join(sorted(unknown))}")
    results: dict[str, list[dict[str, Any]]] = {}
    started = time.monotonic()
    for curve in curves:
        if args.sizes:
            sizes = [int(s) for s in args.sizes.split(",")]
        else:
            sizes = [s for s in DEFAULT_SIZES if s <= DEFAULT_CAP.get(curve, s)]
            if args.large:
                sizes += [s for s in LARGE[curve] if s not in sizes]
        results[curve] = []
        for n in sizes:
            log(f"{curve}: {n:,} ...")
            with tempfile.TemporaryDirectory(prefix=f"acrlocal-scale-{curve}-") as tmp:
                t = time.monotonic()
                row = RUNNERS[curve](Path(tmp), n)
            log(f"  {row} ({time.monotonic() - t:.0f} s)")
            results[curve].append(row)
        print(table(curve, results[curve]) + "\n", flush=True)
    out = ROOT / "benchmarks" / "results" / f"scale-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "curves": results}, indent=2) + "\n")
    log(f"results: {out} ({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
