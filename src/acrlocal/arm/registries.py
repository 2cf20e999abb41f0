"""``Microsoft.ContainerRegistry/registries``: registries as ARM resources, backed by the running server.

Creating a registry starts serving it at once through ``services.registries.create`` (the path ``acrlocal up`` uses for
the default registry) and deleting it stops serving it. Names are 5-50 letters and digits and unique across the
server (``checkNameAvailability``). The data-plane settings (``sku``, ``adminUserEnabled``,
``anonymousPullEnabled``, ``roleAssignmentMode``, and the ARM ``resourceId`` the token service authorizes
against) are copied into the registry's record. The admin user's two passwords are generated at creation, kept
in the resource's private state, shown only by ``listCredentials``, and checked by
:meth:`acrlocal.arm.access.ArmAccess.check_admin_password`. ``identity`` is kept as given; giving the registry a
user-assigned identity needs ``userAssignedIdentities/assign/action`` on it, as for a VM.

At server start, registries the server hosts without an ARM resource (the default registry ``up`` creates)
are given one in resource group ``acrlocal`` of the default subscription, so that ARM and the data plane agree.
"""

from __future__ import annotations

import base64
import logging
import secrets
from datetime import UTC, datetime

from acrlocal import publiccloud
from acrlocal.arm.errors import ArmError, bad_request
from acrlocal.arm.generic import undo_create
from acrlocal.arm.identities import require_assignable, resolve_assigned
from acrlocal.arm.paths import ArmPath
from acrlocal.arm.providers import (
    Call,
    JsonObject,
    NamespaceAction,
    ResourceType,
    register,
    register_action,
    utc_now,
)
from acrlocal.arm.services import ArmServices
from acrlocal.arm.store import ArmStore, Resource, ResourceGroup
from acrlocal.errors import AlreadyExists, ConfigError, LimitReached, NotFound
from acrlocal.registry.hosting import REGISTRY_NAME, RegistryHosting

log = logging.getLogger(__name__)

NS = "Microsoft.ContainerRegistry"
TYPE = f"{NS}/registries"
SKUS = ("Basic", "Standard", "Premium")
DEFAULT_GROUP = "acrlocal"
DEFAULT_LOCATION = "westus"
ROLE_ASSIGNMENT_MODES = ("LegacyRegistryPermissions", "AbacRepositoryPermissions")
PASSWORD_NAMES = ("password", "password2")
BOOL_PROPERTIES = ("adminUserEnabled", "anonymousPullEnabled", "dataEndpointEnabled")
#: Properties the data plane reads from the registry's record.
#: Seconds a garbage collection waits for one another process or replica is running before answering 409.
COLLECTION_WAIT_S = 30.0
DATA_PLANE_PROPERTIES = ("adminUserEnabled", "anonymousPullEnabled", "roleAssignmentMode")


def new_password() -> str:
    """A 52-character admin password, as ACR's (letters, digits, '+' and '/'): never starts with '-', which
    ``az acr login -p`` would take for an option."""
    return base64.b64encode(secrets.token_bytes(39)).decode()


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _default_properties() -> JsonObject:
    return {
        "adminUserEnabled": False,
        "anonymousPullEnabled": False,
        "dataEndpointEnabled": False,
        "dataEndpointHostNames": [],
        "publicNetworkAccess": "Enabled",
        "networkRuleBypassOptions": "AzureServices",
        "zoneRedundancy": "Disabled",
        "roleAssignmentMode": "LegacyRegistryPermissions",
        "privateEndpointConnections": [],
        "encryption": {"status": "disabled"},
        "policies": {
            "quarantinePolicy": {"status": "disabled"},
            "trustPolicy": {"type": "Notary", "status": "disabled"},
            "retentionPolicy": {"days": 7, "status": "disabled"},
            "exportPolicy": {"status": "enabled"},
            "azureADAuthenticationAsArmPolicy": {"status": "enabled"},
        },
    }


READ_ONLY = ("loginServer", "creationDate", "provisioningState", "status", "dataEndpointHostNames",
             "privateEndpointConnections")


