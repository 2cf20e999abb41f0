"""The real az CLI inside a VM: ``az login --identity`` with the VM's system-assigned identity and with a
user-assigned one (``--client-id``, ``--object-id``, ``--resource-id``), through the VM's IMDS door
(``AZURE_POD_IDENTITY_AUTHORITY_HOST``) and its App Service door (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``), then
``account show``, ``acr login --expose-token`` and ``acr repository list``; and what az says when the identity may
not do something, or the name it is given does not exist.

The VM, its identities and their role assignments are made with az on the host as the local administrator:
``az resource create`` (the VM), ``az vm identity assign``, ``az role assignment create``.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.az.conftest import Az, Contained, unique, vm_environment
from tests.harness import REFRESH_TOKEN_USER, AcrLocal, ChallengeAuth
from tests.interop.tools import Containers
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
    env: dict[str, str]
    repository: str

    @property
    def name(self) -> str:
        return str(self.registry["name"])


def push_image(server: AcrLocal, login_server: str, refresh_token: str, repository: str, tag: str) -> None:
    """Push a small image as a docker-style client logged in with ``az acr login --expose-token``'s token."""
    http = server.session()
    http.auth = ChallengeAuth(REFRESH_TOKEN_USER, refresh_token, server.ca)
    layer, config = tar_layer({"hello.txt": b"hello from the host\n"}), config_blob()
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
def world(host_az: Az, az_server: AcrLocal, contained: Contained) -> World:
    az = host_az
    group, name, other = unique("rg-vm-"), unique("vmreg"), unique("other")
    az("group", "create", "-n", group, "-l", "westeurope")
    registry = az("acr", "create", "-g", group, "-n", name, "--sku", "Standard")
    az("acr", "create", "-g", group, "-n", other, "--sku", "Basic")
    contained.names.update({f"{name}.localhost", f"{other}.localhost"})
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
    return World(group, registry, other, identity, vm, vm_environment(az_server, vm["vmId"]), repository)


def in_vm(az_exe: Path, server: AcrLocal, contained: Contained, world: World, tmp_path: Path, *,
          door: str = "imds", config_dir: Path | None = None) -> Az:
    """az with the VM's environment (HOME, CA, config dir, ...) and one identity door, set up by ``acrlocal
    az-setup --apply`` run inside the VM."""
    env = dict(world.env)
    if door == "imds":
        env.pop("IDENTITY_ENDPOINT"), env.pop("IDENTITY_HEADER")
    else:
        env.pop("AZURE_POD_IDENTITY_AUTHORITY_HOST")
    if config_dir is not None:
        env["AZURE_CONFIG_DIR"] = str(config_dir)
    az = Az(az_exe, server, Path(env["HOME"]), contained, env)
    proc = az.acrlocal("az-setup", "--apply", env={"ACRLOCAL_ENDPOINT": server.shared})
    assert proc.returncode == 0, proc.stderr
    assert "#   az login --identity\n" in proc.stdout
    return az


def claims(az: Az) -> dict[str, Any]:
    token = az("account", "get-access-token")["accessToken"]
    decoded: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return decoded


def test_system_assigned_identity(az_exe: Path, az_server: AcrLocal, contained: Contained, world: World,
                                  tmp_path: Path) -> None:
    az = in_vm(az_exe, az_server, contained, world, tmp_path)
    assert az.config_dir == Path(world.env["HOME"]) / ".azure"
    accounts = az("login", "--identity")
    user = {"assignedIdentityInfo": "MSI", "name": "systemAssignedIdentity", "type": "servicePrincipal"}
    assert [a["user"] for a in accounts] == [user]
    account = az("account", "show")
    assert account["user"] == user and account["environmentName"] == "AcrLocal"
    token = claims(az)
    assert token["oid"] == world.vm["identity"]["principalId"] and token["xms_mirid"] == world.vm["id"]

    # AcrPush carries no registries/read: az falls back to <name><suffix>, as in Azure, and gets a refresh token
    # (az warns about the fallback only when that login server does not answer).
    shared_port = az_server.shared.rsplit(":", 1)[1]
    proc = az.run("acr", "login", "--name", world.name, "--expose-token")
    assert proc.returncode == 0, proc.stderr
    exposed = json.loads(proc.stdout)
    assert exposed["loginServer"] == f"{world.name}.localhost:{shared_port}"
    assert exposed["username"] == REFRESH_TOKEN_USER and exposed["accessToken"] == exposed["refreshToken"]
    assert az("acr", "repository", "list", "--name", world.name) == [world.repository]
    assert az("acr", "repository", "show-tags", "--name", world.name, "--repository", world.repository) == ["v1"]


@pytest.mark.parametrize(("door", "selector"), [("appservice", "--client-id"), ("imds", "--object-id"),
                                                ("imds", "--resource-id"), ("appservice", "--resource-id")])
def test_user_assigned_identity(az_exe: Path, az_server: AcrLocal, contained: Contained, world: World,
                                tmp_path: Path, door: str, selector: str) -> None:
    az = in_vm(az_exe, az_server, contained, world, tmp_path, door=door, config_dir=tmp_path / "azure")
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


