"""ARM provider ``Microsoft.ManagedIdentity``: user-assigned identities and their federated identity credentials.

- ``userAssignedIdentities/{name}``: PUT creates the identity's service principal in the subscription's tenant
  (``properties.principalId``, ``clientId``, ``tenantId``; a later PUT keeps it); DELETE deletes the principal
  and every role assignment naming it, so tokens it was given no longer authenticate or grant anything. VMs that
  name the identity stop getting tokens for it at once.
- ``userAssignedIdentities/{name}/federatedIdentityCredentials/{name}``: ``properties.issuer`` (https URL),
  ``subject``, ``audiences`` (one entry, usually ``api://AzureADTokenExchange``); stored in the directory, where
  the Entra token endpoint matches federated assertions against them.

Bad bodies are ARM 400s raised in :meth:`prepare`, before anything changes. The store and the directory are read
and written through the server's ``SqlThread`` (``call.run``).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable
from typing import Any, ClassVar
from urllib.parse import urlparse

from acrlocal.arm.errors import ArmError, bad_request
from acrlocal.arm.providers import Call, JsonObject, ResourceType, register
from acrlocal.arm.services import ArmServices
from acrlocal.arm.store import ArmStore, Resource
from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.identity.directory import IssuerAndSubjectTaken

NAMESPACE = "Microsoft.ManagedIdentity"
UAMI_TYPE = f"{NAMESPACE}/userAssignedIdentities"
#: What a caller needs on a user-assigned identity to give it to a resource (Managed Identity Operator's
#: ``userAssignedIdentities/*/assign/action`` grants it).
ASSIGN_ACTION = f"{UAMI_TYPE}/assign/action"
API_VERSIONS = ("2018-11-30", "2021-09-30-preview", "2022-01-31-preview", "2023-01-31", "2023-07-31-preview",
                "2024-11-30", "2025-01-31-preview")
MAX_FEDERATED_CREDENTIALS = 20


def _tenant_of(call: Call, subscription_id: str) -> str:
    """The subscription's tenant; 404 if there is no such subscription (reads the directory: in the
    ``SqlThread``)."""
    try:
        return call.services.directory.subscription(subscription_id).tenant_id
    except NotFound:
        raise ArmError(404, "SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.") \
            from None


def require_assignable(call: Call, draft: Resource, wanted: Iterable[str], current: JsonObject | None) -> list[str]:
    """Azure's linked access check for the user-assigned identities a write gives ``draft``: the caller must hold
    :data:`ASSIGN_ACTION` on every id in ``wanted`` that ``current`` (the resource's identity block before the
    write, ``None`` for a new one) does not have yet, else 403 ``LinkedAuthorizationFailed`` naming the write and
    every such id. Call it before any of them is looked up: the answer is then the same whether an identity
    exists, is another tenant's or is no valid id at all. Returns those new ids. Reads only the caller's
    assignments, already loaded."""
    known = {k.lower() for k in ((current or {}).get("userAssignedIdentities") or {})}
    new = [rid for rid in wanted if rid.lower() not in known]
    call.caller.require_all_linked(f"{draft.type}/write", draft.id, [(ASSIGN_ACTION, rid) for rid in new])
    return new


def resolve_assigned(call: Call, draft: Resource, wanted: Iterable[str]) -> list[str]:
    """The stored ids of the user-assigned identities ``wanted`` (after :func:`require_assignable`), looked up among
    the caller's tenant only; 400 ``FailedIdentityOperation`` naming the first that is no such identity (missing,
    another tenant's, or another type). Reads the store: call it through the ``SqlThread``."""
    resolved = []
    for rid in wanted:
        uami = call.tenant_resource(rid)
        if uami is None or uami.type.lower() != UAMI_TYPE.lower():
            raise bad_request("FailedIdentityOperation", f"Identity operation for resource '{draft.id}' failed: the "
                              f"user-assigned identity '{rid}' was not found.")
        resolved.append(uami.id)
    return resolved


