"""The ``acrlocal`` command: ``up``, ``status``, ``trust`` (the az-shaped groups join as they are built).

Errors are printed as az prints them, ``ERROR: <message>`` on stderr, with exit code 1 for failures and 2 for
usage errors (unknown command, missing or bad flag, a ``--query`` that does not parse).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from acrlocal import __version__
from acrlocal.cli.output import FORMATS, QueryError, compile_query, render
from acrlocal.config import Settings
from acrlocal.errors import AcrLocalError


class CLIError(AcrLocalError):
    """A failure reported to the user as ``ERROR: ...`` with exit code 1."""


def emit(result: Any, output: str, query: str | None) -> None:
    text = render(result, output, query)
    if text:
        click.echo(text, nl=False)


def global_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """az's global arguments, accepted on every command."""

    def check_query(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
        if value:
            try:
                compile_query(value)
            except QueryError as exc:
                raise click.BadParameter(str(exc)) from exc
        return value

    @click.option("--output", "-o", type=click.Choice(FORMATS), default="json", show_default=True,
                  help="Output format.")
    @click.option("--query", callback=check_query, help="JMESPath query string.")
    @click.option("--only-show-errors", is_flag=True, help="Only show errors, suppressing warnings.")
    @click.option("--debug", is_flag=True, help="Increase logging verbosity to show all debug logs.")
    @click.option("--verbose", is_flag=True, help="Increase logging verbosity.")
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper


def settings_from(data_dir: str | None, **overrides: Any) -> Settings:
    return Settings().with_overrides(data_dir=data_dir, **overrides)


data_dir_option = click.option(
    "--data-dir", envvar="ACRLOCAL_DATA_DIR", type=click.Path(file_okay=False),
    help="Where state lives (default: $ACRLOCAL_DATA_DIR or ~/.local/share/acrlocal).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="acrlocal")
def cli() -> None:
    """acrlocal: Entra ID managed identities, RBAC, ARM and Azure Container Registry, on your machine."""


def banner(status: dict[str, Any]) -> str:
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
    lines += ["  `acrlocal trust` (as root) installs it in those places.", "", "Stop with Ctrl-C."]
    return "\n".join(lines)


@cli.command()
@data_dir_option
@click.option("--port", type=int, help="The shared https port (default 8443; 0 picks a free port).")
@click.option("--registry-port-base", type=int, help="First port for registries' own listeners (0: any).")
@click.option("--imds-port-base", type=int, help="First port for VMs' IMDS listeners (0: any).")
@click.option("--imds-rate-limit", type=float,
              help="Requests per second per VM that IMDS answers before answering 429 (default 20; 0: no limit).")
@click.option("--imds-token-cache/--no-imds-token-cache", default=None,
              help="Cache managed-identity tokens per identity and resource, as Azure's IMDS does (default on).")
@click.option("--default-registry", help="Name of the registry created on first start (default acrlocal).")
@click.option("--database-url", envvar="ACRLOCAL_DATABASE_URL", help="SQLAlchemy URL (default: SQLite).")
@click.option("--upload-session-ttl", type=click.IntRange(min=1),
              help="Seconds an idle blob upload session is kept before it is discarded (default 86400).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="warning")
def up(data_dir: str | None, port: int | None, registry_port_base: int | None, imds_port_base: int | None,
       imds_rate_limit: float | None, imds_token_cache: bool | None, default_registry: str | None,
       database_url: str | None, upload_session_ttl: int | None, log_level: str) -> None:
    """Run the acrlocal server in the foreground (Ctrl-C stops it)."""
    import logging

    from acrlocal.server import run

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from(
        data_dir, port=port, registry_port_base=registry_port_base, imds_port_base=imds_port_base,
        imds_rate_limit=imds_rate_limit, imds_token_cache=imds_token_cache, default_registry=default_registry,
        database_url=database_url,
    )
    if upload_session_ttl is not None:
        settings = replace(settings, limits=replace(settings.limits, upload_session_ttl_s=upload_session_ttl))
    fresh = not settings.data_dir.exists()
    if fresh:
        click.echo(f"Setting up acrlocal in {settings.data_dir} (local CA, database, default registry)...",
                   err=True)

    def ready(status: dict[str, Any]) -> None:
        click.echo(banner(status), err=False)
        sys.stdout.flush()

    run(settings, ready)


def read_status(settings: Settings) -> dict[str, Any]:
    """The running server's ``server.json``; :class:`CLIError` if no server runs on this data dir."""
    try:
        status: dict[str, Any] = json.loads(settings.state_file.read_text())
    except FileNotFoundError:
        raise CLIError(
            f"acrlocal is not running (no server for data dir {settings.data_dir}). Start it with `acrlocal up`."
        ) from None
    try:
        os.kill(int(status["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError):
        raise CLIError(
            f"acrlocal is not running (stale state for data dir {settings.data_dir}). Start it with `acrlocal up`."
        ) from None
    except PermissionError:
        pass
    return status


@cli.command()
@data_dir_option
@global_options
def status(data_dir: str | None, output: str, query: str | None, **_: Any) -> None:
    """Show the running server's endpoints, registries, CA and data directory."""
    emit(read_status(settings_from(data_dir)), output, query)


@cli.command()
@data_dir_option
@click.option("--root", "root_dir", default="/", type=click.Path(file_okay=False),
              help="Install under this root instead of / (for packaging and tests).")
@global_options
def trust(data_dir: str | None, root_dir: str, output: str, query: str | None, **_: Any) -> None:
    """Install the local CA where podman, skopeo, buildah and docker look for it (needs root)."""
    status = read_status(settings_from(data_dir))
    root = Path(root_dir)
    if root == Path("/") and os.geteuid() != 0:
        raise CLIError("acrlocal trust writes to /etc/containers and /etc/docker: run it as root (sudo).")
    servers: list[str] = []
    for reg in status["registries"]:
        servers += [reg["loginServer"], reg["loginServer"].replace("localhost", "127.0.0.1", 1),
                    reg["hostLoginServer"]]
    installed = []
    for server in dict.fromkeys(servers):
        for base in ("etc/containers/certs.d", "etc/docker/certs.d"):
            target = root / base / server / "ca.crt"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(status["caPath"], target)
            installed.append(str(target))
    emit({"caPath": status["caPath"], "installed": installed}, output, query)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command tree and turn errors into az-style messages and exit codes."""
    try:
        cli.main(args=argv, prog_name="acrlocal", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("ERROR: aborted", err=True)
        sys.exit(1)
    except click.UsageError as exc:
        message = exc.format_message()
        click.echo(f"ERROR: {message}", err=True)
        if exc.ctx is not None:
            click.echo(f"Try '{exc.ctx.command_path} --help' for help.", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"ERROR: {exc.format_message()}", err=True)
        sys.exit(1)
    except AcrLocalError as exc:
        click.echo(f"ERROR: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
