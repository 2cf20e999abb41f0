"""The clients the workloads drive: skopeo (isolated), curl, and ab or hey for HEADs, plus a registry token helper.

skopeo and podman remember in a blob-info cache where blobs already exist and mount them instead of uploading.
As root, skopeo 1.9 keeps that cache in ``/var/lib/containers/cache`` unless its rootless UID variable says
otherwise; :class:`Skopeo` therefore runs it with a temp ``HOME`` and a non-zero ``_CONTAINERS_ROOTLESS_UID``, so
the cache lands under that ``HOME`` and each instance starts with none. Policy, registries.conf and auth file are
temp files too. A client that fails raises :class:`ClientError` with its stderr.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks.servers import Registry

MANIFEST_ACCEPT = ",".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
])


class ClientError(RuntimeError):
    pass


def _run(cmd: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise ClientError(f"{cmd[0]} exited {proc.returncode}: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    return proc


# -- tokens ----------------------------------------------------------------------------------------------


def _challenge(header: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def bearer_token(reg: Registry, scope: str) -> str | None:
    """A token for ``scope`` by the registry's own challenge (Basic credentials if it has any); ``None`` if
    ``/v2/`` needs no auth."""
    ctx = ssl.create_default_context(cafile=str(reg.ca))
    try:
        urllib.request.urlopen(reg.url("/v2/"), context=ctx, timeout=10).close()
        return None
    except urllib.error.HTTPError as err:
        if err.code != 401:
            raise ClientError(f"GET {reg.url('/v2/')} answered {err.code}") from err
        params = _challenge(err.headers.get("WWW-Authenticate", ""))
    if "realm" not in params:
        raise ClientError(f"{reg.kind} sent no Bearer realm: {params}")
    query = urllib.parse.urlencode({"service": params.get("service", ""), "scope": scope})
    req = urllib.request.Request(f"{params['realm']}?{query}")
    if reg.username is not None:
        basic = base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()
        req.add_header("Authorization", f"Basic {basic}")
    with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:
        body = json.load(resp)
    return str(body.get("access_token") or body["token"])


def auth_headers(reg: Registry, scope: str) -> dict[str, str]:
    token = bearer_token(reg, scope)
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- skopeo ----------------------------------------------------------------------------------------------


class Skopeo:
    """skopeo with its own HOME, blob-info cache, policy, registries.conf and auth file under ``home``."""

    def __init__(self, home: Path) -> None:
        self.home = home
        home.mkdir(parents=True, exist_ok=True)
        (home / "run").mkdir(exist_ok=True)
        (home / "tmp").mkdir(exist_ok=True)
        self.policy = home / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries_conf = home / "registries.conf"
        self.registries_conf.write_text("")
        self.authfile = home / "auth.json"
        self.authfile.write_text("{}")

    @property
    def blob_info_cache(self) -> Path:
        return self.home / ".local" / "share" / "containers" / "cache" / "blob-info-cache-v1.boltdb"

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "TMPDIR": str(self.home / "tmp"),
            "_CONTAINERS_ROOTLESS_UID": "1000",  # keeps the blob-info cache under HOME (see module docstring)
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "REGISTRY_AUTH_FILE": str(self.authfile),
        }

    def _creds(self, side: str, reg: Registry) -> list[str]:
        args = [f"--{side}-cert-dir", str(reg.cert_dir)]
        if reg.username is not None:
            args += [f"--{side}-creds", f"{reg.username}:{reg.password}"]
        return args

    def copy_cmd(self, src: str, dest: str, src_reg: Registry | None = None,
                 dest_reg: Registry | None = None) -> list[str]:
        cmd = [
            "skopeo", "--policy", str(self.policy), "--registries-conf", str(self.registries_conf),
            "copy", "--quiet", "--authfile", str(self.authfile), "--preserve-digests",
            "--dest-oci-accept-uncompressed-layers",
        ]
        if src_reg:
            cmd += self._creds("src", src_reg)
        if dest_reg:
            cmd += self._creds("dest", dest_reg)
        return [*cmd, src, dest]

    def push(self, layout_ref: str, reg: Registry, repo_tag: str) -> None:
        _run(self.copy_cmd(layout_ref, f"docker://{reg.host}/{repo_tag}", dest_reg=reg), self.env())

    def pull(self, reg: Registry, repo_tag: str, dest_dir: Path) -> None:
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        _run(self.copy_cmd(f"docker://{reg.host}/{repo_tag}", f"oci:{dest_dir}:pulled", src_reg=reg), self.env())

    def pull_parallel(self, reg: Registry, repo_tag: str, dest_dirs: list[Path], timeout: float = 600) -> None:
        procs = []
        for d in dest_dirs:
            d.parent.mkdir(parents=True, exist_ok=True)
            cmd = self.copy_cmd(f"docker://{reg.host}/{repo_tag}", f"oci:{d}:pulled", src_reg=reg)
            procs.append((cmd, subprocess.Popen(cmd, env=self.env(), stdout=subprocess.DEVNULL,
                                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)))
        errors = []
        for cmd, p in procs:
            _, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                errors.append(f"{' '.join(cmd)} exited {p.returncode}:\n{err[-2000:]}")
        if errors:
            raise ClientError("\n".join(errors))


# -- curl ------------------------------------------------------------------------------------------------


def curl_parallel(reg: Registry, urls: list[str], headers: dict[str, str], timeout: float = 600) -> int:
    """GET every URL at once with its own curl, bodies to /dev/null; returns the bytes received in all.

    HTTP/1.1 is forced: curl would negotiate HTTP/2 with Distribution (Go) and HTTP/1.1 with acrlocal, and the
    other clients (skopeo, hey) use HTTP/1.1 with both."""
    procs = []
    for url in urls:
        cmd = ["curl", "-sS", "--fail", "--http1.1", "-L", "--cacert", str(reg.ca), "-o", "/dev/null",
               "-w", "%{size_download}"]
        for k, v in headers.items():
            cmd += ["-H", f"{k}: {v}"]
        procs.append(subprocess.Popen([*cmd, url], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, text=True))
    total, errors = 0, []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            errors.append(f"curl exited {p.returncode}: {err.strip()}")
        else:
            total += int(out.strip() or 0)
    if errors:
        raise ClientError("\n".join(errors))
    return total


# -- HEAD load: ab or hey -------------------------------------------------------------------------------

#: The HEAD load generator the benchmarks use unless told otherwise (``--client``). ``ab`` (ApacheBench, Debian's
#: ``apache2-utils``): one thread in C, about 0.03 ms of CPU a request against hey's 0.06-0.13 ms. On two cores the
#: client's CPU is taken from the servers it measures, and hey's 32 goroutines also double a busy server's CPU per
#: request (0.09 -> 0.17 ms with ``--workers 2``): a fast server is held back by its client more than a slow one, so the
#: ratios measured with hey understate it (docs/benchmarks.md, "The HEAD client").
HEAD_CLIENT = "ab"
HEAD_CLIENTS = ("ab", "hey")


@dataclass(frozen=True)
class LoadResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    wall_s: float
    cpu_s: float = 0.0  # the client's own CPU seconds (user + system): it shares the machine's cores with the server
    client: str = "hey"



def add_head_client_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--client", choices=HEAD_CLIENTS, default=HEAD_CLIENT,
                        help=f"the HEAD load generator (default {HEAD_CLIENT}; see docs/benchmarks.md)")


def use_head_client(name: str) -> None:
    """Make ``name`` the HEAD client of this run; exits with a message if it is not installed."""
    global HEAD_CLIENT
    if shutil.which(name) is None:
        raise SystemExit(f"missing: {name} (./scripts/test installs it)")
    HEAD_CLIENT = name


def head_load(url: str, requests: int, concurrency: int, headers: dict[str, str],
              client: str | None = None) -> LoadResult:
    """``requests`` HEADs on ``url`` over ``concurrency`` keep-alive connections with ``client`` (default
    :data:`HEAD_CLIENT`); raises :class:`ClientError` unless every one was answered 200."""
    client = client or HEAD_CLIENT
    if client == "ab":
        return ab(url, requests, concurrency, "HEAD", headers)
    if client == "hey":
        return hey(url, requests, concurrency, "HEAD", headers)
    raise ValueError(f"HEAD client {client!r}: expected one of {', '.join(HEAD_CLIENTS)}")


def _timed(cmd: list[str]) -> tuple[str, float, float]:
    t0, used0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = _run(cmd).stdout
    wall, used = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, wall, used.ru_utime + used.ru_stime - used0.ru_utime - used0.ru_stime


def ab(url: str, requests: int, concurrency: int, method: str, headers: dict[str, str]) -> LoadResult:
    """Run ApacheBench (``ab -k``: HTTP/1.0 with ``Connection: Keep-Alive``, which both servers honour); raises
    :class:`ClientError` unless every request was answered 2xx on a kept-alive connection.

    ab counts a response whose status is not 2xx as "Non-2xx" and one it could not read as "Failed"; a HEAD has
    only 200 among its 2xx answers, so none of either means every request got 200. It does not check
    certificates (hey does not either: ``hey`` has no CA option)."""
    if method not in ("HEAD", "GET"):
        raise ValueError(f"ab method {method!r}: expected HEAD or GET")
    cmd = ["ab", "-q", "-k", "-n", str(requests), "-c", str(concurrency), "-s", "60"]
    if method == "HEAD":
        cmd.append("-i")
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out, wall, cpu = _timed([*cmd, url])

    def field(name: str) -> int:
        m = re.search(rf"^{name}:\s+(\d+)", out, re.M)
        return int(m.group(1)) if m else 0

    complete, failed, non2xx, kept = (field("Complete requests"), field("Failed requests"),
                                      field("Non-2xx responses"), field("Keep-Alive requests"))
    if complete != requests or failed or non2xx or kept != requests:
        raise ClientError(f"ab: {requests} requests: {complete} complete, {failed} failed, {non2xx} not 2xx, "
                          f"{kept} kept alive\n{out[-1500:]}")
    rps = float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: float(ms) for p, ms in re.findall(r"^\s+(\d+)%\s+(\d+)", out, re.M)}
    return LoadResult(rps, pct["50"], pct["99"], {200: requests}, wall, cpu, "ab")


# -- hey -------------------------------------------------------------------------------------------------


def hey(url: str, requests: int, concurrency: int, method: str, headers: dict[str, str]) -> LoadResult:
    """Run ``hey``; raises :class:`ClientError` unless every request was answered 200.

    hey gives each of its ``concurrency`` workers ``requests // concurrency`` requests, so that many times
    ``concurrency`` are sent. No per-request timeout (``-t 0``; the run as a whole is bounded): with one, Go's client
    cancels a connection it is still dialing as soon as its request is served on another that came free, and under
    load that became a storm of aborted TLS connections (thousands a second, each accepted by the server or the load
    balancer in front of it) that halved the rate a server was measured at, and through HAProxy marked it down."""
    cmd = ["hey", "-n", str(requests), "-c", str(concurrency), "-m", method, "-t", "0"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out, wall, cpu = _timed([*cmd, url])
    statuses = {int(code): int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    sent = requests // concurrency * concurrency
    if set(statuses) != {200} or statuses[200] != sent:
        errors = out[out.find("Error distribution"):][:1000] if "Error distribution" in out else ""
        raise ClientError(f"hey: {sent} requests sent, answers by status: {statuses}\n{errors}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = {p: float(s) * 1000 for p, s in re.findall(r"(\d+)%+ in ([\d.]+) secs", out)}
    # hey leaves out a percentile its few requests do not reach (e.g. 99% of 64): the slowest it printed stands in.
    return LoadResult(rps, pct["50"], pct.get("99", max(pct.values())), statuses, wall, cpu, "hey")
