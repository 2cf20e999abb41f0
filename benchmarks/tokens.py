"""Authentication benchmarks: the registry with ACR's tokens against Distribution 2.8.2 with its token auth, the
cost of authentication on acrlocal itself, and the token endpoint's rate.

Not a test: prints and records figures, asserts nothing about time. Three servers are started once and run side by
side:

- **acrlocal** (``acrlocal up``, authentication on, as always by default): the local administrator's Entra token
  is exchanged for a refresh token, which then logs in as docker clients do (``Basic 00000000-…:<refresh>``);
- **acrlocal-open** (``acrlocal up --insecure-open-registry``): the same server without authentication;
- **distribution** (Debian's ``docker-registry`` 2.8.2) configured with ``auth: token`` against a small token
  server of this harness (:class:`TokenServer`): RS256 JWTs with an ``x5c`` chain to the root bundle Distribution is
  given, ``iss``/``aud``/``exp`` as its validation requires, an ``access`` list like ACR's.

On each registry one small image is pushed (monolithic blob uploads and a manifest PUT, with a token). Then, in
each of several rounds (the order of the servers alternating between rounds, so that the machine's other load
falls on all of them alike; ratios are taken within a round):

- ``manifest-head``: 8,000 HEADs over 32 connections (``ab -k -i``, or hey with ``--client hey``) on the manifest
  by tag, with a bearer token (none on acrlocal-open), on each server back to back;
- ``manifest-head-admin`` (acrlocal only, right after its ``manifest-head``): the same with the registry's admin
  user's access token, which every request checks for revocation (the admin user still enabled, issue 8 item 13)
  where the principal's token needs no look-up: the difference in server CPU per request is the check's cost;
- ``token`` (every third round, acrlocal only): ``wrk`` keeping 8 connections busy for 5 s on
  ``GET /oauth2/token?service=..&scope=repository:bench/app:pull`` with ``Authorization: Basic <all-zero
  user>:<refresh token>``: every request checks the refresh token and the principal and evaluates its role
  assignments against the database as it is (see docs/decisions.md for what is remembered while it is unchanged).

Server CPU per request (the server's CPU time over the requests it answered) is recorded next to every rate; it
depends far less on the machine's other load than the rates do.

Usage (repository root, the dev virtualenv's Python)::

    python -m benchmarks.tokens [--quick] [--reps ROUNDS] [--workers N] [--client ab|hey]

Writes ``benchmarks/results/tokens-<UTC time>.json`` and prints a markdown table with the ratios. Needs ``ab``
(or ``hey``), ``wrk`` and ``/usr/bin/docker-registry``.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import http.server
import json
import os
import re
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from benchmarks import ROOT, servers
from benchmarks.clients import add_head_client_option, head_load, use_head_client
from benchmarks.procstat import cpu_seconds
from benchmarks.report import machine
from benchmarks.servers import REFRESH_TOKEN_USER, AcrLocal, Distribution, Registry

REPO = "bench/app"
TAG = "v1"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- a token server for Distribution ---------------------------------------------------------------------


class TokenServer:
    """Distribution's side of the token protocol: an RS256 key whose certificate (self-signed, in the root bundle
    Distribution trusts) is sent as ``x5c``; ``/token`` answers any ``scope`` with a token granting it (the
    benchmark measures verification, not policy). Runs on a loopback http port in a thread."""

    ISSUER = "acrlocal-bench-token-server"

    def __init__(self, workdir: Path, service: str = "distribution-bench") -> None:
        self.service = service
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench token signer")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                     .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                     .not_valid_after(now + dt.timedelta(days=1))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.bundle = workdir / "token-root.pem"
        self.bundle.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        self._server: http.server.ThreadingHTTPServer | None = None

    def token(self, scopes: list[str], lifetime_s: int = 3600) -> str:
        access = []
        for scope in scopes:
            rtype, rest = scope.split(":", 1)
            name, actions = rest.rsplit(":", 1)
            access.append({"type": rtype, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {"iss": self.ISSUER, "sub": "bench", "aud": self.service, "exp": now + lifetime_s, "nbf": now - 5,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        x5c = [base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()]
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"x5c": x5c})

    def start(self) -> str:
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                body = json.dumps({"token": owner.token(query.get("scope", [])), "expires_in": 3600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                return None

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/token"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class TokenDistribution(Distribution):
    """Distribution 2.8.2 with ``auth: token`` against :class:`TokenServer`."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.tokens = TokenServer(workdir)
        self.realm = ""

    def config(self, storage: Path, cert: Path, key: Path) -> dict[str, Any]:
        config = super().config(storage, cert, key)
        config["auth"] = {"token": {"realm": self.realm, "service": self.tokens.service,
                                    "issuer": TokenServer.ISSUER, "rootcertbundle": str(self.tokens.bundle)}}
        return config

    def start(self, timeout: float = 30.0) -> Registry:
        self.realm = self.tokens.start()
        return super().start(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)
        self.tokens.stop()


