"""Tenant isolation, audited over HTTP: a principal of tenant A with a valid token can neither read, list, infer nor
act on what tenant B holds, at any of the server's doors (ARM, Microsoft Graph, the Entra endpoints, a registry's
token service and ``/acr/v1``), and each door refuses in its own protocol's error format, as Azure does.

Tenant A is the server's default tenant (the local administrator: Owner of A's subscription and Global
Administrator of A's directory). Tenant B is made in the database (the API that makes tenants has its own tests in
``test_tenant_create.py``): a subscription, a service principal that is Owner of it and Global Administrator of B,
and through the APIs, as that principal, a resource group with an identity, a network, a registry, a role
assignment, a custom role, and Graph objects.

Azure's yardsticks: ARM answers a token of another tenant at a subscription with 401
``InvalidAuthenticationTokenTenant`` before it looks anything up (so nothing of the path is confirmed or denied);
Graph finds only the caller tenant's objects (404 ``Request_ResourceNotFound``, as for a missing one); Entra knows a
client only in its own tenant (AADSTS700016, as for an unknown one); a registry takes only tokens of the tenant that
owns it. Where a leak would show as a different answer for "another tenant's" than for "does not exist", the tests
compare the two answers."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from acrlocal.arm.store import ArmStore, StoredAssignment
from acrlocal.identity.directory import Directory
from acrlocal.rbac.roles import OWNER, READER
from tests.arm.conftest import Arm, Principal, admin_of, subscription_of
from tests.arm.conftest import arm_error as any_arm_error
from tests.harness import AcrLocal

GRAPH = "https://graph.microsoft.com/.default"
ACR = "https://containerregistry.azure.net/.default"
NETWORK = "2024-05-01"
LOCATION = "westeurope"
PASSWORD = "Str0ng-Passw0rd!"


@dataclass
class TenantB:
    """What tenant B holds (ids and names), and its owner."""

    owner: Principal
    subscription: str
    group: str
    objects: dict[str, str]

    @property
    def group_id(self) -> str:
        return f"/subscriptions/{self.subscription}/resourceGroups/{self.group}"


def arm_error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    """ARM's error body ``{"error": {"code", "message"}}`` with this status and code, and its request id."""
    assert r.headers.get("x-ms-request-id"), r.headers
    return any_arm_error(r, status, code)


def graph_error(r: requests.Response, status: int, code: str) -> None:
    """Graph's error body ``{"error": {"code", "message", "innerError"}}``."""
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    error = r.json()["error"]
    assert error["code"] == code and error["message"] and "request-id" in error["innerError"], r.text


def entra_error(r: requests.Response, status: int, error: str, code: int) -> None:
    """Entra's error body ``{"error", "error_description": "AADSTS...", "error_codes"}``."""
    assert r.status_code == status, (r.request.url, r.status_code, r.text)
    body = r.json()
    assert body["error"] == error and body["error_codes"] == [code], body
    assert body["error_description"].startswith(f"AADSTS{code}:"), body


def ok(r: requests.Response, *status: int) -> Any:
    assert r.status_code in (status or (200, 201)), (r.request.method, r.request.url, r.status_code, r.text)
    return r.json() if r.content else None


def _make_tenant_b(server: AcrLocal) -> tuple[Principal, str]:
    """A second tenant with a subscription and a service principal that is its Owner and the tenant's Global
    Administrator (made in the server's database: there is no API that makes tenants)."""
    engine = server.database()
    try:
        directory = Directory(engine)
        tenant = directory.create_tenant(f"tenant-b-{uuid.uuid4().hex[:6]}")
        sub = directory.create_subscription(tenant.id, "tenant B's subscription")
        sp = directory.create_service_principal(tenant.id, "tenant-b-owner")
        _, secret = directory.add_secret(sp.object_id, "test")
        directory.add_directory_role(sp.object_id)
        ArmStore(engine).add_assignment(StoredAssignment(str(uuid.uuid4()), f"/subscriptions/{sub.id}", OWNER.id,
                                                         sp.object_id, "ServicePrincipal"))
    finally:
        engine.dispose()
    return Principal(tenant.id, sp.app_id, sp.object_id, secret), sub.id


