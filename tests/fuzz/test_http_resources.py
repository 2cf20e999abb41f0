"""ARM's resources written with near-valid bodies over HTTP, against a server of the module's own: at paths that
exist (a group of the module's own, with a managed identity, a virtual network, a network security group; the
registry's scope maps and tokens), PUT and PATCH of bodies that are valid but for one value, and mutated
documents. test_http's ARM test reaches random paths; this one reaches the providers' validation behind them.

Properties: never a 5xx; a refusal is ARM's ``error`` JSON and changes nothing (the resource and the group's
resources read the same before and after); and the server's log holds no traceback and nothing at ERROR level."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as s
from tests.fuzz.conftest import World, assert_logged_no_error, clean

GROUP = "fuzz-res"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
NET = "providers/Microsoft.Network"
MSI = "providers/Microsoft.ManagedIdentity/userAssignedIdentities"


def arm(world: World, method: str, path: str, body: bytes | None = None, api: str = "2023-09-01") -> Any:
    return world.answered(lambda: world.http.request(method, f"{world.server.shared}{path}", params={
        "api-version": api}, data=body, headers={"Authorization": f"Bearer {world.arm}",
                                                   "Content-Type": "application/json"}), "arm resource")


@pytest.fixture(scope="module")
def paths(world: World) -> dict[str, str]:
    """The group and what the bodies name, made valid first."""
    sub = f"/subscriptions/{world.subscription}"
    group = f"{sub}/resourceGroups/{GROUP}"
    registry = f"{sub}/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/acrlocal"
    made = {"group": group, "registry": registry, "identity": f"{group}/{MSI}/fzid",
            "vnet": f"{group}/{NET}/virtualNetworks/fzv", "nsg": f"{group}/{NET}/networkSecurityGroups/fzn",
            "scope map": f"{registry}/scopeMaps/fuzz-map",
            "own registry": f"{group}/providers/Microsoft.ContainerRegistry/registries/fuzzresources"}
    for key, body, api in (("group", {"location": "westus"}, "2022-09-01"),
                           ("identity", {"location": "westus"}, "2023-01-31"),
                           ("vnet", VNET, "2023-09-01"), ("nsg", NSG, "2023-09-01"),
                           ("scope map", SCOPE_MAP, "2023-07-01"), ("own registry", OWN_REGISTRY, "2023-07-01")):
        r = arm(world, "PUT", made[key], json.dumps(body).encode(), api)
        assert r.status_code in (200, 201), (key, r.text)
    principal = arm(world, "GET", made["identity"], api="2023-01-31").json()["properties"]["principalId"]
    made["principal"] = principal
    return made


VNET = {"location": "westus", "tags": {"a": "b"}, "properties": {
    "addressSpace": {"addressPrefixes": ["10.1.0.0/16"]},
    "subnets": [{"name": "s0", "properties": {"addressPrefix": "10.1.0.0/24"}}]}}
NSG = {"location": "westus", "properties": {"securityRules": [{"name": "r1", "properties": {
    "priority": 100, "direction": "Inbound", "access": "Allow", "protocol": "Tcp", "sourcePortRange": "*",
    "destinationPortRange": "22", "sourceAddressPrefix": "*", "destinationAddressPrefix": "*"}}]}}
OWN_REGISTRY = {"location": "westus", "sku": {"name": "Standard"}, "tags": {"a": "b"},
                "properties": {"adminUserEnabled": True, "anonymousPullEnabled": False, "dataEndpointEnabled": False,
                               "publicNetworkAccess": "Enabled", "roleAssignmentMode": "LegacyRegistryPermissions",
                               "policies": {"retentionPolicy": {"days": 7, "status": "disabled"},
                                            "azureADAuthenticationAsArmPolicy": {"status": "enabled"}}}}
SCOPE_MAP = {"properties": {"actions": ["repositories/fuzz/content/read", "repositories/fuzz/metadata/write"],
                            "description": "fuzz"}}


def specs(paths: dict[str, str]) -> dict[str, tuple[str, str, dict[str, Any], str]]:
    """What may be written: ``{kind: (method, path, valid body, api-version)}``."""
    group = paths["group"]
    return {
        "identity": ("PUT", paths["identity"], {"location": "westus", "tags": {"env": "fuzz"}}, "2023-01-31"),
        "identity tags": ("PATCH", paths["identity"], {"tags": {"env": "patched"}}, "2023-01-31"),
        "federated credential": ("PUT", f"{paths['identity']}/federatedIdentityCredentials/fic", {"properties": {
            "issuer": "https://issuer.example", "subject": "system:serviceaccount:ns:sa",
            "audiences": ["api://AzureADTokenExchange"]}}, "2023-01-31"),
        "vnet": ("PUT", paths["vnet"], VNET, "2023-09-01"),
        "subnet": ("PUT", f"{paths['vnet']}/subnets/s1", {"properties": {
            "addressPrefix": "10.1.1.0/24", "networkSecurityGroup": {"id": paths["nsg"]}}}, "2023-09-01"),
        "subnet prefixes": ("PUT", f"{paths['vnet']}/subnets/s2", {"properties": {
            "addressPrefixes": ["10.1.2.0/24"], "privateEndpointNetworkPolicies": "Disabled",
            "defaultOutboundAccess": False}}, "2023-09-01"),
        "nsg": ("PUT", paths["nsg"], NSG, "2023-09-01"),
        "security rule": ("PUT", f"{paths['nsg']}/securityRules/r2", {"properties": {
            "priority": 200, "direction": "Outbound", "access": "Deny", "protocol": "Udp", "sourcePortRange": "1-9",
            "destinationPortRanges": ["53", "60-70"], "sourceAddressPrefixes": ["10.0.0.0/8"],
            "destinationAddressPrefix": "Internet"}}, "2023-09-01"),
        "public ip": ("PUT", f"{group}/{NET}/publicIPAddresses/fzp", {
            "location": "westus", "sku": {"name": "Standard"},
            "properties": {"publicIPAllocationMethod": "Static"}}, "2023-09-01"),
        "nic": ("PUT", f"{group}/{NET}/networkInterfaces/fznic", {"location": "westus", "properties": {
            "networkSecurityGroup": {"id": paths["nsg"]}, "ipConfigurations": [{"name": "ip1", "properties": {
                "subnet": {"id": f"{paths['vnet']}/subnets/s0"}, "privateIPAllocationMethod": "Dynamic"}}]}},
            "2023-09-01"),
        "role assignment": ("PUT", f"{group}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", {
            "properties": {"roleDefinitionId": f"/subscriptions/{paths['group'].split('/')[2]}/providers/"
                                               f"Microsoft.Authorization/roleDefinitions/{READER}",
                           "principalId": paths["principal"], "principalType": "ServicePrincipal",
                           "description": "fuzz",
                           "condition": "((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/"
                                        "containers/blobs/read'})))", "conditionVersion": "2.0"}}, "2022-04-01"),
        "scope map": ("PUT", paths["scope map"], SCOPE_MAP, "2023-07-01"),
        "token": ("PUT", f"{paths['registry']}/tokens/fuzz-token", {"properties": {
            "scopeMapId": paths["scope map"], "status": "enabled"}}, "2023-07-01"),
        "group tags": ("PATCH", group, {"tags": {"owner": "fuzz"}}, "2022-09-01"),
        "registry": ("PUT", paths["own registry"], {**OWN_REGISTRY, "identity": {
            "type": "UserAssigned", "userAssignedIdentities": {paths["identity"]: {}}}}, "2023-07-01"),
        "registry update": ("PATCH", paths["own registry"], {"sku": {"name": "Premium"}, "tags": {"x": "y"},
                                                             "properties": {"adminUserEnabled": True,
                                                                            "anonymousPullEnabled": True}},
                            "2023-07-01"),
        "registry password": ("POST", f"{paths['own registry']}/regenerateCredential", {"name": "password2"},
                              "2023-07-01"),
    }


def state(world: World, path: str, api: str) -> Any:
    """The resource as GET answers it (its status and body), and the group's resources."""
    r = arm(world, "GET", path, api=api)
    return r.status_code, (r.json() if r.status_code == 200 else None), world.arm_state()


@given(st.data(), st.sampled_from(["identity", "identity tags", "federated credential", "vnet", "subnet",
                                   "subnet prefixes", "nsg", "security rule", "public ip", "nic", "role assignment",
                                   "scope map", "token", "group tags", "registry", "registry update",
                                   "registry password"]))
def test_resources_near_valid(world: World, paths: dict[str, str], data: st.DataObject, kind: str) -> None:
    method, path, valid, api = specs(paths)[kind]
    body = data.draw(st.one_of(st.just(valid), s.one_odd_value(valid), s.one_odd_value(valid),
                               s.one_odd_value(valid)).map(lambda d: json.dumps(clean(d)).encode())
                     | s.mutated_documents(valid))
    read = path.rsplit("/regenerateCredential", 1)[0]
    before = state(world, read, api)
    r = arm(world, method, path, body, api)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), r.text
        assert state(world, read, api) == before, f"a refused {method} of {kind} changed something: {r.text}"
    elif r.status_code in (200, 201):
        assert arm(world, "GET", read, api=api).status_code == 200


def test_the_server_logged_no_error(world: World) -> None:
    assert_logged_no_error(world)
