"""``acrlocal az <args>``: Microsoft's az CLI, run against this server with a profile of its own.

The profile is ``<acrlocal config dir>/az`` (``$ACRLOCAL_CONFIG_DIR/az``, else ``~/.acrlocal/az``), used as az's
``AZURE_CONFIG_DIR``: the user's own ``~/.azure`` is never read or written. On first use, and whenever the
server changed (another port, another data directory, or the data directory deleted and made again: the
endpoint and the server's default tenant are recorded), the profile is set up as ``az-setup --apply`` does it
(cloud registered or updated, selected, ``core.instance_discovery=false``) and, on the host that runs the server,
signed in as the local administrator (``<data dir>/admin.json``); az's cached tokens of an older endpoint are
cleared first. Then az runs with ``REQUESTS_CA_BUNDLE`` = the server's CA and no telemetry, with every argument
as given; its exit code is the command's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from acrlocal.cli.azcloud import CLOUD_NAME, CLOUD_SHELL_VAR
from acrlocal.cli.commands.az_setup import AzRunner, apply, find_az, plan
from acrlocal.cli.endpoints import locate
from acrlocal.cli.errors import CLIError
from acrlocal.cli.profile import config_dir

MARKER = "acrlocal-endpoint.json"


def profile_dir() -> Path:
    return config_dir() / "az"


def _prepare(az: str, directory: Path) -> dict[str, str]:
    """Set the profile up for the server found now (once per endpoint); the environment az then runs with."""
    setup = plan(CLOUD_NAME)
    runner = AzRunner(az, setup, str(directory))
    marker = directory / MARKER
    try:
        known = json.loads(marker.read_text())
    except (OSError, ValueError):
        known = {}
    server = {"resourceManager": setup.resource_manager, "tenantId": str(locate().status.get("tenantId") or "")}
    if known != server:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        if known:  # another server (port, data directory, or this one made anew): its tokens name another issuer
            runner.run(["account", "clear"])
        apply(setup, runner)
        admin = _admin_credential()
        if admin is not None:
            runner.check(["login", "--service-principal", "--tenant", admin["tenantId"], "--username",
                          admin["clientId"], "--password", admin["clientSecret"], "--allow-no-subscriptions",
                          "--output", "none"])
        marker.write_text(json.dumps(server) + "\n")
    return runner.env


def _admin_credential() -> dict[str, str] | None:
    """The local administrator's credential when this host runs the server (``admin.json`` of its data dir)."""
    path = locate().status.get("adminCredentialPath")
    if not path:
        return None
    try:
        data: dict[str, str] = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if {"tenantId", "clientId", "clientSecret"} <= data.keys() else None


@click.command("az", context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                       "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def az(args: tuple[str, ...]) -> None:
    """Run Microsoft's az CLI against this acrlocal with a profile of its own (never ~/.azure).

    Every argument goes to az as given, including az's global arguments --query, --output, --only-show-errors,
    --debug, --verbose and --subscription; `acrlocal az -h` alone shows this text (az's own help: `acrlocal az
    <group> -h`). The profile is ~/.acrlocal/az ($ACRLOCAL_CONFIG_DIR/az); the az run is $ACRLOCAL_AZ, else az on
    PATH.
    """
    if args in (("-h",), ("--help",)):
        click.echo(click.get_current_context().get_help())
        return
    exe = find_az(os.environ.get("ACRLOCAL_AZ"))
    directory = profile_dir()
    env = _prepare(exe, directory)
    env.pop(CLOUD_SHELL_VAR, None)
    env["AZURE_CONFIG_DIR"] = str(directory)
    try:
        os.execvpe(exe, [exe, *args], env)
    except OSError as exc:
        raise CLIError(f"cannot run {exe}: {exc.strerror}.") from None