@pytest.fixture(scope="module")
def b(arm_server: AcrLocal) -> TenantB:
    owner, sub = _make_tenant_b(arm_server)
    arm = Arm(arm_server, owner.token(arm_server))
    group = f"rg-b-{uuid.uuid4().hex[:6]}"
    gid = f"/subscriptions/{sub}/resourceGroups/{group}"
    ok(arm.call("PUT", gid, {"location": LOCATION}))
    net = f"{gid}/providers/Microsoft.Network"
    uami = ok(arm.call("PUT", f"{gid}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/b-identity",
                       {"location": LOCATION}, api_version="2023-01-31"))
    ok(arm.call("PUT", f"{net}/networkSecurityGroups/b-nsg", {"location": LOCATION}, api_version=NETWORK))
    ok(arm.call("PUT", f"{net}/virtualNetworks/b-vnet", {"location": LOCATION, "properties": {
        "addressSpace": {"addressPrefixes": ["10.9.0.0/16"]},
        "subnets": [{"name": "default", "properties": {"addressPrefix": "10.9.0.0/24"}}]}}, api_version=NETWORK))
    ok(arm.call("PUT", f"{net}/publicIPAddresses/b-ip", {"location": LOCATION, "sku": {"name": "Standard"},
                                                         "properties": {"publicIPAllocationMethod": "Static"}},
                api_version=NETWORK))
    ok(arm.call("PUT", f"{net}/networkInterfaces/b-nic", {"location": LOCATION, "properties": {"ipConfigurations": [
        {"name": "ipconfig1", "properties": {"subnet": {"id": f"{net}/virtualNetworks/b-vnet/subnets/default"}}}]}},
        api_version=NETWORK))
    registry = f"bregistry{uuid.uuid4().hex[:8]}"
    reg = ok(arm.call("PUT", f"{gid}/providers/Microsoft.ContainerRegistry/registries/{registry}",
                      {"location": LOCATION, "sku": {"name": "Basic"}}, api_version="2023-07-01"))
    assignment = str(uuid.uuid4())
    ok(arm.call("PUT", f"{gid}/providers/Microsoft.Authorization/roleAssignments/{assignment}", {"properties": {
        "roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{READER.id}",
        "principalId": uami["properties"]["principalId"], "principalType": "ServicePrincipal"}},
        api_version="2022-04-01"))
    role = str(uuid.uuid4())
    ok(arm.call("PUT", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}",
                {"properties": {"roleName": f"tenant B's role {role[:6]}", "type": "CustomRole",
                                "permissions": [{"actions": ["Microsoft.Resources/subscriptions/resourceGroups/read"]}],
                                "assignableScopes": [f"/subscriptions/{sub}"]}}, api_version="2022-04-01"))
    g = Arm(arm_server, owner.token(arm_server, GRAPH))
    app = ok(g.call("POST", "/v1.0/applications", {"displayName": "tenant-b-app", "isFallbackPublicClient": True},
                    api_version=None))
    sp = ok(g.call("POST", "/v1.0/servicePrincipals", {"appId": app["appId"]}, api_version=None))
    group_obj = ok(g.call("POST", "/v1.0/groups", {"displayName": "tenant-b-group", "mailNickname": "tbg",
                                                   "mailEnabled": False, "securityEnabled": True}, api_version=None))
    upn = f"bob-{uuid.uuid4().hex[:6]}@tenant-b.example"
    user = ok(g.call("POST", "/v1.0/users", {"accountEnabled": True, "displayName": "Bob", "mailNickname": "bob",
                                             "userPrincipalName": upn, "passwordProfile": {"password": PASSWORD}},
                     api_version=None))
    return TenantB(owner, sub, group, {
        "uami": uami["id"], "uamiPrincipal": uami["properties"]["principalId"],
        "vnet": f"{net}/virtualNetworks/b-vnet", "subnet": f"{net}/virtualNetworks/b-vnet/subnets/default",
        "nsg": f"{net}/networkSecurityGroups/b-nsg", "ip": f"{net}/publicIPAddresses/b-ip",
        "nic": f"{net}/networkInterfaces/b-nic", "registry": reg["id"], "registryName": registry,
        "loginServer": reg["properties"]["loginServer"], "assignment": assignment, "role": role,
        "app": app["id"], "appId": app["appId"], "sp": sp["id"], "group": group_obj["id"], "user": user["id"],
        "upn": upn})


@pytest.fixture(scope="module")
def a_arm(arm_server: AcrLocal) -> Arm:
    return Arm(arm_server, admin_of(arm_server).token(arm_server))


@pytest.fixture(scope="module")
def a_group(arm_server: AcrLocal, a_arm: Arm) -> str:
    """A resource group of tenant A's subscription with a network of its own."""
    gid = f"/subscriptions/{subscription_of(arm_server)}/resourceGroups/rg-a-{uuid.uuid4().hex[:6]}"
    ok(a_arm.call("PUT", gid, {"location": LOCATION}))
    ok(a_arm.call("PUT", f"{gid}/providers/Microsoft.Network/virtualNetworks/a-vnet", {"location": LOCATION,
        "properties": {"addressSpace": {"addressPrefixes": ["10.8.0.0/16"]},
                       "subnets": [{"name": "default", "properties": {"addressPrefix": "10.8.0.0/24"}}]}},
        api_version=NETWORK))
    return gid


# -- ARM: another tenant's subscription ------------------------------------------------------------------------