class Registries(ResourceType):
    namespace = NS
    type = "registries"
    api_versions = ("2025-04-01", "2024-11-01-preview", "2023-11-01-preview", "2023-07-01", "2023-01-01-preview",
                    "2022-12-01", "2021-09-01", "2019-05-01")
    name_pattern = REGISTRY_NAME
    name_rule = "5 to 50 letters and digits"
    actions = {"listCredentials": "list_credentials", "regenerateCredential": "regenerate_credential",
               "generateCredentials": "generate_credentials", "listAuditEvents": "list_audit_events",
               "garbageCollect": "garbage_collect"}
    # Garbage collection writes no ARM state and may take a while: it runs outside the control plane's write lock.
    unlocked_actions = frozenset({"garbagecollect"})

    def validate_name(self, call: Call, name: str) -> None:
        if not REGISTRY_NAME.match(name):
            raise bad_request("InvalidResourceName", f"Resource name '{name[:100]}' is invalid. The name must "
                              "contain only alphanumeric characters, be globally unique, and between 5 and 50 "
                              "characters in length.")

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        """The body checked (400 for a bad sku or property, 409 for a name in use) and the caller's right to give
        the registry each user-assigned identity it does not have yet (403 ``LinkedAuthorizationFailed``, whether
        or not the identity exists), then those identities looked up in the caller's tenant (400
        ``FailedIdentityOperation`` for one that is not there). Nothing is written here."""
        new = require_assignable(call, draft, _user_identities(draft.identity), existing.identity if existing else None)
        await call.run(resolve_assigned, call, draft, new)
        sku = draft.sku if draft.sku is not None else (existing.sku if existing else None)
        sku_name = (sku or {}).get("name")
        if not isinstance(sku_name, str):
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                           "deserialized: 'sku.name' is required (Basic, Standard or Premium).")
        canonical = next((s for s in SKUS if s.lower() == sku_name.lower()), None)
        if canonical is None:
            raise ArmError(400, "InvalidSku", f"The sku '{sku_name[:50]}' is not valid: expected Basic, Standard or "
                           "Premium.")
        if existing is None:
            taken = [r for r in await call.run(call.store.resources_named, TYPE, draft.name)
                     if r.id.lower() != draft.id.lower()]
            hosted = _name_hosted(call.services, draft.name)
            if taken or hosted:
                raise ArmError(409, "AlreadyInUse", f"The registry DNS name {draft.name.lower()}."
                               f"{call.services.settings.hostname_suffix} is already in use. You can check if the name "
                               "is already claimed using the checkNameAvailability API.")
        base = existing.properties if existing else _default_properties()
        given = {k: v for k, v in draft.properties.items() if k not in READ_ONLY}
        properties = {**base, **given}
        for key in BOOL_PROPERTIES:
            if not isinstance(properties.get(key), bool):
                raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                               f"deserialized: 'properties.{key}' must be true or false.")
        if properties.get("roleAssignmentMode") not in ROLE_ASSIGNMENT_MODES:
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                           f"deserialized: 'properties.roleAssignmentMode' must be one of "
                           f"{', '.join(ROLE_ASSIGNMENT_MODES)}.")
        if properties["anonymousPullEnabled"] and canonical == "Basic":
            raise ArmError(400, "AnonymousPullNotSupported", "Anonymous pull is only available in the Standard and "
                           "Premium service tiers.")
        internal = dict(draft.internal)
        internal.setdefault("adminPasswords", {n: new_password() for n in PASSWORD_NAMES})
        return draft.evolve(sku={"name": canonical, "tier": canonical}, properties=properties, internal=internal)

    async def apply(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        plane = _data_plane_properties(resource)
        hosting = call.services.registries
        if existing is None:
            try:
                rec = await hosting.create(resource.name, plane)
            except AlreadyExists:
                raise ArmError(409, "AlreadyInUse", f"The registry name '{resource.name}' is already in use.") from None
            except LimitReached as exc:
                raise ArmError(409, "QuotaExceeded", f"The registry '{resource.name}' cannot be created: {exc}.") \
                    from None
            except ConfigError as exc:
                raise ArmError(400, "InvalidResourceName", str(exc)) from None
            created = _iso(rec.created)
            from acrlocal.arm.tokens import ensure_system_scope_maps

            try:
                await call.run(ensure_system_scope_maps, call.store, resource)
            except Exception:
                # The registry was made above: the generic create's undo takes it back with the maps made so far.
                await undo_create(call, resource)
                raise
            return resource.evolve(properties={**resource.properties, "creationDate": created})
        await call.run(_update_hosted, hosting, resource.name, plane)
        return resource

    async def remove(self, call: Call | None, resource: Resource) -> None:
        services = call.services if call else None
        if services is None:
            return
        try:
            await services.registries.delete(resource.name)
        except NotFound:
            log.warning("registry %s was not hosted when its ARM resource was deleted", resource.name)

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        props = body["properties"]
        if call is not None:
            try:
                rec = call.services.registries.get(resource.name)
                # names follow the endpoint reached: ARM at management.azure.com (from a VM) says Azure's
                props["loginServer"] = publiccloud.registry_host(rec.name) if publiccloud.is_azure_host(
                    call.request.headers.get("Host")) else call.services.registries.login_server(rec)
            except NotFound:
                props["loginServer"] = None
        return body

    async def list_credentials(self, call: Call, resource: Resource) -> JsonObject:
        if not resource.properties.get("adminUserEnabled"):
            raise ArmError(400, "AdminUserDisabled", f"Admin user is disabled for registry '{resource.name}'. "
                           "Enable it with adminUserEnabled=true first.")
        passwords = resource.internal.get("adminPasswords", {})
        return {"username": resource.name,
                "passwords": [{"name": n, "value": passwords.get(n)} for n in PASSWORD_NAMES]}

    async def regenerate_credential(self, call: Call, resource: Resource) -> JsonObject:
        which = call.body.get("name")
        if which not in PASSWORD_NAMES:
            raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                           f"deserialized: 'name' must be 'password' or 'password2', not {str(which)[:50]!r}.")
        if not resource.properties.get("adminUserEnabled"):
            raise ArmError(400, "AdminUserDisabled", f"Admin user is disabled for registry '{resource.name}'.")
        passwords = {**resource.internal.get("adminPasswords", {}), which: new_password()}
        updated = resource.evolve(internal={**resource.internal, "adminPasswords": passwords},
                                  system_data=call.system_data(resource.system_data))
        await call.run(call.store.put_resource, updated)
        return await self.list_credentials(call, updated)

    async def generate_credentials(self, call: Call, resource: Resource) -> JsonObject:
        """Passwords of a repository-scoped token (see :mod:`acrlocal.arm.tokens`)."""
        from acrlocal.arm.tokens import generate_credentials

        return await generate_credentials(call, resource)

    async def list_audit_events(self, call: Call, resource: Resource) -> JsonObject:
        """The registry's audit log (see :mod:`acrlocal.arm.audit_events`)."""
        from acrlocal.arm.audit_events import list_audit_events

        return await list_audit_events(call, resource)

    async def garbage_collect(self, call: Call, resource: Resource) -> JsonObject:
        """acrlocal's own action (``acrlocal admin gc``; ACR collects by itself): the registry's blobs that no
        manifest references and that were not used within the grace period are unlinked, the bytes of blobs no
        repository links are deleted, and blob files are reconciled with their rows (see
        :mod:`acrlocal.registry.housekeeping`). Needs ``registries/garbageCollect/action`` (Owner, Contributor)."""
        from acrlocal.registry import housekeeping

        try:
            record = call.services.registries.get(resource.name)
        except NotFound:
            raise ArmError(409, "RegistryNotServing", f"registry {resource.name!r} is not being served") from None
        plane, grace_s = call.services.data_plane, call.services.settings.limits.blob_gc_grace_s
        try:
            async with housekeeping.Collection(plane.meta, plane.sql, wait_s=COLLECTION_WAIT_S):
                collected = await housekeeping.collect(plane.meta, plane.sql, plane.blobs, record.id, grace_s)
                reconciled = await housekeeping.reconcile(plane.meta, plane.sql, plane.blobs, grace_s)
        except housekeeping.CollectionRunning as exc:
            raise ArmError(409, "GarbageCollectionInProgress", str(exc)) from None
        return {"registry": resource.name, "graceSeconds": grace_s,
                **collected.render(), **reconciled.render()}

    async def on_start(self, services: ArmServices, store: ArmStore) -> None:
        await reconcile(services, store, self)


