"""``group create|show|list|delete|exists|update``: resource groups, as az's ``az group``."""

from __future__ import annotations

from typing import Any

import click

from acrlocal.cli.framework import AzGroup, confirm, option
from acrlocal.cli.resources import API, group_path, parse_tags
from acrlocal.cli.session import Session

name_option = option("--name", "-n", "--resource-group", "-g", "name", required=True,
                     help="Name of the resource group.")


def _group_table(result: Any) -> Any:
    rows = result if isinstance(result, list) else [result]
    return [{"Name": r.get("name"), "Location": r.get("location"),
             "Status": (r.get("properties") or {}).get("provisioningState")} for r in rows]


@click.group("group", cls=AzGroup)
def group() -> None:
    """Manage resource groups."""


@group.command("create", table=_group_table)
@name_option
@option("--location", "-l", required=True, help="Location, e.g. westus (acrlocal accepts any).")
@option("--tags", nargs_star=True, help="Space-separated tags: key[=value].")
@option("--managed-by", help="The ID of the resource that manages this resource group.")
def create(name: str, location: str, tags: tuple[str, ...], managed_by: str | None) -> Any:
    """Create a new resource group (or update an existing one's tags)."""
    session = Session()
    body: dict[str, Any] = {"location": location}
    if tags:
        body["tags"] = parse_tags(tags)
    if managed_by:
        body["managedBy"] = managed_by
    return session.arm.put(group_path(session.subscription_id, name), API["groups"], body)


@group.command("show", show=True, table=_group_table)
@name_option
def show(name: str) -> Any:
    """Get a resource group."""
    session = Session()
    return session.arm.get(group_path(session.subscription_id, name), API["groups"])


@group.command("list", table=_group_table)
@option("--tag", help="A single tag in 'key[=value]' format.")
def list_(tag: str | None) -> Any:
    """List resource groups."""
    session = Session()
    params = None
    if tag:
        key, _, value = tag.partition("=")
        params = {"$filter": f"tagName eq '{key}' and tagValue eq '{value}'" if value else f"tagName eq '{key}'"}
    return session.arm.list(f"/subscriptions/{session.subscription_id}/resourcegroups", API["groups"], params)


@group.command("delete")
@name_option
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
@option("--no-wait", is_flag=True, help="Do not wait for the long-running operation to finish.")
def delete(name: str, yes: bool, no_wait: bool) -> Any:
    """Delete a resource group and everything in it."""
    confirm("Are you sure you want to perform this operation?", yes)
    session = Session()
    session.arm.delete(group_path(session.subscription_id, name), API["groups"], wait=not no_wait)
    return None


@group.command("exists")
@name_option
def exists(name: str) -> Any:
    """Check if a resource group exists: true or false."""
    session = Session()
    response = session.arm.send("HEAD", group_path(session.subscription_id, name), api_version=API["groups"])
    if response.status_code == 204 or response.status_code == 200:
        return True
    if response.status_code == 404:
        return False
    from acrlocal.cli.client import arm_error

    raise arm_error(response)


@group.command("update", table=_group_table)
@name_option
@option("--tags", nargs_star=True, help="Space-separated tags: key[=value]; replaces the group's tags.")
def update(name: str, tags: tuple[str, ...]) -> Any:
    """Update a resource group's tags."""
    session = Session()
    return session.arm.patch(group_path(session.subscription_id, name), API["groups"], {"tags": parse_tags(tags)})
