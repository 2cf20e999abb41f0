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
"""

from __future__ import annotations

import logging
import re
import uuid

from aiohttp import web
from sqlalchemy.engine import Connection

from acrlocal.arm.errors import ArmError, authorization_failed, invalid_content
from acrlocal.arm.generic import json
from acrlocal.arm.paths import ArmPath
from acrlocal.arm.providers import Call, JsonObject, TenantAction, register_tenant_action, utc_now
from acrlocal.arm.store import StoredAssignment
from acrlocal.errors import AlreadyExists
from acrlocal.identity.bootstrap import user_domain
from acrlocal.identity.directory import GLOBAL_ADMINISTRATOR, ProvisionedTenant
from acrlocal.rbac.roles import OWNER

log = logging.getLogger(__name__)

NS = "Microsoft.AcrLocal"
OPERATION = f"{NS}/createTenant/action"
#: A DNS label in lowercase: the tenant's name is the first label of its domain.
TENANT_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
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


def _create(call: Call) -> ProvisionedTenant:
    """The authorization check (first: a caller who may not is told nothing of its body), the body's check and the
    write, in one ``SqlThread`` call."""
    services, caller = call.services, call.caller
    if caller.tenant_id != services.admin.tenantId.lower() or \
            not services.directory.has_directory_role(caller.object_id, GLOBAL_ADMINISTRATOR):
        raise authorization_failed(caller.client, caller.object_id, OPERATION, "/")
    name = tenant_name(call.body)

    def owner(conn: Connection, made: ProvisionedTenant) -> None:
        admin, sub = made.administrator, made.subscription
        now = utc_now()
        call.store.add_assignment_in(conn, StoredAssignment(
            str(uuid.uuid5(uuid.NAMESPACE_URL, f"acrlocal:admin-owner:{admin.object_id}:{sub.id}")),
            f"/subscriptions/{sub.id}", OWNER.id, admin.object_id, "ServicePrincipal", "acrlocal tenant administrator",
            None, None, now, now, caller.object_id, caller.object_id))

    try:
        return services.directory.create_tenant_with_administrator(name, ADMINISTRATOR_NAME, also=owner)
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


register_tenant_action(TenantAction(NS, "createTenant", OPERATION, create_tenant))
