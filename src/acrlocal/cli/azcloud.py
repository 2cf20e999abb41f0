"""What points Microsoft's az CLI at acrlocal: a custom cloud, two environment variables, one config value (pure).

az talks to one *cloud* at a time, named in its config directory (``AZURE_CONFIG_DIR``, default ``~/.azure``):

- ``az cloud register`` with the ARM endpoint (https, the shared port), the Entra authority (the same URL), the AD
  resource id ``https://management.core.windows.net/`` (the audience az asks tokens for, as in Azure) and the ACR
  login-server suffix (``.localhost:<shared port>``: az falls back to ``<name><suffix>`` for a registry the caller
  cannot read through ARM); az reads everything else from ``/metadata/endpoints`` (Microsoft Graph is this
  server too);
- ``az cloud set``; and ``az config set core.instance_discovery=false``, because msal otherwise asks
  login.microsoftonline.com whether the authority is known before the first service-principal sign-in;
- ``REQUESTS_CA_BUNDLE=<acrlocal's CA>`` (every https call az makes, through requests and azure-core) and
  ``AZURE_CORE_COLLECT_TELEMETRY=false``. ``ACC_CLOUD`` must stay unset: it switches ``az login --identity`` to
  Cloud Shell's flow.

:class:`AzCloudSetup` holds those values; :meth:`AzCloudSetup.script` renders them as shell lines.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from acrlocal.errors import AcrLocalError

CLOUD_NAME = "AcrLocal"
AD_RESOURCE_ID = "https://management.core.windows.net/"
TELEMETRY_VAR = "AZURE_CORE_COLLECT_TELEMETRY"
CLOUD_SHELL_VAR = "ACC_CLOUD"
CONFIG_VALUES = ("core.instance_discovery=false",)


class MetadataError(AcrLocalError, ValueError):
    """``/metadata/endpoints`` answered something that is not a cloud description."""


@dataclass(frozen=True)
class AzCloudSetup:
    """``resource_manager`` ends with ``/``, ``active_directory`` does not (as ``az cloud show`` prints them)."""

    resource_manager: str
    active_directory: str
    acr_suffix: str
    ca_path: str
    cloud_name: str = CLOUD_NAME
    ad_resource_id: str = AD_RESOURCE_ID
    #: The sign-in az needs next: ``az login --identity`` in a VM, the local administrator on the host.
    login: list[str] = field(default_factory=list)

    @classmethod
    def from_metadata(cls, metadata: Any, ca_path: str, *, login: list[str] | None = None,
                      cloud_name: str = CLOUD_NAME) -> AzCloudSetup:
        """From a ``/metadata/endpoints?api-version=2022-09-01`` document. Raises :class:`MetadataError` naming
        the missing field."""
        try:
            resource_manager = str(metadata["resourceManager"])
            active_directory = str(metadata["authentication"]["loginEndpoint"])
            suffix = str(metadata["suffixes"]["acrLoginServer"])
        except (KeyError, TypeError) as exc:
            raise MetadataError(f"/metadata/endpoints has no {exc} field: is this an acrlocal server?") from None
        return cls(
            resource_manager=resource_manager.rstrip("/") + "/",
            active_directory=active_directory.rstrip("/"),
            acr_suffix=suffix if suffix.startswith(".") else "." + suffix,  # az adds the dot too
            ca_path=ca_path,
            cloud_name=cloud_name,
            login=list(login or []),
        )

    def cloud_args(self, verb: str = "register") -> list[str]:
        """``cloud register`` (or ``cloud update``) with every endpoint given explicitly."""
        return ["cloud", verb, "--name", self.cloud_name,
                "--endpoint-resource-manager", self.resource_manager,
                "--endpoint-active-directory", self.active_directory,
                "--endpoint-active-directory-resource-id", self.ad_resource_id,
                "--suffix-acr-login-server-endpoint", self.acr_suffix]

    def commands(self, *, update: bool = False) -> list[list[str]]:
        """The az commands, in order (arguments after ``az``)."""
        return [
            self.cloud_args("update" if update else "register"),
            ["cloud", "set", "--name", self.cloud_name],
            ["config", "set", *CONFIG_VALUES, "--only-show-errors"],
        ]

    def environment(self) -> dict[str, str]:
        return {"REQUESTS_CA_BUNDLE": self.ca_path, TELEMETRY_VAR: "false"}

    def exports(self, config_dir: str | None = None) -> list[str]:
        env = self.environment()
        if config_dir:
            env["AZURE_CONFIG_DIR"] = config_dir
        return [f"export {k}={shlex.quote(v)}" for k, v in env.items()] + [f"unset {CLOUD_SHELL_VAR}"]

    def script(self, *, config_dir: str | None = None, applied: bool = False) -> str:
        """Shell lines a user can paste or ``eval``: the environment, then (unless ``applied``) the az commands,
        then the sign-in as a comment."""
        lines = [f"# Microsoft's az CLI -> acrlocal at {self.resource_manager} (cloud '{self.cloud_name}')"]
        if not applied:
            lines.append("# Run these lines (or `acrlocal az-setup --apply` runs the az commands for you):")
        lines += self.exports(config_dir)
        if not applied:
            lines += ["az " + shlex.join(c) for c in self.commands()]
        if self.login:
            lines.append("# then sign in:")
            lines.append("#   " + self.login_line())
        return "\n".join(lines) + "\n"

    def login_line(self) -> str:
        return " ".join(self.login)

    def as_dict(self, *, config_dir: str | None = None, applied: bool = False) -> dict[str, Any]:
        return {
            "cloud": {"name": self.cloud_name, "endpointResourceManager": self.resource_manager,
                      "endpointActiveDirectory": self.active_directory,
                      "endpointActiveDirectoryResourceId": self.ad_resource_id,
                      "suffixAcrLoginServerEndpoint": self.acr_suffix},
            "environment": self.environment(),
            "configDir": config_dir,
            "commands": [["az", *c] for c in self.commands()],
            "login": self.login_line(),
            "applied": applied,
        }


def admin_login(client_id: str, tenant_id: str, admin_json: str) -> list[str]:
    """The local administrator's sign-in, reading the secret from ``admin.json`` when the line runs (the secret
    itself is never printed)."""
    reader = f"python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[\"clientSecret\"])' " \
             f"{shlex.quote(admin_json)}"
    return ["az", "login", "--service-principal", "--tenant", tenant_id, "--username", client_id,
            "--password", f'"$({reader})"']


def identity_login() -> list[str]:
    return ["az", "login", "--identity"]