def _user_identities(identity: JsonObject | None) -> list[str]:
    """The user-assigned identity ids an ``identity`` block gives (those set to ``null`` are being removed); 400
    ``InvalidRequestContent`` if ``userAssignedIdentities`` is not an object."""
    given = (identity or {}).get("userAssignedIdentities")
    if given is None:
        return []
    if not isinstance(given, dict):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be "
                       "deserialized: 'identity.userAssignedIdentities' must be an object whose keys are "
                       "user-assigned identity ids.")
    return [rid for rid, value in given.items() if value is not None]


def _data_plane_properties(resource: Resource) -> JsonObject:
    sku = (resource.sku or {}).get("name", "Standard")
    policies = resource.properties.get("policies") or {}
    arm_policy = policies.get("azureADAuthenticationAsArmPolicy") if isinstance(policies, dict) else None
    arm_status = arm_policy.get("status", "enabled") if isinstance(arm_policy, dict) else "enabled"
    return {"sku": sku, "resourceId": resource.id,
            **{k: resource.properties.get(k) for k in DATA_PLANE_PROPERTIES},
            # Whether the token service accepts Entra tokens for the ARM audience (the registry's policy).
            "azureADAuthenticationAsArmPolicy": arm_status}


def _name_hosted(services: ArmServices, name: str) -> bool:
    try:
        services.registries.get(name)
    except NotFound:
        return False
    return True