def _delete_principal(services: ArmServices, store: ArmStore, principal_id: str) -> None:
    services.directory.delete_principal(principal_id)
    store.delete_assignments_of(principal_id)


class UserAssignedIdentities(ResourceType):
    namespace = NAMESPACE
    type = "userAssignedIdentities"
    api_versions = API_VERSIONS
    name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,127}\Z")
    name_rule = "3-128 letters, digits, '-' and '_', starting with a letter or digit"
    actions: ClassVar[dict[str, str]] = {"listAssociatedResources": "list_associated_resources"}

    async def list_associated_resources(self, call: Call, resource: Resource) -> JsonObject:
        """The resources this identity is assigned to (``az identity list-resources``), among the tenant's
        subscriptions and those the caller may read (one call through the ``SqlThread``)."""
        return await call.run(self._associated_resources, call, resource)

    @staticmethod
    def _associated_resources(call: Call, resource: Resource) -> JsonObject:
        tenant = _tenant_of(call, resource.subscription_id)
        wanted = resource.id.lower()
        found = []
        for sub in call.services.directory.subscriptions(tenant):
            for r in call.store.resources(sub.id):
                assigned = (r.identity or {}).get("userAssignedIdentities") or {}
                if wanted in (k.lower() for k in assigned) and call.caller.may(f"{r.type}/read", r.id):
                    found.append({"id": r.id, "name": r.name, "type": r.type, "resourceGroup": r.group,
                                  "subscriptionId": sub.id, "subscriptionDisplayName": sub.display_name})
        return {"value": found, "totalCount": len(found), "nextLink": None}

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        # Every property is the service's to set; isolationScope is the only one a client may choose.
        scope = draft.properties.get("isolationScope", "None")
        if scope not in ("None", "Regional"):
            raise bad_request("InvalidIsolationScope", f"isolationScope '{scope}' is invalid; expected 'None' or "
                              "'Regional'.")
        kept = dict(existing.properties) if existing else {}
        kept["isolationScope"] = scope
        return draft.evolve(properties=kept, identity=None)

    async def apply(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        """The identity's service principal, made (or taken over) through the ``SqlThread``."""
        if existing is not None and existing.internal.get("principalId"):
            return resource
        return await call.run(self._apply, call, resource)

    @staticmethod
    def _apply(call: Call, resource: Resource) -> Resource:
        tenant = _tenant_of(call, resource.subscription_id)
        try:
            principal = call.services.directory.create_managed_identity(tenant, resource.id, resource.name, "user")
        except AlreadyExists:  # left over from a delete that did not finish: take it over
            found = call.services.directory.find_principal(resource_id=resource.id)
            assert found is not None
            principal = found
        properties = {**resource.properties, "tenantId": tenant, "principalId": principal.object_id,
                      "clientId": principal.app_id}
        return resource.evolve(properties=properties, internal={**resource.internal,
                                                                "principalId": principal.object_id})

    #: What :meth:`remove` uses when a deletion has no call (a cascade), from :meth:`on_start` on.
    started: tuple[ArmServices, ArmStore] | None = None

    async def remove(self, call: Call | None, resource: Resource) -> None:
        """The principal and its role assignments go, in one call through the ``SqlThread``."""
        started = (call.services, call.store) if call else self.started
        principal_id = resource.internal.get("principalId")
        if started is not None and principal_id:
            services, store = started
            await services.sql.run(_delete_principal, services, store, principal_id)

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        body["properties"].pop("provisioningState", None)
        return body

    async def on_start(self, services: ArmServices, store: ArmStore) -> None:
        """Delete principals of identities whose ARM resource is gone (a delete interrupted half-way), in one call
        through the ``SqlThread``."""
        self.started = (services, store)
        await services.sql.run(self._reconcile, services, store)

    @staticmethod
    def _reconcile(services: ArmServices, store: ArmStore) -> None:
        for principal in services.directory.principals():
            rid = principal.resource_id
            if principal.mi_kind == "user" and rid and "/providers/microsoft.managedidentity/" in rid.lower() \
                    and store.resource(rid) is None:
                services.directory.delete_principal(principal.object_id)


class FederatedIdentityCredentials(ResourceType):
    namespace = NAMESPACE
    type = "userAssignedIdentities/federatedIdentityCredentials"
    api_versions = API_VERSIONS
    location_required = False
    name_pattern: ClassVar[re.Pattern[str]] = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_-]{2,119}\Z")
    name_rule = "3-120 letters, digits, '-' and '_', starting with a letter or digit"

    async def prepare(self, call: Call, draft: Resource, existing: Resource | None) -> Resource:
        props = draft.properties
        issuer, subject, audiences = props.get("issuer"), props.get("subject"), props.get("audiences")
        if not isinstance(issuer, str) or urlparse(issuer).scheme != "https" or not urlparse(issuer).netloc:
            raise bad_request("BadRequest", f"Issuer '{issuer}' is invalid: it must be an https URL.")
        if not isinstance(subject, str) or not subject.strip() or len(subject) > 600:
            raise bad_request("BadRequest", f"Subject '{subject}' is invalid: it must be 1-600 characters.")
        if audiences is None:
            audiences = ["api://AzureADTokenExchange"]
        if not isinstance(audiences, list) or len(audiences) != 1 or not all(
                isinstance(a, str) and a.strip() for a in audiences):
            raise bad_request("BadRequest", f"Audiences {audiences!r} are invalid: exactly one audience is "
                              "supported.")
        if existing is None and draft.parent_id is not None:
            siblings = await call.run(call.store.resources, draft.subscription_id, parent_id=draft.parent_id,
                                      type=self.full_type)
            if len(siblings) >= MAX_FEDERATED_CREDENTIALS:
                raise bad_request("BadRequest", f"An identity may have at most {MAX_FEDERATED_CREDENTIALS} "
                                  "federated identity credentials.")
        return draft.evolve(properties={"issuer": issuer, "subject": subject, "audiences": audiences},
                            location=None, tags={}, identity=None)

    def _principal_id(self, call: Call, resource: Resource) -> str:
        """The parent identity's principal; 404 without one (reads the store: in the ``SqlThread``)."""
        parent = call.store.resource(resource.parent_id or "")
        principal_id = parent.internal.get("principalId") if parent else None
        if not principal_id:
            raise ArmError(404, "ParentResourceNotFound", f"The user-assigned identity of '{resource.name}' has no "
                           "service principal.")
        return str(principal_id)

    async def apply(self, call: Call, resource: Resource, existing: Resource | None) -> Resource:
        """The credential replaces any of its name in the directory (which keeps its id), in one call through the
        ``SqlThread``; 400 for the issuer and subject of another credential of the identity, as Azure's."""
        return await call.run(self._apply, call, resource)

    def _apply(self, call: Call, resource: Resource) -> Resource:
        principal_id = self._principal_id(call, resource)
        p: dict[str, Any] = resource.properties
        try:
            call.services.directory.add_federated_credential(principal_id, resource.name, p["issuer"], p["subject"],
                                                             p["audiences"], replace=True)
        except IssuerAndSubjectTaken:
            raise bad_request("BadRequest", "Issuer and subject combination already exists for this Managed "
                              "Identity.") from None
        return resource

    async def remove(self, call: Call | None, resource: Resource) -> None:
        """The credential goes from the directory (through the ``SqlThread``); a cascade without a call leaves it
        to the identity's principal, which goes with it."""
        if call is None:
            return
        await call.run(self._remove, call, resource)

    @staticmethod
    def _remove(call: Call, resource: Resource) -> None:
        parent = call.store.resource(resource.parent_id or "")
        principal_id = parent.internal.get("principalId") if parent else None
        if principal_id:
            with contextlib.suppress(NotFound):
                call.services.directory.delete_federated_credential(principal_id, resource.name)

    def render(self, call: Call | None, resource: Resource) -> JsonObject:
        body = super().render(call, resource)
        body["properties"].pop("provisioningState", None)
        return body


register(UserAssignedIdentities())
register(FederatedIdentityCredentials())
