"""``ad sp create-for-rbac``: a service principal with a client secret (through Microsoft Graph, as az does:
``POST /v1.0/applications``, ``POST /v1.0/servicePrincipals``, ``POST /v1.0/applications/{id}/addPassword``), then a
role assignment on each ``--scopes`` entry when ``--role`` is given. Output: ``appId``, ``displayName``,
``password``, ``tenant``. Without a Graph endpoint on the control plane, a clear error and nothing created.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from acrlocal.cli.errors import CLIError, CLIUsageError, HttpResponseError
from acrlocal.cli.framework import AzGroup, option, warn
from acrlocal.cli.session import Session


@click.group("ad", cls=AzGroup)
def ad() -> None:
    """Manage Microsoft Entra ID (the local directory) objects."""


@ad.group("sp", cls=AzGroup)
def sp() -> None:
    """Manage service principals."""


@sp.command("create-for-rbac")
@option("--name", "-n", "name", help="Display name of the service principal.")
@option("--role", help="Role of the service principal (with --scopes).")
@option("--scopes", nargs_star=True, help="Space-separated scopes the role assignment applies to.")
@option("--years", type=int, help="Number of years for which the credentials will be valid (default 1).")
def create_for_rbac(name: str | None, role: str | None, scopes: tuple[str, ...], years: int | None) -> Any:
    """Create a service principal and configure its access to Azure resources."""
    scopes = tuple(s for s in scopes if s)
    if role and not scopes:
        raise CLIUsageError("usage error: --role needs --scopes")
    session = Session()
    display = name or f"azure-cli-{dt.datetime.now(dt.UTC).strftime('%Y-%m-%d-%H-%M-%S')}"
    graph = session.graph
    try:
        app = graph.post("v1.0/applications", "", {"displayName": display})
    except HttpResponseError as exc:
        if exc.status == 404 and not isinstance(exc.body, dict):
            raise CLIError("This acrlocal control plane offers no Microsoft Graph endpoint for creating service "
                           "principals (POST /v1.0/applications answered 404); nothing was created.") from None
        raise
    graph.post("v1.0/servicePrincipals", "", {"appId": app["appId"]})
    end = dt.datetime.now(dt.UTC) + dt.timedelta(days=365 * (years or 1))
    secret = graph.post(f"v1.0/applications/{app['id']}/addPassword", "",
                        {"passwordCredential": {"displayName": "rbac", "endDateTime": end.isoformat()}})
    if role:
        from acrlocal.cli.commands.role import create_assignment, resolve_assignee

        principal_id, principal_type = resolve_assignee(session, str(app["appId"]))
        for scope in scopes:
            create_assignment(session, principal_id, principal_type or "ServicePrincipal", role, scope)
    warn("The output includes credentials that you must protect. Be sure that you do not include these credentials "
         "in your code or check the credentials into your source control.")
    return {"appId": app["appId"], "displayName": display, "password": secret["secretText"],
            "tenant": session.account()["tenantId"]}