def _update_hosted(hosting: RegistryHosting, name: str, plane: JsonObject) -> None:
    """The data plane's copy of a registry's properties, and the record served (SQL: in the ``SqlThread``)."""
    hosting.table.update_properties(name, plane)
    hosting.refresh(name)


async def reconcile(services: ArmServices, store: ArmStore, rt: Registries) -> None:
    """Give every hosted registry without an ARM resource one in group ``acrlocal`` of the default subscription,
    and drop registry resources whose registry is no longer hosted. One call through the ``SqlThread``: it runs at
    start-up, while requests may already be served."""
    await services.registries.fresh()
    await services.sql.run(_reconcile, services, store)


def _reconcile(services: ArmServices, store: ArmStore) -> None:
    sub = services.admin.subscriptionId
    for rec in services.registries.all():
        if store.resources_named(TYPE, rec.name):
            continue
        if store.group(sub, DEFAULT_GROUP) is None:
            store.put_group(ResourceGroup(sub, DEFAULT_GROUP, DEFAULT_LOCATION))
        group = store.group(sub, DEFAULT_GROUP)
        assert group is not None
        sku = str(rec.properties.get("sku") or "Standard")
        sku = next((s for s in SKUS if s.lower() == sku.lower()), "Standard")
        properties = _default_properties()
        properties.update({k: rec.properties[k] for k in DATA_PLANE_PROPERTIES if k in rec.properties})
        properties["creationDate"] = _iso(rec.created)
        now = utc_now()
        resource = Resource(
            id=f"{group.id}/providers/{TYPE}/{rec.name}", type=TYPE, name=rec.name, subscription_id=sub,
            group=group.name, location=DEFAULT_LOCATION, sku={"name": sku, "tier": sku}, properties=properties,
            internal={"adminPasswords": {n: new_password() for n in PASSWORD_NAMES}},
            system_data={"createdBy": "acrlocal", "createdByType": "Application", "createdAt": now,
                         "lastModifiedBy": "acrlocal", "lastModifiedByType": "Application", "lastModifiedAt": now})
        store.put_resource(resource)
        from acrlocal.arm.tokens import ensure_system_scope_maps

        ensure_system_scope_maps(store, resource)  # whatever order the types start in
        services.registries.table.update_properties(rec.name, _data_plane_properties(resource))
        services.registries.refresh(rec.name)
        log.info("registry %s is now ARM resource %s", rec.name, resource.id)
    hosted = {r.name.lower() for r in services.registries.all()}
    for sub_ in services.directory.subscriptions():
        for res in store.resources(sub_.id, type=TYPE):
            if res.name.lower() not in hosted:
                log.warning("dropping ARM resource %s: its registry is not hosted", res.id)
                store.delete_resource(res.id)


async def check_name_availability(call: Call, path: ArmPath) -> JsonObject:
    body = call.body
    name = body.get("name")
    kind = body.get("type", TYPE)
    if not isinstance(name, str) or not isinstance(kind, str):
        raise ArmError(400, "InvalidRequestContent", "The request content was invalid and could not be deserialized: "
                       "'name' and 'type' must be strings.")
    if kind.lower() != TYPE.lower():
        raise ArmError(400, "InvalidResourceType", f"The resource type '{kind[:100]}' is not supported; expected "
                       f"'{TYPE}'.")
    if not REGISTRY_NAME.match(name):
        return {"nameAvailable": False, "reason": "Invalid", "message": "The specified resource name is invalid: "
                "it must contain only alphanumeric characters and be between 5 and 50 characters in length."}
    if await call.run(call.store.resources_named, TYPE, name) or _name_hosted(call.services, name):
        return {"nameAvailable": False, "reason": "AlreadyExists", "message": f"The registry DNS name "
                f"{name.lower()}.{call.services.settings.hostname_suffix} is already in use."}
    return {"nameAvailable": True}


register(Registries())
register_action(NamespaceAction(NS, "checkNameAvailability", f"{NS}/checkNameAvailability/read",
                                check_name_availability))