#: (method, path under tenant B's subscription or an object's id, body); every one is refused before any look-up.
B_SUBSCRIPTION_CALLS: list[tuple[str, str, Any]] = [
    ("GET", "", None),
    ("GET", "/resourcegroups", None),
    ("GET", "/resourceGroups/{group}", None),
    ("HEAD", "/resourceGroups/{group}", None),
    ("GET", "/resources", None),
    ("GET", "/resourceGroups/{group}/resources", None),
    ("GET", "/providers", None),
    ("GET", "/providers/Microsoft.ContainerRegistry", None),
    ("GET", "/providers/Microsoft.ManagedIdentity/userAssignedIdentities", None),
    ("GET", "/providers/Microsoft.ContainerRegistry/registries", None),
    ("GET", "/providers/Microsoft.Network/networkInterfaces", None),
    ("GET", "/providers/Microsoft.Compute/virtualMachines", None),
    ("GET", "/providers/Microsoft.Authorization/roleAssignments", None),
    ("GET", "/providers/Microsoft.Authorization/roleDefinitions", None),
    ("GET", "/providers/Microsoft.Authorization/roleDefinitions/{role}", None),
    ("GET", "/resourceGroups/{group}/providers/Microsoft.Resources/deployments", None),
    ("GET", "{uami}", None),
    ("GET", "{uami}/federatedIdentityCredentials", None),
    ("GET", "{vnet}", None),
    ("GET", "{nic}", None),
    ("GET", "{registry}", None),
    ("GET", "{registry}/tokens", None),
    ("GET", "/resourceGroups/{group}/providers/Microsoft.Authorization/roleAssignments/{assignment}", None),
    ("GET", "/resourceGroups/no-such-group", None),  # the same answer: existence is not confirmed
    ("POST", "{registry}/listCredentials", None),
    ("PUT", "/resourceGroups/{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/intruder",
     {"location": LOCATION}),
    ("PATCH", "{uami}", {"tags": {"owned": "by-a"}}),
    ("PUT", "/resourceGroups/{group}/providers/Microsoft.Authorization/roleAssignments/" + str(uuid.uuid4()),
     {"properties": {"roleDefinitionId": OWNER.id, "principalId": "{a}"}}),
    ("DELETE", "{nic}", None),
    ("DELETE", "/resourceGroups/{group}", None),
    ("POST", "/providers/Microsoft.AcrLocal/rotateSigningKeys", None),
]


def _fill(text: str, b: TenantB, a_object: str) -> str:
    values = {**b.objects, "group": b.group, "a": a_object}
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


@pytest.mark.parametrize(("method", "path", "body"), B_SUBSCRIPTION_CALLS,
                         ids=[f"{m} {p}" for m, p, _ in B_SUBSCRIPTION_CALLS])
def test_arm_refuses_a_token_of_another_tenant_at_a_subscription(arm_server: AcrLocal, a_arm: Arm, b: TenantB,
                                                                 method: str, path: str, body: Any) -> None:
    """Every call under tenant B's subscription with tenant A's token: 401 ``InvalidAuthenticationTokenTenant``
    naming the two tenants (as Azure's), whatever the path names, and nothing of B is in the answer."""
    a_object = admin_of(arm_server).object_id
    path = _fill(path, b, a_object)
    full = path if path.startswith("/subscriptions/") else f"/subscriptions/{b.subscription}{path}"
    r = a_arm.call(method, full, None if body is None else json.loads(_fill(json.dumps(body), b, a_object)))
    if method == "HEAD":
        assert r.status_code == 401, r.status_code
        return
    error = arm_error(r, 401, "InvalidAuthenticationTokenTenant")
    assert "wrong issuer" in error["message"] and b.owner.tenant_id in error["message"]
    for name in (b.group, "b-identity", "b-vnet", "b-nic", b.objects["registryName"], b.objects["uamiPrincipal"]):
        assert name not in r.text, name
    # What a call changes: nothing (tenant B still sees its group, identity and interface as they were).
    mine = Arm(arm_server, b.owner.token(arm_server))
    assert ok(mine.call("GET", b.objects["uami"], api_version="2023-01-31"))["tags"] == {}
    assert "virtualMachine" not in ok(mine.call("GET", b.objects["nic"], api_version=NETWORK))["properties"]


def test_arm_lists_and_the_tenant_root_show_only_the_callers_tenant(arm_server: AcrLocal, a_arm: Arm,
                                                                    b: TenantB) -> None:
    a = admin_of(arm_server)
    a_sub = subscription_of(arm_server)
    subs = ok(a_arm.call("GET", "/subscriptions"))["value"]
    assert [s["subscriptionId"] for s in subs] == [a_sub] and b.owner.tenant_id not in str(subs)
    tenants = ok(a_arm.call("GET", "/tenants"))["value"]
    assert [t["tenantId"] for t in tenants] == [a.tenant_id]
    # Tenant B's own view, the other way round.
    mine = Arm(arm_server, b.owner.token(arm_server))
    assert [s["subscriptionId"] for s in ok(mine.call("GET", "/subscriptions"))["value"]] == [b.subscription]
    assert [t["tenantId"] for t in ok(mine.call("GET", "/tenants"))["value"]] == [b.owner.tenant_id]
    # The tenant root's role definitions: built-in roles and A's custom roles, never B's.
    roots = ok(a_arm.call("GET", "/providers/Microsoft.Authorization/roleDefinitions", api_version="2022-04-01"))
    assert b.objects["role"] not in {d["name"] for d in roots["value"]}
    assert any(d["name"] == b.objects["role"] for d in ok(mine.call(
        "GET", f"/subscriptions/{b.subscription}/providers/Microsoft.Authorization/roleDefinitions",
        api_version="2022-04-01"))["value"])
    for scope in ("", f"/subscriptions/{a_sub}"):
        r = a_arm.call("GET", f"{scope}/providers/Microsoft.Authorization/roleDefinitions/{b.objects['role']}",
                       api_version="2022-04-01")
        arm_error(r, 404, "RoleDefinitionDoesNotExist")
    # Role assignments at the root: A holds nothing there, so it may not list them (which would span tenants).
    r = a_arm.call("GET", "/providers/Microsoft.Authorization/roleAssignments", api_version="2022-04-01")
    arm_error(r, 403, "AuthorizationFailed")
    # In A's subscription, a filter naming B's principals or assignment finds nothing.
    for flt in (f"principalId eq '{b.owner.object_id}'", f"assignedTo('{b.objects['uamiPrincipal']}')"):
        listed = a_arm.session.get(
            f"{arm_server.shared}/subscriptions/{a_sub}/providers/Microsoft.Authorization/roleAssignments",
            params={"api-version": "2022-04-01", "$filter": flt}, headers={"Authorization": f"Bearer {a_arm.token}"})
        assert ok(listed)["value"] == [], flt
    r = a_arm.call("GET", f"/subscriptions/{a_sub}/providers/Microsoft.Authorization/roleAssignments/"
                   f"{b.objects['assignment']}", api_version="2022-04-01")
    arm_error(r, 404, "RoleAssignmentNotFound")


