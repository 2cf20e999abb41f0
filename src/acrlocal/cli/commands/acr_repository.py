"""``acr repository list|show|show-tags|show-manifests|delete|update``: the registry's ``/acr/v1`` API (and
``/v2/_catalog``), reached with an ACR access token from the exchange flow, exactly as az does.

Locks: ``update --write-enabled/--delete-enabled/--read-enabled/--list-enabled`` PATCHes the repository's (or an
image's) ``changeableAttributes``. Registry errors are az's: ``Error: <the registry's message>``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import click

from acrlocal.cli import acr_auth
from acrlocal.cli.errors import CLIError
from acrlocal.cli.framework import AzGroup, confirm, flag, option
from acrlocal.cli.registries import login_server_of
from acrlocal.cli.session import Session

name_option = option("--name", "-n", "name", required=True, help="The name of the container registry.")
group_option = option("--resource-group", "-g", "resource_group", help="Name of resource group (ignored).")
username_option = option("--username", "-u", help="The username used to log into a container registry.")
password_option = option("--password", "-p", help="The password used to log into a container registry.")
PAGE = 100
NEXT_LINK = re.compile(r"<([^>]+)>\s*;\s*rel=\"?next\"?")


class RegistryAPI:
    """Calls to one registry's data plane with one ACR access token."""

    def __init__(self, session: Session, registry_name: str, scope: str, username: str | None = None,
                 password: str | None = None) -> None:
        self.session = session
        self.login_server = login_server_of(session, registry_name, None)
        if username and password:
            import base64

            self.auth = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        else:
            tenant = str(session.account()["tenantId"])
            token = acr_auth.access_token(session.http, session.credential(), tenant, self.login_server, scope)
            self.auth = f"Bearer {token}"

    def request(self, method: str, path: str, *, params: dict[str, str] | None = None,
                body: Any = None) -> tuple[Any, str | None]:
        url = path if path.startswith("https://") else f"https://{self.login_server}{path}"
        response = self.session.http.request(method, url, params=params, json=body,
                                             headers={"Authorization": self.auth})
        if response.status_code in (200, 201, 202, 204):
            try:
                result = response.json() if response.content else None
            except ValueError:
                result = None
            return result, response.headers.get("Link")
        fallback = {401: "Authentication required.", 404: "The requested data does not exist.",
                    405: "This operation is not supported.", 409: "Failed to request data due to a conflict."}
        message = fallback.get(response.status_code, f"Could not {method.lower()} the requested data.")
        try:
            err = response.json()["errors"][0]
            if isinstance(err.get("detail"), str) and err["detail"]:
                message = f"Error: {err['message']} Detail: {err['detail']}"
            else:
                message = f"Error: {err['message']}"
        except (ValueError, KeyError, IndexError, TypeError):
            pass
        raise CLIError(message)

    def paged(self, path: str, index: str, top: int | None = None, orderby: str | None = None) -> list[Any]:
        items: list[Any] = []
        params: dict[str, str] = {"n": str(min(top, PAGE) if top else PAGE)}
        if orderby:
            params["orderby"] = orderby
        url = path
        while True:
            result, link = self.request("GET", url, params=params)
            items += (result or {}).get(index) or []
            if top is not None and len(items) >= top:
                return items[:top]
            match = NEXT_LINK.search(link or "")
            if not match:
                return items
            url, params = match.group(1), {}
            if url.startswith("/"):
                url = f"https://{self.login_server}{url}"


def _parse_image(image: str) -> tuple[str, str | None, str | None]:
    """az's ``parse_image_name``: ``repo:tag``, ``repo@digest``, or ``repo`` (``latest``)."""
    if "@" in image:
        repo, _, digest = image.partition("@")
        return repo, None, digest
    if ":" in image:
        parts = image.split(":")
        if len(parts) != 2:
            raise CLIError("The name of the image may include a tag in the format 'name:tag' or digest in the format "
                           "'name@digest'.")
        return parts[0], parts[1], None
    return image, "latest", None


def _one_of(repository: str | None, image: str | None) -> None:
    if bool(repository) == bool(image):
        raise CLIError("Usage error: You need to provide either --image IMAGE | --repository REPOSITORY, but not "
                       "both")


def enc(name: str) -> str:
    return quote(name, safe="/")


ORDERBY = {"time_asc": "timeasc", "time_desc": "timedesc"}


