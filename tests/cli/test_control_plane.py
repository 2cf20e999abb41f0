"""The az-shaped commands against a real server: output shapes, ``--query``/``-o``, az's errors and exit codes, and
failed commands that change nothing."""

from __future__ import annotations

import ipaddress
import json
import shlex
import stat
import uuid
from pathlib import Path
from typing import Any

import jwt
import yaml

from tests.compute.conftest import mgmt_for
from tests.harness import AcrLocal
from tests.vmexec import vm_exec


def az(server: AcrLocal, *args: str, env: dict[str, str] | None = None) -> Any:
    proc = server.cli(*args, check=False, env=env)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def fails(server: AcrLocal, *args: str, code: int = 1, env: dict[str, str] | None = None) -> str:
    proc = server.cli(*args, check=False, env=env)
    assert proc.returncode == code, f"acrlocal {' '.join(args)} exited {proc.returncode}: {proc.stderr}"
    assert proc.stdout == ""
    assert proc.stderr.startswith("ERROR: ") or proc.stderr.startswith("WARNING: ")
    return proc.stderr


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_account_show_signs_in_as_the_local_administrator(acrlocal: AcrLocal) -> None:
    account = az(acrlocal, "account", "show")
    admin = json.loads((acrlocal.data_dir / "admin.json").read_text())
    assert sorted(account) == ["environmentName", "homeTenantId", "id", "isDefault", "managedByTenants", "name",
                               "state", "tenantId", "user"]
    assert account["id"] == admin["subscriptionId"] and account["tenantId"] == admin["tenantId"]
    assert account["isDefault"] is True and account["state"] == "Enabled"
    assert account["user"] == {"name": admin["clientId"], "type": "servicePrincipal"}
    assert az(acrlocal, "account", "list", "--query", "[].id") == [admin["subscriptionId"]]
    profile = acrlocal.profile_dir
    assert stat.S_IMODE(profile.stat().st_mode) == 0o700
    for path in profile.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert admin["clientSecret"] not in path.read_text(), path  # the profile names admin.json, never copies it


def test_get_access_token_for_arm_and_for_acr(acrlocal: AcrLocal) -> None:
    account = az(acrlocal, "account", "show")
    arm = az(acrlocal, "account", "get-access-token")
    assert sorted(arm) == ["accessToken", "expiresOn", "expires_on", "subscription", "tenant", "tokenType"]
    claims = jwt.decode(arm["accessToken"], options={"verify_signature": False})
    assert claims["aud"] == "https://management.core.windows.net/" and claims["tid"] == account["tenantId"]
    acr = az(acrlocal, "account", "get-access-token", "--resource", "https://containerregistry.azure.net")
    assert jwt.decode(acr["accessToken"], options={"verify_signature": False})["aud"] == \
        "https://containerregistry.azure.net"
    tsv = acrlocal.cli("account", "get-access-token", "--scope", "https://containerregistry.azure.net/.default",
                       "--query", "tokenType", "-o", "tsv").stdout
    assert tsv == "Bearer\n"


