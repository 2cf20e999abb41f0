"""``POST /providers/Microsoft.AcrLocal/createTenant``: a second (third...) tenant, what ``acrlocal admin tenant
create`` calls. Azure has no public API that makes a workforce tenant (one makes it in the portal), so the action is
acrlocal's own, at the tenant root like Azure's tenant-level operations.

Body ``{"displayName": "contoso"}``: a DNS label (1-63 lowercase letters, digits and hyphens, not starting or ending
with a hyphen), since it names the tenant's domain ``contoso.<host name suffix>``. One call makes, in one
transaction (:meth:`~acrlocal.identity.directory.Directory.create_tenant_with_administrator`): the tenant, its
default subscription, an administrator service principal with a client secret, its Global Administrator directory
role and its Owner assignment on the subscription; if any write fails, none stays. The answer is 201
``{tenantId, displayName, domain, subscriptionId, clientId, objectId, clientSecret}``: the secret is shown there
once (as ``az ad sp create-for-rbac`` shows its password), kept only as its sha256 and never logged.

Who may call it: a Global Administrator of the server's default tenant (the local administrator and the user ``up``
makes). RBAC has no scope above a tenant to grant it at, and an Owner of a subscription is no directory
administrator; anyone else, a Global Administrator of another tenant included, gets ARM's 403 ``AuthorizationFailed``
naming ``Microsoft.AcrLocal/createTenant/action`` at ``/``. A missing or malformed name is 400 (ARM's error body), a
name some tenant already has (in any case) 409 ``Conflict``. The check and the write run in one call of the server's
``SqlThread`` under the control plane's write lock (every POST takes it), so two calls cannot both take a name.

``POST /providers/Microsoft.AcrLocal/deleteTenant``, what ``acrlocal admin tenant delete`` calls: body
``{"tenantId": "<guid>"}`` (the id createTenant answered; a tenant's name can be taken again once it is gone). The same
callers may (anyone else gets the 403 naming ``Microsoft.AcrLocal/deleteTenant/action`` at ``/``, before the body is
looked at). A missing or malformed id is 400 (``InvalidRequestContent``, ``InvalidTenantId``), an unknown one 404
``TenantNotFound``, the server's default tenant 400 ``CannotDeleteDefaultTenant``. As Azure refuses to delete a
directory that still holds subscriptions with resources, users or applications, a tenant holding anything
createTenant did not make (a resource group, a deployment, a user, a group, an application, a managed identity,
another role assignment, a custom role) is 409 ``TenantNotEmpty`` naming the first few. Otherwise one transaction
(:meth:`~acrlocal.identity.directory.Directory.delete_tenant`, the control plane's rows with it) deletes the tenant,
its subscription, its administrator with its secrets and roles, its Owner assignment and its signing keys; if any
delete fails, none is kept. The answer is 200 ``{tenantId, displayName}``; the tenant's keys are then dropped from
every process's memory, so tokens it issued no longer verify, and its token endpoint answers AADSTS90002.
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from sqlalchemy.engine import Connection

from acrlocal.arm.errors import ArmError, authorization_failed, invalid_content
from acrlocal.arm.generic import json
from acrlocal.arm.paths import GUID, ArmPath
from acrlocal.arm.providers import Call, JsonObject, TenantAction, register_tenant_action, utc_now
from acrlocal.arm.store import StoredAssignment
from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.identity.bootstrap import user_domain
from acrlocal.identity.directory import (
    GLOBAL_ADMINISTRATOR,
    HELD_SHOWN,
    DefaultTenantKept,
    ProvisionedTenant,
    Tenant,
    TenantNotEmpty,
)
from acrlocal.rbac.roles import OWNER

log = logging.getLogger(__name__)

NS = "Microsoft.AcrLocal"
OPERATION = f"{NS}/createTenant/action"
DELETE_OPERATION = f"{NS}/deleteTenant/action"
#: A DNS label in lowercase: the tenant's name is the first label of its domain.
TENANT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
ADMINISTRATOR_NAME = "acrlocal-tenant-admin"


def tenant_name(body: JsonObject) -> str:
    """The body's ``displayName``; 400 ``InvalidRequestContent`` if it is missing or no string, 400
    ``InvalidTenantName`` if it is no lowercase DNS label."""
    name = body.get("displayName")
    if not isinstance(name, str):
        raise invalid_content("'displayName' is required: the new tenant's name, e.g. {\"displayName\": \"contoso\"}.")
    if not TENANT_NAME.match(name):
        raise ArmError(400, "InvalidTenantName", f"The tenant name '{name[:100]}' is invalid: it names the tenant's "
                       "domain, so it must be 1-63 lowercase letters, digits and hyphens, not starting or ending "
                       "with a hyphen.")
    return name


def tenant_id(body: JsonObject) -> str:
    """The body's ``tenantId``, lower case; 400 ``InvalidRequestContent`` if it is missing or no string, 400
    ``InvalidTenantId`` if it is no GUID."""
    value = body.get("tenantId")
    if not isinstance(value, str):
        raise invalid_content("'tenantId' is required: the id of the tenant to delete, e.g. "
                              "{\"tenantId\": \"00000000-0000-0000-0000-000000000000\"}.")
    if not GUID.match(value):
        raise ArmError(400, "InvalidTenantId", f"The tenant id '{value[:100]}' is invalid: it must be a GUID.")
    return value.lower()


def _require_administrator(call: Call, operation: str) -> None:
    """403 ``AuthorizationFailed`` naming ``operation`` at ``/`` unless the caller is a Global Administrator of the
    server's default tenant. Reads the directory: runs in the ``SqlThread``."""
    services, caller = call.services, call.caller
    if caller.tenant_id != services.admin.tenantId.lower() or \
            not services.directory.has_directory_role(caller.object_id, GLOBAL_ADMINISTRATOR):
        raise authorization_failed(caller.client, caller.object_id, operation, "/")