def _listing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--repository``, ``--top``, ``--orderby`` and ``--detail``, which ``show-tags`` and ``show-manifests``
    share."""
    for decorate in reversed((
        option("--repository", "repository_", required=True, help="The name of the repository."),
        option("--top", type=int, help="Limit the number of items in the results."),
        option("--orderby", type=click.Choice(sorted(ORDERBY)), help="Order the items in the results."),
        option("--detail", is_flag=True, help="Show detailed information."),
    )):
        command = decorate(command)
    return command


@click.group("repository", cls=AzGroup)
def repository() -> None:
    """Manage repositories (image names) for Azure Container Registries."""


@repository.command("list")
@name_option
@group_option
@option("--top", type=int, help="Limit the number of items in the results.")
@username_option
@password_option
def list_(name: str, resource_group: str | None, top: int | None, username: str | None,
          password: str | None) -> Any:
    """List repositories in a container registry."""
    api = RegistryAPI(Session(), name, "registry:catalog:*", username, password)
    return api.paged("/v2/_catalog", "repositories", top)


def _image_path(repo: str, tag: str | None, digest: str | None) -> tuple[str, str | None]:
    if tag:
        return f"/acr/v1/{enc(repo)}/_tags/{quote(tag, safe='')}", "tag"
    if digest:
        return f"/acr/v1/{enc(repo)}/_manifests/{quote(digest, safe='')}", "manifest"
    return f"/acr/v1/{enc(repo)}", None


def _attributes(name: str, repo_arg: str | None, image: str | None, method: str, payload: Any,
                actions: str, username: str | None, password: str | None) -> Any:
    _one_of(repo_arg, image)
    repo, tag, digest = _parse_image(image) if image else (str(repo_arg), None, None)
    api = RegistryAPI(Session(), name, f"repository:{repo}:{actions}", username, password)
    path, index = _image_path(repo, tag, digest)
    result, _ = api.request(method, path, body=payload)
    return result.get(index) if index and isinstance(result, dict) else result


@repository.command("show")
@name_option
@group_option
@option("--repository", "repository_", help="The name of the repository.")
@option("--image", "-t", help="The name of the image: 'repo:tag' or 'repo@digest'.")
@username_option
@password_option
def show(name: str, resource_group: str | None, repository_: str | None, image: str | None,
         username: str | None, password: str | None) -> Any:
    """Get the attributes of a repository or image in a container registry."""
    return _attributes(name, repository_, image, "GET", None, "metadata_read", username, password)


@repository.command("update")
@name_option
@group_option
@option("--repository", "repository_", help="The name of the repository.")
@option("--image", "-t", help="The name of the image: 'repo:tag' or 'repo@digest'.")
@flag("--delete-enabled", help="Indicates whether delete operation is allowed.")
@flag("--list-enabled", help="Indicates whether this item shows in list operation results.")
@flag("--read-enabled", help="Indicates whether read operation is allowed.")
@flag("--write-enabled", help="Indicates whether write or delete operation is allowed.")
@username_option
@password_option
def update(name: str, resource_group: str | None, repository_: str | None, image: str | None,
           delete_enabled: bool | None, list_enabled: bool | None, read_enabled: bool | None,
           write_enabled: bool | None, username: str | None, password: str | None) -> Any:
    """Update the attributes (locks) of a repository or image."""
    payload = {k: v for k, v in (("deleteEnabled", delete_enabled), ("listEnabled", list_enabled),
                                 ("readEnabled", read_enabled), ("writeEnabled", write_enabled)) if v is not None}
    if payload:
        return _attributes(name, repository_, image, "PATCH", payload, "metadata_write,metadata_read", username,
                           password)
    return _attributes(name, repository_, image, "GET", None, "metadata_read", username, password)


@repository.command("show-tags")
@name_option
@group_option
@_listing_options
@username_option
@password_option
def show_tags(name: str, resource_group: str | None, repository_: str, top: int | None, orderby: str | None,
              detail: bool, username: str | None, password: str | None) -> Any:
    """Show tags for a repository in a container registry."""
    api = RegistryAPI(Session(), name, f"repository:{repository_}:metadata_read", username, password)
    tags = api.paged(f"/acr/v1/{enc(repository_)}/_tags", "tags", top, ORDERBY.get(orderby or ""))
    return tags if detail else [t["name"] for t in tags]


@repository.command("show-manifests")
@name_option
@group_option
@_listing_options
@username_option
@password_option
def show_manifests(name: str, resource_group: str | None, repository_: str, top: int | None, orderby: str | None,
                   detail: bool, username: str | None, password: str | None) -> Any:
    """Show manifests of a repository in a container registry."""
    api = RegistryAPI(Session(), name, f"repository:{repository_}:metadata_read", username, password)
    manifests = api.paged(f"/acr/v1/{enc(repository_)}/_manifests", "manifests", top, ORDERBY.get(orderby or ""))
    if detail:
        return manifests
    return [{"digest": m.get("digest", ""), "tags": m.get("tags", []), "timestamp": m.get("lastUpdateTime", "")}
            for m in manifests]


@repository.command("delete")
@name_option
@group_option
@option("--repository", "repository_", help="The name of the repository to delete.")
@option("--image", "-t", help="The image to delete: 'repo:tag' (its manifest) or 'repo@digest'.")
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
@username_option
@password_option
def delete(name: str, resource_group: str | None, repository_: str | None, image: str | None, yes: bool,
           username: str | None, password: str | None) -> Any:
    """Delete a repository or image in a container registry."""
    _one_of(repository_, image)
    repo, tag, digest = _parse_image(image) if image else (str(repository_), None, None)
    if tag or digest:
        confirm(f"This operation will delete the manifest '{digest or tag}' and all the following images: "
                f"'{repo}:{tag}'.\nAre you sure you want to continue?" if tag else
                f"This operation will delete the manifest '{digest}'.\nAre you sure you want to continue?", yes)
    else:
        confirm(f"Are you sure you want to delete the repository '{repo}' and all images under it?", yes)
    api = RegistryAPI(Session(), name, f"repository:{repo}:delete,metadata_read", username, password)
    if tag or digest:
        if not digest:
            result, _ = api.request("GET", f"/acr/v1/{enc(repo)}/_tags/{quote(str(tag), safe='')}")
            digest = ((result or {}).get("tag") or {}).get("digest")
            if not digest:
                raise CLIError(f"Could not get the manifest digest for image '{repo}:{tag}'.")
        api.request("DELETE", f"/v2/{enc(repo)}/manifests/{digest}")
    else:
        api.request("DELETE", f"/acr/v1/{enc(repo)}")
    return None