def test_group_lifecycle_formats_and_exit_codes(acrlocal: AcrLocal) -> None:
    name = unique("cli-rg-")
    created = az(acrlocal, "group", "create", "-n", name, "-l", "westus", "--tags", "team=cli", "env")
    assert sorted(created) == ["id", "location", "name", "properties", "tags", "type"] or \
        sorted(created) == ["id", "location", "managedBy", "name", "properties", "tags", "type"]
    assert created["properties"] == {"provisioningState": "Succeeded"}
    assert created["tags"] == {"team": "cli", "env": ""}
    assert az(acrlocal, "group", "show", "--resource-group", name, "--query", "name") == name
    assert acrlocal.cli("group", "show", "-g", name, "--query", "{n:name,l:location}", "-o", "tsv").stdout == \
        f"{name}\twestus\n"
    assert acrlocal.cli("group", "show", "-g", name, "--query", "[name,location]", "-o", "tsv").stdout == \
        f"{name}\nwestus\n"
    assert yaml.safe_load(acrlocal.cli("group", "show", "-n", name, "-o", "yaml").stdout)["name"] == name
    table = acrlocal.cli("group", "list", "-o", "table").stdout.splitlines()
    assert table[0].split() == ["Name", "Location", "Status"]
    assert any(line.split() == [name, "westus", "Succeeded"] for line in table[2:])
    assert acrlocal.cli("group", "list", "-o", "none").stdout == ""
    assert acrlocal.cli("group", "exists", "-n", name).stdout == "true\n"
    assert az(acrlocal, "group", "delete", "-n", name, "--yes") is None
    assert acrlocal.cli("group", "exists", "-n", name).stdout == "false\n"
    err = fails(acrlocal, "group", "show", "-n", name, code=3)
    assert err == (f"ERROR: (ResourceGroupNotFound) Resource group '{name}' could not be found.\n"
                   f"Code: ResourceGroupNotFound\nMessage: Resource group '{name}' could not be found.\n")


def test_failed_commands_change_nothing(acrlocal: AcrLocal) -> None:
    groups = az(acrlocal, "group", "list", "--query", "[].name")
    registries = az(acrlocal, "acr", "list", "--query", "[].name")
    err = fails(acrlocal, "group", "create", "-n", "bad name!", "-l", "westus")
    assert err.startswith("ERROR: (InvalidResourceGroup) ") and "'bad name!'" in err
    missing = unique("cli-missing-")
    err = fails(acrlocal, "acr", "create", "-n", "clireg" + uuid.uuid4().hex[:6], "-g", missing, "--sku", "Basic")
    assert "ResourceGroupNotFound" in err
    fails(acrlocal, "acr", "create", "-n", "Bad-Name", "-g", "acrlocal", "--sku", "Basic")
    fails(acrlocal, "acr", "create", "-n", "abcde", "-g", "acrlocal", "--sku", "Gold", code=2)
    fails(acrlocal, "group", "delete", "-n", "acrlocal")  # no --yes and no terminal: cancelled
    # A name is sent as it was given, percent-encoded in the path: a line feed, '#' or '?' in it is refused by ARM,
    # never cut off so that another group is made (before: "cli-cut\n", "cli-cut#x" and "cli-cut?x" made cli-cut).
    for name in ("cli-cut\n", "cli-cut#x", "cli-cut?x"):
        err = fails(acrlocal, "group", "create", "-n", name, "-l", "westus")
        assert "InvalidResourceGroup" in err or "InvalidRequestUri" in err, err
    assert az(acrlocal, "group", "list", "--query", "[].name") == groups
    assert az(acrlocal, "acr", "list", "--query", "[].name") == registries


