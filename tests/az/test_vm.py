"""Microsoft's az inside a VM, with its default cloud (AzureCloud) and no setting at all: ``az login --identity``
with the VM's system-assigned identity and with a user-assigned one (``--client-id``, ``--object-id``,
``--resource-id``), through IMDS at 169.254.169.254, then ``account show``, ``acr login --expose-token`` and
``acr repository list`` at ``<name>.azurecr.io``; ``az acr login`` logging the VM's Docker Engine in; and what az
says when the identity may not do something, or the name it is given does not exist.

The VM, its identities and their role assignments are made with az on the host as the local administrator:
``az resource create`` (the VM), ``az vm identity assign``, ``az role assignment create``.
"""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import pytest

from tests.az.conftest import Az, VmAz, unique
from tests.harness import REFRESH_TOKEN_USER, AcrLocal, ChallengeAuth
from tests.ocitools import config_blob, image, tar_layer

VM_PROPERTIES = {
    "hardwareProfile": {"vmSize": "Standard_B1s"},
    "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts", "sku": "server",
                                          "version": "latest"}},
    "osProfile": {"computerName": "vm", "adminUsername": "azureuser"},
}
ACR_PUSH = "8311e382-0749-4cb8-b61a-304f252e45ec"


@dataclass
class World:
    group: str
    registry: dict[str, Any]
    other_registry: str
    identity: dict[str, Any]
    vm: dict[str, Any]
    repository: str

    @property
    def name(self) -> str:
        return str(self.registry["name"])


def push_image(server: AcrLocal, login_server: str, refresh_token: str, repository: str, tag: str) -> None:
    """Push a small image as a docker-style client logged in with ``az acr login --expose-token``'s token."""
    http = server.session()
    http.auth = ChallengeAuth(REFRESH_TOKEN_USER, refresh_token, server.ca)
    layer = tar_layer({"hello.txt": b"hello from the host\n"})
    config = config_blob(diff_ids=[layer.digest])  # as Docker Engine checks it
    for blob in (config, layer):
        r = http.post(f"https://{login_server}/v2/{repository}/blobs/uploads/")
        assert r.status_code == 202, r.text
        r = http.put(f"https://{login_server}{r.headers['Location']}", params={"digest": blob.digest}, data=blob.data,
                     headers={"Content-Type": "application/octet-stream"})
        assert r.status_code == 201, r.text
    manifest = image(config, [layer])
    r = http.put(f"https://{login_server}/v2/{repository}/manifests/{tag}", data=manifest.body,
                 headers={"Content-Type": manifest.media_type})
    assert r.status_code == 201, r.text


@pytest.fixture(scope="module")
def world(host_az: Az, az_server: AcrLocal) -> World:
    az = host_az
    group, name, other = unique("rg-vm-"), unique("vmreg"), unique("other")
    az("group", "create", "-n", group, "-l", "westeurope")
    registry = az("acr", "create", "-g", group, "-n", name, "--sku", "Standard")
    az("acr", "create", "-g", group, "-n", other, "--sku", "Basic")
    identity = az("identity", "create", "-g", group, "-n", unique("id-"))
    vm_name = unique("vm-")
    az("resource", "create", "-g", group, "-n", vm_name, "--resource-type", "Microsoft.Compute/virtualMachines",
       "-l", "westeurope", "--properties", json.dumps(VM_PROPERTIES))
    assigned = az("vm", "identity", "assign", "-g", group, "-n", vm_name, "--identities", "[system]", identity["id"])
    assert list(assigned["userAssignedIdentities"]) == [identity["id"]]
    vm = az("vm", "show", "-g", group, "-n", vm_name)
    assert vm["identity"]["type"] == "SystemAssigned, UserAssigned"
    system_id = vm["identity"]["principalId"]
    az("role", "assignment", "create", "--assignee-object-id", system_id, "--assignee-principal-type",
       "ServicePrincipal", "--role", ACR_PUSH, "--scope", registry["id"])
    az("role", "assignment", "create", "--assignee-object-id", identity["principalId"], "--assignee-principal-type",
       "ServicePrincipal", "--role", "AcrPull", "--scope", registry["id"])

    # The administrator (Owner) reads the registry through ARM: az logs in at its own login server.
    token = az("acr", "login", "-n", name, "--expose-token")
    assert token["loginServer"] == registry["loginServer"]
    repository = "samples/hello"
    push_image(az_server, token["loginServer"], token["refreshToken"], repository, "v1")
    return World(group, registry, other, identity, vm, repository)


