"""Two replicas of one server (``acrlocal up`` twice: data directories and ports of their own, one PostgreSQL
database, one blob directory as a shared file system would give, or with ``--blob-backend=azurite`` one Blob
Storage container) behind a private HAProxy on loopback.

What an operator does for replicas on several machines, done on one: the second replica's data directory gets the
first's CA (``tls/ca.pem``, ``tls/ca-key.pem``) and ``admin.json``; both advertise the load balancer's port
(``--advertised-port``) and serve registries' ports at an offset of their own (``--registry-port-offset``), so
that HAProxy listens on the ports the registries' login servers name.
"""

from __future__ import annotations

import random
import shutil
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests import postgres
from tests.haproxy import HAProxy
from tests.harness import AcrLocal, CASession
from tests.ports import free_port

REPLICA = "X-Acrlocal-Replica"
OFFSETS = (1000, 2000)


@dataclass
class Replicas:
    """``servers[0]`` and ``servers[1]``; ``front`` is what clients use (its status names the load balancer)."""

    servers: list[AcrLocal]
    lb: HAProxy
    lb_port: int

    @property
    def front(self) -> AcrLocal:
        return self.servers[0]

    def names(self) -> list[str]:
        """Each replica's ``X-Acrlocal-Replica`` value (its name, ``<data dir>/replica-id``), in server order."""
        return [(s.data_dir / "replica-id").read_text().strip() for s in self.servers]

    def frontends(self) -> dict[int, list[int]]:
        ports = {self.lb_port: [s.status["listeningPort"] for s in self.servers]}
        for server in self.servers:  # each lists the registries made through it, and those there at its start
            for reg in server.status["registries"]:
                ports[reg["port"]] = [reg["port"] + offset for offset in OFFSETS[:len(self.servers)]]
        return ports

    def restart_lb(self) -> None:
        """Serve the registries made since (HAProxy reads its configuration at start)."""
        for server in self.servers:
            server.status = _status(server)
        self.lb.stop()
        self.lb = HAProxy(self.frontends())
        self.lb.start()


def _registry_port_base(span: int = 64) -> int:
    """A ``--registry-port-base`` for replicas: the replicas' registries take the ports from it upward (the ports
    HAProxy listens on), each replica the same ports at its offset. The first replica, when it makes a registry,
    checks only its own port is free; HAProxy and the second replica bind theirs later, and failed to start when
    another server of the session (the shared one, which keeps its registries' ports) held one. So every port the
    first ``span`` registries would take is checked free here, with and without the offsets."""
    for _ in range(1000):
        base = random.randrange(10000, 30000)
        if all(_free(base + offset + i) for offset in (0, *OFFSETS) for i in range(span)):
            return base
    raise RuntimeError("no run of free ports for the replicas' registries between 10000 and 33000")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers and HAProxy bind
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _status(server: AcrLocal) -> dict[str, Any]:
    import json

    return dict(json.loads((server.data_dir / "server.json").read_text()))


def start_replicas(root: Path, *extra: str, count: int = 2, database_url: str | None = None) -> Replicas:
    """``count`` replicas (each ``acrlocal up`` with ``extra`` arguments) on ``database_url`` (a new database of
    the session's PostgreSQL server if ``None``), and HAProxy."""
    if postgres.binaries() is None:
        pytest.fail("PostgreSQL is not installed (Debian: apt-get install postgresql); scripts/test installs it")
    root.mkdir(parents=True, exist_ok=True)
    lb_port = free_port()
    port_base = _registry_port_base()
    url = database_url or postgres.shared().create_database("replicas")
    servers: list[AcrLocal] = []
    blob_store: tuple[str, str, str] | None = None  # the first's container (--blob-backend=azurite), for all
    for i, offset in enumerate(OFFSETS[:count]):
        data = root / f"replica{i}"
        server = AcrLocal(data, "--advertised-port", str(lb_port), "--registry-port-offset", str(offset), *extra,
                          backend="postgresql", blob_store=blob_store)
        server._database_url = url
        server.registry_port_base = port_base
        if servers:
            first = servers[0]
            (data / "tls").mkdir(parents=True)
            for name in ("tls/ca.pem", "tls/ca-key.pem", "admin.json"):
                shutil.copy2(first.data_dir / name, data / name)
            if blob_store is None:  # files: one directory, as a shared file system gives
                (data / "blobs").symlink_to(first.data_dir / "blobs")
        else:
            blob_store = server.blob_store
        try:
            server.start()
        except BaseException:
            for started in servers:
                started.stop()
            raise
        servers.append(server)
    placeholder = HAProxy({})  # frontends() needs the set; this one never starts, but its temp dir goes
    replicas = Replicas(servers, placeholder, lb_port)
    replicas.lb = HAProxy(replicas.frontends())
    placeholder.stop()
    try:
        replicas.lb.start()
    except BaseException:
        for server in servers:
            server.stop()
        raise
    return replicas


def stop_replicas(replicas: Replicas) -> None:
    replicas.lb.stop()
    for server in replicas.servers:
        server.stop()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    found = start_replicas(tmp_path_factory.mktemp("replicas"))
    try:
        yield found
    finally:
        stop_replicas(found)


def pinned(replicas: Replicas, base: str, probe: str = "/v2/", within: float = 30.0) -> list[CASession]:
    """A session per replica (in the order of ``servers``), each on one kept-alive connection through HAProxy that
    it leads to that replica (``base`` + ``probe``)."""
    names = replicas.names()
    found: dict[str, CASession] = {}
    deadline = time.monotonic() + within
    while len(found) < len(names) and time.monotonic() < deadline:
        session = CASession(replicas.front.ca)
        session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
        try:
            name = session.get(base + probe, timeout=30).headers[REPLICA]
        except requests.ConnectionError:
            time.sleep(0.1)
            continue
        if name in found:
            session.close()
        else:
            found[name] = session
    assert sorted(found) == sorted(names), f"replicas seen through the load balancer: {sorted(found)}"
    return [found[name] for name in names]


def on(session: CASession, replicas: Replicas, index: int, method: str, url: str, **kw: Any) -> requests.Response:
    r = session.request(method, url, timeout=60, **kw)
    assert r.headers.get(REPLICA) == replicas.names()[index], "the connection moved to another replica"
    return r