def test_acr_lifecycle(acrlocal: AcrLocal) -> None:
    group = unique("cli-acr-")
    az(acrlocal, "group", "create", "-n", group, "-l", "eastus")
    name = "clireg" + uuid.uuid4().hex[:8]
    reg = az(acrlocal, "acr", "create", "-n", name, "-g", group, "--sku", "Standard")
    assert reg["name"] == name and reg["resourceGroup"] == group and reg["location"] == "eastus"
    assert reg["adminUserEnabled"] is False and reg["sku"]["name"] == "Standard"
    assert reg["loginServer"].startswith("localhost:") and "properties" not in reg
    assert az(acrlocal, "acr", "show", "-n", name, "--query", "loginServer") == reg["loginServer"]
    table = acrlocal.cli("acr", "list", "-g", group, "-o", "table").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "RESOURCE", "GROUP", "LOCATION"]
    check = az(acrlocal, "acr", "check-name", "-n", name)
    assert check["nameAvailable"] is False and check["reason"] == "AlreadyExists"
    assert az(acrlocal, "acr", "check-name", "-n", "clifree" + uuid.uuid4().hex[:8])["nameAvailable"] is True

    err = fails(acrlocal, "acr", "credential", "show", "-n", name)
    assert err == f"ERROR: Run 'acrlocal acr update -n {name} --admin-enabled true' to enable admin first.\n"
    assert az(acrlocal, "acr", "update", "-n", name, "--admin-enabled", "--query", "adminUserEnabled") is True
    creds = az(acrlocal, "acr", "credential", "show", "-n", name)
    assert creds["username"] == name and [p["name"] for p in creds["passwords"]] == ["password", "password2"]
    renewed = az(acrlocal, "acr", "credential", "renew", "-n", name, "--password-name", "password2")
    assert renewed["passwords"][0] == creds["passwords"][0]
    assert renewed["passwords"][1]["value"] != creds["passwords"][1]["value"]
    assert az(acrlocal, "acr", "update", "-n", name, "--admin-enabled", "false", "--query", "adminUserEnabled") \
        is False

    err = fails(acrlocal, "acr", "show", "-n", "nosuchreg99")
    account = az(acrlocal, "account", "show")
    assert err == ("ERROR: The resource with name 'nosuchreg99' and type 'Microsoft.ContainerRegistry/registries' "
                   f"could not be found in subscription '{account['name']} ({account['id']})'.\n")
    err = fails(acrlocal, "acr", "show", "-n", "nosuchreg99", "-g", group, code=3)
    assert err.startswith("ERROR: (ResourceNotFound) ")
    assert az(acrlocal, "acr", "delete", "-n", name, "--yes") is None
    assert az(acrlocal, "acr", "list", "-g", group) == []
    az(acrlocal, "group", "delete", "-n", group, "--yes")


def test_role_definitions_by_name_ignoring_case(acrlocal: AcrLocal) -> None:
    found = az(acrlocal, "role", "definition", "list", "--name", "acrpull")
    assert [d["roleName"] for d in found] == ["AcrPull"]
    assert found[0]["name"] == "7f951dda-4ed3-4680-a7ca-43fe172d538d"
    assert {"assignableScopes", "description", "id", "name", "permissions", "roleName", "roleType",
            "type"} <= set(found[0])


