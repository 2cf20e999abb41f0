"""``acr create|show|list|delete|update|check-name|login`` and ``acr credential show|renew``, as az's.

Registries are ARM resources (``Microsoft.ContainerRegistry/registries``); ``acr login`` gets an ACR refresh
token through the registry's ``/oauth2/exchange`` and either prints it (``--expose-token``) or hands it to the
local container client. The ``repository``, ``token`` and ``scope-map`` subgroups live in their own modules.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from typing import Any

import click

from acrlocal.cli import acr_auth, docker
from acrlocal.cli.errors import CLIError
from acrlocal.cli.framework import AzChoice, AzGroup, confirm, flag, option, warn
from acrlocal.cli.registries import check_registry_name, get_registry, login_server_of, registry_path
from acrlocal.cli.resources import API, REGISTRY_TYPE, flatten, group_path, list_path, parse_tags, resource_id
from acrlocal.cli.session import Session

SKUS = ("Basic", "Standard", "Premium")
name_option = option("--name", "-n", "name", required=True, help="The name of the container registry.")
group_option = option("--resource-group", "-g", "resource_group", help="Name of resource group.")


def _registry_table(result: Any) -> Any:
    rows = result if isinstance(result, list) else [result]
    out = []
    for r in rows:
        out.append(OrderedDict([
            ("NAME", r.get("name")), ("RESOURCE GROUP", r.get("resourceGroup")),
            ("LOCATION", r.get("location")), ("SKU", (r.get("sku") or {}).get("name")),
            ("LOGIN SERVER", r.get("loginServer")), ("CREATION DATE", r.get("creationDate")),
            ("ADMIN ENABLED", r.get("adminUserEnabled")),
        ]))
    return out


@click.group("acr", cls=AzGroup)
def acr() -> None:
    """Manage private registries with Azure Container Registry (acrlocal's registries)."""


@acr.command("create", table=_registry_table)
@name_option
@option("--resource-group", "-g", "resource_group", required=True, help="Name of resource group.")
@option("--sku", required=True, type=AzChoice(SKUS), help="The SKU of the container registry.")
@option("--location", "-l", help="Location; the resource group's by default.")
@flag("--admin-enabled", help="Indicates whether the admin user is enabled.")
@flag("--anonymous-pull-enabled", help="Allow unauthenticated pulls (Standard and Premium).")
@option("--tags", nargs_star=True, help="Space-separated tags: key[=value].")
def create(name: str, resource_group: str, sku: str, location: str | None, admin_enabled: bool | None,
           anonymous_pull_enabled: bool | None, tags: tuple[str, ...]) -> Any:
    """Create a container registry."""
    check_registry_name(name)
    if re.search(r"[A-Z]", name):
        raise CLIError("argument error: Registry name must use only lowercase.")
    session = Session()
    sub = session.subscription_id
    if not location:
        location = str(session.arm.get(group_path(sub, resource_group), API["groups"])["location"])
    body: dict[str, Any] = {"location": location, "sku": {"name": sku},
                            "properties": {"adminUserEnabled": bool(admin_enabled)}}
    if anonymous_pull_enabled is not None:
        body["properties"]["anonymousPullEnabled"] = anonymous_pull_enabled
    if tags:
        body["tags"] = parse_tags(tags)
    path = resource_id(sub, resource_group, "Microsoft.ContainerRegistry/registries", name)
    return flatten(session.arm.put(path, API["registries"], body))


@acr.command("show", show=True, table=_registry_table)
@name_option
@group_option
def show(name: str, resource_group: str | None) -> Any:
    """Get the details of a container registry."""
    return flatten(get_registry(Session(), name, resource_group))


@acr.command("list", table=_registry_table)
@group_option
def list_(resource_group: str | None) -> Any:
    """List container registries."""
    session = Session()
    items = session.arm.list(list_path(session.subscription_id, resource_group, REGISTRY_TYPE), API["registries"])
    return [flatten(r) for r in items]


@acr.command("delete")
@name_option
@group_option
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
def delete(name: str, resource_group: str | None, yes: bool) -> Any:
    """Delete a container registry."""
    confirm(f"Are you sure you want to delete the registry '{name}'?", yes)
    session = Session()
    session.arm.delete(registry_path(session, name, resource_group), API["registries"])
    return None


@acr.command("update", table=_registry_table)
@name_option
@group_option
@option("--sku", type=AzChoice(SKUS), help="The SKU of the container registry.")
@flag("--admin-enabled", help="Indicates whether the admin user is enabled.")
@flag("--anonymous-pull-enabled", help="Allow unauthenticated pulls (Standard and Premium).")
@option("--tags", nargs_star=True, help="Space-separated tags: key[=value]; replaces the registry's tags.")
def update(name: str, resource_group: str | None, sku: str | None, admin_enabled: bool | None,
           anonymous_pull_enabled: bool | None, tags: tuple[str, ...]) -> Any:
    """Update a container registry."""
    session = Session()
    path = registry_path(session, name, resource_group)
    body: dict[str, Any] = {}
    props: dict[str, Any] = {}
    if sku:
        body["sku"] = {"name": sku}
    if admin_enabled is not None:
        props["adminUserEnabled"] = admin_enabled
    if anonymous_pull_enabled is not None:
        props["anonymousPullEnabled"] = anonymous_pull_enabled
    if props:
        body["properties"] = props
    if tags:
        body["tags"] = parse_tags(tags)
    return flatten(session.arm.patch(path, API["registries"], body))


@acr.command("check-name")
@name_option
def check_name(name: str) -> Any:
    """Check if a container registry name is valid and available for use."""
    session = Session()
    return session.arm.post(
        f"/subscriptions/{session.subscription_id}/providers/Microsoft.ContainerRegistry/checkNameAvailability",
        API["registries"], {"name": name, "type": "Microsoft.ContainerRegistry/registries"})


@acr.group("credential", cls=AzGroup)
def credential() -> None:
    """Manage login credentials (the admin user) of a container registry."""


def _admin_registry(session: Session, name: str, group: str | None) -> str:
    registry = get_registry(session, name, group)
    if not (registry.get("properties") or {}).get("adminUserEnabled"):  # the raw ARM shape
        raise CLIError(f"Run 'acrlocal acr update -n {name} --admin-enabled true' to enable admin first.")
    return str(registry["id"])


@credential.command("show")
@name_option
@group_option
def credential_show(name: str, resource_group: str | None) -> Any:
    """Get the login credentials for a container registry."""
    session = Session()
    rid = _admin_registry(session, name, resource_group)
    return session.arm.post(f"{rid}/listCredentials", API["registries"])


@credential.command("renew")
@name_option
@group_option
@option("--password-name", required=True, type=AzChoice(("password", "password2")),
        help="The name of password to regenerate.")
def credential_renew(name: str, resource_group: str | None, password_name: str) -> Any:
    """Regenerate login credentials for a container registry."""
    session = Session()
    rid = _admin_registry(session, name, resource_group)
    return session.arm.post(f"{rid}/regenerateCredential", API["registries"], {"name": password_name})


@acr.command("login")
@name_option
@group_option
@option("--username", "-u", help="The username used to log into a container registry (the admin user).")
@option("--password", "-p", help="The password used to log into a container registry.")
@option("--expose-token", "-t", is_flag=True, help="Expose an access token instead of logging in through Docker.")
@option("--suffix", help="The tenant suffix in the registry login server (accepted, ignored).")
def login(name: str, resource_group: str | None, username: str | None, password: str | None,
          expose_token: bool, suffix: str | None) -> Any:
    """Log in to a container registry through the local container client, or print a token."""
    check_registry_name(name)
    if password and not username:
        raise CLIError("Please also specify username if password is specified.")
    if expose_token and (username or password):
        raise CLIError("`--expose-token` cannot be combined with `--username` or `--password`.")
    command = None
    if not expose_token:
        try:
            command = docker.docker_command()
        except CLIError:
            warn(f"You may want to use 'acrlocal acr login -n {name} --expose-token' to get a refresh token, "
                 "which does not require Docker to be installed.")
            raise
    session = Session()
    login_server = login_server_of(session, name, resource_group)
    if username and password:
        user, secret = username, password
    else:
        tenant = str(session.account()["tenantId"])
        secret, _ = acr_auth.refresh_token(session.http, session.credential(), tenant, login_server)
        user = acr_auth.EMPTY_GUID
    if expose_token:
        warn("Note: The token in both the accessToken and refreshToken fields is an ACR Refresh Token, not an ACR "
             "Access Token. This ACR Refresh Token cannot be used directly to authenticate with registry APIs such "
             "as pushing/pulling images and listing repositories/tags. This ACR Refresh Token must be subsequently "
             "exchanged for an ACR Access Token.")
        warn("You can perform manual login using the provided refresh token below, for example: 'docker login "
             f"loginServer -u {acr_auth.EMPTY_GUID} -p refreshToken'")
        return {"accessToken": secret, "loginServer": login_server, "refreshToken": secret,
                "username": acr_auth.EMPTY_GUID}
    assert command is not None
    docker.login(command, login_server, user, secret)
    return None


def _subgroups() -> None:
    from acrlocal.cli.commands import acr_repository, acr_token

    acr.add_command(acr_repository.repository)
    acr.add_command(acr_token.token)
    acr.add_command(acr_token.scope_map)


_subgroups()
