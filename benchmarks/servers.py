"""The two registries under test, each started on fresh storage in a temp dir and stopped by PID.

- :class:`Distribution`: Debian's ``docker-registry`` (CNCF Distribution 2.8.2) with a config of our own: 127.0.0.1
  only, file-system storage, delete enabled, no auth, TLS by a throwaway CA (the same key type acrlocal uses), so
  both servers pay for TLS. Debian's shipped config and the system service are never used.
- :class:`AcrLocal`: ``python -m acrlocal up`` on a fresh data dir with system-chosen ports.

A server that exits or does not answer within its start timeout raises :class:`ServerError` with its log tail.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import SRC

DISTRIBUTION_BIN = "/usr/bin/docker-registry"
#: ``acrlocal up --workers`` of the servers benchmarks start (each benchmark's ``--workers`` sets it).
WORKERS = 1
REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"


class ServerError(RuntimeError):
    pass


@dataclass
class Registry:
    """What a client needs to reach one running registry."""

    kind: str
    pid: int
    host: str  # host:port of the login server
    ca: Path  # PEM of the CA that issued its certificate
    cert_dir: Path  # a directory with ``ca.crt`` (skopeo's --*-cert-dir)
    username: str | None = None
    password: str | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"https://{self.host}{path}"


def _tail(path: Path, n: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except FileNotFoundError:
        return ""


def listening_ports(pid: int) -> list[int]:
    """TCP ports ``pid`` listens on (IPv4 and IPv6), found from its socket inodes and ``/proc/<pid>/net/tcp*``."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports: list[int] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.append(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def _wait_https(url: str, ca: Path, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    ctx = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"server exited with {proc.returncode}:\n{_tail(log)}")
        try:
            urllib.request.urlopen(url, context=ctx, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers (401 from a registry that wants a token is fine)
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"{url} did not answer within {timeout}s:\n{_tail(log)}")