def test_tutorial_resources_identity_vm_and_role_assignment(acrlocal: AcrLocal) -> None:
    group = unique("cli-tut-")
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    registry = "clitut" + uuid.uuid4().hex[:8]
    az(acrlocal, "acr", "create", "-n", registry, "-g", group, "--sku", "Basic")
    ident = az(acrlocal, "identity", "create", "-n", "myACRId", "-g", group)
    assert {"clientId", "id", "location", "name", "principalId", "resourceGroup", "tags", "tenantId", "type"} <= \
        set(ident)
    assert az(acrlocal, "identity", "list", "-g", group, "--query", "[].name") == ["myACRId"]
    fic = az(acrlocal, "identity", "federated-credential", "create", "-n", "fic1", "--identity-name", "myACRId",
             "-g", group, "--issuer", "https://issuer.example", "--subject", "system:serviceaccount:ns:sa")
    assert fic["audiences"] == ["api://AzureADTokenExchange"] and fic["subject"] == "system:serviceaccount:ns:sa"
    assert az(acrlocal, "identity", "federated-credential", "list", "--identity-name", "myACRId", "-g", group,
              "--query", "[].name") == ["fic1"]
    # Another credential of the identity may not federate the same issuer and subject; a PUT of fic1 changes it.
    err = fails(acrlocal, "identity", "federated-credential", "create", "-n", "fic2", "--identity-name", "myACRId",
                "-g", group, "--issuer", "https://issuer.example", "--subject", "system:serviceaccount:ns:sa")
    assert "Issuer and subject combination already exists" in err, err
    changed = az(acrlocal, "identity", "federated-credential", "create", "-n", "fic1", "--identity-name",
                 "myACRId", "-g", group, "--issuer", "https://issuer.example", "--subject",
                 "system:serviceaccount:ns:b")
    assert changed["subject"] == "system:serviceaccount:ns:b"
    assert az(acrlocal, "identity", "federated-credential", "list", "--identity-name", "myACRId", "-g", group,
              "--query", "[].[name, subject]") == [["fic1", "system:serviceaccount:ns:b"]]
    az(acrlocal, "identity", "federated-credential", "delete", "-n", "fic1", "--identity-name", "myACRId",
       "-g", group, "--yes")

    vm = az(acrlocal, "vm", "create", "-g", group, "-n", "myDockerVM", "--image", "UbuntuLTS",
            "--admin-username", "azureuser", "--generate-ssh-keys")
    assert sorted(vm) == ["fqdns", "id", "location", "macAddress", "powerState", "privateIpAddress",
                          "publicIpAddress", "resourceGroup", "zones"]
    # its network, made first as az makes it: the public IP address is an address of this machine
    assert ipaddress.ip_address(vm["publicIpAddress"]) in ipaddress.ip_network("127.77.0.0/16")
    assert vm["privateIpAddress"] == "10.0.0.4" and vm["macAddress"]
    second = az(acrlocal, "vm", "create", "-g", group, "-n", "second", "--public-ip-address", "")
    assert second["publicIpAddress"] == "" and second["privateIpAddress"] == "10.0.0.5"  # the group's network
    m = mgmt_for(acrlocal)
    made = m.arm("GET", f"/subscriptions/{m.subscription}/resourceGroups/{group}/resources", api_version="2024-11-01")
    assert sorted((r["type"], r["name"]) for r in made.json()["value"] if "Network" in r["type"]) == [
        ("Microsoft.Network/networkInterfaces", "myDockerVMVMNic"),
        ("Microsoft.Network/networkInterfaces", "secondVMNic"),
        ("Microsoft.Network/networkSecurityGroups", "myDockerVMNSG"),
        ("Microsoft.Network/networkSecurityGroups", "secondNSG"),
        ("Microsoft.Network/publicIPAddresses", "myDockerVMPublicIP"),
        ("Microsoft.Network/virtualNetworks", "myDockerVMVNET")]
    az(acrlocal, "vm", "delete", "-g", group, "-n", "second", "--yes")
    assigned = az(acrlocal, "vm", "identity", "assign", "-g", group, "-n", "myDockerVM", "--identities", "myACRId")
    assert assigned["systemAssignedIdentity"] == ""
    ((rid, info),) = assigned["userAssignedIdentities"].items()
    assert rid.lower() == ident["id"].lower()
    assert info == {"clientId": ident["clientId"], "principalId": ident["principalId"]}
    both = az(acrlocal, "vm", "identity", "assign", "-g", group, "-n", "myDockerVM")
    assert both["systemAssignedIdentity"] and len(both["userAssignedIdentities"]) == 1
    assert az(acrlocal, "vm", "identity", "show", "-g", group, "-n", "myDockerVM", "--query", "type") == \
        "SystemAssigned, UserAssigned"

    scope = az(acrlocal, "acr", "show", "-n", registry, "--query", "id")
    assignment = az(acrlocal, "role", "assignment", "create", "--assignee", ident["principalId"], "--scope", scope,
                    "--role", "acrpull")
    assert assignment["principalId"] == ident["principalId"] and assignment["scope"] == scope
    assert assignment["roleDefinitionId"].endswith("/7f951dda-4ed3-4680-a7ca-43fe172d538d")
    by_client_id = az(acrlocal, "role", "assignment", "create", "--assignee", ident["clientId"], "--scope", scope,
                      "--role", "AcrPush")
    assert by_client_id["principalId"] == ident["principalId"]
    listed = az(acrlocal, "role", "assignment", "list", "--scope", scope)
    assert sorted(a["roleDefinitionName"] for a in listed) == ["AcrPull", "AcrPush"]
    err = fails(acrlocal, "role", "assignment", "create", "--assignee", ident["principalId"], "--scope", scope,
                "--role", "NoSuchRole")
    assert err == "ERROR: Role 'NoSuchRole' doesn't exist.\n"
    az(acrlocal, "role", "assignment", "delete", "--assignee", ident["principalId"], "--role", "acrpush",
       "--scope", scope)
    assert [a["roleDefinitionName"] for a in az(acrlocal, "role", "assignment", "list", "--scope", scope)] == \
        ["AcrPull"]

    removed = az(acrlocal, "vm", "identity", "remove", "-g", group, "-n", "myDockerVM", "--identities", "[system]")
    assert removed["type"] == "UserAssigned"
    _login_inside_vm(acrlocal, group, ident)
    az(acrlocal, "vm", "delete", "-g", group, "-n", "myDockerVM", "--yes")
    az(acrlocal, "group", "delete", "-n", group, "--yes")