def test_arm_writes_cannot_name_another_tenants_principals_roles_or_scopes(arm_server: AcrLocal, a_arm: Arm,
                                                                           b: TenantB) -> None:
    """Role assignments and custom roles in A's subscription that name B's objects are refused exactly as if the
    objects did not exist (the principal, the role), and B's subscription is not an assignable scope of A's."""
    a_sub = subscription_of(arm_server)
    roles = f"/subscriptions/{a_sub}/providers/Microsoft.Authorization"

    def assign(principal: str, role: str = READER.id) -> requests.Response:
        return a_arm.call("PUT", f"{roles}/roleAssignments/{uuid.uuid4()}", {"properties": {
            "roleDefinitionId": f"{roles}/roleDefinitions/{role}", "principalId": principal}},
            api_version="2022-04-01")

    for theirs, missing in ((b.owner.object_id, str(uuid.uuid4())), (b.objects["user"], str(uuid.uuid4())),
                            (b.objects["uamiPrincipal"], str(uuid.uuid4()))):
        refused, unknown = assign(theirs), assign(missing)
        arm_error(refused, 400, "PrincipalNotFound")
        arm_error(unknown, 400, "PrincipalNotFound")
        assert refused.json()["error"]["message"].replace(theirs.replace("-", ""), "x") == \
            unknown.json()["error"]["message"].replace(missing.replace("-", ""), "x")
    admin = admin_of(arm_server).object_id
    arm_error(assign(admin, b.objects["role"]), 400, "RoleDefinitionDoesNotExist")
    role = a_arm.call("PUT", f"{roles}/roleDefinitions/{uuid.uuid4()}", {"properties": {
        "roleName": f"reaches B {uuid.uuid4().hex[:6]}", "type": "CustomRole",
        "permissions": [{"actions": ["*"]}], "assignableScopes": [f"/subscriptions/{b.subscription}"]}},
        api_version="2022-04-01")
    arm_error(role, 400, "InvalidAssignableScopes")


# -- ARM: references in a body to another tenant's resources ----------------------------------------------------

def _nic(subnet: str, *, ip: str | None = None, nsg: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"subnet": {"id": subnet}}
    if ip:
        config["publicIPAddress"] = {"id": ip}
    body: dict[str, Any] = {"location": LOCATION, "properties": {"ipConfigurations": [
        {"name": "ipconfig1", "properties": config}]}}
    if nsg:
        body["properties"]["networkSecurityGroup"] = {"id": nsg}
    return body


#: (what, the resource A writes under its group, its api-version, its body naming ``{ref}``, what ``{ref}`` is)
REFERENCES = [
    ("nic-subnet", "/providers/Microsoft.Network/networkInterfaces/a-nic-1", NETWORK,
     lambda ref, own: _nic(ref), "subnet", "virtualNetworks/x-vnet/subnets/default"),
    ("nic-public-ip", "/providers/Microsoft.Network/networkInterfaces/a-nic-2", NETWORK,
     lambda ref, own: _nic(own, ip=ref), "ip", "publicIPAddresses/x-ip"),
    ("nic-nsg", "/providers/Microsoft.Network/networkInterfaces/a-nic-3", NETWORK,
     lambda ref, own: _nic(own, nsg=ref), "nsg", "networkSecurityGroups/x-nsg"),
    ("subnet-nsg", "/providers/Microsoft.Network/virtualNetworks/a-vnet/subnets/second", NETWORK,
     lambda ref, own: {"properties": {"addressPrefix": "10.8.1.0/24", "networkSecurityGroup": {"id": ref}}},
     "nsg", "networkSecurityGroups/x-nsg"),
    ("vm-nic", "/providers/Microsoft.Compute/virtualMachines/a-vm-1", "2024-07-01",
     lambda ref, own: {"location": LOCATION, "properties": {
         "networkProfile": {"networkInterfaces": [{"id": ref}]}}}, "nic", "networkInterfaces/x-nic"),
    ("vm-identity", "/providers/Microsoft.Compute/virtualMachines/a-vm-2", "2024-07-01",
     lambda ref, own: {"location": LOCATION, "identity": {"type": "UserAssigned",
                                                          "userAssignedIdentities": {ref: {}}}}, "uami", None),
]


@pytest.mark.parametrize(("what", "path", "version", "body", "ref", "missing"), REFERENCES,
                         ids=[r[0] for r in REFERENCES])
