"""The real az CLI on the host, set up by ``acrlocal az-setup --apply``: the local administrator's service-principal
sign-in, groups, registries, identities, role assignments, ``ad sp create-for-rbac`` (our Microsoft Graph), a
created service principal's own sign-in, and az's messages for names that do not exist and denied calls."""

from __future__ import annotations

from pathlib import Path

from tests.az.conftest import Az, Contained, unique
from tests.harness import AcrLocal


def test_admin_account(host_az: Az, az_server: AcrLocal) -> None:
    admin = az_server.admin_credential()
    account = host_az("account", "show")
    assert account["environmentName"] == "AcrLocal" and account["isDefault"] is True
    assert (account["id"], account["tenantId"]) == (admin["subscriptionId"], admin["tenantId"])
    assert account["user"] == {"name": admin["clientId"], "type": "servicePrincipal"}
    assert [a["id"] for a in host_az("account", "list")] == [admin["subscriptionId"]]
    token = host_az("account", "get-access-token")
    assert token["subscription"] == admin["subscriptionId"] and token["tokenType"] == "Bearer"


def test_groups_registries_identities_and_role_assignments(host_az: Az) -> None:
    az = host_az
    group, name, ident = unique("rg-"), unique("reg"), unique("id-")
    assert az("group", "create", "-n", group, "-l", "westus")["properties"]["provisioningState"] == "Succeeded"
    registry = az("acr", "create", "-g", group, "-n", name, "--sku", "Basic")
    assert registry["loginServer"].startswith("localhost:") and registry["sku"]["name"] == "Basic"
    assert name in [r["name"] for r in az("acr", "list", "-g", group)]
    assert az("acr", "update", "-n", name, "--admin-enabled", "true")["adminUserEnabled"] is True
    assert az("acr", "credential", "show", "-n", name)["username"] == name

    identity = az("identity", "create", "-g", group, "-n", ident)
    assert identity["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"
    assert identity["principalId"] and identity["clientId"] and identity["tenantId"]
    assert az("identity", "show", "-g", group, "-n", ident)["clientId"] == identity["clientId"]

    assignment = az("role", "assignment", "create", "--assignee-object-id", identity["principalId"],
                    "--assignee-principal-type", "ServicePrincipal", "--role", "AcrPull", "--scope", registry["id"])
    assert assignment["principalId"] == identity["principalId"] and assignment["scope"] == registry["id"]
    assert assignment["roleDefinitionId"].endswith("/7f951dda-4ed3-4680-a7ca-43fe172d538d")
    # --assignee resolves the identity through Graph (by its client id).
    az("role", "assignment", "create", "--assignee", identity["clientId"], "--role", "Reader", "--scope",
       registry["id"])
    listed = az("role", "assignment", "list", "--scope", registry["id"])
    assert sorted(a["roleDefinitionName"] for a in listed) == ["AcrPull", "Reader"]
    assert {a["principalName"] for a in listed} == {identity["clientId"]}
    az("role", "assignment", "delete", "--assignee", identity["clientId"], "--role", "Reader", "--scope",
       registry["id"])
    assert [a["roleDefinitionName"] for a in az("role", "assignment", "list", "--scope", registry["id"])] == ["AcrPull"]

    # The registry's content goes with it; the identity's role assignments go with the identity.
    az("identity", "delete", "-g", group, "-n", ident)
    assert az("role", "assignment", "list", "--scope", registry["id"]) == []
    az("acr", "delete", "-n", name, "--yes")
    az("group", "delete", "-n", group, "--yes")
    assert group not in [g["name"] for g in az("group", "list")]


def test_service_principal_signs_in_and_is_denied_what_it_may_not_do(host_az: Az, az_exe: Path,
                                                                      az_server: AcrLocal, contained: Contained,
                                                                      tmp_path: Path) -> None:
    group, name = unique("rg-"), unique("reg")
    host_az("group", "create", "-n", group, "-l", "westus")
    registry = host_az("acr", "create", "-g", group, "-n", name, "--sku", "Standard")
    robot = host_az("ad", "sp", "create-for-rbac", "-n", unique("robot-"), "--role", "acrpull", "--scopes",
                    registry["id"])
    assert robot["password"] and robot["tenant"] == az_server.admin_credential()["tenantId"]

    az = Az(az_exe, az_server, tmp_path / "robot", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    az.setup()
    accounts = az("login", "--service-principal", "-u", robot["appId"], "-p", robot["password"], "--tenant",
                  robot["tenant"])
    assert [a["user"] for a in accounts] == [{"name": robot["appId"], "type": "servicePrincipal"}]
    # AcrPull carries no Microsoft.ContainerRegistry/registries/read: az cannot find the registry through ARM and,
    # as in Azure, builds the login server from the cloud's suffix (<name>.localhost:<shared port>).
    contained.names.add(f"{name}.localhost")
    token = az("acr", "login", "-n", name, "--expose-token")
    assert token["loginServer"] == f"{name}.localhost:{az_server.shared.rsplit(':', 1)[1]}" and token["accessToken"]

    denied = az.fail("group", "create", "-n", unique("rg-"), "-l", "westus")
    assert "ERROR: (AuthorizationFailed) The client '" + robot["appId"] + "' with object id '" in denied.stderr
    assert "does not have authorization to perform action 'Microsoft.Resources/subscriptions/resourceGroups/write'" \
        in denied.stderr
    denied = az.fail("acr", "update", "-n", name, "-g", group, "--admin-enabled", "true")
    assert "(AuthorizationFailed)" in denied.stderr and "Microsoft.ContainerRegistry/registries/read" in denied.stderr

    wrong = Az(az_exe, az_server, tmp_path / "wrong", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    wrong.setup()
    refused = wrong.fail("login", "--service-principal", "-u", robot["appId"], "-p", "not-the-secret", "--tenant",
                         robot["tenant"])
    assert "AADSTS7000215" in refused.stderr and "Invalid client secret" in refused.stderr
    assert "not-the-secret" not in refused.stderr


def test_names_that_do_not_exist(host_az: Az) -> None:
    missing = host_az.fail("group", "show", "-n", "no-such-group")
    assert missing.returncode == 3
    assert "ERROR: (ResourceGroupNotFound) Resource group 'no-such-group' could not be found." in missing.stderr
    missing = host_az.fail("acr", "show", "-n", "nosuchregistry")
    assert "The resource with name 'nosuchregistry' and type 'Microsoft.ContainerRegistry/registries' could not be " \
           "found" in missing.stderr
    missing = host_az.fail("identity", "show", "-g", "no-such-group", "-n", "nope")
    assert missing.returncode == 3 and "(ResourceGroupNotFound)" in missing.stderr
    missing = host_az.fail("acr", "create", "-g", "no-such-group", "-n", unique("reg"), "--sku", "Basic")
    assert "ResourceGroupNotFound" in missing.stderr
    bad = host_az.fail("role", "assignment", "create", "--assignee", "00000000-0000-0000-0000-00000000beef",
                       "--role", "AcrPull", "--scope", f"/subscriptions/{host_az('account', 'show')['id']}")
    assert "Cannot find user or service principal in graph database for '00000000-0000-0000-0000-00000000beef'" \
        in bad.stderr
    bad = host_az.fail("role", "assignment", "create", "--assignee-object-id", "00000000-0000-0000-0000-00000000beef",
                       "--assignee-principal-type", "ServicePrincipal", "--role", "NoSuchRole", "--scope",
                       f"/subscriptions/{host_az('account', 'show')['id']}")
    assert "Role 'NoSuchRole' doesn't exist." in bad.stderr
    bad = host_az.fail("acr", "create", "-g", "acrlocal", "-n", "no", "--sku", "Basic")
    assert "(InvalidResourceName) Resource name 'no' is invalid." in bad.stderr
