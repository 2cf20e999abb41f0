"""The ARM providers Microsoft.ManagedIdentity and Microsoft.Compute/virtualMachines, driven by azure-mgmt-msi and
azure-mgmt-compute: shapes, identity assignment and removal, and what deleting an identity or a VM does to the
tokens it was given (they stop granting anything)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.clients import client_env, run_client, verify_with_jwks
from tests.compute.conftest import Mgmt
from tests.harness import AcrLocal
from tests.vmexec import vm_requests

ARM = "https://management.azure.com"
READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
VM_CONTRIBUTOR = "9980e02c-c2be-4d73-94e8-173b1dc7cf3c"
EXCHANGE = "api://AzureADTokenExchange"


class _Answer:
    def __init__(self, raw: dict[str, Any]) -> None:
        self.status_code, self._json = raw["status"], raw["json"]

    def json(self) -> Any:
        return self._json


def imds_token(server: AcrLocal, vm: Any, selector: str = "", resource: str = ARM) -> _Answer:
    """IMDS's answer inside the VM (169.254.169.254, as every client there asks it)."""
    url = f"http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}{selector}"
    return _Answer(vm_requests(server, vm.id, [{"url": url, "headers": {"Metadata": "true"}}])[0])


def assign_role(mgmt: Mgmt, scope: str, principal_id: str, role: str = READER) -> None:
    r = mgmt.arm("PUT", f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", {
        "properties": {"roleDefinitionId": f"/subscriptions/{mgmt.subscription}/providers/Microsoft.Authorization/"
                       f"roleDefinitions/{role}", "principalId": principal_id, "principalType": "ServicePrincipal"}},
        api_version="2022-04-01")
    assert r.status_code in (200, 201), r.text


def assigned_principals(mgmt: Mgmt, scope: str) -> set[str]:
    r = mgmt.arm("GET", f"{scope}/providers/Microsoft.Authorization/roleAssignments", api_version="2022-04-01")
    assert r.status_code == 200, r.text
    return {a["properties"]["principalId"] for a in r.json()["value"]}


def group_id(mgmt: Mgmt, group: str) -> str:
    return f"/subscriptions/{mgmt.subscription}/resourceGroups/{group}"


