"""``identity create|show|list|delete`` and ``identity federated-credential create|show|list|delete``: user-assigned
managed identities (``Microsoft.ManagedIdentity/userAssignedIdentities``), printed flattened as az prints them
(``clientId``, ``principalId``, ``tenantId`` at the top)."""

from __future__ import annotations

from typing import Any

import click

from acrlocal.cli.framework import AzGroup, confirm, option
from acrlocal.cli.resources import API, IDENTITY_TYPE, flatten, group_path, list_path, parse_tags, resource_id
from acrlocal.cli.session import Session

name_option = option("--name", "-n", "--resource-name", "name", required=True, help="The name of the identity.")
group_required = option("--resource-group", "-g", "resource_group", required=True, help="Name of resource group.")
AUDIENCE = "api://AzureADTokenExchange"


def _identity_table(result: Any) -> Any:
    rows = result if isinstance(result, list) else [result]
    return [{"Name": r.get("name"), "ResourceGroup": r.get("resourceGroup"), "Location": r.get("location"),
             "ClientId": r.get("clientId"), "PrincipalId": r.get("principalId")} for r in rows]


@click.group("identity", cls=AzGroup)
def identity() -> None:
    """Manage Managed Identities."""


def _path(session: Session, group: str, name: str) -> str:
    return resource_id(session.subscription_id, group, IDENTITY_TYPE, name)


@identity.command("create", table=_identity_table)
@name_option
@group_required
@option("--location", "-l", help="Location; the resource group's by default.")
@option("--tags", nargs_star=True, help="Space-separated tags: key[=value].")
def create(name: str, resource_group: str, location: str | None, tags: tuple[str, ...]) -> Any:
    """Create an identity."""
    session = Session()
    if not location:
        location = str(session.arm.get(group_path(session.subscription_id, resource_group), API["groups"])["location"])
    body: dict[str, Any] = {"location": location}
    if tags:
        body["tags"] = parse_tags(tags)
    return flatten(session.arm.put(_path(session, resource_group, name), API["identities"], body))


@identity.command("show", show=True, table=_identity_table)
@name_option
@group_required
def show(name: str, resource_group: str) -> Any:
    """Show an identity."""
    session = Session()
    return flatten(session.arm.get(_path(session, resource_group, name), API["identities"]))


@identity.command("list", table=_identity_table)
@option("--resource-group", "-g", "resource_group", help="Name of resource group.")
def list_(resource_group: str | None) -> Any:
    """List identities in a resource group or the subscription."""
    session = Session()
    return flatten(session.arm.list(list_path(session.subscription_id, resource_group, IDENTITY_TYPE),
                                    API["identities"]))


@identity.command("delete")
@name_option
@group_required
def delete(name: str, resource_group: str) -> Any:
    """Delete an identity (its tokens stop working, its role assignments match nothing)."""
    session = Session()
    session.arm.delete(_path(session, resource_group, name), API["identities"])
    return None


@identity.group("federated-credential", cls=AzGroup)
def federated_credential() -> None:
    """Manage federated identity credentials of a user-assigned identity."""


fic_name = option("--name", "-n", "name", required=True, help="The name of the federated identity credential.")
identity_name = option("--identity-name", "identity_name", required=True, help="The name of the identity.")


def _fic_path(session: Session, group: str, identity_name: str, name: str | None = None) -> str:
    base = f"{_path(session, group, identity_name)}/federatedIdentityCredentials"
    return f"{base}/{name}" if name else base


@federated_credential.command("create")
@fic_name
@identity_name
@group_required
@option("--issuer", required=True, help="The openId connect metadata URL of the issuer.")
@option("--subject", required=True, help="The identifier of the external identity.")
@option("--audiences", nargs_star=True, help=f"The audiences of the tokens (default {AUDIENCE}).")
def fic_create(name: str, identity_name: str, resource_group: str, issuer: str, subject: str,
               audiences: tuple[str, ...]) -> Any:
    """Create a federated identity credential under an existing user-assigned identity."""
    session = Session()
    body = {"properties": {"issuer": issuer, "subject": subject, "audiences": list(audiences) or [AUDIENCE]}}
    return flatten(session.arm.put(_fic_path(session, resource_group, identity_name, name), API["identities"], body))


@federated_credential.command("show", show=True)
@fic_name
@identity_name
@group_required
def fic_show(name: str, identity_name: str, resource_group: str) -> Any:
    """Show a federated identity credential."""
    session = Session()
    return flatten(session.arm.get(_fic_path(session, resource_group, identity_name, name), API["identities"]))


@federated_credential.command("list")
@identity_name
@group_required
def fic_list(identity_name: str, resource_group: str) -> Any:
    """List the federated identity credentials of a user-assigned identity."""
    session = Session()
    return flatten(session.arm.list(_fic_path(session, resource_group, identity_name), API["identities"]))


@federated_credential.command("delete")
@fic_name
@identity_name
@group_required
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
def fic_delete(name: str, identity_name: str, resource_group: str, yes: bool) -> Any:
    """Delete a federated identity credential."""
    confirm("Are you sure you want to perform this operation?", yes)
    session = Session()
    session.arm.delete(_fic_path(session, resource_group, identity_name, name), API["identities"])
    return None