# -- clients ---------------------------------------------------------------------------------------------


def _request(reg: Registry, method: str, path: str, token: str | None, data: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    ctx = ssl.create_default_context(cafile=str(reg.ca))
    req = urllib.request.Request(reg.url(path), data=data, method=method, headers=dict(headers or {}))
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def push_image(reg: Registry, token: str | None) -> None:
    layer = secrets.token_bytes(4096)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    blobs = []
    for data in (layer, config):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        status, _, body = _request(reg, "POST", f"/v2/{REPO}/blobs/uploads/?digest={digest}", token, data,
                                   {"Content-Type": "application/octet-stream"})
        if status != 201:
            status, headers, body = _request(reg, "POST", f"/v2/{REPO}/blobs/uploads/", token, b"")
            location = headers.get("Location", "")
            sep = "&" if "?" in location else "?"
            target = location if location.startswith("http") else reg.url(location)
            path = target.split(reg.host, 1)[1]
            status, _, body = _request(reg, "PUT", f"{path}{sep}digest={digest}", token, data,
                                       {"Content-Type": "application/octet-stream"})
        if status != 201:
            raise RuntimeError(f"{reg.kind}: blob upload answered {status}: {body[:300]!r}")
        blobs.append((digest, len(data)))
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blobs[1][0],
                   "size": blobs[1][1]},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blobs[0][0],
                    "size": blobs[0][1]}]}).encode()
    status, _, body = _request(reg, "PUT", f"/v2/{REPO}/manifests/{TAG}", token, manifest,
                               {"Content-Type": OCI_MANIFEST})
    if status != 201:
        raise RuntimeError(f"{reg.kind}: manifest PUT answered {status}: {body[:300]!r}")


def acrlocal_access_token(reg: Registry, refresh: str, scope: str) -> str:
    ctx = ssl.create_default_context(cafile=str(reg.ca))
    query = urllib.parse.urlencode({"service": reg.host, "scope": scope})
    req = urllib.request.Request(reg.url(f"/oauth2/token?{query}"))
    basic = base64.b64encode(f"{REFRESH_TOKEN_USER}:{refresh}".encode()).decode()
    req.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


