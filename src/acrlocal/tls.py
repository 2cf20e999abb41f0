"""The local certificate authority and the server's leaf certificate.

The CA (``ca.pem`` and ``ca-key.pem``, mode 0600) is made once per data directory and kept; clients are told to
trust it. The leaf certificate covers ``localhost`` and the loopback addresses (and the names :meth:`LocalCA.ensure`
was given), and :meth:`LocalCA.server_context` keeps one :class:`ssl.SSLContext` that is reloaded in place, so
listeners that already hold it serve a reissued certificate on their next handshake.

A registry's host name (``<name>.<suffix>``) gets a leaf of its own (``hosts/<name>.pem``), chosen by the name the
client sends (SNI) among the names :meth:`LocalCA.serve_names` accepts, issued when the registry is made or at its
first handshake, and kept: adding a registry never reissues or grows the shared leaf, so neither a registry's
creation nor any handshake costs more with the number of registries.

A second leaf (``azure.pem``) covers Azure's public names (``management.azure.com``, ``login.microsoftonline.com``,
``graph.microsoft.com``, ``*.azurecr.io``): only VMs' front doors serve it (:meth:`LocalCA.azure_context`), inside
VMs whose trust store holds this CA; the host's own endpoints never present it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from acrlocal.files import write_private

BASE_NAMES = ("localhost", "127.0.0.1", "::1")
#: How many host names' TLS contexts are kept in memory (each is reloaded from its files when needed again).
HOST_CONTEXTS = 4096
log = logging.getLogger(__name__)


def serving_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context for the leaf ``cert`` (with its ``key``): TLS 1.2 and later, Python's default ciphers, and
    the client's order among them (Mozilla's "intermediate" configuration: every cipher offered is strong, so the
    client picks the one fastest on its hardware). Python's own default is the server's order, which puts
    AES-256-GCM first; Go's clients (docker, skopeo, oras, containerd) ask for AES-128-GCM first, about a sixth
    cheaper a byte on both ends of a pull. A key that does not match raises :class:`ssl.SSLError`."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.load_cert_chain(cert, key)
    return ctx


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """``key`` as unencrypted PKCS#8 PEM, readable by this user only."""
    write_private(path, key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def _write_public(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _names_of(cert: x509.Certificate) -> tuple[str, ...]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = [str(v) for v in san.get_values_for_type(x509.DNSName)]
    ips = [str(v) for v in san.get_values_for_type(x509.IPAddress)]
    return tuple(dns + ips)


def _san(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


class LocalCA:
    """A CA kept under ``directory`` that issues the server certificate for a set of host names."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.ca_path = directory / "ca.pem"
        self.ca_key_path = directory / "ca-key.pem"
        self.cert_path = directory / "server.pem"
        self.key_path = directory / "server-key.pem"
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._names: tuple[str, ...] = ()
        self._covered: frozenset[str] = frozenset()
        self._serves: Callable[[str], bool] | None = None
        self._hosts: dict[str, ssl.SSLContext] = {}
        self.created = False

    def ensure(self, names: list[str] | tuple[str, ...] = ()) -> None:
        """Create the CA if missing and make sure the leaf covers ``BASE_NAMES`` plus ``names``."""
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            if not (self.ca_path.exists() and self.ca_key_path.exists()):
                self._create_ca()
                self.created = True
            wanted = tuple(dict.fromkeys([*BASE_NAMES, *(n.lower() for n in names)]))
            current = self._leaf_names()
            if current is None or not set(wanted) <= set(current) or self._leaf_expiring():
                self._issue_leaf(tuple(dict.fromkeys([*(current or ()), *wanted])))
            self._names = self._leaf_names() or wanted
            self._covered = frozenset(self._names)
            if self._context is not None:
                self._context.load_cert_chain(self.cert_path, self.key_path)

    @property
    def names(self) -> tuple[str, ...]:
        return self._names

    def add_names(self, names: list[str]) -> None:
        """Reissue the leaf if any of ``names`` is not covered yet; running listeners pick it up."""
        if not set(n.lower() for n in names) <= set(self._names):
            self.ensure([*self._names, *names])

    def azure_context(self, names: tuple[str, ...]) -> ssl.SSLContext:
        """A server context with the leaf for Azure's ``names`` (issued once, and again when it nears expiry)."""
        cert, key = self.directory / "azure.pem", self.directory / "azure-key.pem"
        with self._lock:
            current = None
            if cert.exists() and key.exists():
                current = x509.load_pem_x509_certificate(cert.read_bytes())
            expiring = current is None or current.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(
                days=30)
            if expiring or current is None or set(_names_of(current)) != set(names):
                self._issue_leaf(names, cert, key)
        return serving_context(cert, key)

    def ca_pem(self) -> bytes:
        return self.ca_path.read_bytes()

    def subject_hash(self) -> str | None:
        """OpenSSL's subject hash of the CA (the name of its link in a ``c_rehash`` directory), if ``openssl``
        is installed."""
        openssl = shutil.which("openssl")
        if openssl is None:
            return None
        try:
            proc = subprocess.run([openssl, "x509", "-noout", "-subject_hash", "-in", str(self.ca_path)],
                                  capture_output=True, text=True, timeout=30, check=True)
        except (OSError, subprocess.SubprocessError):
            return None
        value = proc.stdout.strip()
        return value if len(value) == 8 and all(c in "0123456789abcdef" for c in value) else None

    def server_context(self) -> ssl.SSLContext:
        """The context of every https listener: the shared leaf, or a host name's own (see :meth:`serve_names`)."""
        if self._context is None:
            ctx = serving_context(self.cert_path, self.key_path)
            ctx.sni_callback = self._choose
            self._context = ctx
        return self._context

    def serve_names(self, serves: Callable[[str], bool]) -> None:
        """Answer a handshake for a host name the shared leaf does not cover, and for which ``serves(name)`` (lower
        case) is true, with that name's own leaf (:meth:`host_context`). Other names get the shared leaf: no work
        and nothing on disk for a name a client merely sends."""
        self._serves = serves

    def _choose(self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None,
                _context: ssl.SSLContext) -> None:
        if not server_name or self._serves is None:
            return
        name = server_name.lower()
        if name in self._covered or not self._serves(name):
            return
        try:
            sslobj.context = self.host_context(name)
        except (OSError, ValueError, ssl.SSLError):
            log.exception("no certificate for %s; the shared one is served", name)

    def host_context(self, name: str) -> ssl.SSLContext:
        """A server context with ``name``'s own leaf (``hosts/<name>.pem``), issued now if missing or expiring.
        Safe from any thread."""
        found = self._hosts.get(name)
        if found is not None:
            return found
        folder = self.directory / "hosts"
        cert, key = folder / f"{name}.pem", folder / f"{name}-key.pem"
        with self._lock:
            current = None
            if cert.exists() and key.exists():
                current = x509.load_pem_x509_certificate(cert.read_bytes())
            if current is None or _names_of(current) != (name,) or (
                    current.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=30)):
                folder.mkdir(mode=0o700, exist_ok=True)
                self._issue_leaf((name,), cert, key)
        ctx = serving_context(cert, key)
        if len(self._hosts) >= HOST_CONTEXTS:
            self._hosts.clear()
        self._hosts[name] = ctx
        return ctx

    # -- internals ---------------------------------------------------------------------------------

    def _create_ca(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "acrlocal"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"acrlocal local CA ({os.uname().nodename})"),
        ])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.ca_key_path, key)
        _write_public(self.ca_path, cert.public_bytes(serialization.Encoding.PEM))
        for stale in (self.cert_path, self.key_path):
            stale.unlink(missing_ok=True)

    def _load_ca(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        cert = x509.load_pem_x509_certificate(self.ca_path.read_bytes())
        key = serialization.load_pem_private_key(self.ca_key_path.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return cert, key

    def _leaf(self) -> x509.Certificate | None:
        if not (self.cert_path.exists() and self.key_path.exists()):
            return None
        return x509.load_pem_x509_certificate(self.cert_path.read_bytes())

    def _leaf_names(self) -> tuple[str, ...] | None:
        leaf = self._leaf()
        if leaf is None:
            return None
        return _names_of(leaf)

    def _leaf_expiring(self) -> bool:
        leaf = self._leaf()
        if leaf is None:
            return True
        return leaf.not_valid_after_utc - dt.datetime.now(dt.UTC) < dt.timedelta(days=30)

    def _issue_leaf(self, names: tuple[str, ...], cert_path: Path | None = None, key_path: Path | None = None) -> None:
        ca_cert, ca_key = self._load_ca()
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([_san(n) for n in names]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_key(key_path or self.key_path, key)
        _write_public(cert_path or self.cert_path, cert.public_bytes(serialization.Encoding.PEM))