def test_a_reference_to_another_tenants_resource_is_as_one_that_does_not_exist(
        arm_server: AcrLocal, a_arm: Arm, a_group: str, b: TenantB, what: str, path: str, version: str, body: Any,
        ref: str, missing: str | None) -> None:
    """A network interface, subnet or VM of tenant A that names B's subnet, public address, security group,
    interface or identity by id: refused exactly as for an id that names nothing (same status and code), nothing is
    made, and B's resource is not touched. Before, A's interface joined B's network and took B's address, A's VM
    took B's interface (writing its ``virtualMachine``), and a VM naming B's identity told "exists" (403) from
    "does not exist" (400)."""
    theirs = b.objects[ref]
    nowhere = (f"{b.group_id}/providers/Microsoft.Network/{missing}" if missing else
               f"{b.group_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x-identity")
    own_subnet = f"{a_group}/providers/Microsoft.Network/virtualNetworks/a-vnet/subnets/default"
    unknown = a_arm.call("PUT", a_group + path, body(nowhere, own_subnet), api_version=version)
    refused = a_arm.call("PUT", a_group + path, body(theirs, own_subnet), api_version=version)
    assert unknown.status_code in (400, 403), unknown.text  # not found, or not linkable (LinkedAuthorizationFailed)
    assert (refused.status_code, refused.json()["error"]["code"]) == \
        (unknown.status_code, unknown.json()["error"]["code"]), refused.text
    assert refused.json()["error"]["message"].replace(theirs, "x") == \
        unknown.json()["error"]["message"].replace(nowhere, "x")
    assert a_arm.call("GET", a_group + path, api_version=version).status_code == 404
    mine = Arm(arm_server, b.owner.token(arm_server))
    assert "virtualMachine" not in ok(mine.call("GET", b.objects["nic"], api_version=NETWORK))["properties"]


SCHEMA = "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#"


def _deploy(arm: Arm, group: str, template: dict[str, Any]) -> dict[str, Any]:
    """Deploy ``template`` to ``group`` as ``arm``'s caller; the deployment once it has ended."""
    path = f"{group}/providers/Microsoft.Resources/deployments/d-{uuid.uuid4().hex[:8]}"
    ok(arm.call("PUT", path, {"properties": {"mode": "Incremental", "template": {
        "$schema": SCHEMA, "contentVersion": "1.0.0.0", **template}}}, api_version="2024-03-01"))
    for _ in range(600):
        body: dict[str, Any] = ok(arm.call("GET", path, api_version="2024-03-01"))
        if body["properties"]["provisioningState"] in ("Succeeded", "Failed", "Canceled"):
            return body
        time.sleep(0.05)
    raise AssertionError(f"deployment {path} did not end")


def test_a_template_reads_and_deploys_nothing_of_another_tenant(arm_server: AcrLocal, a_arm: Arm, a_group: str,
                                                                b: TenantB) -> None:
    """A deployment of tenant A whose template ``reference()``s B's identity fails as for an id that names nothing
    (the read is authorized before it is looked up) and shows nothing of it; one whose nested deployment targets
    B's subscription fails and makes nothing there."""
    nowhere = f"{b.group_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/x-identity"
    ended = {}
    for what, rid in (("theirs", b.objects["uami"]), ("nowhere", nowhere)):
        ended[what] = _deploy(a_arm, a_group, {"resources": [], "outputs": {
            "leak": {"type": "object", "value": f"[reference('{rid}', '2023-01-31', 'Full')]"}}})
        assert ended[what]["properties"]["provisioningState"] == "Failed", ended[what]
    assert b.objects["uamiPrincipal"] not in json.dumps(ended["theirs"])
    said = {w: json.dumps(ended[w]["properties"]["error"]).replace(ended[w]["name"], "d").replace(rid, "x")
            for w, rid in (("theirs", b.objects["uami"]), ("nowhere", nowhere))}
    assert said["theirs"] == said["nowhere"] and "does not have authorization" in said["theirs"], said
    nested = _deploy(a_arm, a_group, {"resources": [{
        "type": "Microsoft.Resources/deployments", "apiVersion": "2022-09-01", "name": "into-b",
        "subscriptionId": b.subscription, "resourceGroup": b.group,
        "properties": {"mode": "Incremental", "template": {"$schema": SCHEMA, "contentVersion": "1.0.0.0",
                                                           "resources": [{
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities", "apiVersion": "2023-01-31",
            "name": "planted", "location": LOCATION}]}}}]})
    assert nested["properties"]["provisioningState"] == "Failed", nested
    mine = Arm(arm_server, b.owner.token(arm_server))
    planted = mine.call("GET", f"{b.group_id}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/planted",
                        api_version="2023-01-31")
    arm_error(planted, 404, "ResourceNotFound")


# -- Microsoft Graph -------------------------------------------------------------------------------------------

GRAPH_READS = [
    "/v1.0/applications/{app}", "/v1.0/applications(appId='{appId}')", "/v1.0/applications/{app}/owners",
    "/v1.0/applications/{app}/federatedIdentityCredentials", "/v1.0/servicePrincipals/{sp}",
    "/v1.0/servicePrincipals(appId='{appId}')", "/v1.0/servicePrincipals/{sp}/owners", "/v1.0/users/{user}",
    "/v1.0/users/{upn}", "/v1.0/users/{user}/memberOf", "/v1.0/groups/{group}", "/v1.0/groups/{group}/members",
    "/v1.0/groups/{group}/owners", "/v1.0/directoryObjects/{user}", "/v1.0/directoryObjects/{sp}",
    "/beta/users/{user}", "/v1.0/servicePrincipals/{uamiPrincipal}",
]


