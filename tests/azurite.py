"""A private Azurite blob service for tests: the npm package ``azurite`` (pinned in ``tests/azurite/package.json``,
installed there by scripts/test with ``npm ci``) run by Debian's nodejs, listening on 127.0.0.1 at a free port with
its workspace in a temporary directory, telemetry off, stopped and removed by :meth:`AzuriteServer.stop`.

The account is not Azurite's well-known ``devstoreaccount1``: each server has an account key of its own (through
``AZURITE_ACCOUNTS``), so a test passes only if the key really travels from the flag to the requests. Azurite serves
https, as a storage account does, with a certificate for 127.0.0.1 from a CA of its own (:attr:`AzuriteServer.ca`):
Microsoft's azure-containerregistry refuses to follow a blob redirect to plain http. URLs are path-style,
``https://127.0.0.1:<port>/<account>/<container>``; the server under test trusts the CA through
``acrlocal up --blob-store-ca``, clients through the bundle :attr:`tests.harness.AcrLocal.ca` gives.
:meth:`AzuriteServer.stop_service` and :meth:`AzuriteServer.start_service` stop and start the process on the same
port and workspace (the fault tests' restart); what it stored survives. With ``access_log``, Azurite logs each
request it answers, and :meth:`AzuriteServer.answered` lists those a container's blobs were sent (the tests that
count storage requests).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import requests

from tests.ports import free_port
from tests.session_service import SessionService

PACKAGE_DIR = Path(__file__).resolve().parent / "azurite"
ACCOUNT = "acrlocaltest"
# A line of the access log (morgan's "common" format): '... "PUT /<account>/<container>/<blob>?<query> HTTP/1.1" 201 -'
_ACCESS = re.compile(r'"([A-Z]+) (/\S*) HTTP/[0-9.]+" ([0-9]{3}) ')


class Request(NamedTuple):
    """A request Azurite answered: its method, the blob's name in the container, the query, and the status."""

    method: str
    blob: str
    query: str
    status: int

    @property
    def operation(self) -> str:
        """The Blob Storage operation, as Azure's REST reference names it. A PUT of a whole blob outside
        ``_uploads/`` is taken for Copy Blob (the URL does not tell them apart: acrlocal writes a published blob
        only by copying an upload to it)."""
        comp = urllib.parse.parse_qs(self.query).get("comp", [""])[0]
        if self.method == "HEAD":
            return "Get Blob Properties"
        if self.method == "DELETE":
            return "Delete Blob"
        if self.method == "GET":
            return {"blocklist": "Get Block List", "metadata": "Get Blob Metadata", "": "Get Blob"}.get(comp, comp)
        if self.method == "PUT":
            if comp == "":
                return "Put Blob" if self.blob.startswith("_uploads/") else "Copy Blob"
            return {"block": "Put Block", "blocklist": "Put Block List", "metadata": "Set Blob Metadata"}.get(comp,
                                                                                                          comp)
        return f"{self.method} {comp}"

    def __str__(self) -> str:
        """The operation, on an ``upload`` or a ``blob`` (a published one), and the status: ``Put Block upload 201``."""
        return f"{self.operation} {'upload' if self.blob.startswith('_uploads/') else 'blob'} {self.status}"


def executable() -> Path | None:
    """``azurite-blob`` from the tests' npm directory, or ``None`` if ``npm ci`` has not run there."""
    path = PACKAGE_DIR / "node_modules" / ".bin" / "azurite-blob"
    return path if path.exists() and shutil.which("node") else None


