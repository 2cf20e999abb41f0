"""``acr token create|list|show|delete`` and ``acr scope-map create|list|show|delete``: repository-scoped access
as ACR's ARM API shapes it (``registries/{r}/tokens``, ``registries/{r}/scopeMaps``, ``generateCredentials``).

``--repository REPO ACTION [ACTION ...]`` (repeatable) becomes ``repositories/REPO/ACTION`` entries of a scope
map, as az builds them. ``token create`` without ``--scope-map`` makes ``<token>-scope-map`` first, then the
token, then (unless ``--no-passwords``) both passwords, which are shown once.
"""

from __future__ import annotations

from typing import Any

import click

from acrlocal.cli.errors import CLIError, CLIUsageError
from acrlocal.cli.framework import GROUP_SEP, AzChoice, AzGroup, confirm, option, warn
from acrlocal.cli.registries import registry_path
from acrlocal.cli.resources import API, flatten
from acrlocal.cli.session import Session

REPO_ACTIONS = ("content/delete", "content/read", "content/write", "metadata/read", "metadata/write")
registry_option = option("--registry", "-r", "registry", required=True, help="The name of the container registry.")
group_option = option("--resource-group", "-g", "resource_group", help="Name of resource group.")
name_option = option("--name", "-n", "name", required=True, help="The name of the token or scope map.")


def _children(registry: str, resource_group: str | None, collection: str) -> tuple[Session, str]:
    """A signed-in session and the ARM path of the registry's ``tokens`` or ``scopeMaps``."""
    session = Session()
    return session, f"{registry_path(session, registry, resource_group)}/{collection}"


def _list(registry: str, resource_group: str | None, collection: str) -> Any:
    session, path = _children(registry, resource_group, collection)
    return [flatten(i) for i in session.arm.list(path, API["tokens"])]


def _show(name: str, registry: str, resource_group: str | None, collection: str) -> Any:
    session, path = _children(registry, resource_group, collection)
    return flatten(session.arm.get(f"{path}/{name}", API["tokens"]))


def _delete(name: str, registry: str, resource_group: str | None, collection: str) -> None:
    session, path = _children(registry, resource_group, collection)
    session.arm.delete(f"{path}/{name}", API["tokens"])


def _parse_repository_args(values: tuple[str, ...]) -> list[str]:
    """The values of the greedy ``--repository`` option, each occurrence ``REPO ACTION...``."""
    actions: list[str] = []
    for group in values:
        parts = group.split(GROUP_SEP)
        if len(parts) < 2:
            raise CLIUsageError("usage error: --repository REPOSITORY ACTION [ACTION ...]")
        repo, *acts = parts
        for act in acts:
            if act not in REPO_ACTIONS:
                raise CLIUsageError(f"'{act}' is not a valid repository action. Allowed values: "
                                    f"{', '.join(REPO_ACTIONS)}.")
            actions.append(f"repositories/{repo}/{act}")
    return actions


@click.group("scope-map", cls=AzGroup)
def scope_map() -> None:
    """Manage scope access maps for Azure Container Registry."""


@scope_map.command("create")
@registry_option
@name_option
@group_option
@option("--repository", "repositories", nargs_star=True, grouped=True,
        help="Repository and its actions: --repository REPO ACTION [ACTION ...] (repeatable).")
@option("--description", help="Description for the scope map.")
def scope_map_create(name: str, registry: str, resource_group: str | None, repositories: tuple[str, ...],
                     description: str | None) -> Any:
    """Create a scope map for a container registry."""
    actions = _parse_repository_args(repositories)
    if not actions:
        raise CLIUsageError("At least one of the following arguments are required: --repository")
    session, scope_maps = _children(registry, resource_group, "scopeMaps")
    body: dict[str, Any] = {"properties": {"actions": actions}}
    if description:
        body["properties"]["description"] = description
    return flatten(session.arm.put(f"{scope_maps}/{name}", API["tokens"], body))


@scope_map.command("list")
@registry_option
@group_option
def scope_map_list(registry: str, resource_group: str | None) -> Any:
    """List the scope maps of a container registry."""
    return _list(registry, resource_group, "scopeMaps")