@dataclass(frozen=True)
class Sample:
    target: str
    workload: str
    rep: int
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    server_cpu_ms_per_request: float
    client_cpu_ms_per_request: float | None = None


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int, ca: Path) -> dict[str, Any]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=seconds + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"wrk: {non2xx.group(1)} of {total} answers were not 2xx:\n{out}")

    def ms(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        if not m:
            return float("nan")
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {"requests": total, "rps": rps, "p50": ms("50"), "p99": ms("99")}


@dataclass
class Target:
    kind: str
    reg: Registry
    headers: dict[str, str]
    stop: Any
    refresh: str | None = None
    admin_headers: dict[str, str] | None = None


def start_targets(scratch: Path) -> list[Target]:
    """All three servers, started once and each given one image (see the module docstring)."""
    targets: list[Target] = []
    try:
        for kind in ("acrlocal", "acrlocal-open", "distribution"):
            workdir = scratch / kind
            workdir.mkdir(parents=True)
            headers = {"Accept": OCI_MANIFEST}
            if kind == "distribution":
                dist = TokenDistribution(workdir)
                reg = dist.start()
                token: str | None = dist.tokens.token([f"repository:{REPO}:pull,push"])
                targets.append(Target(kind, reg, headers, dist.stop))
            else:
                server = AcrLocal(workdir, extra_args=("--insecure-open-registry",) if kind.endswith("open") else ())
                reg = server.start()
                refresh = reg.password
                token = acrlocal_access_token(reg, refresh, f"repository:{REPO}:pull,push") if refresh else None
                targets.append(Target(kind, reg, headers, server.stop, refresh))
            push_image(reg, token)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            if kind == "acrlocal":
                admin = admin_access_token(reg, workdir, f"repository:{REPO}:pull")
                targets[-1].admin_headers = {**headers, "Authorization": f"Bearer {admin}"}
    except BaseException:
        for target in targets:
            target.stop()
        raise
    return targets


def admin_access_token(reg: Registry, workdir: Path, scope: str) -> str:
    """An access token of the registry's admin user (enabled with ``acrlocal acr update --admin-enabled``)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "ACRLOCAL_DATA_DIR": str(workdir / "data"),
           "ACRLOCAL_CONFIG_DIR": str(workdir / "cli")}

    def cli(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "acrlocal", *args], env=env, check=True, capture_output=True,
                              text=True, timeout=120).stdout

    cli("acr", "update", "-n", "acrlocal", "--admin-enabled", "true")
    password = json.loads(cli("acr", "credential", "show", "-n", "acrlocal"))["passwords"][0]["value"]
    ctx = ssl.create_default_context(cafile=str(reg.ca))
    query = urllib.parse.urlencode({"service": reg.host, "scope": scope})
    req = urllib.request.Request(reg.url(f"/oauth2/token?{query}"))
    req.add_header("Authorization", "Basic " + base64.b64encode(f"acrlocal:{password}".encode()).decode())
    with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
        return str(json.load(resp)["access_token"])


def measure_head(target: Target, rnd: int, n: int, *, admin: bool = False) -> Sample:
    headers = target.admin_headers if admin and target.admin_headers else target.headers
    before = cpu_seconds(target.reg.pid)
    result = head_load(target.reg.url(f"/v2/{REPO}/manifests/{TAG}"), n, 32, headers)
    cpu = cpu_seconds(target.reg.pid) - before
    return Sample(target.kind, "manifest-head-admin" if admin else "manifest-head", rnd, n, result.requests_per_s,
                  result.p50_ms, result.p99_ms, cpu * 1000 / n, result.cpu_s * 1000 / n)


def measure_tokens(target: Target, rnd: int, seconds: int) -> Sample:
    reg = target.reg
    assert target.refresh is not None
    basic = base64.b64encode(f"{REFRESH_TOKEN_USER}:{target.refresh}".encode()).decode()
    query = urllib.parse.urlencode({"service": reg.host, "scope": f"repository:{REPO}:pull"})
    before = cpu_seconds(reg.pid)
    out = wrk(reg.url(f"/oauth2/token?{query}"), {"Authorization": f"Basic {basic}"}, seconds, 8, reg.ca)
    cpu = cpu_seconds(reg.pid) - before
    return Sample(target.kind, "token", rnd, out["requests"], out["rps"], out["p50"], out["p99"],
                  cpu * 1000 / max(1, out["requests"]))


def summarise(samples: list[Sample]) -> dict[str, Any]:
    """Medians per target and workload, and the per-round ratios of manifest HEAD rates (the servers are measured
    back to back in each round, so a round's ratio is the least disturbed by the machine's other load)."""
    def median(target: str, workload: str, field: str = "requests_per_s") -> float:
        values = [getattr(s, field) for s in samples if s.target == target and s.workload == workload]
        return statistics.median(values) if values else float("nan")

    def ratios(a: str, b: str) -> list[float]:
        out = []
        for rnd in sorted({s.rep for s in samples}):
            x = [s.requests_per_s for s in samples if s.target == a and s.workload == "manifest-head" and s.rep == rnd]
            y = [s.requests_per_s for s in samples if s.target == b and s.workload == "manifest-head" and s.rep == rnd]
            if x and y:
                out.append(round(x[0] / y[0], 2))
        return out

    vs_distribution, vs_open = ratios("acrlocal", "distribution"), ratios("acrlocal", "acrlocal-open")
    return {
        "rows": [{"target": t, "workload": w, "rps": median(t, w), "p50_ms": median(t, w, "p50_ms"),
                  "p99_ms": median(t, w, "p99_ms"), "server_cpu_ms": median(t, w, "server_cpu_ms_per_request"),
                  "client_cpu_ms": median(t, w, "client_cpu_ms_per_request") if w != "token" else None}
                 for t, w in sorted({(s.target, s.workload) for s in samples})],
        "head_ratio_vs_distribution": vs_distribution,
        "head_ratio_vs_distribution_median": statistics.median(vs_distribution) if vs_distribution else None,
        "head_ratio_auth_vs_open": vs_open,
        "head_ratio_auth_vs_open_median": statistics.median(vs_open) if vs_open else None,
        "revocation_check_cpu_ms": round(median("acrlocal", "manifest-head-admin", "server_cpu_ms_per_request")
                                         - median("acrlocal", "manifest-head", "server_cpu_ms_per_request"), 4),
        "head_cpu_ratio_distribution_vs_acrlocal": round(
            median("distribution", "manifest-head", "server_cpu_ms_per_request")
            / median("acrlocal", "manifest-head", "server_cpu_ms_per_request"), 2),
        "cpu_ratio_open_vs_auth": round(median("acrlocal-open", "manifest-head", "server_cpu_ms_per_request")
                                        / median("acrlocal", "manifest-head", "server_cpu_ms_per_request"), 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.tokens", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--workers", type=int, default=1, help="acrlocal up --workers (default 1)")
    p.add_argument("--reps", type=int, help="rounds (default 9, or 2 with --quick)")
    p.add_argument("--out", type=Path)
    add_head_client_option(p)
    args = p.parse_args(argv)
    servers.WORKERS = args.workers
    use_head_client(args.client)
    missing = [c for c in ("wrk", "/usr/bin/docker-registry") if shutil.which(c) is None]
    if missing:
        raise SystemExit(f"missing: {', '.join(missing)} (./scripts/test installs them)")
    rounds = args.reps or (2 if args.quick else 9)
    head_n = 2048 if args.quick else 8000
    seconds = 3 if args.quick else 5
    info = machine()
    samples: list[Sample] = []
    scratch = Path(tempfile.mkdtemp(prefix="acrlocal-tokens-bench-"))
    try:
        log(f"starting acrlocal, acrlocal --insecure-open-registry and Distribution in {scratch} ...")
        targets = start_targets(scratch)
        try:
            for rnd in range(1, rounds + 1):
                order = targets if rnd % 2 else list(reversed(targets))
                for target in order:
                    samples.append(measure_head(target, rnd, head_n))
                    if target.admin_headers:
                        samples.append(measure_head(target, rnd, head_n, admin=True))
                if rnd % 3 == 1:
                    samples.append(measure_tokens(targets[0], rnd, seconds))
                log(f"round {rnd}/{rounds}: " + ", ".join(
                    f"{s.target} {s.workload} {s.requests_per_s:,.0f}/s" for s in samples if s.rep == rnd))
        finally:
            for target in targets:
                target.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary = summarise(samples)
    result = {"machine": info, "rounds": rounds, "quick": args.quick, "head_client": args.client, "summary": summary,
              "samples": [asdict(s) for s in samples]}
    out = args.out or ROOT / "benchmarks" / "results" / f"tokens-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"| target | workload | req/s (median) | p50 ms | p99 ms | server CPU ms/request | {args.client}'s CPU "
          "ms/request |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in summary["rows"]:
        client = f"{row['client_cpu_ms']:.3f}" if row["client_cpu_ms"] is not None else "(wrk)"
        print(f"| {row['target']} | {row['workload']} | {row['rps']:,.0f} | {row['p50_ms']:.2f} | "
              f"{row['p99_ms']:.2f} | {row['server_cpu_ms']:.3f} | {client} |")
    print()
    fmt = ", ".join
    print(f"authenticated manifest HEAD, acrlocal / Distribution, per round: "
          f"{fmt(f'{r:.2f}' for r in summary['head_ratio_vs_distribution'])} "
          f"(median {summary['head_ratio_vs_distribution_median']}); server CPU per HEAD, Distribution / "
          f"acrlocal: {summary['head_cpu_ratio_distribution_vs_acrlocal']}")
    print(f"acrlocal authenticated / open, per round: {fmt(f'{r:.2f}' for r in summary['head_ratio_auth_vs_open'])} "
          f"(median {summary['head_ratio_auth_vs_open_median']}); server CPU per HEAD, open / authenticated: "
          f"{summary['cpu_ratio_open_vs_auth']}")
    print(f"revocation check (admin user's token against the principal's), server CPU per HEAD: "
          f"{summary['revocation_check_cpu_ms'] * 1000:+.1f} µs")
    print(f"load {info['loadavg_start']}; results: {out}")


if __name__ == "__main__":
    main()
