"""Tenant-level and subscription-level reads: ``/metadata/endpoints``, ``/tenants``, ``/subscriptions``,
``/subscriptions/{sub}``, and the resource provider list ``/subscriptions/{sub}/providers[/{namespace}]``.

A caller sees the subscriptions of its own tenant in which it holds any role assignment (at, above or below the
subscription), as ``az login`` expects; other subscriptions answer 404 ``SubscriptionNotFound``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from acrlocal import publiccloud
from acrlocal.arm.errors import ArmError, subscription_not_found
from acrlocal.arm.generic import json
from acrlocal.arm.paths import ArmPath
from acrlocal.arm.providers import REGISTRY, Call
from acrlocal.arm.services import ArmServices
from acrlocal.identity.directory import Subscription

LOCATION_NAMES = {
    "westus": "West US", "westus2": "West US 2", "eastus": "East US", "eastus2": "East US 2",
    "centralus": "Central US", "northeurope": "North Europe", "westeurope": "West Europe",
}

#: Microsoft.Resources is served by the framework itself; listed so that clients that check it find it.
RESOURCES_TYPES = {
    "resourceGroups": ("2024-11-01", "2024-07-01", "2024-03-01", "2023-07-01", "2022-09-01", "2021-04-01"),
    "subscriptions": ("2024-11-01", "2022-12-01", "2022-09-01", "2021-04-01", "2020-01-01"),
    "tenants": ("2024-11-01", "2022-12-01", "2020-01-01"),
    "resources": ("2024-11-01", "2024-07-01", "2023-07-01", "2022-09-01", "2021-04-01"),
    "providers": ("2024-11-01", "2024-07-01", "2023-07-01", "2022-09-01", "2021-04-01"),
}


def _render_subscription(sub: Subscription) -> dict[str, Any]:
    return {
        "id": f"/subscriptions/{sub.id}",
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "subscriptionId": sub.id,
        "tenantId": sub.tenant_id,
        "displayName": sub.display_name,
        "state": sub.state,
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01",
                                 "spendingLimit": "Off"},
    }


def _visible_subscription(call: Call, sub: Subscription) -> bool:
    return sub.tenant_id == call.caller.tenant_id and call.caller.has_any_role_under(f"/subscriptions/{sub.id}")


async def list_subscriptions(call: Call) -> web.StreamResponse:
    subs = [s for s in await call.run(call.services.directory.subscriptions, call.caller.tenant_id)
            if _visible_subscription(call, s)]
    return json({"value": [_render_subscription(s) for s in subs], "count": {"type": "Total", "value": len(subs)}})


async def get_subscription(call: Call, path: ArmPath, sub: Subscription) -> web.StreamResponse:
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
    if not _visible_subscription(call, sub):
        raise subscription_not_found(sub.id)
    return json(_render_subscription(sub))


async def list_tenants(call: Call) -> web.StreamResponse:
    tenant = await call.run(call.services.directory.tenant, call.caller.tenant_id)
    domain = f"{tenant.display_name.lower()}.{call.services.settings.hostname_suffix}"
    return json({"value": [{
        "id": f"/tenants/{tenant.id}", "tenantId": tenant.id, "countryCode": "US", "displayName": tenant.display_name,
        "domains": [domain], "tenantCategory": "Home", "defaultDomain": domain, "tenantType": "AAD",
    }]})


def _render_provider(subscription_id: str, namespace: str) -> dict[str, Any]:
    if namespace.lower() == "microsoft.resources":
        served = {**RESOURCES_TYPES, **getattr(REGISTRY.handlers.get("microsoft.resources"), "resource_types", {})}
        types = [{"resourceType": t, "locations": [], "apiVersions": list(v), "capabilities": "None"}
                 for t, v in served.items()]
        namespace = "Microsoft.Resources"
    else:
        namespace = REGISTRY.namespaces[namespace.lower()]
        types = [{"resourceType": rt.type, "locations": [LOCATION_NAMES.get(loc, loc) for loc in rt.locations],
                  "apiVersions": list(rt.api_versions), "capabilities": "None"}
                 for rt in REGISTRY.namespace_types(namespace)]
        handler = REGISTRY.handlers.get(namespace.lower())
        if handler is not None:
            types += [{"resourceType": t, "locations": [], "apiVersions": list(v), "capabilities": "None"}
                      for t, v in handler.resource_types.items()]
        for (ns, _), action in REGISTRY.actions.items():
            if ns == namespace.lower():
                types.append({"resourceType": action.name, "locations": [], "apiVersions": ["2023-07-01"],
                              "capabilities": "None"})
    return {"id": f"/subscriptions/{subscription_id}/providers/{namespace}", "namespace": namespace,
            "registrationState": "Registered", "registrationPolicy": "RegistrationRequired", "resourceTypes": types}


async def list_operations(call: Call, namespace: str) -> web.StreamResponse:
    """``GET /providers/{namespace}/operations``: the operations of the namespace's resource types (read, write,
    delete and each POST action), as a resource provider lists them; any authenticated caller may read it."""
    if namespace.lower() not in REGISTRY.namespaces:
        raise ArmError(404, "InvalidResourceNamespace", f"The resource namespace '{namespace}' is invalid.")
    spelled = REGISTRY.namespaces[namespace.lower()]
    items = []
    for rt in REGISTRY.namespace_types(spelled):
        verbs = [("read", "Get"), ("write", "Create or update"), ("delete", "Delete")]
        verbs += [(f"{action}/action", action) for action in rt.actions]
        for verb, label in verbs:
            items.append({"name": f"{spelled}/{rt.type}/{verb}", "isDataAction": False, "display": {
                "provider": spelled, "resource": rt.type, "operation": f"{label} {rt.type}",
                "description": f"{label} {rt.type}"}})
    return json({"value": items})


def _require_member(call: Call, subscription_id: str) -> None:
    scope = f"/subscriptions/{subscription_id}"
    if not call.caller.has_any_role_under(scope):
        call.caller.require("Microsoft.Resources/subscriptions/providers/read", scope)


async def list_providers(call: Call, path: ArmPath) -> web.StreamResponse:
    assert path.subscription is not None
    if call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
    _require_member(call, path.subscription)
    names = ["Microsoft.Resources", *sorted((n for n in REGISTRY.namespaces.values()
                                             if n.lower() != "microsoft.resources"), key=str.lower)]
    return json({"value": [_render_provider(path.subscription, n) for n in names]})


async def provider(call: Call, path: ArmPath) -> web.StreamResponse:
    """``GET /subscriptions/{sub}/providers/{ns}`` and ``POST .../{ns}/register|unregister``."""
    assert path.subscription is not None and path.namespace is not None
    known = path.namespace.lower() in REGISTRY.namespaces or path.namespace.lower() == "microsoft.resources"
    if not known:
        raise ArmError(404, "InvalidResourceNamespace", f"The resource namespace '{path.namespace}' is invalid.")
    if path.segments:
        action = path.segments[0].lower()
        call.caller.require(f"{path.namespace}/register/action", path.scope)
        if action == "unregister":
            raise ArmError(409, "ResourceProviderUnregistrationNotAllowed",
                           f"The resource provider '{path.namespace}' cannot be unregistered in acrlocal.")
    elif call.request.method != "GET":
        raise ArmError(405, "MethodNotAllowed", f"The HTTP method '{call.request.method}' is not supported.")
    else:
        _require_member(call, path.subscription)
    return json(_render_provider(path.subscription, path.namespace))


def metadata_endpoints(services: ArmServices, api_version: str | None, host: str | None = None) -> Any:
    """What ``GET /metadata/endpoints`` returns, by api-version as ARM answers: 2022-09-01 and later this cloud's
    object (what ``az cloud register`` maps); 2019-05-01 up to then a list of clouds (``ARM_CLOUD_METADATA_URL``);
    older or none, the original small object. Reached at ``management.azure.com`` (from a VM) it describes Azure's
    public cloud, whose names the VM reaches."""
    base = services.tokens.authority
    suffix = services.settings.hostname_suffix
    acr_suffix = f"{suffix}:{services.registries.shared_port}"
    login = graph = arm = f"{base}/"
    name = "acrlocal"
    if publiccloud.is_azure_host(host):
        name, acr_suffix = "AzureCloud", publiccloud.ACR_SUFFIX
        login, graph = f"https://{publiccloud.LOGIN_HOST}/", f"https://{publiccloud.GRAPH_HOST}/"
        arm = f"https://{publiccloud.ARM_HOST}/"
    cloud = {
        "name": name,
        "portal": f"{base}/",
        "authentication": {
            "loginEndpoint": login,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "media": "https://rest.media.azure.net",
        "graphAudience": "https://graph.windows.net/",
        "graph": graph,
        "microsoftGraphResourceId": graph,
        "microsoftGraph": graph,
        "resourceManager": arm,
        "gallery": f"{base}/",
        "batch": "https://batch.core.windows.net/",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "vmImageAliasDoc": f"{base}/metadata/vm-image-aliases",
        "activeDirectoryDataLake": "https://datalake.azure.net/",
        "appInsightsResourceId": "https://api.applicationinsights.io",
        "appInsightsTelemetryChannelResourceId": "https://dc.applicationinsights.azure.com/v2/track",
        "attestationResourceId": "https://attest.azure.net",
        "synapseAnalyticsResourceId": "https://dev.azuresynapse.net",
        "logAnalyticsResourceId": "https://api.loganalytics.io",
        "ossrDbmsResourceId": "https://ossrdbms-aad.database.windows.net",
        "suffixes": {
            "acrLoginServer": acr_suffix,
            "keyVaultDns": f"vault.{suffix}",
            "storage": f"storage.{suffix}",
            "sqlServerHostname": f"database.{suffix}",
            "azureDataLakeStoreFileSystem": f"datalake.{suffix}",
            "azureDataLakeAnalyticsCatalogAndJob": f"datalakeanalytics.{suffix}",
        },
    }
    if api_version and api_version >= "2022-09-01":
        return cloud
    if api_version and api_version >= "2019-05-01":
        return [cloud]
    return {
        "galleryEndpoint": cloud["gallery"],
        "graphEndpoint": cloud["graph"],
        "portalEndpoint": cloud["portal"],
        "authentication": {"loginEndpoint": cloud["authentication"]["loginEndpoint"],  # type: ignore[index]
                           "audiences": cloud["authentication"]["audiences"]},  # type: ignore[index]
    }