class _Process:
    """A child process in its own session, stopped with SIGTERM (then SIGKILL) by its PID only."""

    proc: subprocess.Popen[bytes] | None = None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Distribution(_Process):
    """The reference registry in ``workdir`` (config, certificates, storage and log all live there)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log = workdir / "registry.log"

    def config(self, storage: Path, cert: Path, key: Path) -> dict[str, Any]:
        return {
            "version": 0.1,
            "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
                "redirect": {"disable": True},
            },
            "http": {
                "addr": "127.0.0.1:0",
                "secret": secrets.token_hex(16),
                "tls": {"certificate": str(cert), "key": str(key)},
            },
            "health": {"storagedriver": {"enabled": False}},
        }

    def start(self, timeout: float = 30.0) -> Registry:
        from acrlocal.tls import LocalCA  # the same CA code (and key type) that acrlocal's own TLS uses

        tls = LocalCA(self.workdir / "tls")
        tls.ensure()
        cert_dir = self.workdir / "certs.d"
        cert_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(tls.ca_path, cert_dir / "ca.crt")
        storage = self.workdir / "storage"
        storage.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "config.yml"
        # JSON is YAML: no YAML writer needed.
        config.write_text(json.dumps(self.config(storage, tls.cert_path, tls.key_path), indent=2))
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [DISTRIBUTION_BIN, "serve", str(config)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        deadline = time.monotonic() + timeout
        ports: list[int] = []
        while not ports and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"docker-registry exited with {self.proc.returncode}:\n{_tail(self.log)}")
            ports = listening_ports(self.proc.pid)
            if not ports:
                time.sleep(0.05)
        if not ports:
            self.stop()
            raise ServerError(f"docker-registry opened no port within {timeout}s:\n{_tail(self.log)}")
        host = f"localhost:{ports[0]}"
        _wait_https(f"https://{host}/v2/", tls.ca_path, self.proc, self.log, timeout)
        return Registry("distribution", self.proc.pid, host, tls.ca_path, cert_dir, info={"port": ports[0]})


class AcrLocal(_Process):
    """``acrlocal up`` on ``workdir/data`` with every port chosen by the system."""

    def __init__(self, workdir: Path, python: str = sys.executable, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, *, kind: str = "acrlocal",
                 extra_cas: tuple[Path, ...] = ()) -> None:
        self.workdir = workdir
        self.kind = kind
        self.extra_args = extra_args
        self.extra_cas = extra_cas  # CAs clients also trust: a blob store's, where GETs are redirected
        self.env = dict(env or {})  # added to the server's environment (credentials stay off its command line)
        self.data_dir = workdir / "data"
        self.log = workdir / "acrlocal.log"
        self.python = python

    def start(self, timeout: float = 60.0) -> Registry:
        state = self.data_dir / "server.json"
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    self.python, "-m", "acrlocal", "up", "--data-dir", str(self.data_dir),
                    "--port", "0", "--registry-port-base", "0", "--log-level", "warning",
                    "--registry-rate-limit", "off",  # throughput is measured, not ACR's per-SKU limits
                    "--workers", str(WORKERS),
                    *self.extra_args,
                ],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env,
            )
        deadline = time.monotonic() + timeout
        status: dict[str, Any] | None = None
        while status is None and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError(f"acrlocal exited with {self.proc.returncode}:\n{_tail(self.log)}")
            try:
                status = json.loads(state.read_text())
            except (FileNotFoundError, json.JSONDecodeError):
                time.sleep(0.05)
        if status is None:
            self.stop()
            raise ServerError(f"acrlocal wrote no server.json within {timeout}s:\n{_tail(self.log)}")
        registry = next(r for r in status["registries"] if r["name"] == "acrlocal")
        ca = Path(status["caPath"])
        cert_dir = self.workdir / "certs.d"
        cert_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(ca, cert_dir / "ca.crt")
        if self.extra_cas:  # skopeo reads every *.crt of the directory; curl and Python take one bundle
            bundle = self.workdir / "ca-bundle.pem"
            bundle.write_bytes(b"".join(p.read_bytes() for p in (ca, *self.extra_cas)))
            for n, extra in enumerate(self.extra_cas):
                shutil.copy(extra, cert_dir / f"extra-{n}.crt")
            ca = bundle
        host = str(registry["loginServer"])
        _wait_https(f"https://{host}/v2/", ca, self.proc, self.log, timeout)
        reg = Registry(self.kind, self.proc.pid, host, ca, cert_dir, info={"status": status})
        if "--insecure-open-registry" not in self.extra_args:
            # Authentication is always on: log in as `az acr login` leaves docker clients, with the all-zero user
            # and a refresh token for the local administrator (Owner of the default subscription).
            reg.username, reg.password = REFRESH_TOKEN_USER, self.refresh_token(reg)
        return reg

    def refresh_token(self, reg: Registry) -> str:
        """The local administrator's Entra token (client credentials) exchanged at the registry for an ACR
        refresh token, as ``az acr login --expose-token`` does."""
        admin = json.loads((self.data_dir / "admin.json").read_text())
        ctx = ssl.create_default_context(cafile=str(reg.ca))
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": admin["clientId"],
                                       "client_secret": admin["clientSecret"],
                                       "scope": "https://containerregistry.azure.net/.default"}).encode()
        url = f"{reg.info['status']['endpoints']['shared']}/{admin['tenantId']}/oauth2/v2.0/token"
        with urllib.request.urlopen(url, data=form, context=ctx, timeout=30) as resp:
            aad = json.load(resp)["access_token"]
        form = urllib.parse.urlencode({"grant_type": "access_token", "service": reg.host,
                                       "access_token": aad}).encode()
        with urllib.request.urlopen(reg.url("/oauth2/exchange"), data=form, context=ctx, timeout=30) as resp:
            return str(json.load(resp)["refresh_token"])