def in_vm(server: AcrLocal, world: World, vm: dict[str, Any] | None = None) -> VmAz:
    """az in the VM, with a profile of its own (a fresh AZURE_CONFIG_DIR in the admin user's home)."""
    return VmAz(server, (vm or world.vm)["id"], config_dir=f"/home/azureuser/.azure-{uuid.uuid4().hex[:8]}")


def claims(az: VmAz) -> dict[str, Any]:
    token = az("account", "get-access-token")["accessToken"]
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def test_system_assigned_identity(az_server: AcrLocal, world: World) -> None:
    az = VmAz(az_server, world.vm["id"])  # the VM's own default profile: ~/.azure
    accounts = az("login", "--identity")
    user = {"assignedIdentityInfo": "MSI", "name": "systemAssignedIdentity", "type": "servicePrincipal"}
    assert [a["user"] for a in accounts] == [user]
    account = az("account", "show")
    assert account["user"] == user and account["environmentName"] == "AzureCloud"
    token = claims(az)
    assert token["oid"] == world.vm["identity"]["principalId"] and token["xms_mirid"] == world.vm["id"]

    # AcrPush carries no registries/read: az falls back to <name>.azurecr.io, as in Azure, and gets a refresh token.
    result = az.run("acr", "login", "--name", world.name, "--expose-token")
    assert result.code == 0, result.stderr
    exposed = json.loads(result.stdout)
    assert exposed["loginServer"] == f"{world.name}.azurecr.io"
    assert exposed["username"] == REFRESH_TOKEN_USER and exposed["accessToken"] == exposed["refreshToken"]
    assert az("acr", "repository", "list", "--name", world.name) == [world.repository]
    assert az("acr", "repository", "show-tags", "--name", world.name, "--repository", world.repository) == ["v1"]


@pytest.mark.parametrize("selector", ["--client-id", "--object-id", "--resource-id"])
def test_user_assigned_identity(az_server: AcrLocal, world: World, selector: str) -> None:
    az = in_vm(az_server, world)
    value = {"--client-id": world.identity["clientId"], "--object-id": world.identity["principalId"],
             "--resource-id": world.identity["id"]}[selector]
    info = {"--client-id": "MSIClient", "--object-id": "MSIObject", "--resource-id": "MSIResource"}[selector]
    accounts = az("login", "--identity", selector, value)
    user = {"assignedIdentityInfo": f"{info}-{value}", "name": "userAssignedIdentity", "type": "servicePrincipal"}
    assert [a["user"] for a in accounts] == [user]
    assert az("account", "show")["user"] == user
    token = claims(az)
    assert token["oid"] == world.identity["principalId"] and token["xms_mirid"] == world.identity["id"]
    assert az("acr", "repository", "list", "--name", world.name) == [world.repository]


def test_what_a_pull_only_identity_may_not_do(az_server: AcrLocal, world: World) -> None:
    az = in_vm(az_server, world)
    az("login", "--identity", "--client-id", world.identity["clientId"])
    client_id, object_id = world.identity["clientId"], world.identity["principalId"]

    denied = az.fail("group", "create", "--name", unique("rg-"), "--location", "westeurope")
    assert f"ERROR: (AuthorizationFailed) The client '{client_id}' with object id '{object_id}' does not have " \
           "authorization to perform action 'Microsoft.Resources/subscriptions/resourceGroups/write' over scope " \
           in denied.stderr
    assert "If access was recently granted, please refresh your credentials." in denied.stderr
    denied = az.fail("acr", "show", "--name", world.name, "--resource-group", world.group)
    assert "(AuthorizationFailed)" in denied.stderr
    assert "'Microsoft.ContainerRegistry/registries/read'" in denied.stderr

    # A registry it holds no role on: the registry answers, but lists nothing for this identity.
    refused = az.fail("acr", "repository", "list", "--name", world.other_registry)
    assert refused.stderr.startswith("ERROR: Error: authentication required, visit https://aka.ms/acr/authorization")
    # A registry that does not exist: az builds nosuchregistry.azurecr.io, which no name server knows.
    missing = az.fail("acr", "repository", "list", "--name", "nosuchregistry")
    assert "Could not connect to the registry login server 'nosuchregistry.azurecr.io'" in missing.stderr
    # An identity the VM does not have.
    stranger = "11111111-2222-3333-4444-555555555555"
    refused = az.fail("login", "--identity", "--client-id", stranger)
    assert refused.stderr.startswith("ERROR: Identity not found\n")  # IMDS's error_description, as az prints it
    assert az("account", "show")["user"]["assignedIdentityInfo"] == f"MSIClient-{client_id}"


