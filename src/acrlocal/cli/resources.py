"""ARM resource ids and the argument shapes az uses for them (pure).

``resource_id(sub, rg, "Microsoft.ContainerRegistry/registries", name)`` builds an id; :func:`parse_id` takes one
apart (case-insensitively, as ARM does); :func:`with_resource_group` adds az's ``resourceGroup`` field, which az
derives from ``id`` for resources whose SDK model lacks it.
"""

from __future__ import annotations

from typing import Any

from acrlocal.cli.errors import CLIError

API = {
    "resources": "2024-11-01",
    "groups": "2024-11-01",
    "registries": "2025-04-01",
    "tokens": "2025-04-01",
    "identities": "2023-01-31",
    "vms": "2024-07-01",
    "network": "2024-07-01",
    "authorization": "2022-04-01",
    "graph": "v1.0",
}

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"
IDENTITY_TYPE = "Microsoft.ManagedIdentity/userAssignedIdentities"
VM_TYPE = "Microsoft.Compute/virtualMachines"


def group_path(subscription: str, group: str) -> str:
    return f"/subscriptions/{subscription}/resourcegroups/{group}"


def list_path(subscription: str, group: str | None, type_: str) -> str:
    """Where resources of ``type_`` are listed: in ``group``, or in the whole subscription without one."""
    base = group_path(subscription, group) if group else f"/subscriptions/{subscription}"
    return f"{base}/providers/{type_}"


def resource_id(subscription: str, group: str, type_: str, name: str) -> str:
    return f"/subscriptions/{subscription}/resourceGroups/{group}/providers/{type_}/{name}"


def parse_id(rid: str) -> dict[str, str]:
    """``subscription``, ``resource_group``, ``namespace``, ``type``, ``name`` (and ``child_type``,
    ``child_name``) of an ARM id; :class:`CLIError` if it is not one."""
    parts = rid.strip("/").split("/")
    if len(parts) < 2 or parts[0].lower() != "subscriptions":
        raise CLIError(f"'{rid}' is not a valid resource ID; expected /subscriptions/<id>/resourceGroups/<group>/"
                       "providers/<namespace>/<type>/<name>.")
    out = {"subscription": parts[1]}
    if len(parts) >= 4 and parts[2].lower() == "resourcegroups":
        out["resource_group"] = parts[3]
    if len(parts) >= 8 and parts[4].lower() == "providers":
        out.update(namespace=parts[5], type=parts[6], name=parts[7])
        if len(parts) >= 10:
            out.update(child_type=parts[8], child_name=parts[9])
    return out


def resource_group_of(rid: str) -> str:
    return parse_id(rid).get("resource_group", "")


def with_resource_group(resource: Any) -> Any:
    if isinstance(resource, dict) and "resourceGroup" not in resource and isinstance(resource.get("id"), str):
        try:
            group = resource_group_of(resource["id"])
        except CLIError:
            return resource
        if group:
            return {**resource, "resourceGroup": group}
    return resource


def parse_tags(tags: tuple[str, ...]) -> dict[str, str]:
    """az's ``--tags a=b c`` (space separated ``key[=value]``; ``""`` clears)."""
    out: dict[str, str] = {}
    for tag in tags:
        if not tag:
            continue
        key, _, value = tag.partition("=")
        out[key] = value
    return out


def flatten(resource: Any) -> Any:
    """The resource as az's SDK models print it: ``properties`` lifted to the top (msrest's
    ``x-ms-client-flatten``), plus ``resourceGroup``. Resource groups keep their ``properties``."""
    if isinstance(resource, list):
        return [flatten(r) for r in resource]
    if not isinstance(resource, dict):
        return resource
    props = resource.get("properties")
    out = {k: v for k, v in resource.items() if k != "properties"}
    if isinstance(props, dict):
        for key, value in props.items():
            out.setdefault(key, value)
    return with_resource_group(out)