@scope_map.command("show", show=True)
@name_option
@registry_option
@group_option
def scope_map_show(name: str, registry: str, resource_group: str | None) -> Any:
    """Show a scope map."""
    return _show(name, registry, resource_group, "scopeMaps")


@scope_map.command("delete")
@name_option
@registry_option
@group_option
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
def scope_map_delete(name: str, registry: str, resource_group: str | None, yes: bool) -> Any:
    """Delete a scope map."""
    confirm(f"Deleting the scope map '{name}' will remove its permissions with associated tokens. Proceed?", yes)
    _delete(name, registry, resource_group, "scopeMaps")
    return None


@click.group("token", cls=AzGroup)
def token() -> None:
    """Manage tokens for an Azure Container Registry."""


@token.command("create")
@registry_option
@name_option
@group_option
@option("--scope-map", help="The name or ID of a scope map for the token.")
@option("--repository", "repositories", nargs_star=True, grouped=True,
        help="Repository and its actions: --repository REPO ACTION [ACTION ...] (repeatable).")
@option("--status", type=AzChoice(("enabled", "disabled")), default="enabled", help="The status of the token.")
@option("--no-passwords", is_flag=True, help="Do not generate passwords.")
def token_create(name: str, registry: str, resource_group: str | None, scope_map: str | None,
                 repositories: tuple[str, ...], status: str, no_passwords: bool) -> Any:
    """Create a token associated with a scope map."""
    if bool(scope_map) == bool(repositories):
        raise CLIUsageError("usage error: --scope-map SCOPE_MAP | --repository REPOSITORY ACTION [ACTION ...]")
    actions = _parse_repository_args(repositories) if repositories else []
    session = Session()
    reg = registry_path(session, registry, resource_group)
    scope_map_id = ""
    if scope_map and scope_map.startswith("/"):
        scope_map_id = scope_map
    elif scope_map:
        scope_map_id = str(session.arm.get(f"{reg}/scopeMaps/{scope_map}", API["tokens"])["id"])
    created_scope_map = None
    if not scope_map:
        created = session.arm.put(f"{reg}/scopeMaps/{name}-scope-map", API["tokens"],
                                  {"properties": {"actions": actions,
                                                  "description": f"Token {name}'s scope map"}})
        scope_map_id = created_scope_map = str(created["id"])
    try:
        result: dict[str, Any] = session.arm.put(f"{reg}/tokens/{name}", API["tokens"],
                                                 {"properties": {"scopeMapId": scope_map_id, "status": status}})
    except CLIError:
        if created_scope_map:  # a failed command leaves nothing behind
            session.arm.delete(created_scope_map, API["tokens"])
        raise
    if not no_passwords:
        passwords = []
        for password_name in ("password1", "password2"):
            generated = session.arm.post(f"{reg}/generateCredentials", API["tokens"],
                                         {"tokenId": result["id"], "name": password_name})
            passwords += (generated or {}).get("passwords", [])
        props = result.setdefault("properties", {})
        props.setdefault("credentials", {})["passwords"] = passwords
        warn("Please store your generated credentials safely. Meanwhile you can use it through "
             f"\"docker login {registry}... -u {name} -p <password>\".")
    return flatten(result)


@token.command("list")
@registry_option
@group_option
def token_list(registry: str, resource_group: str | None) -> Any:
    """List the tokens of a container registry."""
    return _list(registry, resource_group, "tokens")


@token.command("show", show=True)
@name_option
@registry_option
@group_option
def token_show(name: str, registry: str, resource_group: str | None) -> Any:
    """Show a token."""
    return _show(name, registry, resource_group, "tokens")


@token.command("delete")
@name_option
@registry_option
@group_option
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
def token_delete(name: str, registry: str, resource_group: str | None, yes: bool) -> Any:
    """Delete a token."""
    confirm(f"Deleting the token '{name}' will invalidate access to anyone using its credentials. Proceed?", yes)
    _delete(name, registry, resource_group, "tokens")
    return None