def test_reader_on_the_registry_finds_its_login_server_through_arm(host_az: Az, az_server: AcrLocal,
                                                                   world: World) -> None:
    """With Reader on the registry az finds it through ARM at management.azure.com, which reports the login
    server by Azure's name (names follow the endpoint reached), and logs in there. (A registry of the test's own:
    the roles given here would let the pull-only identity into the module's other registry.)"""
    name = unique("readable")
    other = host_az("acr", "create", "-g", world.group, "-n", name, "--sku", "Basic")
    assert other["loginServer"].startswith("localhost:")  # the host's endpoint reports the host's login server
    host_az("role", "assignment", "create", "--assignee-object-id", world.identity["principalId"],
            "--assignee-principal-type", "ServicePrincipal", "--role", "Reader", "--scope", other["id"])
    host_az("role", "assignment", "create", "--assignee-object-id", world.identity["principalId"],
            "--assignee-principal-type", "ServicePrincipal", "--role", "AcrPull", "--scope", other["id"])
    az = in_vm(az_server, world)
    az("login", "--identity", "--resource-id", world.identity["id"])
    assert az("acr", "show", "--name", name, "--query", "loginServer") == f"{name}.azurecr.io"
    result = az.run("acr", "login", "--name", name, "--expose-token")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["loginServer"] == f"{name}.azurecr.io"
    assert "could not be found" not in result.stderr
    assert az("acr", "repository", "list", "--name", name) == []


@pytest.mark.skipif(shutil.which("dockerd") is None and shutil.which("podman") is None,
                    reason="no Docker Engine (docker.io) nor podman on this host")
def test_acr_login_logs_the_vms_docker_in(az_server: AcrLocal, world: World) -> None:
    """``az acr login`` without ``--expose-token`` runs ``docker ps`` then ``docker login --password-stdin``
    with the refresh token; the VM's Docker Engine then pulls what the host pushed."""
    az = in_vm(az_server, world)
    az("login", "--identity")
    result = az.run("acr", "login", "--name", world.name, output=False)
    assert result.code == 0, result.stderr
    assert "Login Succeeded" in result.stdout
    server = f"{world.name}.azurecr.io"
    pulled = az.vm_shell(f"docker pull -q {server}/{world.repository}:v1 && docker image inspect -f ok "
                         f"{server}/{world.repository}:v1")
    assert pulled.code == 0, pulled.stderr
    assert pulled.stdout.splitlines()[-1] == "ok"


def test_a_vm_without_identity(host_az: Az, az_server: AcrLocal, world: World) -> None:
    vm_name = unique("bare-")
    host_az("resource", "create", "-g", world.group, "-n", vm_name, "--resource-type",
            "Microsoft.Compute/virtualMachines", "-l", "westeurope", "--properties", json.dumps(VM_PROPERTIES))
    vm = host_az("vm", "show", "-g", world.group, "-n", vm_name)
    assert vm.get("identity") is None
    az = in_vm(az_server, world, vm)
    refused = az.fail("login", "--identity")
    assert refused.stderr.startswith("ERROR: Identity not found\n")
    assert "Please run 'az login' to setup account." in az.fail("account", "show").stderr
    host_az("vm", "delete", "-g", world.group, "-n", vm_name, "--yes")
    assert not (az_server.data_dir / "vms" / vm["vmId"]).exists()