def _login_inside_vm(acrlocal: AcrLocal, group: str, ident: dict[str, Any]) -> None:
    """acrlocal's CLI inside the VM, as its admin user: IMDS at 169.254.169.254, ARM at management.azure.com."""
    vm_id = az(acrlocal, "vm", "show", "-g", group, "-n", "myDockerVM", "--query", "id")

    def inside(*args: str) -> Any:
        result = vm_exec(acrlocal, vm_id, shlex.join(["acrlocal", *args, "--output", "json"]))
        assert result.code == 0, result.stderr
        return json.loads(result.stdout) if result.stdout.strip() else None

    accounts = inside("login", "--identity", "--username", ident["clientId"])
    assert accounts[0]["user"] == {"assignedIdentityInfo": f"MSIClient-{ident['clientId']}",
                                   "name": "userAssignedIdentity", "type": "servicePrincipal"}
    by_id = inside("login", "--identity", "--username", ident["id"])
    assert by_id[0]["user"]["assignedIdentityInfo"] == f"MSIResource-{ident['id']}"
    by_object = inside("login", "--identity", "--object-id", ident["principalId"])
    assert by_object[0]["user"]["assignedIdentityInfo"] == f"MSIObject-{ident['principalId']}"
    token = inside("account", "get-access-token", "--resource", "https://containerregistry.azure.net")
    assert jwt.decode(token["accessToken"], options={"verify_signature": False})["oid"] == ident["principalId"]
    # the identity may pull from the registry but not read ARM: the registry is invisible to it, as in Azure
    assert inside("group", "list") == []
    inside("logout")
    shown = vm_exec(acrlocal, vm_id, "acrlocal account show")
    assert shown.code != 0 and shown.stderr.startswith("ERROR: Please run 'acrlocal login'")


def test_service_principal_for_rbac_signs_in_and_is_held_to_its_role(acrlocal: AcrLocal, tmp_path: Path) -> None:
    sub = az(acrlocal, "account", "show", "--query", "id")
    name = unique("cli-sp-")
    sp = az(acrlocal, "ad", "sp", "create-for-rbac", "--name", name, "--role", "reader", "--scopes",
            f"/subscriptions/{sub}", "--only-show-errors")
    assert sorted(sp) == ["appId", "displayName", "password", "tenant"] and sp["displayName"] == name
    env = {"ACRLOCAL_CONFIG_DIR": str(tmp_path / "sp-profile")}
    accounts = az(acrlocal, "login", "--service-principal", "-u", sp["appId"], "-p", sp["password"], "--tenant",
                  sp["tenant"], env=env)
    assert accounts[0]["user"] == {"name": sp["appId"], "type": "servicePrincipal"}
    assert "acrlocal" in az(acrlocal, "group", "list", "--query", "[].name", env=env)
    before = az(acrlocal, "group", "list", "--query", "[].name")
    err = fails(acrlocal, "group", "create", "-n", unique("cli-denied-"), "-l", "westus", env=env)
    assert err.startswith("ERROR: (AuthorizationFailed) ")
    assert az(acrlocal, "group", "list", "--query", "[].name") == before
    bad = fails(acrlocal, "login", "--service-principal", "-u", sp["appId"], "-p", "wrong", "--tenant",
                sp["tenant"], env={"ACRLOCAL_CONFIG_DIR": str(tmp_path / "bad-profile")})
    assert "AADSTS7000215" in bad and not (tmp_path / "bad-profile").exists()


