"""Slow and idle clients are closed and the server keeps serving the others.

A server of the module's own with ``--idle-timeout 2 --read-timeout 2``; a few connections at a time are held
idle, trickle their headers or body a byte at a time, or stop reading a large response. Each must be closed by
the server within a generous bound (no timing is asserted beyond that), while ordinary requests on other
connections are answered all along.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.harness import AcrLocal, running
from tests.rawhttp import connect, parse_response, request_bytes

TIMEOUT_S = 2
#: How long a held connection may stay open before the test calls it a failure (the bound is far above the
#: configured timeouts so that a loaded machine does not fail the test).
BOUND_S = 30
BLOB = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(1 << 20))  # 32 MiB


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("slow") / "data", "--idle-timeout", str(TIMEOUT_S),
                 "--read-timeout", str(TIMEOUT_S)) as s:
        yield s


def port_of(server: AcrLocal, which: str) -> int:
    return int(server.shared.rsplit(":", 1)[1]) if which == "shared" else int(server.registry()["port"])


def closed_within(sock: ssl.SSLSocket, bound_s: float, keep_sending: Callable[[], bytes] | None = None) -> bytes:
    """Wait until the server closes ``sock`` (EOF or reset) and return what it sent; fail after ``bound_s``.
    ``keep_sending`` gives bytes to send every half second meanwhile (a slowloris client)."""
    deadline = time.monotonic() + bound_s
    received = b""
    sock.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            data = None
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return received
        if data == b"":
            return received
        if data:
            received += data
        if keep_sending is not None:
            try:
                sock.sendall(keep_sending())
            except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
                return received
    raise AssertionError(f"the server kept the connection open for {bound_s} s; it sent {received[:200]!r}")


class Traffic:
    """Ordinary requests on fresh connections, in a thread, while slow connections are held."""

    def __init__(self, server: AcrLocal) -> None:
        self.server = server
        self.answers: list[int] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        session = self.server.session()
        while not self._stop.is_set():
            try:
                self.answers.append(session.get(f"{self.server.shared}/healthz", timeout=10).status_code)
            except Exception as exc:  # any failure to be served is what the test looks for
                self.failures.append(repr(exc))
            self._stop.wait(0.2)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)
        assert not self.failures, self.failures[:3]
        assert self.answers and set(self.answers) == {200}, self.answers[-10:]


def test_idle_connections_are_closed(server: AcrLocal) -> None:
    """Connections that never send a request, on the shared and a registry's port, and one idle after a
    request (keep-alive)."""
    with Traffic(server), contextlib.ExitStack() as stack:
        silent = [stack.enter_context(connect(port_of(server, which), server.ca))
                  for which in ("shared", "shared", "registry")]
        kept = stack.enter_context(connect(port_of(server, "shared"), server.ca))
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        for sock in silent:
            assert closed_within(sock, BOUND_S) == b""
        answer = closed_within(kept, BOUND_S)
        assert parse_response(answer).status == 200


def test_headers_sent_a_byte_at_a_time_are_cut_off(server: AcrLocal) -> None:
    with Traffic(server), contextlib.ExitStack() as stack:
        socks = [stack.enter_context(connect(port_of(server, which), server.ca)) for which in ("shared", "registry")]
        for sock in socks:
            sock.sendall(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        for sock in socks:
            closed_within(sock, BOUND_S, keep_sending=lambda: b"a")


def registry_token(server: AcrLocal, scope: str) -> str:
    login = server.login_server()
    r = server.session().post(f"https://{login}/oauth2/token", data={
        "grant_type": "refresh_token", "service": login, "refresh_token": server.registry_credentials()[1],
        "scope": scope})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def test_bodies_that_stall_are_answered_408_and_closed(server: AcrLocal) -> None:
    """A blob chunk, a token form and an ARM body that promise more bytes than they send."""
    token = registry_token(server, "repository:slow/body:pull,push")
    session = server.session()
    r = session.post(f"https://{server.login_server()}/v2/slow/body/blobs/uploads/",
                     headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202, r.text
    upload = r.headers["Location"]
    arm_token = server.admin_token("https://management.azure.com/.default")
    stalled = [
        ("registry", "PATCH", upload, [(b"Authorization", f"Bearer {token}".encode()),
                                       (b"Content-Type", b"application/octet-stream")], b"x" * 100),
        ("registry", "POST", "/oauth2/token", [(b"Content-Type", b"application/x-www-form-urlencoded")],
         b"grant_type=password"),
        ("shared", "PUT", f"/subscriptions/{server.status['subscriptionId']}/resourcegroups/slow?"
         "api-version=2022-09-01", [(b"Authorization", f"Bearer {arm_token}".encode())], b'{"location":'),
    ]
    with Traffic(server), contextlib.ExitStack() as stack:
        socks = []
        for which, method, target, headers, body in stalled:
            sock = stack.enter_context(connect(port_of(server, which), server.ca))
            head = request_bytes(method, target, port_of(server, which), headers=headers)
            head = head.replace(b"Connection: close\r\n", b"").replace(b"Content-Length: 0", b"Content-Length: 1000")
            sock.sendall(head + body)
            socks.append(sock)
        for sock in socks:
            answer = parse_response(closed_within(sock, BOUND_S))
            assert answer.status == 408, answer.body[:300]
    # The upload is as it was before the chunk: empty.
    r = session.get(f"https://{server.login_server()}{upload}", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 204 and r.headers["Range"] == "0-0", (r.status_code, r.headers)


def test_a_client_that_stops_reading_a_response_is_closed(server: AcrLocal) -> None:
    session = server.session()
    token = registry_token(server, "repository:slow/read:pull,push")
    auth = {"Authorization": f"Bearer {token}"}
    digest = "sha256:" + hashlib.sha256(BLOB).hexdigest()
    base = f"https://{server.login_server()}/v2/slow/read"
    r = session.post(f"{base}/blobs/uploads/?digest={digest}", data=BLOB, headers=auth)
    assert r.status_code == 201, r.text
    port = port_of(server, "registry")
    with Traffic(server), contextlib.ExitStack() as stack:
        readers = []
        for _ in range(2):
            raw = socket.create_connection(("127.0.0.1", port))
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock = stack.enter_context(ssl.create_default_context(cafile=server.ca).wrap_socket(
                raw, server_hostname="localhost"))
            sock.sendall(request_bytes("GET", f"/v2/slow/read/blobs/{digest}", port,
                                       headers=[(b"Authorization", auth["Authorization"].encode())]))
            readers.append(sock)
        time.sleep(TIMEOUT_S * 3)  # read nothing: the server's buffers fill and its writes stop
        for sock in readers:
            received = closed_within(sock, BOUND_S)
            assert len(received) < len(BLOB), "the whole blob was sent although the client read none of it"


def test_the_server_logged_no_error(server: AcrLocal) -> None:
    log = server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log, log[-4000:]
