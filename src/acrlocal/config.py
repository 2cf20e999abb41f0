"""Settings of one acrlocal server: one frozen object, read once at start.

Every value has a default that works on a fresh machine (SQLite and the file system under a per-user data
directory, TLS by a local CA, loopback only). Environment variables override defaults, flags override both.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from acrlocal.blob_location import BlobLocation, parse_location
from acrlocal.errors import ConfigError
from acrlocal.lockout import parse_lockout

ENV_DATA_DIR = "ACRLOCAL_DATA_DIR"
LOOPBACK = "127.0.0.1"


def _default_data_dir() -> Path:
    """``$ACRLOCAL_DATA_DIR``, else ``$XDG_DATA_HOME/acrlocal``, else ``~/.local/share/acrlocal``."""
    if env := os.environ.get(ENV_DATA_DIR):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
    return base / "acrlocal"


@dataclass(frozen=True)
class Limits:
    """Bounds that protect the server from its clients."""

    manifest_max_bytes: int = 4 * 1024 * 1024
    page_size_max: int = 1000
    upload_session_ttl_s: int = 24 * 3600
    # Items per page of an ARM list before it answers a nextLink (Azure pages its long lists; az follows them).
    arm_page_size: int = 1000
    # Open blob upload sessions one principal may hold in one registry (429 TOOMANYREQUESTS past it).
    upload_sessions_max: int = 1000
    # The largest blob an upload may reach: ACR's documented maximum layer size, 200 GiB (DENIED past it).
    blob_max_bytes: int = 200 * 1024**3
    # Free space the data directory's file system keeps: uploads that would go below it are refused (DENIED).
    min_free_bytes: int = 1024**3
    # A blob file no row names, or a blob link no manifest references, is collected only once it is this old.
    blob_gc_grace_s: int = 3600
    # Seconds a connection may be idle (or take to send a request's headers), and a request body or a response
    # may make no progress, before it is closed (see acrlocal.timeouts).
    idle_timeout_s: float = 60.0
    read_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("idle_timeout_s", "read_timeout_s"):
            if not 0 < getattr(self, name) <= 24 * 3600:
                raise ConfigError(f"{name} {getattr(self, name)} must be between 0 and 86400 seconds")


SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2, "mib": 1024**2,
              "g": 1024**3, "gb": 1000**3, "gib": 1024**3, "t": 1024**4, "tb": 1000**4, "tib": 1024**4}


def parse_size(text: str) -> int:
    """Bytes from ``512``, ``100MiB``, ``2G`` (binary), ``5GB`` (decimal); :class:`ConfigError` otherwise."""
    match = re.fullmatch(r"\s*(\d{1,15})\s*([a-zA-Z]{0,3})\s*", text)
    if match is None or match.group(2).lower() not in SIZE_UNITS:
        raise ConfigError(f"size {text[:40]!r} is not a number of bytes with an optional unit (e.g. 200GiB, 512MB)")
    return int(match.group(1)) * SIZE_UNITS[match.group(2).lower()]


@dataclass(frozen=True)
class Settings:
    """Where state lives and where the server listens.

    ``port`` is the shared https port (control plane, Entra endpoints, and registries addressed by host name).
    Each registry also gets a port of its own, allocated from ``registry_port_base`` upward when it is created
    and kept for its lifetime; ``0`` lets the operating system choose (what tests use). VMs' IMDS takes no port
    here: each VM reaches it at 169.254.169.254:80 inside its own network namespace.
    """

    data_dir: Path = field(default_factory=_default_data_dir)
    host: str = LOOPBACK
    port: int = 8443
    registry_port_base: int = 8444
    # Requests per second per VM that IMDS answers before it throttles with 429 (0: never throttle), and
    # whether it caches managed-identity tokens per (identity, resource) as Azure's IMDS does.
    imds_rate_limit: float = 20.0
    imds_token_cache: bool = True
    hostname_suffix: str = "localhost"
    default_registry: str = "acrlocal"
    database_url: str | None = None
    # Blobs and upload sessions in an Azure Blob Storage container instead of data_dir/blobs: its URL (see
    # acrlocal.blob_location), and the account key or a SAS (never shown: not in repr, never logged).
    blob_store: str | None = None
    blob_store_key: str | None = field(default=None, repr=False)
    blob_store_sas: str | None = field(default=None, repr=False)
    # Or the managed identity of the host acrlocal runs on (azure-identity's ManagedIdentityCredential: IMDS on an
    # Azure VM, or the endpoint the environment names), a user-assigned one if the client id is given.
    blob_store_identity: bool = False
    blob_store_identity_client_id: str | None = None
    # A CA bundle the blob store's certificate chains to, besides the system's (an emulator's own certificate).
    blob_store_ca: str | None = None
    # Blob GETs on a store with URLs of its own (Azure, with the account key): a 307 to a short-lived SAS URL, as
    # ACR redirects to its storage (True), or streamed through the server (False).
    blob_redirect: bool = True
    # Registry data-plane throttling: "sku" (ACR's documented read/write operations per minute by SKU), "off",
    # or "READS/WRITES" per minute for every registry (see acrlocal.registry.throttle).
    registry_rate_limit: str = "sku"
    # Failed passwords and secrets before a lockout (Entra's token endpoint and sign-in pages, the registries'
    # /oauth2/*): "NAME/CALLER/SECONDS" (failures per user or client name, per caller address, first lockout) or
    # "off" (see acrlocal.lockout).
    login_lockout: str = "10/100/60"
    # Server processes serving the same ports (``up --workers``): the first owns the VMs and the control plane's
    # writes, the others serve the registries and Entra (sign-ins too) and forward the rest to it.
    workers: int = 1
    # The registry data plane without authentication (every request allowed, anonymous): only for measuring the
    # cost of authentication; never the default.
    insecure_open_registry: bool = False
    # How long a VM's run-command script may run before it is stopped (Azure allows 90 minutes; here the
    # request is held open for the whole run).
    run_command_timeout_s: float = 600.0
    # The port on which each running VM's public IP address (a loopback address 127.77.x.y) answers ssh, as
    # Azure's port 22 (0: no ssh at the public addresses; `acrlocal ssh vm` works either way).
    vm_ssh_port: int = 22
    # Registries' ports are served this much higher on this process than the table says (the login server keeps
    # the table's port): replicas on one machine behind a load balancer that listens on the table's ports.
    registry_port_offset: int = 0
    # The port clients reach the shared endpoint at, when it is not ``port`` (a load balancer's in front of
    # replicas): the Entra authority, ARM's endpoint and registries' host-name login servers name it. 0: ``port``.
    advertised_port: int = 0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if self.host not in (LOOPBACK, "localhost", "::1"):
            raise ConfigError(f"host {self.host!r} is not a loopback address; acrlocal listens on loopback only")
        for name in ("port", "registry_port_base", "vm_ssh_port", "registry_port_offset",
                     "advertised_port"):
            value = getattr(self, name)
            if not 0 <= value <= 65535:
                raise ConfigError(f"{name} {value} is not a TCP port (0-65535)")
        if not re.fullmatch(r"sku|off|\d{1,12}/\d{1,12}", self.registry_rate_limit.strip().lower()):
            raise ConfigError(f"registry_rate_limit {self.registry_rate_limit[:40]!r} is not 'sku', 'off' or "
                              "READS/WRITES per minute (e.g. 3000/500)")
        parse_lockout(self.login_lockout)
        if not 1 <= self.workers <= 256:
            raise ConfigError(f"workers {self.workers} must be between 1 and 256 server processes")
        if not 0 < self.run_command_timeout_s <= 24 * 3600:
            raise ConfigError(f"run_command_timeout_s {self.run_command_timeout_s} must be between 0 and 86400 "
                              "seconds")
        if self.blob_store is not None:
            self.blob_location  # noqa: B018 - parsed now, so a wrong URL is a ConfigError at start
        if self.blob_store_identity_client_id is not None and not self.blob_store_identity:
            raise ConfigError("blob_store_identity_client_id names a user-assigned identity, but blob_store_identity "
                              "is off")
        if self.blob_store_identity and (self.blob_store_key is not None or self.blob_store_sas is not None):
            raise ConfigError("the blob store's credential is the managed identity or an account key or SAS, not "
                              "both")
        if self.imds_rate_limit < 0:
            raise ConfigError(f"imds_rate_limit {self.imds_rate_limit} must be 0 (off) or a positive rate")

    def with_overrides(self, **changes: object) -> Settings:
        """A copy with the given fields replaced; ``None`` values are ignored (flags not given)."""
        given = {k: v for k, v in changes.items() if v is not None}
        if "data_dir" in given:
            given["data_dir"] = Path(str(given["data_dir"])).expanduser()
        return replace(self, **given)  # type: ignore[arg-type]

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'acrlocal.db'}"

    @property
    def blob_location(self) -> BlobLocation | None:
        """The container of ``blob_store``, or ``None`` for blobs on the local disk."""
        return parse_location(self.blob_store) if self.blob_store is not None else None

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def tls_dir(self) -> Path:
        return self.data_dir / "tls"

    @property
    def ca_path(self) -> Path:
        return self.tls_dir / "ca.pem"

    @property
    def state_file(self) -> Path:
        """Written by a running server: its endpoints, for ``acrlocal status`` and scripts."""
        return self.data_dir / "server.json"
