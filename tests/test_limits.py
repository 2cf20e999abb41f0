"""The machine's limits, met with clear errors instead of 500s, and costs that must not grow with the number of
registries: each registry's host name has a certificate of its own (chosen by SNI), so the shared one never grows;
free ports are searched from where the last search stopped; the open-file limit is raised at start."""

from __future__ import annotations

import resource
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from acrlocal.errors import LimitReached
from acrlocal.listeners import Listeners, bind
from acrlocal.server import raise_open_file_limit
from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.harness import AcrLocal, running

API = "2023-07-01"


def served_names(port: int, server_name: str | None, ca: str | None = None) -> list[str]:
    """The DNS and IP names of the certificate the server presents for ``server_name`` (SNI; none if ``None``)."""
    ctx = ssl.create_default_context(cafile=ca) if ca else ssl._create_unverified_context()
    if not ca:
        ctx.check_hostname = False
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(raw, server_hostname=server_name) as t:
        der = t.getpeercert(binary_form=True)
    assert der is not None
    san = x509.load_der_x509_certificate(der).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(n) for n in san.get_values_for_type(x509.DNSName)] + [str(i) for i in
                                                                      san.get_values_for_type(x509.IPAddress)]


def registry_path(server: AcrLocal, name: str) -> str:
    return (f"/subscriptions/{subscription_of(server)}/resourceGroups/acrlocal/providers/"
            f"Microsoft.ContainerRegistry/registries/{name}")


@pytest.fixture
def arm(fresh_acrlocal: AcrLocal) -> Iterator[Arm]:
    fresh_acrlocal.start()
    yield Arm(fresh_acrlocal, admin_of(fresh_acrlocal).token(fresh_acrlocal))


def test_registry_host_names_have_certificates_of_their_own(arm: Arm) -> None:
    server = arm.server
    shared_port = int(server.shared.rsplit(":", 1)[1])
    shared_leaf = (server.data_dir / "tls" / "server.pem").read_bytes()
    assert arm.call("PUT", registry_path(server, "sniregistry"), {"location": "westus",
                                                                  "sku": {"name": "Basic"}}).status_code == 201
    # a client naming the registry's host gets a certificate for that name alone, which the CA vouches for
    assert served_names(shared_port, "sniregistry.localhost", server.ca) == ["sniregistry.localhost"]
    assert served_names(shared_port, "acrlocal.localhost", server.ca) == ["acrlocal.localhost"]
    # ... and the shared certificate neither changed nor names registries
    assert (server.data_dir / "tls" / "server.pem").read_bytes() == shared_leaf
    assert set(served_names(shared_port, None)) == {"localhost", "127.0.0.1", "::1"}
    # a name the server does not serve gets the shared certificate, and nothing is issued for it
    assert "localhost" in served_names(shared_port, "nosuchregistry.localhost")
    assert not (server.data_dir / "tls" / "hosts" / "nosuchregistry.localhost.pem").exists()
    with pytest.raises(ssl.SSLCertVerificationError):
        served_names(shared_port, "nosuchregistry.localhost", server.ca)


def test_out_of_ports_is_a_clear_409_and_the_server_goes_on(tmp_path: Path) -> None:
    base = 65530  # six ports: the default registry takes one, the rest run out within a few creates
    with running(tmp_path / "data", "--registry-port-base", str(base)) as server:
        arm = Arm(server, admin_of(server).token(server))
        ports = [server.registry()["port"]]
        refused = None
        for i in range(7):
            r = arm.call("PUT", registry_path(server, f"portsfull{i}"), {"location": "westus",
                                                                          "sku": {"name": "Basic"}})
            if r.status_code == 409:
                refused = r.json()["error"]
                break
            assert r.status_code == 201, r.text
            ports.append(int(r.json()["properties"]["loginServer"].rsplit(":", 1)[1]))
        assert refused is not None and refused["code"] == "QuotaExceeded", refused
        assert f"no free port on 127.0.0.1 from {base} to 65535" in refused["message"]
        assert all(base <= p <= 65535 for p in ports) and len(set(ports)) == len(ports)
        # deleting a registry frees its port for the next one
        assert arm.call("DELETE", registry_path(server, "portsfull0")).status_code == 200
        r = arm.call("PUT", registry_path(server, "portsagain"), {"location": "westus", "sku": {"name": "Basic"}})
        assert r.status_code == 201, r.text
        assert server.session().get(server.shared + "/healthz").status_code == 200