@pytest.mark.parametrize("path", GRAPH_READS)
def test_graph_finds_nothing_of_another_tenant(arm_server: AcrLocal, b: TenantB, path: str) -> None:
    """Graph objects of tenant B by id, app id or user principal name, with tenant A's Graph token: 404
    ``Request_ResourceNotFound``, as for an id that names nothing (test_graph_tenancy.py checks the other way)."""
    g = Arm(arm_server, admin_of(arm_server).token(arm_server, GRAPH))
    r = g.call("GET", _fill(path, b, ""), api_version=None)
    graph_error(r, 404, "Request_ResourceNotFound")
    nowhere = {k: (f"nobody-{uuid.uuid4().hex[:6]}@tenant-b.example" if k == "upn" else str(uuid.uuid4()))
               for k in b.objects}
    unknown = g.call("GET", _fill(path, TenantB(b.owner, b.subscription, b.group, nowhere), ""), api_version=None)
    graph_error(unknown, 404, "Request_ResourceNotFound")
    said, unsaid = r.json()["error"]["message"], unknown.json()["error"]["message"]
    for key in b.objects:
        said, unsaid = said.replace(b.objects[key], "x"), unsaid.replace(nowhere[key], "x")
    assert said == unsaid and "tenant-b-" not in r.text and "Bob" not in r.text


def test_graph_lists_filters_and_writes_stay_in_the_callers_tenant(arm_server: AcrLocal, b: TenantB) -> None:
    g = Arm(arm_server, admin_of(arm_server).token(arm_server, GRAPH))
    theirs = {b.objects[k] for k in ("app", "sp", "group", "user", "uamiPrincipal")} | {b.owner.object_id}
    for collection in ("applications", "servicePrincipals", "users", "groups"):
        listed = ok(g.call("GET", f"/v1.0/{collection}", api_version=None))["value"]
        assert not theirs & {x["id"] for x in listed}, collection
    for flt in (f"appId eq '{b.objects['appId']}'", "displayName eq 'tenant-b-app'",
                "startswith(displayName,'tenant-b')"):
        for collection in ("applications", "servicePrincipals"):
            found = g.session.get(f"{arm_server.shared}/v1.0/{collection}", params={"$filter": flt},
                                  headers={"Authorization": f"Bearer {g.token}"})
            assert ok(found)["value"] == [], (collection, flt)
    by_ids = ok(g.call("POST", "/v1.0/directoryObjects/getByIds", {"ids": sorted(theirs)}, api_version=None))
    assert by_ids["value"] == []
    for path in (f"/v1.0/directoryObjects/{b.objects['user']}/checkMemberGroups",
                 f"/v1.0/directoryObjects/{b.objects['user']}/getMemberGroups"):
        graph_error(g.call("POST", path, {"groupIds": [b.objects["group"]], "securityEnabledOnly": False},
                           api_version=None), 404, "Request_ResourceNotFound")
    # A's own group cannot take B's user as a member or owner, nor A's application B's principal as an owner.
    mine = ok(g.call("POST", "/v1.0/groups", {"displayName": "tenant-a-group", "mailNickname": "tag",
                                              "mailEnabled": False, "securityEnabled": True}, api_version=None))
    ref = {"@odata.id": f"{arm_server.shared}/v1.0/directoryObjects/{b.objects['user']}"}
    for path in (f"/v1.0/groups/{mine['id']}/members/$ref", f"/v1.0/groups/{mine['id']}/owners/$ref"):
        graph_error(g.call("POST", path, ref, api_version=None), 404, "Request_ResourceNotFound")
    assert ok(g.call("GET", f"/v1.0/groups/{mine['id']}/members", api_version=None))["value"] == []
    # A service principal in A for B's application: as for an app id that names nothing.
    for app_id in (b.objects["appId"], str(uuid.uuid4())):
        graph_error(g.call("POST", "/v1.0/servicePrincipals", {"appId": app_id}, api_version=None), 400,
                    "Request_BadRequest")
    # Writes on B's objects by id: not found.
    for method, path, body in (("PATCH", f"/v1.0/applications/{b.objects['app']}", {"displayName": "x"}),
                               ("POST", f"/v1.0/applications/{b.objects['app']}/addPassword", {}),
                               ("DELETE", f"/v1.0/groups/{b.objects['group']}", None),
                               ("PATCH", f"/v1.0/users/{b.objects['user']}", {"displayName": "x"}),
                               ("DELETE", f"/v1.0/servicePrincipals/{b.objects['sp']}", None)):
        graph_error(g.call(method, path, body, api_version=None), 404, "Request_ResourceNotFound")
    # An ARM token is not a Graph token, whatever its tenant.
    arm_token = Arm(arm_server, b.owner.token(arm_server))
    graph_error(arm_token.call("GET", "/v1.0/users", api_version=None), 401, "InvalidAuthenticationToken")