def test_what_a_pull_only_identity_may_not_do(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                              world: World, tmp_path: Path) -> None:
    az = in_vm(az_exe, az_server, contained, world, tmp_path, config_dir=tmp_path / "azure")
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
    # A registry that does not exist: az builds <name>.localhost:<port>, which nothing answers.
    missing = az.fail("acr", "repository", "list", "--name", "nosuchregistry")
    assert "Could not connect to the registry login server 'nosuchregistry.localhost:" in missing.stderr
    # An identity the VM does not have.
    stranger = "11111111-2222-3333-4444-555555555555"
    refused = az.fail("login", "--identity", "--client-id", stranger)
    assert refused.stderr.startswith("ERROR: Identity not found\n")  # IMDS's error_description, as az prints it
    assert az("account", "show")["user"]["assignedIdentityInfo"] == f"MSIClient-{client_id}"


def test_reader_on_the_registry_finds_its_own_login_server(host_az: Az, az_exe: Path, az_server: AcrLocal,
                                                           contained: Contained, world: World,
                                                           tmp_path: Path) -> None:
    """With Reader on the registry az finds it through ARM and logs in at the registry's own login server."""
    other = host_az("acr", "show", "--name", world.other_registry)
    host_az("role", "assignment", "create", "--assignee-object-id", world.identity["principalId"],
            "--assignee-principal-type", "ServicePrincipal", "--role", "Reader", "--scope", other["id"])
    host_az("role", "assignment", "create", "--assignee-object-id", world.identity["principalId"],
            "--assignee-principal-type", "ServicePrincipal", "--role", "AcrPull", "--scope", other["id"])
    az = in_vm(az_exe, az_server, contained, world, tmp_path, door="appservice", config_dir=tmp_path / "azure")
    az("login", "--identity", "--resource-id", world.identity["id"])
    proc = az.run("acr", "login", "--name", world.other_registry, "--expose-token")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["loginServer"] == other["loginServer"]
    assert "could not be found" not in proc.stderr
    assert az("acr", "repository", "list", "--name", world.other_registry) == []


def test_acr_login_logs_the_container_client_in(az_exe: Path, az_server: AcrLocal, contained: Contained,
                                                world: World, tmp_path: Path) -> None:
    """``az acr login`` without ``--expose-token`` runs ``$DOCKER_COMMAND ps`` then ``login --password-stdin`` with
    the refresh token (here podman on storage of its own, trusting the CA through a cert dir); the auth file it
    writes pulls the image the host pushed."""
    az = in_vm(az_exe, az_server, contained, world, tmp_path, config_dir=tmp_path / "azure")
    az("login", "--identity")
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copyfile(az_server.ca, certs / "ca.crt")
    runroot = Path(tempfile.mkdtemp(prefix="acrl-rr-"))  # podman wants a runroot under 50 characters
    podman = tmp_path / "podman-here"
    podman.write_text(f"""#!/bin/sh
if [ "$1" = login ]; then shift; set -- login --cert-dir {certs} "$@"; fi
exec podman --root {tmp_path / 'podman-root'} --runroot {runroot} --storage-driver vfs "$@"
""")
    podman.chmod(0o755)
    auth = Path(world.env["REGISTRY_AUTH_FILE"])
    az.env.update(DOCKER_COMMAND=str(podman), XDG_RUNTIME_DIR=str(runroot))
    try:
        proc = az.run("acr", "login", "--name", world.name, output=False)
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    assert "Login Succeeded" in proc.stdout
    login_server = f"{world.name}.localhost:{az_server.shared.rsplit(':', 1)[1]}"
    entry = json.loads(auth.read_text())["auths"][login_server]
    user, _, refresh = base64.b64decode(entry["auth"]).decode().partition(":")
    assert user == REFRESH_TOKEN_USER and jwt.decode(refresh, options={"verify_signature": False})["sub"] == \
        world.vm["identity"]["principalId"]

    with Containers(tmp_path / "tools", az_server, anonymous=True) as tools:
        env = {**tools.env(), "REGISTRY_AUTH_FILE": str(auth)}
        inspect = subprocess.run(contained.argv(["skopeo", "inspect", "--cert-dir", str(certs),
                                                 f"docker://{login_server}/{world.repository}:v1"]),
                                 env=env, capture_output=True, text=True, timeout=120)
    assert inspect.returncode == 0, inspect.stderr
    assert json.loads(inspect.stdout)["Name"] == f"{login_server}/{world.repository}"


def test_a_vm_without_identity(host_az: Az, az_exe: Path, az_server: AcrLocal, contained: Contained, world: World,
                               tmp_path: Path) -> None:
    vm_name = unique("bare-")
    host_az("resource", "create", "-g", world.group, "-n", vm_name, "--resource-type",
            "Microsoft.Compute/virtualMachines", "-l", "westeurope", "--properties", json.dumps(VM_PROPERTIES))
    vm = host_az("vm", "show", "-g", world.group, "-n", vm_name)
    assert vm.get("identity") is None
    bare = World(world.group, world.registry, world.other_registry, world.identity, vm,
                 vm_environment(az_server, vm["vmId"]), world.repository)
    az = in_vm(az_exe, az_server, contained, bare, tmp_path, config_dir=tmp_path / "azure")
    refused = az.fail("login", "--identity")
    assert refused.stderr.startswith("ERROR: Identity not found\n")
    assert "Please run 'az login' to setup account." in az.fail("account", "show").stderr
    host_az("vm", "delete", "-g", world.group, "-n", vm_name, "--yes")
    assert not (az_server.data_dir / "vms" / vm["vmId"]).exists()
