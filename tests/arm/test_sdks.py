"""The real Azure management SDKs against our ARM endpoint: resource groups, registries, role assignments.

Each client is pointed at the shared port with ``base_url`` and asks the Entra endpoint for ARM tokens with
``credential_scopes``; long-running operations go through the SDKs' own pollers.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.authorization import AuthorizationManagementClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.models import Registry, RegistryUpdateParameters, Sku
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.arm.conftest import Principal, admin_of, new_principal, subscription_of
from tests.harness import AcrLocal

SCOPES = ["https://management.azure.com/.default"]


def clients(server: AcrLocal, principal: Principal) -> dict[str, Any]:
    cred = principal.credential(server)
    sub = subscription_of(server)
    common: dict[str, Any] = {"base_url": server.shared, "credential_scopes": SCOPES, "connection_verify": server.ca,
                              "polling_interval": 0}
    return {
        "resource": ResourceManagementClient(cred, sub, **common),
        "acr": ContainerRegistryManagementClient(cred, sub, **common),
        "auth": AuthorizationManagementClient(cred, sub, **common),
    }


@pytest.fixture(scope="module")
def sdk(arm_server: AcrLocal) -> dict[str, Any]:
    return clients(arm_server, admin_of(arm_server))


def test_group_registry_assignment_lifecycle_with_the_sdks(arm_server: AcrLocal, sdk: dict[str, Any]) -> None:
    resource: ResourceManagementClient = sdk["resource"]
    acr: ContainerRegistryManagementClient = sdk["acr"]
    auth: AuthorizationManagementClient = sdk["auth"]

    group = resource.resource_groups.create_or_update("sdk-group", {"location": "westus", "tags": {"by": "sdk"}})
    assert group.name == "sdk-group" and group.properties.provisioning_state == "Succeeded"
    assert resource.resource_groups.check_existence("sdk-group") is True
    assert "sdk-group" in [g.name for g in resource.resource_groups.list()]

    assert acr.registries.check_name_availability({"name": "sdkregistry01",
                                                   "type": "Microsoft.ContainerRegistry/registries"}).name_available
    registry = acr.registries.begin_create("sdk-group", "sdkregistry01",
                                           Registry(location="westus", sku=Sku(name="Standard"))).result()
    assert registry.provisioning_state == "Succeeded" and registry.sku.name == "Standard"
    assert registry.admin_user_enabled is False
    login_server = registry.login_server
    assert arm_server.session().get(f"https://{login_server}/v2/", timeout=10).status_code in (200, 401)
    assert [r.name for r in acr.registries.list_by_resource_group("sdk-group")] == ["sdkregistry01"]
    assert "sdkregistry01" in [r.name for r in acr.registries.list()]
    by_type = resource.resources.list(filter="resourceType eq 'Microsoft.ContainerRegistry/registries'")
    assert registry.id in [r.id for r in by_type]

    updated = acr.registries.begin_update("sdk-group", "sdkregistry01",
                                          RegistryUpdateParameters(admin_user_enabled=True)).result()
    assert updated.admin_user_enabled is True
    creds = acr.registries.list_credentials("sdk-group", "sdkregistry01")
    assert creds.username == "sdkregistry01" and len(creds.passwords) == 2

    pull = next(iter(auth.role_definitions.list(registry.id, filter="roleName eq 'AcrPull'")))
    assert pull.role_name == "AcrPull"
    puller = new_principal(arm_server, "sdk-puller")
    name = str(uuid.uuid4())
    assignment = auth.role_assignments.create(registry.id, name, {
        "role_definition_id": pull.id, "principal_id": puller.object_id, "principal_type": "ServicePrincipal"})
    assert assignment.scope == registry.id and assignment.principal_id == puller.object_id
    listed = list(auth.role_assignments.list_for_scope(registry.id, filter=f"principalId eq '{puller.object_id}'"))
    assert [a.name for a in listed] == [name]
    assert auth.role_assignments.get(registry.id, name).role_definition_id.endswith(pull.name)
    with pytest.raises(HttpResponseError) as dup:
        auth.role_assignments.create(registry.id, str(uuid.uuid4()), {
            "role_definition_id": pull.id, "principal_id": puller.object_id})
    assert dup.value.error is not None and dup.value.error.code == "RoleAssignmentExists"
    auth.role_assignments.delete(registry.id, name)
    assert list(auth.role_assignments.list_for_scope(registry.id, filter=f"principalId eq '{puller.object_id}'")) == []

    acr.registries.begin_delete("sdk-group", "sdkregistry01").result()
    with pytest.raises(ResourceNotFoundError):
        acr.registries.get("sdk-group", "sdkregistry01")
    with pytest.raises(requests.ConnectionError):
        arm_server.session().get(f"https://{login_server}/v2/", timeout=10)
    resource.resource_groups.begin_delete("sdk-group").result()
    assert resource.resource_groups.check_existence("sdk-group") is False


def test_sdk_sees_arm_errors(arm_server: AcrLocal, sdk: dict[str, Any]) -> None:
    reader = new_principal(arm_server, "sdk-nobody")
    theirs = clients(arm_server, reader)
    with pytest.raises(HttpResponseError) as denied:
        theirs["resource"].resource_groups.create_or_update("sdk-denied", {"location": "westus"})
    assert denied.value.status_code == 403 and denied.value.error is not None
    assert denied.value.error.code == "AuthorizationFailed"
    assert sdk["resource"].resource_groups.check_existence("sdk-denied") is False
    with pytest.raises(ResourceNotFoundError) as missing:
        sdk["acr"].registries.get("acrlocal", "nosuchregistry")
    assert missing.value.error is not None and missing.value.error.code == "ResourceNotFound"
