"""`acrlocal up`, `status` and `trust`: the server a new user starts, and the facts scripts read."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
import requests
from cryptography import x509

from tests.harness import AcrLocal


def test_status_reports_endpoints_registries_and_ca(acrlocal: AcrLocal) -> None:
    status = json.loads(acrlocal.cli("status", "--output", "json").stdout)
    assert status["running"] is True
    assert Path(status["caPath"]).is_file()
    assert status["dataDir"] == str(acrlocal.data_dir)
    reg = acrlocal.registry("acrlocal")
    assert reg["loginServer"] == f"localhost:{reg['port']}"
    assert status["endpoints"]["resourceManager"].startswith("https://localhost:")
    assert status["registryCount"] == len(status["registries"]) >= 1  # all of them, while fewer than 100


def test_status_query_and_tsv_like_az(acrlocal: AcrLocal) -> None:
    out = acrlocal.cli("status", "--query", "registries[0].name", "-o", "tsv").stdout
    assert out == "acrlocal\n"


def test_bad_query_is_a_usage_error(acrlocal: AcrLocal) -> None:
    proc = acrlocal.cli("status", "--query", "registries[", check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("ERROR: ")


def test_registry_port_serves_v2_over_tls_trusted_by_the_local_ca(acrlocal: AcrLocal) -> None:
    r = acrlocal.session().get(acrlocal.url("/v2/"))
    assert r.status_code in (200, 401)
    assert r.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(acrlocal.url("/v2/"), verify=True)


@pytest.mark.parametrize("suites", ["TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384",
                                    "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256",
                                    "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256"])
def test_tls_13_answers_with_the_clients_first_choice(acrlocal: AcrLocal, suites: str) -> None:
    """Go's clients ask for AES-128-GCM first, OpenSSL's for AES-256-GCM: each gets what it asked for first (an
    OpenSSL client, the real ``openssl s_client``, stands in for both)."""
    proc = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{acrlocal.registry()['port']}",
                           "-tls1_3", "-ciphersuites", suites, "-CAfile", str(acrlocal.ca)],
                          input=b"", capture_output=True, timeout=30)
    out = proc.stdout.decode()
    assert "Verify return code: 0 (ok)" in out, out[-2000:]
    assert f"Cipher is {suites.split(':')[0]}" in out, out[-2000:]


def test_certificate_covers_loopback_names_and_registry_host(acrlocal: AcrLocal) -> None:
    def names(server_name: str | None) -> set[str]:
        ctx = ssl.create_default_context(cafile=acrlocal.ca)
        ctx.check_hostname = server_name is not None
        with socket.create_connection(("127.0.0.1", acrlocal.registry()["port"])) as raw, ctx.wrap_socket(
                raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
        assert der is not None
        cert = x509.load_der_x509_certificate(der)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return set(san.get_values_for_type(x509.DNSName)) | {str(i) for i in san.get_values_for_type(x509.IPAddress)}

    assert {"localhost", "127.0.0.1", "::1"} <= names(None)
    assert names("acrlocal.localhost") == {"acrlocal.localhost"}  # the registry's host name: its own certificate


def test_shared_port_routes_registry_by_host_name(acrlocal: AcrLocal) -> None:
    port = int(acrlocal.shared.rsplit(":", 1)[1])
    ctx = ssl.create_default_context(cafile=acrlocal.ca)
    with socket.create_connection(("127.0.0.1", port)) as raw, ctx.wrap_socket(
        raw, server_hostname="acrlocal.localhost"
    ) as tls:
        tls.sendall(f"GET /v2/ HTTP/1.1\r\nHost: acrlocal.localhost:{port}\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := tls.recv(65536):
            reply += chunk
    assert b"Docker-Distribution-Api-Version: registry/2.0" in reply


def test_trust_installs_ca_for_podman_and_docker(acrlocal: AcrLocal, tmp_path: Path) -> None:
    out = json.loads(acrlocal.cli("trust", "--root", str(tmp_path)).stdout)
    server = acrlocal.login_server()
    for base in ("etc/containers/certs.d", "etc/docker/certs.d"):
        target = tmp_path / base / server / "ca.crt"
        assert target.read_bytes() == Path(acrlocal.ca).read_bytes()
        assert str(target) in out["installed"]


def test_sigterm_stops_cleanly_and_restart_keeps_state(fresh_acrlocal: AcrLocal) -> None:
    first = fresh_acrlocal.start()
    port = fresh_acrlocal.registry()["port"]
    ca = Path(first["caPath"]).read_bytes()
    assert fresh_acrlocal.stop() == 0
    assert not (fresh_acrlocal.data_dir / "server.json").exists()
    proc = fresh_acrlocal.cli("status", check=False)
    assert proc.returncode == 1 and "not running" in proc.stderr
    fresh_acrlocal.start()
    assert fresh_acrlocal.registry()["port"] == port
    assert Path(fresh_acrlocal.ca).read_bytes() == ca
    assert fresh_acrlocal.session().get(fresh_acrlocal.url("/v2/")).status_code in (200, 401)


def test_data_dir_is_private(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    assert fresh_acrlocal.data_dir.stat().st_mode & 0o077 == 0
    assert (fresh_acrlocal.data_dir / "tls" / "ca-key.pem").stat().st_mode & 0o077 == 0
