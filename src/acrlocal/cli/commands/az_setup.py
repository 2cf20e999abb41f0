"""``acrlocal az-setup``: point Microsoft's az CLI at this acrlocal (see :mod:`acrlocal.cli.azcloud`).

Without ``--apply`` it prints shell lines (the environment, the az commands, the sign-in); with ``-o json`` (or
another explicit ``--output``) the same as a document. ``--apply`` runs the az commands itself in
``--config-dir`` (default ``$AZURE_CONFIG_DIR``, else az's own ``~/.azure``): ``cloud register``, or ``cloud
update`` when the cloud exists, ``cloud set`` and ``config set``; then it prints the environment to export. A
failing az command stops there with az's own error text (a cloud already registered stays as it was); an az that
cannot be found is an error naming ``--az``.

Works on the host (the running server's ``server.json``) and in a VM (``ACRLOCAL_ENDPOINT`` and the CA from
``ACRLOCAL_CA_BUNDLE`` / ``REQUESTS_CA_BUNDLE``); in a VM the sign-in it suggests is ``az login --identity``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import click

from acrlocal.cli.azcloud import CLOUD_NAME, CLOUD_SHELL_VAR, AzCloudSetup, MetadataError, admin_login, identity_login
from acrlocal.cli.client import Http
from acrlocal.cli.endpoints import Endpoints, locate
from acrlocal.cli.errors import CLIError
from acrlocal.cli.framework import AzCommand, option, warn

METADATA_API = "2022-09-01"
AZ_TIMEOUT_S = 300
VM_MARKERS = ("AZURE_POD_IDENTITY_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "ACRLOCAL_VM_NAME")


def _login_for(endpoints: Endpoints) -> list[str]:
    if any(os.environ.get(v) for v in VM_MARKERS):
        return identity_login()
    admin_path = endpoints.status.get("adminCredentialPath")
    if admin_path:
        try:
            admin = json.loads(Path(admin_path).read_text())
            return admin_login(str(admin["clientId"]), str(admin["tenantId"]), str(admin_path))
        except (OSError, ValueError, KeyError):
            pass  # another user's server: no administrator credential to offer
    return ["az", "login", "--service-principal", "--tenant", "<tenant>", "--username", "<client id>",
            "--password", "<secret>"]


def plan(cloud_name: str) -> AzCloudSetup:
    """The set-up for the server the CLI finds (see :func:`~acrlocal.cli.endpoints.locate`), from its
    ``/metadata/endpoints``. Raises :class:`CLIError` when the server is not running, its CA is unknown here, or
    it answers something that is not a cloud description."""
    endpoints = locate()
    if not isinstance(endpoints.verify, str):
        raise CLIError("acrlocal's CA certificate is not known here: set ACRLOCAL_CA_BUNDLE (or REQUESTS_CA_BUNDLE) "
                       "to its path (`acrlocal status` prints it as caPath).")
    response = Http(endpoints.verify).request(
        "GET", endpoints.resource_manager + "metadata/endpoints", params={"api-version": METADATA_API})
    if response.status_code != 200:
        raise CLIError(f"{endpoints.resource_manager}metadata/endpoints answered {response.status_code}: is this an "
                       "acrlocal server?")
    try:
        setup = AzCloudSetup.from_metadata(response.json(), endpoints.verify, login=_login_for(endpoints),
                                           cloud_name=cloud_name)
    except (MetadataError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    return setup


def find_az(az: str | None) -> str:
    found = shutil.which(az or "az")
    if found is None:
        raise CLIError(f"Microsoft's az CLI was not found ({az or 'az'} is not on PATH or not executable). Install it "
                       "(`pip install azure-cli`) or name it with --az PATH.")
    return found


class AzRunner:
    """Runs az with the set-up's environment in one config directory; output is captured, never echoed."""

    def __init__(self, az: str, setup: AzCloudSetup, config_dir: str | None) -> None:
        self.az = az
        self.env = {k: v for k, v in os.environ.items() if k != CLOUD_SHELL_VAR}
        self.env.update(setup.environment())
        if config_dir:
            self.env["AZURE_CONFIG_DIR"] = config_dir

    def run(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run([self.az, *args], env=self.env, capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL, timeout=AZ_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise CLIError(f"`az {shlex.join(args)}` did not finish within {AZ_TIMEOUT_S}s.") from None
        except OSError as exc:
            raise CLIError(f"cannot run {self.az}: {exc.strerror}.") from None

    def check(self, args: list[str]) -> str:
        proc = self.run(args)
        if proc.returncode != 0:
            raise CLIError(f"`az {shlex.join(args)}` failed (exit code {proc.returncode}):\n"
                           f"{proc.stderr.strip()[-2000:]}")
        return proc.stdout


def apply(setup: AzCloudSetup, runner: AzRunner) -> None:
    """Register (or update) the cloud, select it, set the config value. A cloud whose endpoints moved (another
    port) keeps az's cached tokens, which name the old issuer: the user is told to sign in again."""
    shown = runner.run(["cloud", "show", "--name", setup.cloud_name, "--output", "json"])
    existing = None
    if shown.returncode == 0:
        try:
            existing = json.loads(shown.stdout)
        except ValueError:
            existing = {}
    for args in setup.commands(update=existing is not None):
        runner.check(args)
    if existing:
        before = str(existing.get("endpoints", {}).get("resourceManager") or "")
        if before and before.rstrip("/") != setup.resource_manager.rstrip("/"):
            warn(f"cloud '{setup.cloud_name}' pointed at {before}; az keeps tokens by host name (not port), so sign "
                 "in again: `az account clear`, then " + setup.login_line())


@click.command("az-setup", cls=AzCommand)
@option("--apply", "do_apply", is_flag=True,
        help="Run the az commands (cloud register or update, cloud set, config set) instead of printing them.")
@option("--config-dir", help="az's configuration directory to set up (default: $AZURE_CONFIG_DIR, else ~/.azure).")
@option("--az", "az_path", envvar="ACRLOCAL_AZ", help="The az executable (default: az on PATH; $ACRLOCAL_AZ).")
@option("--cloud-name", default=CLOUD_NAME, help=f"Name of the cloud to register (default {CLOUD_NAME}).")
def az_setup(do_apply: bool, config_dir: str | None, az_path: str | None, cloud_name: str) -> Any:
    """Print (or with --apply, run) what points Microsoft's az CLI at this acrlocal."""
    setup = plan(cloud_name)
    if do_apply:
        config_dir = config_dir or os.environ.get("AZURE_CONFIG_DIR") or None
        apply(setup, AzRunner(find_az(az_path), setup, config_dir))
    ctx = click.get_current_context()
    if ctx.get_parameter_source("output") in (None, click.core.ParameterSource.DEFAULT):
        click.echo(setup.script(config_dir=config_dir, applied=do_apply), nl=False)
        return None
    return setup.as_dict(config_dir=config_dir, applied=do_apply)
