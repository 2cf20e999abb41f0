"""RBAC on every call: Reader reads, Contributor writes but cannot grant, Owner and User Access Administrator
grant, a principal without a role sees nothing. Every refusal is ARM's 403 and changes nothing."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest

from tests.arm.conftest import Arm, Principal, new_principal, subscription_of
from tests.harness import AcrLocal

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
USER_ACCESS_ADMIN = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def assign(admin: Arm, scope: str, role: str, principal: Principal) -> dict[str, object]:
    sub = scope.split("/")[2]
    r = admin.call("PUT", f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", {
        "properties": {"roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/"
                       f"{role}", "principalId": principal.object_id, "principalType": "ServicePrincipal"}},
        api_version="2022-04-01")
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def world(arm_server: AcrLocal, admin: Arm) -> dict[str, str]:
    sub = subscription_of(arm_server)
    group = f"/subscriptions/{sub}/resourceGroups/rbac-world"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    r = admin.call("PUT", f"{group}/providers/Microsoft.ContainerRegistry/registries/rbacworldreg",
                   {"location": "westus", "sku": {"name": "Standard"}})
    assert r.status_code == 201, r.text
    return {"sub": sub, "group": group, "registry": r.json()["id"]}


def as_(arm_server: AcrLocal, principal: Principal) -> Arm:
    return Arm(arm_server, principal.token(arm_server))


def test_principal_without_role_sees_nothing_and_is_refused(arm_server: AcrLocal, admin: Arm,
                                                             world: dict[str, str]) -> None:
    nobody = as_(arm_server, new_principal(arm_server, "nobody"))
    assert nobody.call("GET", "/subscriptions").json()["value"] == []
    r = nobody.call("GET", world["registry"])
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "AuthorizationFailed"
    assert "Microsoft.ContainerRegistry/registries/read" in error["message"]
    assert world["registry"].lower() in error["message"].lower()
    r = nobody.call("GET", f"/subscriptions/{world['sub']}/resources")
    assert r.status_code == 403
    r = nobody.call("GET", f"/subscriptions/{world['sub']}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound"


def test_reader_reads_but_cannot_write(arm_server: AcrLocal, admin: Arm, world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "reader")
    assign(admin, world["group"], READER, principal)
    reader = as_(arm_server, principal)
    subs = reader.call("GET", "/subscriptions").json()["value"]
    assert [s["subscriptionId"] for s in subs] == [world["sub"]]
    assert reader.call("GET", world["registry"]).status_code == 200
    listed = reader.call("GET", f"/subscriptions/{world['sub']}/resources").json()["value"]
    assert [r["id"] for r in listed] == [world["registry"]]  # not the default registry in another group
    r = reader.call("PUT", f"{world['group']}/providers/Microsoft.ContainerRegistry/registries/readerwrites",
                    {"location": "westus", "sku": {"name": "Basic"}})
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "AuthorizationFailed"
    assert principal.client_id in error["message"] and principal.object_id in error["message"]
    assert "Microsoft.ContainerRegistry/registries/write" in error["message"]
    assert admin.call("GET", f"{world['group']}/providers/Microsoft.ContainerRegistry/registries/readerwrites"
                      ).status_code == 404
    r = reader.call("DELETE", world["registry"])
    assert r.status_code == 403 and admin.call("GET", world["registry"]).status_code == 200
    r = reader.call("DELETE", world["group"])
    assert r.status_code == 403 and admin.call("GET", world["group"]).status_code == 200


def test_contributor_writes_but_cannot_grant(arm_server: AcrLocal, admin: Arm, world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "contributor")
    assign(admin, world["group"], CONTRIBUTOR, principal)
    contributor = as_(arm_server, principal)
    r = contributor.call("PATCH", world["registry"], {"tags": {"by": "contributor"}})
    assert r.status_code == 200 and r.json()["tags"] == {"by": "contributor"}
    other = new_principal(arm_server, "would-be-granted")
    r = contributor.call("PUT", f"{world['group']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                         {"properties": {"roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/"
                                         f"{ACR_PULL}", "principalId": other.object_id}}, api_version="2022-04-01")
    assert r.status_code == 403
    assert "Microsoft.Authorization/roleAssignments/write" in r.json()["error"]["message"]
    mine = admin.call("GET", f"{world['group']}/providers/Microsoft.Authorization/roleAssignments",
                      api_version="2022-04-01").json()["value"]
    assert other.object_id not in {a["properties"]["principalId"] for a in mine}
    r = contributor.call("PUT", f"/subscriptions/{world['sub']}/resourceGroups/contrib-elsewhere",
                         {"location": "westus"})
    assert r.status_code == 403  # Contributor on one group is nothing at the subscription


def test_user_access_administrator_grants(arm_server: AcrLocal, admin: Arm, world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "uaa")
    assign(admin, world["registry"], USER_ACCESS_ADMIN, principal)
    uaa = as_(arm_server, principal)
    puller = new_principal(arm_server, "puller")
    granted = assign(uaa, world["registry"], ACR_PULL, puller)
    assert granted["properties"]["scope"] == world["registry"]  # type: ignore[index]
    r = uaa.call("PATCH", world["registry"], {"tags": {"by": "uaa"}})
    assert r.status_code == 403  # managing access is not managing the registry
    r = uaa.call("PUT", f"{world['group']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                 {"properties": {"roleDefinitionId": ACR_PULL, "principalId": puller.object_id}},
                 api_version="2022-04-01")
    assert r.status_code == 403  # only at the registry it was given


def test_acr_pull_alone_cannot_read_the_registry_resource(arm_server: AcrLocal, admin: Arm,
                                                          world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "pull-only")
    assign(admin, world["registry"], ACR_PULL, principal)
    puller = as_(arm_server, principal)
    assert puller.call("GET", world["registry"]).status_code == 403
    listed = puller.call("GET", f"/subscriptions/{world['sub']}/resources",
                         ).json()
    assert listed["value"] == []  # as `az acr login` sees it: not found, use the login-server suffix


VM_CONTRIBUTOR = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c"
NETWORK = "2024-05-01"


def _interface(subnet: str, *, ip: str | None = None, nsg: str | None = None) -> dict[str, object]:
    config: dict[str, object] = {"subnet": {"id": subnet}}
    if ip:
        config["publicIPAddress"] = {"id": ip}
    props: dict[str, object] = {"ipConfigurations": [{"name": "ipconfig1", "properties": config}]}
    if nsg:
        props["networkSecurityGroup"] = {"id": nsg}
    return {"location": "westus", "properties": props}


def test_joining_another_groups_network_resource_needs_its_join_permission(arm_server: AcrLocal,
                                                                            admin: Arm) -> None:
    """A Contributor of one group puts nothing of another group's network in its own resources without the join
    permission on it (as Azure: 403 ``LinkedAuthorizationFailed`` naming the join action and the linked scope):
    a subnet, a public address or a security group for an interface, a security group for a subnet, an interface
    for a VM. The answer is the same for a linked resource that does not exist (nothing is confirmed), nothing is
    made, and with a role that has the join actions (Virtual Machine Contributor) on the other group it works."""
    sub = subscription_of(arm_server)
    theirs = f"/subscriptions/{sub}/resourceGroups/join-theirs-{uuid.uuid4().hex[:6]}"
    mine = f"/subscriptions/{sub}/resourceGroups/join-mine-{uuid.uuid4().hex[:6]}"
    for group in (theirs, mine):
        assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    net = "/providers/Microsoft.Network"
    for group, prefix in ((theirs, "10.5"), (mine, "10.6")):
        r = admin.call("PUT", f"{group}{net}/virtualNetworks/vnet", {"location": "westus", "properties": {
            "addressSpace": {"addressPrefixes": [f"{prefix}.0.0/16"]},
            "subnets": [{"name": "default", "properties": {"addressPrefix": f"{prefix}.0.0/24"}}]}},
            api_version=NETWORK)
        assert r.status_code in (200, 201), r.text
    assert admin.call("PUT", f"{theirs}{net}/networkSecurityGroups/nsg", {"location": "westus"},
                      api_version=NETWORK).status_code in (200, 201)
    r = admin.call("PUT", f"{theirs}{net}/publicIPAddresses/ip", {"location": "westus", "sku": {"name": "Standard"},
                   "properties": {"publicIPAllocationMethod": "Static"}}, api_version=NETWORK)
    assert r.status_code in (200, 201), r.text
    their_subnet, own_subnet = (f"{g}{net}/virtualNetworks/vnet/subnets/default" for g in (theirs, mine))
    assert admin.call("PUT", f"{theirs}{net}/networkInterfaces/nic", _interface(their_subnet),
                      api_version=NETWORK).status_code in (200, 201)
    contributor = new_principal(arm_server, "joiner")
    assign(admin, mine, CONTRIBUTOR, contributor)
    joiner = as_(arm_server, contributor)
    cases = [  # (what I write, api-version, body naming {ref}, the linked id, the join action)
        (f"{mine}{net}/networkInterfaces/nic-1", NETWORK, lambda ref: _interface(ref), their_subnet,
         "Microsoft.Network/virtualNetworks/subnets/join/action"),
        (f"{mine}{net}/networkInterfaces/nic-2", NETWORK, lambda ref: _interface(own_subnet, ip=ref),
         f"{theirs}{net}/publicIPAddresses/ip", "Microsoft.Network/publicIPAddresses/join/action"),
        (f"{mine}{net}/networkInterfaces/nic-3", NETWORK, lambda ref: _interface(own_subnet, nsg=ref),
         f"{theirs}{net}/networkSecurityGroups/nsg", "Microsoft.Network/networkSecurityGroups/join/action"),
        (f"{mine}{net}/virtualNetworks/vnet/subnets/second", NETWORK,
         lambda ref: {"properties": {"addressPrefix": "10.6.1.0/24", "networkSecurityGroup": {"id": ref}}},
         f"{theirs}{net}/networkSecurityGroups/nsg", "Microsoft.Network/networkSecurityGroups/join/action"),
        (f"{mine}/providers/Microsoft.Compute/virtualMachines/vm-1", "2024-07-01",
         lambda ref: {"location": "westus", "properties": {"networkProfile": {"networkInterfaces": [{"id": ref}]}}},
         f"{theirs}{net}/networkInterfaces/nic", "Microsoft.Network/networkInterfaces/join/action"),
    ]
    for path, version, body, linked, action in cases:
        missing = linked.rsplit("/", 1)[0] + "/missing"
        refused, unknown = (joiner.call("PUT", path, body(ref), api_version=version) for ref in (linked, missing))
        assert refused.status_code == 403, (path, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "LinkedAuthorizationFailed" and action in error["message"], error
        assert linked in error["message"] and contributor.object_id in error["message"], error
        assert unknown.status_code == 403 and unknown.json()["error"]["message"] == error["message"].replace(
            linked, missing), unknown.text
        assert admin.call("GET", path, api_version=version).status_code == 404, path
    # An interface naming three of their resources is refused once, with all three named in the body's order.
    their_ip, their_nsg = f"{theirs}{net}/publicIPAddresses/ip", f"{theirs}{net}/networkSecurityGroups/nsg"
    refused = joiner.call("PUT", f"{mine}{net}/networkInterfaces/nic-4",
                          _interface(their_subnet, ip=their_ip, nsg=their_nsg), api_version=NETWORK)
    assert refused.status_code == 403, refused.text
    message = refused.json()["error"]["message"]
    assert ("'Microsoft.Network/virtualNetworks/subnets/join/action,Microsoft.Network/publicIPAddresses/join/action,"
            "Microsoft.Network/networkSecurityGroups/join/action'") in message, message
    assert f"'{their_subnet},{their_ip},{their_nsg}'" in message, message
    assign(admin, theirs, VM_CONTRIBUTOR, contributor)
    r = joiner.call("PUT", f"{mine}{net}/networkInterfaces/nic-1", _interface(their_subnet), api_version=NETWORK)
    assert r.status_code in (200, 201), r.text


MANAGED_IDENTITY_OPERATOR = "f1a07417-d97a-45cb-824c-7a7467783830"
ASSIGN = "Microsoft.ManagedIdentity/userAssignedIdentities/assign/action"


def _with_identity(kind: str, ref: str) -> dict[str, object]:
    body: dict[str, object] = {"location": "westus", "identity": {"type": "UserAssigned",
                                                                  "userAssignedIdentities": {ref: {}}}}
    if kind == "registry":
        body["sku"] = {"name": "Basic"}
    return body


def test_assigning_another_groups_identity_needs_its_assign_permission(arm_server: AcrLocal, admin: Arm) -> None:
    """A Contributor of one group gives its VM or registry no user-assigned identity of another group without
    ``userAssignedIdentities/assign/action`` on it (as Azure: 403 ``LinkedAuthorizationFailed`` naming the write,
    the assign action and the identity), checked before the identity is looked up: an id that names nothing gets
    the same answer, so the caller learns nothing about what exists there, and nothing is made. With Managed
    Identity Operator on the identity the VM and the registry get it (a PATCH adding another unknown id is still
    refused); with it on the whole group, a missing identity is 400 ``FailedIdentityOperation`` (the registry
    stored it before)."""
    sub = subscription_of(arm_server)
    theirs = f"/subscriptions/{sub}/resourceGroups/assign-theirs-{uuid.uuid4().hex[:6]}"
    mine = f"/subscriptions/{sub}/resourceGroups/assign-mine-{uuid.uuid4().hex[:6]}"
    for group in (theirs, mine):
        assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    identities = f"{theirs}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
    uami, missing = f"{identities}/theirs-id", f"{identities}/missing-id"
    r = admin.call("PUT", uami, {"location": "westus"}, api_version="2023-01-31")
    assert r.status_code == 201, r.text
    principal = new_principal(arm_server, "assigner")
    assign(admin, mine, CONTRIBUTOR, principal)
    assigner = as_(arm_server, principal)
    targets = {  # kind: (path, api-version, write action)
        "vm": (f"{mine}/providers/Microsoft.Compute/virtualMachines/with-id", "2024-07-01",
               "Microsoft.Compute/virtualMachines/write"),
        "registry": (f"{mine}/providers/Microsoft.ContainerRegistry/registries/assign{uuid.uuid4().hex[:8]}",
                     "2023-07-01", "Microsoft.ContainerRegistry/registries/write"),
    }
    for kind, (path, version, write) in targets.items():
        refused, unknown = (assigner.call("PUT", path, _with_identity(kind, ref), api_version=version)
                            for ref in (uami, missing))
        assert refused.status_code == 403, (kind, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "LinkedAuthorizationFailed", error
        assert f"has permission to perform action '{write}' on scope '{path}'" in error["message"], error
        assert f"perform action(s) '{ASSIGN}' on the linked scope(s) '{uami}'" in error["message"], error
        assert principal.object_id in error["message"], error
        assert unknown.status_code == 403 and unknown.json() == {"error": {
            **error, "message": error["message"].replace(uami, missing)}}, unknown.text
        assert admin.call("GET", path, api_version=version).status_code == 404, kind
    assign(admin, uami, MANAGED_IDENTITY_OPERATOR, principal)
    for kind, (path, version, _) in targets.items():
        r = assigner.call("PUT", path, _with_identity(kind, uami), api_version=version)
        assert r.status_code in (200, 201), (kind, r.text)
        assert [k.lower() for k in r.json()["identity"]["userAssignedIdentities"]] == [uami.lower()], r.text
        # the identity it has is no longer new; one it may not assign still is, on a PATCH as on a PUT
        r = assigner.call("PATCH", path, {"identity": {"type": "UserAssigned", "userAssignedIdentities": {
            uami: {}, missing: {}}}}, api_version=version)
        assert r.status_code == 403 and r.json()["error"]["code"] == "LinkedAuthorizationFailed", (kind, r.text)
        assert f"linked scope(s) '{missing}'" in r.json()["error"]["message"], r.text
        # several it may not assign: every one is named, in order, as Azure lists them
        other = f"{identities}/other-missing-id"
        r = assigner.call("PATCH", path, {"identity": {"type": "UserAssigned", "userAssignedIdentities": {
            missing: {}, uami: {}, other: {}}}}, api_version=version)
        assert r.status_code == 403, (kind, r.text)
        assert f"action(s) '{ASSIGN},{ASSIGN}' on the linked scope(s) '{missing},{other}' (respectively)" in \
            r.json()["error"]["message"], r.text
    assign(admin, theirs, MANAGED_IDENTITY_OPERATOR, principal)
    for kind, (path, version, _) in targets.items():
        r = assigner.call("PUT", path, _with_identity(kind, missing), api_version=version)
        assert r.status_code == 400 and r.json()["error"]["code"] == "FailedIdentityOperation", (kind, r.text)
        assert missing in r.json()["error"]["message"]
        shown = admin.call("GET", path, api_version=version).json()["identity"]["userAssignedIdentities"]
        assert [k.lower() for k in shown] == [uami.lower()], kind


def test_a_complete_deployment_refused_one_delete_deletes_nothing(arm_server: AcrLocal, admin: Arm) -> None:
    """A Complete mode deployment by a caller who may delete the group's identities but not its registries ends
    Failed with AuthorizationFailed, and deletes nothing: every delete is authorized before the first one."""
    sub = subscription_of(arm_server)
    group = f"/subscriptions/{sub}/resourceGroups/complete-refused"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    identity = f"{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/made-first"
    registry = f"{group}/providers/Microsoft.ContainerRegistry/registries/completerefused{uuid.uuid4().hex[:6]}"
    r = admin.call("PUT", identity, {"location": "westus"}, api_version="2023-01-31")
    assert r.status_code == 201, r.text
    r = admin.call("PUT", registry, {"location": "westus", "sku": {"name": "Basic"}})
    assert r.status_code == 201, r.text
    role = str(uuid.uuid4())
    r = admin.call("PUT", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{role}", {
        "properties": {"roleName": f"keeps registries {role[:6]}", "type": "CustomRole",
                       "permissions": [{"actions": ["*"],
                                        "notActions": ["Microsoft.ContainerRegistry/registries/delete"]}],
                       "assignableScopes": [f"/subscriptions/{sub}"]}}, api_version="2022-04-01")
    assert r.status_code == 201, r.text
    principal = new_principal(arm_server, "complete-deployer")
    assign(admin, group, role, principal)
    deployer = as_(arm_server, principal)
    path = f"{group}/providers/Microsoft.Resources/deployments/empty-it"
    r = deployer.call("PUT", path, {"properties": {"mode": "Complete", "template": {
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0", "resources": []}}}, api_version="2024-03-01")
    assert r.status_code == 201, r.text
    ended: dict[str, Any] = {}
    for _ in range(600):
        ended = deployer.call("GET", path, api_version="2024-03-01").json()
        if ended["properties"]["provisioningState"] in ("Succeeded", "Failed", "Canceled"):
            break
        time.sleep(0.05)
    assert ended["properties"]["provisioningState"] == "Failed", ended
    error = ended["properties"]["error"]
    assert "AuthorizationFailed" in [error["code"], *(d["code"] for d in error.get("details", []))], error
    assert "Microsoft.ContainerRegistry/registries/delete" in str(error)
    assert admin.call("GET", identity, api_version="2023-01-31").status_code == 200
    assert admin.call("GET", registry).status_code == 200
