"""Where the server is, for the CLI: the endpoints a command talks to and the CA it trusts.

Inside a VM (or anywhere the data directory is not at hand) ``ACRLOCAL_ENDPOINT`` names the shared https endpoint
and ``ACRLOCAL_CA_BUNDLE`` (else ``REQUESTS_CA_BUNDLE``) the CA, as a cloud registration names them for az. On the
host the running server's ``server.json`` (what ``acrlocal status`` prints) gives both; a data directory without
a live server is :class:`~acrlocal.cli.errors.ServerNotRunning`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acrlocal import publiccloud
from acrlocal.cli.errors import ServerNotRunning
from acrlocal.config import Settings

ENV_ENDPOINT = "ACRLOCAL_ENDPOINT"
ENV_CA_BUNDLE = "ACRLOCAL_CA_BUNDLE"
ARM_RESOURCE = "https://management.core.windows.net/"
ACR_RESOURCE = "https://containerregistry.azure.net"
GRAPH_RESOURCE = "https://graph.microsoft.com/"


@dataclass(frozen=True)
class Endpoints:
    """``resource_manager`` ends with ``/`` (as az's cloud endpoint does); ``authority`` does not."""

    resource_manager: str
    authority: str
    verify: str | bool
    data_dir: Path | None = None
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def graph(self) -> str:
        return self.authority

    @property
    def identity(self) -> dict[str, str]:
        """Which server this is, as a profile records it: the endpoint, and on the host the server's default
        tenant (made anew with each data directory, so a reset or another data directory on the same port is
        another server)."""
        found = {"endpoint": self.authority.lower()}
        if tenant := self.status.get("tenantId"):
            found["tenantId"] = str(tenant).lower()
        return found

    def is_same_server(self, recorded: Any) -> bool:
        """Whether ``recorded`` (an :attr:`identity` saved earlier) names this server."""
        return isinstance(recorded, dict) and all(str(recorded.get(k, "")).lower() == v
                                                  for k, v in self.identity.items())

    @property
    def environment_name(self) -> str:
        """``AzureCloud`` where the server is reached by Azure's own names (inside a VM), else ``AcrLocal``."""
        return "AzureCloud" if publiccloud.is_azure_host(self.resource_manager.split("://", 1)[-1].split("/", 1)[0]) \
            else "AcrLocal"


def read_status(settings: Settings) -> dict[str, Any]:
    """The running server's ``server.json``; :class:`ServerNotRunning` if no server runs on this data dir."""
    try:
        status: dict[str, Any] = json.loads(settings.state_file.read_text())
    except FileNotFoundError:
        raise ServerNotRunning(
            f"acrlocal is not running (no server for data dir {settings.data_dir}). Start it with `acrlocal up`."
        ) from None
    except (OSError, ValueError) as exc:
        raise ServerNotRunning(f"cannot read {settings.state_file}: {exc}. Is acrlocal running?") from None
    try:
        os.kill(int(status["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        raise ServerNotRunning(
            f"acrlocal is not running (stale state for data dir {settings.data_dir}). Start it with `acrlocal up`."
        ) from None
    except PermissionError:
        pass
    return status


def locate(settings: Settings | None = None) -> Endpoints:
    """The endpoints from the environment, else from the server running on the data directory."""
    if endpoint := os.environ.get(ENV_ENDPOINT):
        base = endpoint.rstrip("/")
        ca = os.environ.get(ENV_CA_BUNDLE) or os.environ.get("REQUESTS_CA_BUNDLE")
        return Endpoints(base + "/", base, ca or True)
    settings = settings or Settings()
    status = read_status(settings)
    endpoints = status.get("endpoints", {})
    return Endpoints(
        resource_manager=str(endpoints.get("resourceManager") or endpoints["shared"] + "/"),
        authority=str(endpoints.get("activeDirectory") or endpoints["shared"]).rstrip("/"),
        verify=str(status["caPath"]),
        data_dir=settings.data_dir,
        status=status,
    )