def _write_tls(directory: Path) -> None:
    """``ca.pem`` (a CA made here) and ``cert.pem``/``key.pem`` (127.0.0.1 and localhost, signed by it)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "acrlocal tests' Azurite CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])).issuer_name(ca_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "cert.pem").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                          serialization.PrivateFormat.TraditionalOpenSSL,
                                                          serialization.NoEncryption()))


class AzuriteServer:
    """One Azurite blob service; :meth:`container_url` names a container for each user of it (the server being
    tested creates it)."""

    def __init__(self, *, oauth: bool = False, access_log: bool = False) -> None:
        exe = executable()
        if exe is None:
            raise RuntimeError(f"Azurite is not installed: run `npm ci` in {PACKAGE_DIR} (scripts/test does), with "
                               "Debian's nodejs and npm")
        self.exe = exe
        self.dir = Path(tempfile.mkdtemp(prefix="acrlocal-azurite-"))
        self.key = base64.b64encode(secrets.token_bytes(64)).decode()
        _write_tls(self.dir)
        #: The CA Azurite's certificate chains to.
        self.ca = str(self.dir / "ca.pem")
        self.port = 0
        #: Whether Azurite takes bearer tokens (``--oauth basic``: it checks their issuer, audience and lifetime, not
        #: their signature), besides the account key and SAS.
        self.oauth = oauth
        #: Whether Azurite logs each request it answers (in ``azurite.log``), for :meth:`answered`.
        self.access_log = access_log
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._count = 0

    @property
    def account_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/{ACCOUNT}"

    def store(self, prefix: str = "test") -> tuple[str, str, str]:
        """A new container's URL, the account key and the CA: what a server under test is given."""
        return self.container_url(prefix), self.key, self.ca

    def container_url(self, prefix: str = "test") -> str:
        """The URL of a container no other user of this server has (``acrlocal up --blob-store``)."""
        with self._lock:
            self._count += 1
            return f"{self.account_url}/{prefix}-{self._count}-{secrets.token_hex(3)}"

    def log(self) -> str:
        try:
            return (self.dir / "azurite.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        for attempt in range(5):
            self.port = free_port()
            try:
                self.start_service()
                return
            except RuntimeError:
                if attempt == 4 or "EADDRINUSE" not in self.log():
                    raise

    def start_service(self, timeout: float = 30.0) -> None:
        """Start the process (again) on the same port and workspace; return once it accepts connections."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # Azurite checks a copy's SAS-signed source by asking it, over https: it trusts its own CA for that.
        env = dict(os.environ, AZURITE_ACCOUNTS=f"{ACCOUNT}:{self.key}", NODE_EXTRA_CA_CERTS=self.ca)
        workspace = self.dir / "workspace"
        workspace.mkdir(exist_ok=True)
        with open(self.dir / "azurite.log", "ab") as log:
            self.proc = subprocess.Popen(
                [str(self.exe), "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--location", str(workspace),
                 "--skipApiVersionCheck", "--loose", "--disableTelemetry", *([] if self.access_log else ["--silent"]),
                 "--cert", str(self.dir / "cert.pem"), "--key", str(self.dir / "key.pem"),
                 *(["--oauth", "basic"] if self.oauth else [])],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"azurite exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop_service()
        raise RuntimeError(f"azurite did not listen on 127.0.0.1:{self.port} within {timeout}s:\n{self.log()}")

    def stop_service(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s); the workspace stays."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def answered(self, container_url: str, timeout: float = 30.0) -> list[Request]:
        """The requests Azurite answered for blobs of the container (not those for the container itself, such as
        listings), in the order it logged them; the server must log them (``access_log``). Azurite logs a request
        once its answer is sent: so that every request answered before the call is there, this sends one of its own
        (a HEAD no credential allows) and waits for it to be logged."""
        assert self.access_log, "Azurite was started without its access log"
        sentinel = f"/{ACCOUNT}/sentinel-{secrets.token_hex(8)}"
        requests.head(f"https://127.0.0.1:{self.port}{sentinel}", timeout=timeout, verify=self.ca)
        prefix = urllib.parse.urlsplit(container_url).path.rstrip("/") + "/"
        deadline = time.monotonic() + timeout
        while True:
            found = [(m.group(1), m.group(2), int(m.group(3)))
                     for m in _ACCESS.finditer((self.dir / "azurite.log").read_text(errors="replace"))]
            if any(path == sentinel for _, path, _ in found):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"Azurite did not log the request for {sentinel} within {timeout}s")
            time.sleep(0.05)
        listed = []
        for method, path, status in found:
            name, _, query = path.partition("?")
            if name.startswith(prefix):
                listed.append(Request(method, urllib.parse.unquote(name[len(prefix):]), query, status))
        return listed

    def stop(self) -> None:
        self.stop_service()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def private(*, oauth: bool = False, access_log: bool = False) -> Iterator[AzuriteServer]:
    """An Azurite of the caller's own (for tests that stop and start it, or that need ``oauth`` or ``access_log``),
    stopped and removed when the block ends."""
    server = AzuriteServer(oauth=oauth, access_log=access_log)
    server.start()
    try:
        yield server
    finally:
        server.stop()


_session = SessionService(AzuriteServer)
shared = _session.get  # the test session's server, started on first use
stop_shared = _session.stop  # called at the session's end