def test_user_assigned_identity_lifecycle(acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    created = mgmt.identity(group, "life-id")
    assert created.type == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert created.tenant_id == mgmt.tenant and uuid.UUID(created.principal_id) and uuid.UUID(created.client_id)
    again = mgmt.identity(group, "life-id")
    assert (again.principal_id, again.client_id) == (created.principal_id, created.client_id)
    assert [i.name for i in mgmt.msi.user_assigned_identities.list_by_resource_group(group)] == ["life-id"]
    assert "life-id" in [i.name for i in mgmt.msi.user_assigned_identities.list_by_subscription()]
    assert mgmt.msi.user_assigned_identities.get(group, "life-id").id == created.id
    mgmt.msi.user_assigned_identities.delete(group, "life-id")
    with pytest.raises(ResourceNotFoundError):
        mgmt.msi.user_assigned_identities.get(group, "life-id")


def test_vm_shape_for_az_vm_show(acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    uami = mgmt.identity(group)
    vm = mgmt.vm(group, "shape", {"type": "SystemAssigned, UserAssigned",
                                  "userAssignedIdentities": {uami.id: {}}})
    raw = mgmt.arm("GET", vm.id).json()
    assert "Never-Stored" not in str(raw) and "adminPassword" not in str(raw)
    props = raw["properties"]
    assert uuid.UUID(props["vmId"]) and props["provisioningState"] == "Succeeded"
    assert props["hardwareProfile"] == {"vmSize": "Standard_B1s"}
    assert props["storageProfile"]["imageReference"]["publisher"] == "Canonical"
    assert props["storageProfile"]["osDisk"]["osType"] == "Linux" and props["storageProfile"]["osDisk"]["name"]
    assert props["osProfile"]["adminUsername"] == "azureuser"
    identity = raw["identity"]
    assert identity["type"] == "SystemAssigned, UserAssigned" and identity["tenantId"] == mgmt.tenant
    assert identity["userAssignedIdentities"] == {uami.id: {"principalId": uami.principal_id,
                                                            "clientId": uami.client_id}}
    assert vm.identity.principal_id == identity["principalId"]
    assert [v.name for v in mgmt.compute.virtual_machines.list(group)] == ["shape"]
    assert "shape" in [v.name for v in mgmt.compute.virtual_machines.list_all()]
    folder = acrlocal.data_dir / "vms" / vm.vm_id
    assert folder.stat().st_mode & 0o077 == 0 and (folder / "disk" / "home" / "azureuser").is_dir()


def test_assign_and_remove_identities(acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    u1, u2 = mgmt.identity(group), mgmt.identity(group)
    vm = mgmt.vm(group, "changing")
    assert vm.identity is None
    assert imds_token(acrlocal, vm).json()["error_description"] == "Identity not found"
    vms = mgmt.compute.virtual_machines
    vm = vms.begin_update(group, "changing", {"identity": {"type": "SystemAssigned"}}).result()
    system = vm.identity.principal_id
    assign_role(mgmt, group_id(mgmt, group), system)
    assert jwt.decode(imds_token(acrlocal, vm).json()["access_token"],
                      options={"verify_signature": False})["oid"] == system
    vm = vms.begin_update(group, "changing", {"identity": {
        "type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {u1.id: {}}}}).result()
    vm = vms.begin_update(group, "changing", {"identity": {
        "type": "SystemAssigned, UserAssigned", "userAssignedIdentities": {u2.id: {}}}}).result()
    assert {k.lower() for k in vm.identity.user_assigned_identities} == {u1.id.lower(), u2.id.lower()}
    assert vm.identity.principal_id == system
    assert imds_token(acrlocal, vm, f"&client_id={u2.client_id}").status_code == 200
    # A PATCH with null removes one user-assigned identity and keeps the rest (raw: the SDK drops nulls).
    r = mgmt.arm("PATCH", vm.id, {"identity": {"type": "SystemAssigned, UserAssigned",
                                               "userAssignedIdentities": {u1.id: None}}})
    assert r.status_code == 200, r.text
    assert list(r.json()["identity"]["userAssignedIdentities"]) == [u2.id]
    assert imds_token(acrlocal, vm, f"&client_id={u1.client_id}").json()["error_description"] == "Identity not found"
    # Removing the system identity deletes its principal.
    vm = vms.begin_update(group, "changing", {"identity": {
        "type": "UserAssigned", "userAssignedIdentities": {u2.id: {}}}}).result()
    assert vm.identity.principal_id is None
    assert system not in assigned_principals(mgmt, group_id(mgmt, group))
    claims = jwt.decode(imds_token(acrlocal, vm).json()["access_token"], options={"verify_signature": False})
    assert claims["oid"] == u2.principal_id
    vm = vms.begin_update(group, "changing", {"identity": {"type": "None"}}).result()
    assert vm.identity is None
    # Turning the system identity on again makes a new principal.
    vm = vms.begin_update(group, "changing", {"identity": {"type": "SystemAssigned"}}).result()
    assert vm.identity.principal_id != system


@pytest.mark.parametrize(("identity", "status", "code"), [
    ({"type": "Bogus"}, 400, "InvalidIdentityType"),
    ({"type": "UserAssigned"}, 400, "InvalidIdentityValues"),
    # an identity of the caller's own group that does not exist: not found
    ({"type": "UserAssigned", "userAssignedIdentities": {
        "{group}/providers/Microsoft.ManagedIdentity/userAssignedIdentities/nope": {}}}, 400,
     "FailedIdentityOperation"),
    # an identity where the caller may assign nothing, existing or not: the linked access check refuses it
    ({"type": "UserAssigned", "userAssignedIdentities": {
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/x/providers/"
        "Microsoft.ManagedIdentity/userAssignedIdentities/nope": {}}}, 403, "LinkedAuthorizationFailed"),
    ({"type": "SystemAssigned", "userAssignedIdentities": {"/x": {}}}, 400, "InvalidIdentityValues"),
])
def test_bad_identity_blocks_create_nothing(acrlocal: AcrLocal, mgmt: Mgmt, group: str, identity: dict[str, Any],
                                            status: int, code: str) -> None:
    path = f"{group_id(mgmt, group)}/providers/Microsoft.Compute/virtualMachines/bad"
    identity = json.loads(json.dumps(identity).replace("{group}", group_id(mgmt, group)))
    r = mgmt.arm("PUT", path, {"location": "westeurope", "identity": identity})
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert mgmt.arm("GET", path).status_code == 404
    assert not list(mgmt.compute.virtual_machines.list(group))


def test_marketplace_images_and_unknown_ones_as_azure_answers(acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    images = mgmt.compute.virtual_machine_images
    assert "18.04-LTS" in [s.name for s in images.list_skus("westeurope", "canonical", "ubuntuserver")]
    assert images.list("westeurope", "Canonical", "UbuntuServer", "18.04-LTS")[0].name
    with pytest.raises(ResourceNotFoundError, match="Publisher: NoSuchPublisher was not found"):
        images.list_offers("westeurope", "NoSuchPublisher")
    for call in (lambda: images.list_skus("westeurope", "Canonical", "NoSuchOffer"),
                 lambda: images.list("westeurope", "Canonical", "UbuntuServer", "99.04-LTS")):
        with pytest.raises(ResourceNotFoundError, match="Artifact: VMImage was not found"):
            call()
    path = f"{group_id(mgmt, group)}/providers/Microsoft.Compute/virtualMachines/unknown-image"
    body = {"location": "westeurope", "properties": {"storageProfile": {"imageReference": {
        "publisher": "Canonical", "offer": "UbuntuServer", "sku": "99.04-LTS", "version": "latest"}}}}
    r = mgmt.arm("PUT", path, body)
    assert r.status_code == 404 and r.json()["error"]["code"] == "PlatformImageNotFound", r.text
    assert r.json()["error"]["target"] == "imageReference"
    assert "'Canonical:UbuntuServer:99.04-LTS:latest' is not available" in r.json()["error"]["message"]
    assert mgmt.arm("GET", path).status_code == 404


def test_assigning_an_identity_needs_the_assign_permission(acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    uami = mgmt.identity(group)
    operator_vm = mgmt.vm(group, "operator", {"type": "SystemAssigned"})
    # The VM's own identity is a Virtual Machine Contributor on the group, but has no right to assign uami.
    assign_role(mgmt, group_id(mgmt, group), operator_vm.identity.principal_id, VM_CONTRIBUTOR)
    token = imds_token(acrlocal, operator_vm).json()["access_token"]
    path = f"{group_id(mgmt, group)}/providers/Microsoft.Compute/virtualMachines/assigned"
    body = {"location": "westeurope", "identity": {"type": "UserAssigned",
                                                   "userAssignedIdentities": {uami.id: {}}}}
    r = mgmt.arm("PUT", path, body, token=token)
    assert r.status_code == 403 and r.json()["error"]["code"] == "LinkedAuthorizationFailed", r.text
    assert "userAssignedIdentities/assign/action" in r.json()["error"]["message"]
    assert mgmt.arm("GET", path).status_code == 404
    r = mgmt.arm("PUT", path, {"location": "westeurope"}, token=token)
    assert r.status_code == 201, r.text


def test_deleted_vm_identity_grants_nothing(acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    vm = mgmt.vm(group, "doomed", {"type": "SystemAssigned"})
    assign_role(mgmt, group_id(mgmt, group), vm.identity.principal_id)
    token = imds_token(acrlocal, vm).json()["access_token"]
    assert mgmt.arm("GET", group_id(mgmt, group), api_version="2022-09-01", token=token).status_code == 200
    folder = acrlocal.data_dir / "vms" / vm.vm_id
    mgmt.compute.virtual_machines.begin_delete(group, "doomed").result()
    r = mgmt.arm("GET", group_id(mgmt, group), api_version="2022-09-01", token=token)
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert vm.identity.principal_id not in assigned_principals(mgmt, group_id(mgmt, group))
    assert not folder.exists()  # its disk, and every process that ran in it, gone


def test_deleted_user_assigned_identity_stops_everywhere(acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    uami = mgmt.identity(group, "short-lived")
    vm = mgmt.vm(group, "holder", {"type": "UserAssigned", "userAssignedIdentities": {uami.id: {}}})
    assign_role(mgmt, group_id(mgmt, group), uami.principal_id)
    token = imds_token(acrlocal, vm).json()["access_token"]
    assert mgmt.arm("GET", group_id(mgmt, group), api_version="2022-09-01", token=token).status_code == 200
    mgmt.msi.user_assigned_identities.delete(group, "short-lived")
    assert imds_token(acrlocal, vm).json()["error_description"] == "Identity not found"
    assert mgmt.arm("GET", group_id(mgmt, group), api_version="2022-09-01", token=token).status_code == 401
    assert uami.principal_id not in assigned_principals(mgmt, group_id(mgmt, group))


def test_a_user_assigned_identity_made_again_under_its_name_is_not_the_one_assigned(
        acrlocal: AcrLocal, mgmt: Mgmt, group: str) -> None:
    """A VM holds the identity that was assigned to it, not whatever identity later bears its name: deleted and made
    again under the same resource id, it is a new principal, and IMDS answers "Identity not found" for it (as on
    Azure, where the VM keeps the old identity's ids) until it is removed from the VM and assigned again."""
    uami = mgmt.identity(group, "made-again")
    vm = mgmt.vm(group, "keeps-the-old", {"type": "UserAssigned", "userAssignedIdentities": {uami.id: {}}})
    assert imds_token(acrlocal, vm).status_code == 200
    mgmt.msi.user_assigned_identities.delete(group, "made-again")
    again = mgmt.identity(group, "made-again")
    assert again.principal_id != uami.principal_id
    for selector in ("", f"&client_id={again.client_id}", f"&msi_res_id={again.id}"):
        answer = imds_token(acrlocal, vm, selector)
        assert answer.status_code == 400 and answer.json()["error_description"] == "Identity not found", selector
    # An update that keeps the identity does not take the new one either.
    vms = mgmt.compute.virtual_machines
    vms.begin_update(group, "keeps-the-old", {"tags": {"touched": "yes"}}).result()
    assert imds_token(acrlocal, vm).json()["error_description"] == "Identity not found"
    # Removed and assigned again, the VM holds the new identity.
    vms.begin_update(group, "keeps-the-old", {"identity": {"type": "None"}}).result()
    vms.begin_update(group, "keeps-the-old", {"identity": {"type": "UserAssigned",
                                                           "userAssignedIdentities": {again.id: {}}}}).result()
    claims = jwt.decode(imds_token(acrlocal, vm).json()["access_token"], options={"verify_signature": False})
    assert claims["oid"] == again.principal_id


def test_federated_credential_on_a_user_assigned_identity(acrlocal: AcrLocal, mgmt: Mgmt, group: str,
                                                          tmp_path: Path) -> None:
    """A VM's system identity is the workload: its IMDS token for api://AzureADTokenExchange is the federated
    assertion a user-assigned identity trusts."""
    uami = mgmt.identity(group, "federated")
    vm = mgmt.vm(group, "workload", {"type": "SystemAssigned"})
    issuer = f"{acrlocal.shared}/{mgmt.tenant}/v2.0"
    fic = mgmt.msi.federated_identity_credentials.create_or_update(group, "federated", "from-vm", {
        "issuer": issuer, "subject": vm.identity.principal_id, "audiences": [EXCHANGE]})
    assert fic.issuer == issuer and fic.subject == vm.identity.principal_id and fic.audiences == [EXCHANGE]
    assert [f.name for f in mgmt.msi.federated_identity_credentials.list(group, "federated")] == ["from-vm"]
    assertion = imds_token(acrlocal, vm, resource=EXCHANGE).json()["access_token"]
    token_file = tmp_path / "federated-token"
    token_file.write_text(assertion)
    code = f"""
        from azure.identity import WorkloadIdentityCredential
        c = WorkloadIdentityCredential(tenant_id={mgmt.tenant!r}, client_id={uami.client_id!r},
                                       token_file_path={str(token_file)!r})
        attempt(lambda: c.get_token("{ARM}/.default"))
    """
    env = client_env(tmp_path, REQUESTS_CA_BUNDLE=acrlocal.ca, AZURE_AUTHORITY_HOST=acrlocal.shared)
    result = run_client(code, env)
    assert result["ok"], result
    claims = verify_with_jwks(result["token"], acrlocal.shared, acrlocal.ca, ARM)
    assert claims["oid"] == uami.principal_id and claims["xms_mirid"] == uami.id
    mgmt.msi.federated_identity_credentials.delete(group, "federated", "from-vm")
    refused = run_client(code, env)
    assert not refused["ok"] and "AADSTS700211" in refused["message"]


@pytest.mark.parametrize(("props", "field"), [
    ({"issuer": "http://insecure.example", "subject": "s", "audiences": [EXCHANGE]}, "Issuer"),
    ({"issuer": "https://ok.example", "subject": "", "audiences": [EXCHANGE]}, "Subject"),
    ({"issuer": "https://ok.example", "subject": "s", "audiences": ["a", "b"]}, "Audiences"),
])
def test_bad_federated_credentials_are_refused(acrlocal: AcrLocal, mgmt: Mgmt, group: str, props: dict[str, Any],
                                               field: str) -> None:
    uami = mgmt.identity(group)
    with pytest.raises(HttpResponseError) as info:
        mgmt.msi.federated_identity_credentials.create_or_update(group, uami.name, "bad-fic", props)
    assert info.value.status_code == 400 and field in str(info.value)
    assert not list(mgmt.msi.federated_identity_credentials.list(group, uami.name))


GOOD_VM = {"location": "westeurope", "properties": {
    "hardwareProfile": {"vmSize": "Standard_B1s"},
    "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                                          "version": "latest"}, "osDisk": {"createOption": "fromImage"}},
    "osProfile": {"computerName": "checked", "adminUsername": "azureuser", "linuxConfiguration": {
        "ssh": {"publicKeys": [{"path": "/home/azureuser/.ssh/authorized_keys", "keyData": "ssh-ed25519 AAAA x"}]}}}}}


@pytest.mark.parametrize(("where", "value"), [
    (("osProfile", "linuxConfiguration", "ssh"), 5),  # was a 500
    (("osProfile", "linuxConfiguration", "ssh"), "x"),  # was a 500
    (("osProfile", "linuxConfiguration", "ssh", "publicKeys"), True),  # was a 500
    (("osProfile", "linuxConfiguration", "ssh", "publicKeys"), [{"keyData": 5}]),
    (("osProfile", "linuxConfiguration", "disablePasswordAuthentication"), "no"),
    (("osProfile", "computerName"), "a\n127.0.0.1 mycontainerregistry.azurecr.io"),  # the VM's /etc/hosts
    (("osProfile", "computerName"), "c" * 65),
    (("osProfile", "computerName"), {"a": 1}),
    (("osProfile", "adminPassword"), 5),
    (("storageProfile", "osDisk", "name"), ["disk"]),
    (("storageProfile", "osDisk", "diskSizeGB"), "30"),
    (("storageProfile", "osDisk", "diskSizeGB"), 0),
    (("storageProfile", "osDisk", "caching"), "Sometimes"),
    (("storageProfile", "osDisk", "managedDisk", "storageAccountType"), 5),
    (("storageProfile", "dataDisks"), {"a": 1}),
])
def test_a_vm_property_of_the_wrong_type_or_form_is_400_and_no_vm(acrlocal: AcrLocal, mgmt: Mgmt, group: str,
                                                                   where: tuple[str, ...], value: Any) -> None:
    """What a VM's properties keep is checked before anything is made: ARM's 400 ``InvalidParameter`` (or
    ``InvalidRequestContent`` for a part that is not an object), no VM, no 500. The same body with the value left
    out makes the VM (so each case is refused for that value alone)."""
    body = json.loads(json.dumps(GOOD_VM))
    node = body["properties"]
    for key in where[:-1]:
        node = node.setdefault(key, {})
    node[where[-1]] = value
    path = f"{group_id(mgmt, group)}/providers/Microsoft.Compute/virtualMachines/checked"
    r = mgmt.arm("PUT", path, body)
    assert r.status_code == 400 and r.json()["error"]["code"] in ("InvalidParameter", "InvalidRequestContent"), \
        r.text
    assert mgmt.arm("GET", path).status_code == 404
    del node[where[-1]]
    made = mgmt.arm("PUT", path, body)
    assert made.status_code in (200, 201), made.text
    assert mgmt.arm("DELETE", path).status_code in (200, 202, 204)
