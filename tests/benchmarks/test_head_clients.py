"""The benchmarks' HEAD load generators count only what they were meant to: every request answered 200.

A load generator that counted 401s as served would make an authenticated server look as fast as an open one; these
tests hold each client to a small HTTP server on loopback that answers 200 on one path and 401 on another.
"""

from __future__ import annotations

import http.server
import shutil
import threading
from collections.abc import Iterator

import pytest
from benchmarks.clients import HEAD_CLIENTS, ClientError, head_load


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_HEAD(self) -> None:
        self.send_response(200 if self.path == "/ok" else 401)
        self.send_header("Content-Length", "1234")  # a HEAD's length is the body's it does not send
        self.send_header("Connection", "keep-alive")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.mark.parametrize("client", HEAD_CLIENTS)
def test_every_head_answered_200_is_counted(server: str, client: str) -> None:
    if shutil.which(client) is None:
        pytest.skip(f"{client} is not installed (./scripts/test installs it)")
    result = head_load(f"{server}/ok", 64, 4, {"Authorization": "Bearer x"}, client)
    assert result.statuses == {200: 64}
    assert result.client == client
    assert result.requests_per_s > 0 and result.p50_ms <= result.p99_ms


@pytest.mark.parametrize("client", HEAD_CLIENTS)
def test_a_head_answered_401_fails_the_run(server: str, client: str) -> None:
    if shutil.which(client) is None:
        pytest.skip(f"{client} is not installed (./scripts/test installs it)")
    with pytest.raises(ClientError, match=r"401|not 2xx"):
        head_load(f"{server}/denied", 64, 4, {}, client)


def test_an_unknown_client_is_refused() -> None:
    with pytest.raises(ValueError, match="'wrk'"):
        head_load("http://127.0.0.1:1/", 1, 1, {}, "wrk")