def _create(call: Call) -> ProvisionedTenant:
    """The authorization check (first: a caller who may not is told nothing of its body), the body's check and the
    write, in one ``SqlThread`` call."""
    _require_administrator(call, OPERATION)
    name = tenant_name(call.body)

    def owner(conn: Connection, made: ProvisionedTenant) -> None:
        admin, sub = made.administrator, made.subscription
        now = utc_now()
        call.store.add_assignment_in(conn, StoredAssignment(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"acrlocal:admin-owner:{admin.object_id}:{sub.id}")),
            f"/subscriptions/{sub.id}", OWNER.id, admin.object_id, "ServicePrincipal", "acrlocal tenant administrator",
            None, None, now, now, call.caller.object_id, call.caller.object_id))

    try:
        return call.services.directory.create_tenant_with_administrator(name, ADMINISTRATOR_NAME, also=owner)
    except AlreadyExists:
        raise ArmError(409, "Conflict", f"A tenant named '{name}' already exists; choose another name.") from None


async def create_tenant(call: Call, path: ArmPath) -> web.StreamResponse:
    made = await call.run(_create, call)
    name = made.tenant.display_name
    log.info("tenant %s (%s) created by %s", name, made.tenant.id, call.caller.object_id)
    admin = made.administrator
    return json({
        "tenantId": made.tenant.id, "displayName": made.tenant.display_name,
        "domain": user_domain(name, call.services.settings.hostname_suffix),
        "subscriptionId": made.subscription.id, "clientId": admin.app_id, "objectId": admin.object_id,
        "clientSecret": made.secret,
    }, status=201)


def _delete(call: Call) -> Tenant:
    """The authorization check (first), the body's check, and the deletion with the control plane's check and
    deletes in its transaction, in one ``SqlThread`` call; then the tenant's signing keys leave every process's
    memory. The directory's refusals become ARM's errors; anything else propagates (the framework's 500/503)."""
    _require_administrator(call, DELETE_OPERATION)
    tid = tenant_id(call.body)
    services = call.services
    try:
        deleted = services.directory.delete_tenant(tid, held=call.store.tenant_holdings_in,
                                                   also=call.store.delete_tenant_rows_in)
    except NotFound:
        raise ArmError(404, "TenantNotFound", f"The tenant '{tid}' could not be found.") from None
    except DefaultTenantKept:
        raise ArmError(400, "CannotDeleteDefaultTenant", f"The tenant '{tid}' is the acrlocal server's default "
                       "tenant, which cannot be deleted.") from None
    except TenantNotEmpty as exc:
        held = ", ".join(exc.held[:HELD_SHOWN]) + (", and more" if len(exc.held) > HELD_SHOWN else "")
        raise ArmError(409, "TenantNotEmpty", f"The tenant '{exc.tenant.display_name}' ({tid}) cannot be deleted "
                       f"while it holds anything but its subscription and its administrator: it still holds "
                       f"{held}. Delete them first.") from None
    services.keys.tenant_deleted(tid)
    return deleted


async def delete_tenant(call: Call, path: ArmPath) -> web.StreamResponse:
    deleted = await call.run(_delete, call)
    log.info("tenant %s (%s) deleted by %s", deleted.display_name, deleted.id, call.caller.object_id)
    return json({"tenantId": deleted.id, "displayName": deleted.display_name})


register_tenant_action(TenantAction(NS, "createTenant", OPERATION, create_tenant))
register_tenant_action(TenantAction(NS, "deleteTenant", DELETE_OPERATION, delete_tenant))