def test_a_user_name_in_another_tenants_domain_is_refused_without_telling_who_exists(arm_server: AcrLocal,
                                                                                       b: TenantB) -> None:
    """User principal names are unique across the server, so a taken one used to be "already exists" whichever
    tenant held it: tenant A's administrator could tell B's users' names from names nobody has. Now a domain
    belongs to the tenant whose users use it (as a verified domain belongs to one Entra tenant): in B's domain, A
    gets Entra's "domain portion ... is invalid" for a taken name and a free one alike, on create and on rename;
    "already exists" is only said of A's own users; a domain nobody uses is A's once A's user has it."""
    g = Arm(arm_server, admin_of(arm_server).token(arm_server, GRAPH))
    domain = b.objects["upn"].split("@")[1]

    def create(upn: str) -> requests.Response:
        return g.call("POST", "/v1.0/users", {"accountEnabled": True, "displayName": "x", "mailNickname": "x",
                                              "userPrincipalName": upn, "passwordProfile": {"password": PASSWORD}},
                      api_version=None)

    taken, free = create(b.objects["upn"]), create(f"nobody-{uuid.uuid4().hex[:6]}@{domain}")
    for r in (taken, free):
        graph_error(r, 400, "Request_BadRequest")
        assert "domain portion of the userPrincipalName property is invalid" in r.json()["error"]["message"], r.text
    assert taken.json()["error"]["message"] == free.json()["error"]["message"]
    own_domain = arm_server.admin_credential()["userPrincipalName"].split("@")[1]
    mine = ok(create(f"alice-{uuid.uuid4().hex[:6]}@{own_domain}"))
    renamed = g.call("PATCH", f"/v1.0/users/{mine['id']}", {"userPrincipalName": b.objects["upn"]}, api_version=None)
    graph_error(renamed, 400, "Request_BadRequest")
    assert renamed.json()["error"]["message"] == taken.json()["error"]["message"]
    again = create(mine["userPrincipalName"])
    graph_error(again, 400, "Request_BadRequest")
    assert "already exists" in again.json()["error"]["message"]
    # A new domain is A's once A's user has it: then B cannot use it (and B's own domain stays B's).
    fresh = f"fresh-{uuid.uuid4().hex[:6]}.example"
    ok(create(f"carol@{fresh}"))
    theirs = Arm(arm_server, b.owner.token(arm_server, GRAPH))
    refused = theirs.call("POST", "/v1.0/users", {"accountEnabled": True, "displayName": "x", "mailNickname": "x",
                                                   "userPrincipalName": f"dave@{fresh}",
                                                   "passwordProfile": {"password": PASSWORD}}, api_version=None)
    graph_error(refused, 400, "Request_BadRequest")
    assert "domain portion" in refused.json()["error"]["message"]
    assert ok(theirs.call("POST", "/v1.0/users", {
        "accountEnabled": True, "displayName": "x", "mailNickname": "x",
        "userPrincipalName": f"erin-{uuid.uuid4().hex[:6]}@{domain}", "passwordProfile": {"password": PASSWORD}},
        api_version=None))["id"]


# -- Entra ----------------------------------------------------------------------------------------------------

def _token(server: AcrLocal, tenant: str, version: str = "v2.0", **form: str) -> requests.Response:
    path = "oauth2/v2.0/token" if version == "v2.0" else "oauth2/token"
    return server.session().post(f"{server.shared}/{tenant}/{path}", data=form)


@pytest.mark.parametrize("version", ["v2.0", "v1"])
def test_entra_knows_a_client_only_in_its_own_tenant(arm_server: AcrLocal, b: TenantB, version: str) -> None:
    """Client credentials of one tenant at the other's token endpoint (v2 and v1): AADSTS700016, the answer for a
    client id that names nothing; the right secret does not change it (the secret is not even checked)."""
    a = admin_of(arm_server)
    scope = {"scope": "https://management.azure.com/.default"} if version == "v2.0" else \
        {"resource": "https://management.azure.com/"}
    for tenant, who in ((a.tenant_id, b.owner), (b.owner.tenant_id, a)):
        r = _token(arm_server, tenant, version, grant_type="client_credentials", client_id=who.client_id,
                   client_secret=who.secret, **scope)
        entra_error(r, 400, "unauthorized_client", 700016)
        unknown = _token(arm_server, tenant, version, grant_type="client_credentials", client_id=str(uuid.uuid4()),
                         client_secret=who.secret, **scope)
        entra_error(unknown, 400, "unauthorized_client", 700016)
    # Each tenant's own endpoint issues its own tokens, signed with its own keys.
    keys = {t: {k["kid"] for k in ok(arm_server.session().get(f"{arm_server.shared}/{t}/discovery/v2.0/keys"))["keys"]}
            for t in (a.tenant_id, b.owner.tenant_id)}
    assert keys[a.tenant_id] and keys[b.owner.tenant_id] and not keys[a.tenant_id] & keys[b.owner.tenant_id]
    issuer = ok(arm_server.session().get(
        f"{arm_server.shared}/{b.owner.tenant_id}/v2.0/.well-known/openid-configuration"))["issuer"]
    assert b.owner.tenant_id in issuer and a.tenant_id not in issuer


def test_entra_signs_a_person_in_only_at_their_own_tenant(arm_server: AcrLocal, b: TenantB) -> None:
    """Tenant B's user at tenant A's token endpoint: AADSTS50126, as for a wrong password; B's public client
    application at A's endpoints: AADSTS700016, as for an unknown client."""
    a = admin_of(arm_server)
    az = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
    scope = "https://management.core.windows.net//.default openid profile offline_access"
    form = {"grant_type": "password", "client_id": az, "scope": scope, "username": b.objects["upn"]}
    entra_error(_token(arm_server, a.tenant_id, password=PASSWORD, **form), 400, "invalid_grant", 50126)
    entra_error(_token(arm_server, a.tenant_id, password="Wr0ng-Passw0rd!", **form), 400, "invalid_grant", 50126)
    assert ok(_token(arm_server, b.owner.tenant_id, password=PASSWORD, **form))["access_token"]
    r = arm_server.session().post(f"{arm_server.shared}/{a.tenant_id}/oauth2/v2.0/devicecode",
                                  data={"client_id": b.objects["appId"], "scope": scope})
    entra_error(r, 400, "unauthorized_client", 700016)
    assert "tenant-b-app" not in r.text


