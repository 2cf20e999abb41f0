"""``admin gc``: the registries' garbage collection through the running server (ARM's ``POST
{registry id}/garbageCollect``), online: blobs no manifest references and not used within the grace period, then
blob files no row names.

``admin rotate-signing-keys``: a new signing key for the server's tokens, through the running server (ARM's
``POST /subscriptions/{sub}/providers/Microsoft.AcrLocal/rotateSigningKeys``), so that it signs with the new key
at once; the old one stays published until its tokens expire. acrlocal's own: az has no such command.

``admin tenant create --name contoso``: a new tenant with its subscription and an administrator service principal
(ARM's ``POST /providers/Microsoft.AcrLocal/createTenant``, acrlocal's own: Azure has no API that makes a tenant);
prints the ids and the administrator's client secret, shown this once. ``admin tenant delete --tenant-id <id>
[--yes]``: deletes a tenant that holds nothing but what ``create`` made (ARM's ``POST
/providers/Microsoft.AcrLocal/deleteTenant``); asks first, as az's deletes do, unless ``--yes``; the server's
refusal (409 naming what the tenant still holds, 404, 400 for the default tenant) is printed as az prints ARM's
errors. ``admin tenant list``: the caller's own tenants (ARM's ``GET /tenants``)."""

from __future__ import annotations

from typing import Any

import click

from acrlocal.cli.framework import AzGroup, confirm, option
from acrlocal.cli.session import Session

API_VERSION = "2025-01-01"
TENANTS_API_VERSION = "2022-12-01"


@click.group("admin", cls=AzGroup)
def admin() -> None:
    """Administer the acrlocal server itself."""


@admin.command("rotate-signing-keys")
def rotate_signing_keys() -> Any:
    """Make new signing keys for the tenant's Entra tokens (and, in the server's default tenant, for the
    registries' tokens); tokens already issued keep verifying until they expire."""
    session = Session()
    return session.arm.post(f"/subscriptions/{session.subscription_id}/providers/Microsoft.AcrLocal/"
                            "rotateSigningKeys", API_VERSION)


@admin.command("gc")
@click.option("--registry", "-n", "names", multiple=True,
              help="Registry to collect (repeatable; default: every registry of the subscription).")
def gc(names: tuple[str, ...]) -> Any:
    """Delete the blobs that no manifest references and that were not used within the grace period (up
    --blob-gc-grace, 1 hour), while the registries serve; print what went and the bytes freed."""
    from acrlocal.cli.registries import registry_path
    from acrlocal.cli.resources import API, REGISTRY_TYPE

    session = Session()
    if names:
        paths = [registry_path(session, name, None) for name in names]
    else:
        found = session.arm.list(f"/subscriptions/{session.subscription_id}/resources", API["resources"],
                                 {"$filter": f"resourceType eq '{REGISTRY_TYPE}'"})
        paths = [str(r["id"]) for r in found]
    return [session.arm.post(f"{path}/garbageCollect", API["registries"]) for path in paths]



@admin.group("tenant", cls=AzGroup)
def tenant() -> None:
    """Make and delete tenants (acrlocal's own: Azure makes tenants only in its portal)."""


@tenant.command("create")
@option("--name", "-n", required=True,
        help="The tenant's name, the first label of its domain <name>.localhost: lowercase letters, digits, '-'.")
def tenant_create(name: str) -> Any:
    """Create a tenant with a default subscription and an administrator service principal (Global Administrator,
    Owner of the subscription); print their ids and the administrator's client secret, shown only this once. Only
    an administrator of the server's default tenant may."""
    session = Session()
    return session.arm.post("/providers/Microsoft.AcrLocal/createTenant", API_VERSION, {"displayName": name})


@tenant.command("delete")
@option("--tenant-id", required=True, help="The id of the tenant to delete (the tenantId 'tenant create' printed).")
@option("--yes", "-y", is_flag=True, help="Do not prompt for confirmation.")
def tenant_delete(tenant_id: str, yes: bool) -> Any:
    """Delete a tenant made by 'tenant create', with its subscription and administrator. It must hold nothing else
    (resource groups, users, applications...): the server names what is left. The server's default tenant is never
    deleted. Only an administrator of the server's default tenant may."""
    confirm(f"Are you sure you want to delete the tenant '{tenant_id}'?", yes)
    session = Session()
    session.arm.post("/providers/Microsoft.AcrLocal/deleteTenant", API_VERSION, {"tenantId": tenant_id})
    return None


@tenant.command("list")
def tenant_list() -> Any:
    """List the signed-in account's tenants (each account sees only its own, as in Azure)."""
    return Session().arm.list("/tenants", TENANTS_API_VERSION)
