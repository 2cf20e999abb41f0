"""Microsoft's az as a person: ``az login -u -p`` as the user ``acrlocal up`` creates, then the directory (users,
groups, signed-in user), role assignments to a group applying to its members in ARM and at the registry's token
service, and ``az acr login`` as a person; as Microsoft's own scenario tests do it: one resource group per test,
create / show / update / list / delete with JMESPath checks on az's output."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.az.conftest import Az, Contained, unique
from tests.harness import AcrLocal, running

PASSWORD = "Str0ng-Passw0rd!"
#: The server runs in a network namespace of its own (only ``lo``) on the default port 8443, where it also answers
#: on 443 as ``acrlocal up`` does when it may: msal asks user realm discovery of
#: ``https://<authority host>/common/userrealm/<user>`` without the authority's port (see docs/decisions.md).
NETNS = ["unshare", "--net", "sh", "-c", 'ip link set lo up && [ "$(ip -o link show | wc -l)" -eq 1 ] && exec "$@"',
         "netns"]


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


@pytest.fixture(scope="module")
def az_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    if os.geteuid() != 0:
        pytest.fail("these tests run the server in a private network namespace, which needs root", pytrace=False)
    with running(tmp_path_factory.mktemp("person") / "data", "--port", "8443", wrapper=NETNS) as server:
        yield server


@pytest.fixture(scope="module")
def contained(az_server: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Contained:
    assert az_server.proc is not None
    return Contained(tmp_path_factory.mktemp("contained"), netns_pid=az_server.proc.pid)


@pytest.fixture(scope="module")
def person(az_exe: Path, az_server: AcrLocal, contained: Contained, tmp_path_factory: pytest.TempPathFactory) -> Az:
    """az on the host signed in as the user ``up`` created (Owner of the default subscription, Global
    Administrator of the directory) with ``az login -u -p``."""
    az = Az(az_exe, az_server, tmp_path_factory.mktemp("person-home"), contained,
            {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    az.setup()
    admin = az_server.admin_credential()
    accounts = az("login", "-u", admin["userPrincipalName"], "-p", admin["userPassword"])
    assert [(a["id"], a["user"]["name"], a["user"]["type"]) for a in accounts] == \
        [(admin["subscriptionId"], admin["userPrincipalName"], "user")]
    return az


def test_login_as_a_person_and_the_user_token(person: Az, az_server: AcrLocal) -> None:
    admin = az_server.admin_credential()
    account = person("account", "show")
    assert account["user"] == {"name": admin["userPrincipalName"], "type": "user"}
    assert account["tenantId"] == admin["tenantId"]
    token = person("account", "get-access-token")
    c = claims(token["accessToken"])
    assert (c["idtyp"], c["upn"], c["oid"], c["tid"]) == ("user", admin["userPrincipalName"], admin["userObjectId"],
                                                           admin["tenantId"])
    assert c["scp"] == "user_impersonation" and c["name"] and c["appid"] == "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
    me = person("ad", "signed-in-user", "show")
    assert (me["id"], me["userPrincipalName"]) == (admin["userObjectId"], admin["userPrincipalName"])
    graph = person("account", "get-access-token", "--resource-type", "ms-graph")
    assert "Directory.AccessAsUser.All" in claims(graph["accessToken"])["scp"]


def test_a_wrong_password_is_refused(person: Az, az_exe: Path, az_server: AcrLocal, contained: Contained,
                                     tmp_path: Path) -> None:
    az = Az(az_exe, az_server, tmp_path / "wrong", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    az.setup()
    proc = az.fail("login", "-u", az_server.admin_credential()["userPrincipalName"], "-p", "not-the-password")
    assert "AADSTS50126" in proc.stderr


def test_users_created_updated_listed_deleted(person: Az, az_exe: Path, az_server: AcrLocal, contained: Contained,
                                              tmp_path: Path) -> None:
    domain = az_server.admin_credential()["userPrincipalName"].split("@")[1]
    upn = f"{unique('alice')}@{domain}"
    user = person("ad", "user", "create", "--display-name", "Alice", "--user-principal-name", upn, "--password",
                  PASSWORD)
    assert user["userPrincipalName"] == upn and user["displayName"] == "Alice"
    assert person("ad", "user", "show", "--id", upn)["id"] == user["id"]
    assert person("ad", "user", "show", "--id", user["id"])["userPrincipalName"] == upn
    person("ad", "user", "update", "--id", upn, "--display-name", "Alice Liddell")
    assert person("ad", "user", "show", "--id", upn)["displayName"] == "Alice Liddell"
    listed = person("ad", "user", "list", "--upn", upn, "--query", "[].displayName")
    assert listed == ["Alice Liddell"]
    assert upn in [u["userPrincipalName"] for u in person("ad", "user", "list")]
    weak = person.fail("ad", "user", "create", "--display-name", "Weak", "--user-principal-name",
                       f"{unique('weak')}@{domain}", "--password", "password")
    assert "complexity" in weak.stderr

    # Alice signs in with her password, has no subscription yet, and is not an administrator of the directory.
    alice = Az(az_exe, az_server, tmp_path / "alice", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    alice.setup()
    assert alice("login", "-u", upn, "-p", PASSWORD, "--allow-no-subscriptions")[0]["user"]["name"] == upn
    assert alice("ad", "signed-in-user", "show")["userPrincipalName"] == upn
    denied = alice.fail("ad", "user", "create", "--display-name", "Mallory", "--user-principal-name",
                        f"{unique('mallory')}@{domain}", "--password", PASSWORD)
    assert "Insufficient privileges" in denied.stderr

    # A new password revokes her refresh tokens; deleting her ends everything.
    person("ad", "user", "update", "--id", upn, "--password", PASSWORD + "2")
    person("ad", "user", "delete", "--id", upn)
    assert person.run("ad", "user", "show", "--id", upn).returncode != 0
    assert upn not in [u["userPrincipalName"] for u in person("ad", "user", "list")]


def test_a_groups_role_applies_to_its_members(person: Az, az_exe: Path, az_server: AcrLocal, contained: Contained,
                                               tmp_path: Path) -> None:
    domain = az_server.admin_credential()["userPrincipalName"].split("@")[1]
    group_name, rg, registry = unique("pullers-"), unique("rg-"), unique("reg")
    upn = f"{unique('bob')}@{domain}"
    bob = person("ad", "user", "create", "--display-name", "Bob", "--user-principal-name", upn, "--password",
                 PASSWORD)
    group = person("ad", "group", "create", "--display-name", group_name, "--mail-nickname", group_name)
    assert group["displayName"] == group_name and group["securityEnabled"] is True
    assert person("ad", "group", "show", "--group", group_name)["id"] == group["id"]
    person("ad", "group", "member", "add", "--group", group["id"], "--member-id", bob["id"])
    assert person("ad", "group", "member", "check", "--group", group["id"], "--member-id", bob["id"]) == \
        {"value": True}
    assert [m["id"] for m in person("ad", "group", "member", "list", "--group", group["id"])] == [bob["id"]]
    assert group_name in person("ad", "group", "list", "--query", "[].displayName")

    person("group", "create", "-n", rg, "-l", "westus")
    reg = person("acr", "create", "-g", rg, "-n", registry, "--sku", "Basic")
    bob_az = Az(az_exe, az_server, tmp_path / "bob", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    bob_az.setup()
    bob_az("login", "-u", upn, "-p", PASSWORD, "--allow-no-subscriptions")
    # Before the group holds a role, Bob sees no subscription and may not read the registry.
    assignment = person("role", "assignment", "create", "--assignee-object-id", group["id"],
                        "--assignee-principal-type", "Group", "--role", "Reader", "--scope", f"/subscriptions/"
                        f"{az_server.admin_credential()['subscriptionId']}/resourceGroups/{rg}")
    assert assignment["principalType"] == "Group"
    person("role", "assignment", "create", "--assignee-object-id", group["id"], "--assignee-principal-type",
           "Group", "--role", "AcrPush", "--scope", reg["id"])
    listed = person("role", "assignment", "list", "--scope", reg["id"], "--query", "[].principalName")
    assert listed == [group_name]
    bob_az("login", "-u", upn, "-p", PASSWORD)
    assert bob_az("acr", "show", "-n", registry, "-g", rg)["id"] == reg["id"]
    # ... and the registry's token service honours the group's AcrPush for Bob's token.
    login = bob_az("acr", "login", "-n", registry, "--expose-token")
    assert login["accessToken"] and login["loginServer"] == reg["loginServer"]

    person("ad", "group", "member", "remove", "--group", group["id"], "--member-id", bob["id"])
    assert person("ad", "group", "member", "check", "--group", group["id"], "--member-id", bob["id"]) == \
        {"value": False}
    assert bob_az.run("acr", "show", "-n", registry, "-g", rg).returncode != 0
    person("ad", "group", "delete", "--group", group["id"])
    person("ad", "user", "delete", "--id", upn)
    person("group", "delete", "-n", rg, "--yes")


def test_a_person_of_a_new_tenant_signs_in_there(person: Az, az_exe: Path, az_server: AcrLocal, contained: Contained,
                                                   tmp_path: Path) -> None:
    """A tenant made through ``createTenant`` starts with only its administrator service principal. That principal
    makes a user of the tenant (``az ad user create`` in the tenant's domain) and gives her Reader on a group; she
    signs in there with her password (``az login -u -p --tenant``), sees that tenant's subscription and group and
    nothing of the default tenant, and the default tenant does not know her."""
    name = unique("t")
    made = person("rest", "--method", "post", "--url",
                  "/providers/Microsoft.AcrLocal/createTenant?api-version=2025-01-01",
                  "--body", json.dumps({"displayName": name}))
    admin = Az(az_exe, az_server, tmp_path / "admin", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    admin.setup()
    admin("login", "--service-principal", "-u", made["clientId"], "-p", made["clientSecret"], "--tenant",
          made["tenantId"])
    group = admin("group", "create", "-n", "rg-people", "-l", "westeurope")
    upn = f"carol@{made['domain']}"
    carol_user = admin("ad", "user", "create", "--display-name", "Carol", "--user-principal-name", upn, "--password",
                       PASSWORD)
    assert carol_user["userPrincipalName"] == upn
    admin("role", "assignment", "create", "--assignee", carol_user["id"], "--role", "Reader", "--scope", group["id"])

    carol = Az(az_exe, az_server, tmp_path / "carol", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    carol.setup()
    accounts = carol("login", "-u", upn, "-p", PASSWORD, "--tenant", made["tenantId"])
    assert [(a["id"], a["tenantId"], a["user"]["name"]) for a in accounts] == [
        (made["subscriptionId"], made["tenantId"], upn)]
    assert carol("group", "show", "-n", "rg-people")["id"] == group["id"]
    assert carol("ad", "signed-in-user", "show")["id"] == carol_user["id"]
    assert carol.fail("group", "create", "-n", "rg-not-hers", "-l", "westeurope").returncode != 0  # Reader only

    stranger = Az(az_exe, az_server, tmp_path / "stranger", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    stranger.setup()
    refused = stranger.fail("login", "-u", upn, "-p", PASSWORD, "--tenant", az_server.admin_credential()["tenantId"])
    assert "AADSTS" in refused.stderr