def test_out_of_open_files_is_a_clear_409_and_the_server_goes_on(tmp_path: Path) -> None:
    # prlimit lowers the limit the server starts with (soft and hard alike, so it cannot raise it)
    with running(tmp_path / "data", wrapper=["prlimit", "--nofile=160:160", "--"]) as server:
        arm = Arm(server, admin_of(server).token(server))
        refused = None
        for i in range(160):
            r = arm.call("PUT", registry_path(server, f"filesfull{i}"), {"location": "westus",
                                                                          "sku": {"name": "Basic"}})
            if r.status_code != 201:
                refused = r
                break
        assert refused is not None and refused.status_code == 409, refused.text if refused else "never refused"
        assert refused.json()["error"]["code"] == "QuotaExceeded"
        assert "open-file limit" in refused.json()["error"]["message"]
        assert arm.call("DELETE", registry_path(server, "filesfull0")).status_code == 200
        assert server.session().get(server.shared + "/healthz").status_code == 200


def test_port_search_goes_on_from_where_it_stopped_and_wraps() -> None:
    listeners = Listeners("127.0.0.1")
    base = 65533  # three ports, usually free: above the ephemeral range
    held: list[socket.socket] = []
    try:
        first = listeners.allocate(base)
        held.append(first)
        one = first.getsockname()[1]
        second = listeners.allocate(base, taken={one})
        held.append(second)
        two = second.getsockname()[1]
        assert two > one
        third = listeners.allocate(base, taken={one, two})
        held.append(third)
        three = third.getsockname()[1]
        first.close()
        # the search wraps past 65535 to the base and finds the port that was freed
        again = listeners.allocate(base, taken={two, three})
        held.append(again)
        assert again.getsockname()[1] == one
        with pytest.raises(LimitReached, match="no free port"):
            listeners.allocate(base, taken={one, two, three})
    finally:
        for sock in held:
            sock.close()


def test_open_file_limit_is_raised_to_the_hard_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        before, after = raise_open_file_limit()
        assert before == min(soft, 256)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == after
        assert after == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_bind_out_of_descriptors_is_limit_reached() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    opened = []
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        with pytest.raises(LimitReached, match="open-file limit"):
            for _ in range(64):
                opened.append(bind("127.0.0.1", 0))
    finally:
        for sock in opened:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_burst_of_connections_waits_in_the_accept_queue_while_the_server_is_busy() -> None:
    """A load balancer opens connections in bursts (its clients' reconnects, its health checks); while the event
    loop is busy they wait in the kernel's accept queue. A queue of aiohttp's default 128 overflowed under HAProxy:
    the kernel dropped the SYNs, the balancer's connects and checks hung, and it marked the replica down."""
    import asyncio

    from aiohttp import web

    from acrlocal.listeners import BACKLOG

    async def burst() -> None:
        listeners = Listeners("127.0.0.1")
        runner = web.AppRunner(web.Application())
        await runner.setup()
        held: list[socket.socket] = []
        try:
            port = await listeners.open("burst", runner, listeners.allocate(0), None)
            # The loop accepts nothing until this coroutine yields: every connection waits in the queue.
            for _ in range(BACKLOG // 2):
                held.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        finally:
            for sock in held:
                sock.close()
            await listeners.close_all()
            await runner.cleanup()

    asyncio.run(burst())