def test_acr_tokens_and_scope_maps(acrlocal: AcrLocal) -> None:
    group = unique("cli-tok-")
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    registry = "clitok" + uuid.uuid4().hex[:8]
    az(acrlocal, "acr", "create", "-n", registry, "-g", group, "--sku", "Premium")
    scope_map = az(acrlocal, "acr", "scope-map", "create", "-n", "scopemap1", "-r", registry, "--repository",
                   "hello", "content/read", "content/write", "--repository", "other", "metadata/read")
    assert scope_map["actions"] == ["repositories/hello/content/read", "repositories/hello/content/write",
                                    "repositories/other/metadata/read"]
    token = az(acrlocal, "acr", "token", "create", "-n", "token1", "-r", registry, "--scope-map", "scopemap1",
               "--only-show-errors")
    assert token["scopeMapId"] == scope_map["id"] and token["status"] == "enabled"
    passwords = token["credentials"]["passwords"]
    assert [p["name"] for p in passwords] == ["password1", "password2"] and all(p["value"] for p in passwords)
    made = az(acrlocal, "acr", "token", "create", "-n", "token2", "-r", registry, "--repository", "hello",
              "content/read", "--no-passwords")
    assert made["scopeMapId"].endswith("/scopeMaps/token2-scope-map")
    maps = az(acrlocal, "acr", "scope-map", "list", "-r", registry, "--query", "[].name")
    # a token whose name the server refuses leaves no scope map behind
    err = fails(acrlocal, "acr", "token", "create", "-n", "t!", "-r", registry, "--repository", "hello",
                "content/read")
    assert err.startswith("ERROR: (")
    assert az(acrlocal, "acr", "scope-map", "list", "-r", registry, "--query", "[].name") == maps
    assert fails(acrlocal, "acr", "scope-map", "create", "-n", "scopemap2", "-r", registry, "--repository",
                 "hello", "content/frob", code=2).startswith("ERROR: 'content/frob' is not a valid repository action")
    assert sorted(az(acrlocal, "acr", "token", "list", "-r", registry, "--query", "[].name")) == ["token1", "token2"]
    az(acrlocal, "acr", "token", "delete", "-n", "token2", "-r", registry, "--yes")
    az(acrlocal, "acr", "scope-map", "delete", "-n", "token2-scope-map", "-r", registry, "--yes")
    assert az(acrlocal, "acr", "token", "list", "-r", registry, "--query", "[].name") == ["token1"]
    az(acrlocal, "group", "delete", "-n", group, "--yes")


def test_role_assignment_list_at_a_scope_asks_arm_for_that_scope(acrlocal: AcrLocal) -> None:
    """As az does: the scope's own list (``atScope()``), so ARM checks the scope and answers for a bad one."""
    group = unique("cli-scope-")
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    ident = az(acrlocal, "identity", "create", "-n", "scoped", "-g", group)
    scope = az(acrlocal, "group", "show", "-n", group, "--query", "id")
    az(acrlocal, "role", "assignment", "create", "--assignee-object-id", ident["principalId"],
       "--assignee-principal-type", "ServicePrincipal", "--scope", scope, "--role", "Reader")
    listed = az(acrlocal, "role", "assignment", "list", "--scope", scope, "--query", "[].[principalId, scope]")
    assert listed == [[ident["principalId"], scope]]
    assert az(acrlocal, "role", "assignment", "list", "-g", group, "--assignee", ident["principalId"],
              "--query", "[].roleDefinitionName") == ["Reader"]
    missing = fails(acrlocal, "role", "assignment", "list", "--scope", f"{scope}-gone")
    assert "ResourceGroupNotFound" in missing, missing
    assert "InvalidRequestUri" in fails(acrlocal, "role", "assignment", "list", "--scope", "%%%")
    az(acrlocal, "group", "delete", "-n", group, "--yes")
