"""``up`` (foreground, or ``--detach``), ``down``, ``status`` and ``trust``: the server on this host.

``up --detach`` starts the server as a background process of its own session, its output in
``<data dir>/server.log`` and its pid in ``<data dir>/server.pid``, and returns once the server is ready (its
``server.json`` names that pid), printing the same banner as a foreground ``up``. ``down`` sends SIGTERM to the
pid in ``server.json`` (checking first that the process is an acrlocal server) and waits until it has exited.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from acrlocal.cli.endpoints import read_status
from acrlocal.cli.errors import CLIError
from acrlocal.cli.framework import AzCommand
from acrlocal.config import Settings, parse_size
from acrlocal.errors import ConfigError

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0

data_dir_option = click.option(
    "--data-dir", envvar="ACRLOCAL_DATA_DIR", type=click.Path(file_okay=False),
    help="Where state lives (default: $ACRLOCAL_DATA_DIR or ~/.local/share/acrlocal).",
)


def _settings_from(data_dir: str | None, **overrides: Any) -> Settings:
    return Settings().with_overrides(data_dir=data_dir, **overrides)


def _size(text: str, flag: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint=flag) from exc


def _no_imds_ports(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """``--imds-port-base`` named the first of the host ports VMs' IMDS listened on, before each VM had IMDS at
    169.254.169.254 inside its own network namespace; no port on the host serves IMDS now, so a value would do
    nothing: refused, rather than accepted and ignored."""
    if value is not None:
        raise click.UsageError("--imds-port-base was removed: VMs reach IMDS at 169.254.169.254:80 inside their "
                               "own network namespace, and no port on the host serves it; leave the option out.",
                               ctx=ctx)


def banner(status: dict[str, Any], *, detached: bool = False) -> str:
    ca = status["caPath"]
    lines = [
        f"acrlocal {status['version']} is running (pid {status['pid']}); state in {status['dataDir']}",
        f"  Resource Manager   {status['endpoints']['resourceManager']}",
        f"  Entra ID           {status['endpoints']['activeDirectory']}",
    ]
    for reg in status["registries"]:
        lines.append(f"  Registry {reg['name']:<10}{reg['loginServer']}   (also {reg['hostLoginServer']})")
    lines += [
        "",
        f"Clients trust acrlocal through its local CA: {ca}",
        f"  Python clients (azure-identity, az, oras):  export REQUESTS_CA_BUNDLE={ca}",
    ]
    for reg in status["registries"]:
        lines.append(f"  podman, skopeo, buildah:  /etc/containers/certs.d/{reg['loginServer']}/ca.crt")
        lines.append(f"  docker:                   /etc/docker/certs.d/{reg['loginServer']}/ca.crt")
    lines += ["  `acrlocal trust` (as root) installs it in those places.", "",
              "Microsoft's az CLI: `acrlocal az-setup` prints how to point it here (`--apply` does it).", ""]
    lines.append(f"Logs: {Path(status['dataDir']) / 'server.log'}. Stop with `acrlocal down`." if detached
                 else "Stop with Ctrl-C.")
    return "\n".join(lines)


def _is_acrlocal(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(b"acrlocal" in part for part in cmdline) and b"up" in cmdline


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours has exited
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _detach(settings: Settings, argv: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        status = read_status(settings)
    except CLIError:
        pass
    else:
        raise CLIError(f"acrlocal is already running on {settings.data_dir} (pid {status['pid']}).")
    fresh = not settings.data_dir.exists()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(settings.data_dir, 0o700)
    if fresh:
        click.echo(f"Setting up acrlocal in {settings.data_dir} (local CA, database, default registry)...", err=True)
    log_path = settings.data_dir / "server.log"
    pid_path = settings.data_dir / "server.pid"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "acrlocal", "up", *argv], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    pid_path.write_text(f"{proc.pid}\n")
    deadline = time.monotonic() + READY_TIMEOUT_S
    shown = False
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pid_path.unlink(missing_ok=True)
            tail = log_path.read_text(errors="replace")[-2000:]
            raise CLIError(f"acrlocal exited with code {proc.returncode} while starting; its log "
                           f"({log_path}) ends with:\n{tail}")
        try:
            status = read_status(settings)
            if int(status.get("pid", -1)) == proc.pid:
                return status
        except CLIError:
            pass
        if fresh and not shown and time.monotonic() > deadline - READY_TIMEOUT_S + 2:
            click.echo("Waiting for the server to be ready...", err=True)
            shown = True
        time.sleep(0.1)
    proc.terminate()
    proc.wait(STOP_TIMEOUT_S)
    pid_path.unlink(missing_ok=True)
    raise CLIError(f"acrlocal did not become ready within {READY_TIMEOUT_S:.0f}s; see {log_path}.")


@click.command("up", cls=AzCommand)
@data_dir_option
@click.option("--port", type=int, help="The shared https port (default 8443; 0 picks a free port).")
@click.option("--registry-port-base", type=int, help="First port for registries' own listeners (0: any).")
@click.option("--imds-port-base", hidden=True, expose_value=False, callback=_no_imds_ports)
@click.option("--imds-rate-limit", type=float,
              help="Requests per second per VM that IMDS answers before answering 429 (default 20; 0: no limit).")
@click.option("--imds-token-cache/--no-imds-token-cache", default=None,
              help="Cache managed-identity tokens per identity and resource, as Azure's IMDS does (default on).")
@click.option("--default-registry", help="Name of the registry created on first start (default acrlocal).")
@click.option("--database-url", envvar="ACRLOCAL_DATABASE_URL", help="SQLAlchemy URL (default: SQLite).")
@click.option("--blob-store", envvar="ACRLOCAL_BLOB_STORE", metavar="URL",
              help="Keep blobs and uploads in an Azure Blob Storage container: "
                   "https://<account>.blob.core.windows.net/<container> (or Azurite's "
                   "http://127.0.0.1:10000/<account>/<container>) (default: files in the data directory).")
@click.option("--blob-store-key", envvar="ACRLOCAL_BLOB_STORE_KEY", metavar="KEY",
              help="The storage account's key (prefer the environment variable ACRLOCAL_BLOB_STORE_KEY).")
@click.option("--blob-store-sas", envvar="ACRLOCAL_BLOB_STORE_SAS", metavar="SAS",
              help="A SAS for the container with rwdlac (prefer ACRLOCAL_BLOB_STORE_SAS); blob GETs then stream.")
@click.option("--blob-store-identity", is_flag=True, default=None, envvar="ACRLOCAL_BLOB_STORE_IDENTITY",
              help="Authenticate to --blob-store with the managed identity of the host acrlocal runs on (IMDS on an "
                   "Azure VM, or IDENTITY_ENDPOINT, AZURE_FEDERATED_TOKEN_FILE... where set, as azure-identity's "
                   "ManagedIdentityCredential); it needs Storage Blob Data Contributor on the container.")
@click.option("--blob-store-identity-client-id", envvar="ACRLOCAL_BLOB_STORE_IDENTITY_CLIENT_ID", metavar="ID",
              help="The client id of the user-assigned identity --blob-store-identity uses (implies it).")
@click.option("--blob-store-ca", type=click.Path(exists=True, dir_okay=False), metavar="FILE",
              help="A CA bundle the blob store's certificate chains to (an emulator's own; real Azure needs none).")
@click.option("--blob-downloads", type=click.Choice(["redirect", "stream"]),
              help="Blob GETs on --blob-store with a key or the managed identity: a 307 to a 10-minute SAS URL, as "
                   "ACR (redirect, the default), or streamed through the server (stream).")
@click.option("--upload-session-ttl", type=click.IntRange(min=1),
              help="Seconds an idle blob upload session is kept before it is discarded (default 86400).")
@click.option("--arm-page-size", type=click.IntRange(min=1, max=5000),
              help="Items per page of an ARM list before it answers a nextLink (default 1000).")
@click.option("--upload-sessions-max", type=click.IntRange(min=1),
              help="Open blob upload sessions one principal may hold in one registry (default 1000).")
@click.option("--blob-max-size", help="Largest blob an upload may reach, e.g. 10GiB (default 200GiB, as ACR).")
@click.option("--min-free-space",
              help="Free space to keep on the data directory's disk; uploads past it are refused (default 1GiB).")
@click.option("--blob-gc-grace", type=click.IntRange(min=0),
              help="Seconds before a blob file no row names, or a blob no manifest references, may be collected "
                   "(default 3600).")
@click.option("--idle-timeout", type=click.FloatRange(min=0.1, max=86400),
              help="Seconds a connection may sit idle, or take to send a request's headers (default 60).")
@click.option("--read-timeout", type=click.FloatRange(min=0.1, max=86400),
              help="Seconds a request body or a response may make no progress before the connection is closed "
                   "(default 60).")
@click.option("--registry-rate-limit", envvar="ACRLOCAL_REGISTRY_RATE_LIMIT",
              help="Registry read/write operations per minute before 429: 'sku' (ACR's limits by SKU, the "
                   "default), 'off', or READS/WRITES for every registry (e.g. 100000/100000).")
@click.option("--login-lockout", envvar="ACRLOCAL_LOGIN_LOCKOUT",
              help="Failed passwords and secrets before a lockout: NAME/CALLER/SECONDS (failures per user or client "
                   "name, failures per caller address, first lockout in seconds; default 10/100/60) or 'off'.")
@click.option("--insecure-open-registry", is_flag=True, default=None,
              help="INSECURE: serve the registry data plane without authentication (only for measuring its cost).")
@click.option("--run-command-timeout", type=click.FloatRange(min=0.1, max=86400),
              help="Seconds a VM's run-command script may run before it is stopped (default 600).")
@click.option("--vm-ssh-port", type=click.IntRange(min=0, max=65535),
              help="Port of ssh at each running VM's public IP address (default 22, as Azure; binding it needs "
                   "root; 0: off).")
@click.option("--workers", type=click.IntRange(min=1, max=256), envvar="ACRLOCAL_WORKERS",
              help="Server processes on the same ports (default: the number of cores; the first owns the VMs and "
                   "the control plane's writes).")
@click.option("--registry-port-offset", type=click.IntRange(min=0, max=65535),
              help="Serve each registry's port this much higher here (default 0): for several replicas on one "
                   "machine behind a load balancer that listens on the registries' own ports.")
@click.option("--advertised-port", type=click.IntRange(min=1, max=65535),
              help="The port clients reach the shared endpoint at, e.g. a load balancer's in front of replicas "
                   "(default: --port); the authority, ARM's endpoint and host-name login servers name it.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
@click.option("--detach", "-d", is_flag=True, help="Run in the background; return when the server is ready.")
def up(data_dir: str | None, port: int | None, registry_port_base: int | None, imds_rate_limit: float | None,
       imds_token_cache: bool | None, default_registry: str | None,
       database_url: str | None, blob_store: str | None, blob_store_key: str | None, blob_store_sas: str | None,
       blob_store_identity: bool | None, blob_store_identity_client_id: str | None,
       blob_store_ca: str | None, blob_downloads: str | None, upload_session_ttl: int | None, arm_page_size: int | None,
       upload_sessions_max: int | None, blob_max_size: str | None, min_free_space: str | None,
       blob_gc_grace: int | None, idle_timeout: float | None, read_timeout: float | None,
       registry_rate_limit: str | None, login_lockout: str | None, insecure_open_registry: bool | None,
       run_command_timeout: float | None, vm_ssh_port: int | None, workers: int | None,
       registry_port_offset: int | None, advertised_port: int | None, log_level: str, detach: bool) -> None:
    """Run the acrlocal server (in the foreground; Ctrl-C stops it), or in the background with --detach."""
    from acrlocal.workers import default_workers

    settings = _settings_from(
        data_dir, port=port, registry_port_base=registry_port_base, imds_rate_limit=imds_rate_limit,
        imds_token_cache=imds_token_cache, default_registry=default_registry,
        database_url=database_url, registry_rate_limit=registry_rate_limit, login_lockout=login_lockout,
        insecure_open_registry=insecure_open_registry, run_command_timeout_s=run_command_timeout,
        vm_ssh_port=vm_ssh_port, workers=workers or default_workers(), registry_port_offset=registry_port_offset,
        advertised_port=advertised_port,
        blob_store=blob_store, blob_store_key=blob_store_key,
        blob_store_sas=blob_store_sas, blob_store_ca=blob_store_ca,
        blob_store_identity=blob_store_identity or blob_store_identity_client_id is not None or None,
        blob_store_identity_client_id=blob_store_identity_client_id,
        blob_redirect=None if blob_downloads is None else blob_downloads == "redirect",
    )
    if upload_session_ttl is not None:
        settings = replace(settings, limits=replace(settings.limits, upload_session_ttl_s=upload_session_ttl))
    if arm_page_size is not None:
        settings = replace(settings, limits=replace(settings.limits, arm_page_size=arm_page_size))
    quotas = {"upload_sessions_max": upload_sessions_max, "blob_gc_grace_s": blob_gc_grace,
              "blob_max_bytes": None if blob_max_size is None else _size(blob_max_size, "--blob-max-size"),
              "min_free_bytes": None if min_free_space is None else _size(min_free_space, "--min-free-space")}
    settings = replace(settings, limits=replace(settings.limits, **{k: v for k, v in quotas.items() if v is not None}))
    if idle_timeout is not None:
        settings = replace(settings, limits=replace(settings.limits, idle_timeout_s=idle_timeout))
    if read_timeout is not None:
        settings = replace(settings, limits=replace(settings.limits, read_timeout_s=read_timeout))
    if detach:
        argv = ["--data-dir", str(settings.data_dir), "--log-level", log_level]
        for flag, value in (("--port", port), ("--registry-port-base", registry_port_base),
                            ("--imds-rate-limit", imds_rate_limit),
                            ("--default-registry", default_registry), ("--database-url", database_url),
                            ("--upload-session-ttl", upload_session_ttl), ("--arm-page-size", arm_page_size),
                            ("--upload-sessions-max", upload_sessions_max), ("--blob-max-size", blob_max_size),
                            ("--min-free-space", min_free_space), ("--blob-gc-grace", blob_gc_grace),
                            ("--registry-rate-limit", registry_rate_limit), ("--login-lockout", login_lockout),
                            ("--idle-timeout", idle_timeout), ("--read-timeout", read_timeout),
                            ("--run-command-timeout", run_command_timeout), ("--vm-ssh-port", vm_ssh_port),
                            ("--workers", workers), ("--registry-port-offset", registry_port_offset),
                            ("--advertised-port", advertised_port)):
            if value is not None:
                argv += [flag, str(value)]
        if imds_token_cache is not None:
            argv.append("--imds-token-cache" if imds_token_cache else "--no-imds-token-cache")
        if insecure_open_registry:
            argv.append("--insecure-open-registry")
        if blob_downloads is not None:
            argv += ["--blob-downloads", blob_downloads]
        if blob_store_ca is not None:
            argv += ["--blob-store-ca", str(Path(blob_store_ca).resolve())]
        if blob_store_identity:
            argv.append("--blob-store-identity")
        if blob_store_identity_client_id is not None:
            argv += ["--blob-store-identity-client-id", blob_store_identity_client_id]
        # The blob store's URL (it may hold a SAS) and credentials go through the environment, not the command line
        # other users can read.
        env = {k: v for k, v in (("ACRLOCAL_BLOB_STORE", blob_store), ("ACRLOCAL_BLOB_STORE_KEY", blob_store_key),
                                 ("ACRLOCAL_BLOB_STORE_SAS", blob_store_sas)) if v is not None}
        click.echo(banner(_detach(settings, argv, env), detached=True))
        return

    import logging

    from acrlocal.server import run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.data_dir.exists():
        click.echo(f"Setting up acrlocal in {settings.data_dir} (local CA, database, default registry)...",
                   err=True)

    def ready(status: dict[str, Any]) -> None:
        click.echo(banner(status))
        sys.stdout.flush()

    run(settings, ready)


@click.command("_worker", hidden=True)
def worker() -> None:
    """A secondary server process, started by `acrlocal up --workers` with its settings in $ACRLOCAL_WORKER."""
    import logging

    from acrlocal.server import run_worker
    from acrlocal.workers import ENV

    env = os.environ.get(ENV)
    if not env:
        raise CLIError(f"acrlocal _worker is started by acrlocal up --workers (${ENV} is not set)")
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(env)


@click.command("down", cls=AzCommand)
@data_dir_option
def down(data_dir: str | None) -> Any:
    """Stop the server running on this data directory and wait until it has exited."""
    settings = _settings_from(data_dir)
    status = read_status(settings)
    pid = int(status["pid"])
    if not _is_acrlocal(pid):
        raise CLIError(f"process {pid} named in {settings.state_file} is not an acrlocal server; not stopping it.")
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _alive(pid):
        if time.monotonic() > deadline:
            raise CLIError(f"acrlocal (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f}s.")
        time.sleep(0.05)
    (settings.data_dir / "server.pid").unlink(missing_ok=True)
    return None


@click.command("status", cls=AzCommand)
@data_dir_option
def status(data_dir: str | None) -> Any:
    """Show the running server's endpoints, registries, CA and data directory."""
    return read_status(_settings_from(data_dir))


@click.command("trust", cls=AzCommand)
@data_dir_option
@click.option("--root", "root_dir", default="/", type=click.Path(file_okay=False),
              help="Install under this root instead of / (for packaging and tests).")
def trust(data_dir: str | None, root_dir: str) -> Any:
    """Install the local CA where podman, skopeo, buildah and docker look for it (needs root)."""
    state = read_status(_settings_from(data_dir))
    root = Path(root_dir)
    if root == Path("/") and os.geteuid() != 0:
        raise CLIError("acrlocal trust writes to /etc/containers and /etc/docker: run it as root (sudo).")
    servers: list[str] = []
    for reg in state["registries"]:
        servers += [reg["loginServer"], reg["loginServer"].replace("localhost", "127.0.0.1", 1),
                    reg["hostLoginServer"]]
    installed = []
    for server in dict.fromkeys(servers):
        for base in ("etc/containers/certs.d", "etc/docker/certs.d"):
            target = root / base / server / "ca.crt"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(state["caPath"], target)
            installed.append(str(target))
    return {"caPath": state["caPath"], "installed": installed}