def test_a_single_tenant_public_client_is_not_served_at_organizations_or_common(arm_server: AcrLocal,
                                                                                b: TenantB) -> None:
    """Tenant B's public client application (``signInAudience`` ``AzureADMyOrg``, Entra's default) at
    ``organizations`` and ``common``: Entra's AADSTS50194 (not a multi-tenant application) on the token and device
    code endpoints and the sign-in page, which never shows its name. Before, anyone could read the name of B's
    application on the sign-in page, and tenant A's user got tokens issued to B's application as their client."""
    a = arm_server.admin_credential()
    scope = "https://management.core.windows.net//.default openid profile offline_access"
    s = arm_server.session()
    for alias in ("organizations", "common"):
        r = _token(arm_server, alias, grant_type="password", client_id=b.objects["appId"], scope=scope,
                   username=a["userPrincipalName"], password=a["userPassword"])
        entra_error(r, 400, "invalid_request", 50194)
        assert "tenant-b-app" not in r.text
        r = s.post(f"{arm_server.shared}/{alias}/oauth2/v2.0/devicecode",
                   data={"client_id": b.objects["appId"], "scope": scope})
        entra_error(r, 400, "invalid_request", 50194)
        page = s.get(f"{arm_server.shared}/{alias}/oauth2/v2.0/authorize", params={
            "client_id": b.objects["appId"], "response_type": "code", "redirect_uri": "http://localhost:5000/",
            "scope": scope, "code_challenge": "x" * 43, "code_challenge_method": "S256"}, allow_redirects=False)
        assert page.status_code == 400 and "AADSTS50194" in page.text and "tenant-b-app" not in page.text
    # At its own tenant's endpoints, B's person signs in to it.
    r = _token(arm_server, b.owner.tenant_id, grant_type="password", client_id=b.objects["appId"], scope=scope,
               username=b.objects["upn"], password=PASSWORD)
    assert ok(r)["access_token"]


# -- a registry's token service and /acr/v1 ---------------------------------------------------------------------

def _exchange(server: AcrLocal, login_server: str, token: str, **form: str) -> requests.Response:
    return server.session().post(f"https://{login_server}/oauth2/exchange", data={
        "grant_type": "access_token", "service": login_server, "access_token": token, **form})


def _registry_error(r: requests.Response, status: int) -> str:
    """The registry's error body ``{"errors": [{"code", "message"}]}``; its message."""
    assert r.status_code == status, (r.request.url, r.status_code, r.text)
    errors = r.json()["errors"]
    assert errors and errors[0]["code"] and errors[0]["message"], r.text
    return str(errors[0]["message"])


def test_a_registry_takes_only_tokens_of_its_own_tenant(arm_server: AcrLocal, b: TenantB) -> None:
    """Tenant A's Entra token at B's registry and B's at A's: 401 from ``/oauth2/exchange``; A's ACR tokens at B's
    registry's ``/oauth2/token`` and ``/acr/v1``: 401; B's service principal's secret at A's registry: ACR's
    "Application not registered with AAD."."""
    a = admin_of(arm_server)
    a_login, b_login = arm_server.login_server(), b.objects["loginServer"]
    a_token, b_token = a.token(arm_server, ACR), b.owner.token(arm_server, ACR)
    assert "tenant" in _registry_error(_exchange(arm_server, b_login, a_token), 401)
    assert "tenant" in _registry_error(_exchange(arm_server, a_login, b_token), 401)
    _registry_error(_exchange(arm_server, a_login, a_token, tenant=b.owner.tenant_id), 401)
    # Each works at its own registry.
    b_refresh = ok(_exchange(arm_server, b_login, b_token))["refresh_token"]
    a_refresh = ok(_exchange(arm_server, a_login, a_token))["refresh_token"]
    s = arm_server.session()
    r = s.post(f"https://{b_login}/oauth2/token", data={"grant_type": "refresh_token", "service": b_login,
                                                       "refresh_token": a_refresh, "scope": "registry:catalog:*"})
    _registry_error(r, 401)
    a_access = ok(s.post(f"https://{a_login}/oauth2/token", data={
        "grant_type": "refresh_token", "service": a_login, "refresh_token": a_refresh,
        "scope": "registry:catalog:*"}))["access_token"]
    for path in ("/acr/v1/_catalog", "/v2/_catalog"):
        r = s.get(f"https://{b_login}{path}", headers={"Authorization": f"Bearer {a_access}"})
        _registry_error(r, 401)
    assert ok(s.get(f"https://{b_login}/acr/v1/_catalog", headers={"Authorization": "Bearer " + ok(s.post(
        f"https://{b_login}/oauth2/token", data={"grant_type": "refresh_token", "service": b_login,
                                                 "refresh_token": b_refresh, "scope": "registry:catalog:*"}))[
        "access_token"]})) is not None
    r = s.get(f"https://{a_login}/oauth2/token", params={"service": a_login, "scope": "repository:x:pull"},
              auth=(b.owner.client_id, b.owner.secret))
    assert "Application not registered with AAD." in _registry_error(r, 401)
