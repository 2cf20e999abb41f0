"""``login --identity`` through an App Service identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``).

acrlocal serves no such endpoint (its VMs have IMDS, as Azure's), so these tests answer on loopback as App Service
does, and check what the CLI sends and how it reads the answers. The CLI runs with the loopback-only guard
(``tests/loopback_only``): no connection leaves loopback even if a check here were missing."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.cli.conftest import run
from tests.harness import SRC

GUARD = Path(__file__).resolve().parents[1] / "loopback_only"
SECRET = "app-service-identity-header-value"


class Endpoint:
    """An App Service identity endpoint on loopback: answers ``answer`` (status, body) and keeps what it got."""

    def __init__(self) -> None:
        self.answer: tuple[int, dict[str, Any]] = (500, {})
        self.seen: list[tuple[dict[str, list[str]], dict[str, str]]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                endpoint.seen.append((parse_qs(urlsplit(self.path).query), dict(self.headers)))
                status, body = endpoint.answer
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/msi/token"


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    found = Endpoint()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()


def _env(tmp_path: Path, identity_endpoint: str) -> dict[str, str]:
    return {"ACRLOCAL_DATA_DIR": str(tmp_path / "data"), "ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile"),
            "ACRLOCAL_ENDPOINT": "https://localhost:1", "AZURE_POD_IDENTITY_AUTHORITY_HOST": "",
            "IDENTITY_ENDPOINT": identity_endpoint, "IDENTITY_HEADER": SECRET,
            "PYTHONPATH": f"{GUARD}:{SRC}"}


def test_the_header_goes_with_app_services_request_and_its_refusal_is_shown(endpoint: Endpoint,
                                                                             tmp_path: Path) -> None:
    endpoint.answer = (401, {"statusCode": 401, "message": "Unauthorized"})
    proc = run("login", "--identity", "--client-id", "11111111-2222-3333-4444-555555555555",
               env=_env(tmp_path, endpoint.url))
    assert proc.returncode == 1
    assert proc.stderr == "ERROR: Failed to get a token for the managed identity: (401) Unauthorized\n"
    ((query, headers),) = endpoint.seen
    assert query == {"api-version": ["2019-08-01"], "resource": ["https://management.core.windows.net/"],
                     "client_id": ["11111111-2222-3333-4444-555555555555"]}
    assert headers["X-IDENTITY-HEADER"] == SECRET and headers["Metadata"] == "true"
    assert SECRET not in proc.stdout + proc.stderr


def test_an_expiry_that_is_not_epoch_seconds_is_a_clear_error(endpoint: Endpoint, tmp_path: Path) -> None:
    endpoint.answer = (200, {"access_token": "x.y.z", "expires_on": "09/14/2017 00:00:00 PM +00:00"})
    proc = run("login", "--identity", env=_env(tmp_path, endpoint.url))
    assert proc.returncode == 1
    assert proc.stderr == ("ERROR: The managed identity endpoint answered a token whose expires_on '09/14/2017 "
                           "00:00:00 PM +00:00' is not seconds since the epoch (App Service's 2019-08-01 format).\n")


def test_an_endpoint_at_imds_address_is_refused_outside_a_vm(tmp_path: Path) -> None:
    proc = run("login", "--identity", env=_env(tmp_path, "http://169.254.169.254/msi/token"))
    assert proc.returncode == 1
    assert proc.stderr == ("ERROR: IDENTITY_ENDPOINT='http://169.254.169.254/msi/token': 169.254.169.254 is not "
                           "this machine's own here, and acrlocal sends nothing off this machine; run this inside "
                           "an acrlocal VM.\n")
    assert SECRET not in proc.stdout + proc.stderr
