"""The minimal Microsoft Graph: what ``az ad sp create-for-rbac`` does, then the new principal at work in ARM."""

from __future__ import annotations

import uuid

import pytest
from azure.core.exceptions import ClientAuthenticationError

from tests.arm.conftest import Arm, Principal, admin_of, subscription_of
from tests.harness import AcrLocal

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"


def graph(server: AcrLocal, principal: Principal, audience: str = "https://graph.microsoft.com") -> Arm:
    return Arm(server, principal.token(server, audience + "/.default"))


def create_for_rbac(server: AcrLocal, g: Arm, name: str) -> Principal:
    app = g.call("POST", "/v1.0/applications", {"displayName": name}, api_version=None)
    assert app.status_code == 201, app.text
    sp = g.call("POST", "/v1.0/servicePrincipals", {"appId": app.json()["appId"]}, api_version=None)
    assert sp.status_code == 201, sp.text
    password = g.call("POST", f"/v1.0/applications/{app.json()['id']}/addPassword",
                      {"passwordCredential": {"displayName": "rbac"}}, api_version=None)
    assert password.status_code == 200, password.text
    assert password.json()["keyId"] and password.json()["secretText"]
    return Principal(admin_of(server).tenant_id, app.json()["appId"], sp.json()["id"], password.json()["secretText"])


def test_create_for_rbac_then_use_the_principal(arm_server: AcrLocal, admin: Arm) -> None:
    g = graph(arm_server, admin_of(arm_server))
    principal = create_for_rbac(arm_server, g, "ci-robot")
    found = g.call("GET", "/v1.0/servicePrincipals", api_version=None,
                   headers={}).json()["value"]
    assert principal.object_id in [s["id"] for s in found]
    by_spn = g.call("GET", f"/v1.0/servicePrincipals?$filter=servicePrincipalNames/any(c:c%20eq%20'"
                    f"{principal.client_id}')", api_version=None).json()["value"]
    assert [s["id"] for s in by_spn] == [principal.object_id]
    starts = g.call("GET", "/v1.0/applications?$filter=startswith(displayName,'ci-rob')%20and%20"
                    f"appId%20eq%20'{principal.client_id}'", api_version=None).json()["value"]
    assert [a["appId"] for a in starts] == [principal.client_id]
    bad = g.call("GET", "/v1.0/servicePrincipals?$filter=displayName%20ne%20'x'", api_version=None)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "Request_UnsupportedQuery"
    by_ids = g.call("POST", "/v1.0/directoryObjects/getByIds", {"ids": [principal.object_id]}, api_version=None)
    assert by_ids.json()["value"][0]["appId"] == principal.client_id

    robot = Arm(arm_server, principal.token(arm_server))
    sub = subscription_of(arm_server)
    assert robot.call("GET", f"/subscriptions/{sub}/resourcegroups").status_code == 403
    r = admin.call("PUT", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                   {"properties": {"roleDefinitionId": READER, "principalId": principal.object_id}},
                   api_version="2022-04-01")
    assert r.status_code == 201, r.text
    assert Arm(arm_server, principal.token(arm_server)).call("GET", f"/subscriptions/{sub}/resourcegroups"
                                                             ).status_code == 200

    apps = g.call("GET", "/v1.0/applications?$filter=displayName%20eq%20'ci-robot'", api_version=None).json()
    (app,) = apps["value"]
    assert g.call("DELETE", f"/v1.0/applications/{app['id']}", api_version=None).status_code == 204
    with pytest.raises(ClientAuthenticationError):
        principal.token(arm_server)
    left = admin.call("GET", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments"
                      f"?$filter=principalId%20eq%20'{principal.object_id}'", api_version="2022-04-01")
    assert left.json()["value"] == []


def test_graph_accepts_the_advertised_resource_id(arm_server: AcrLocal) -> None:
    g = graph(arm_server, admin_of(arm_server), arm_server.shared + "/")
    assert g.call("GET", "/v1.0/applications", api_version=None).status_code == 200


def test_only_the_administrator_writes_the_directory(arm_server: AcrLocal) -> None:
    g = graph(arm_server, admin_of(arm_server))
    robot = create_for_rbac(arm_server, g, "not-an-admin")
    theirs = graph(arm_server, robot)
    before = g.call("GET", "/v1.0/applications", api_version=None).json()["value"]
    r = theirs.call("POST", "/v1.0/applications", {"displayName": "escalate"}, api_version=None)
    assert r.status_code == 403 and r.json()["error"]["code"] == "Authorization_RequestDenied"
    assert g.call("GET", "/v1.0/applications", api_version=None).json()["value"] == before


def test_graph_refuses_arm_tokens_and_bad_bodies(arm_server: AcrLocal, admin: Arm) -> None:
    r = admin.call("GET", "/v1.0/applications", api_version=None)  # an ARM token
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    g = graph(arm_server, admin_of(arm_server))
    r = g.call("POST", "/v1.0/applications", data=b"{nope", headers={"Content-Type": "application/json"},
               api_version=None)
    assert r.status_code == 400
    r = g.call("POST", "/v1.0/servicePrincipals", {"appId": str(uuid.uuid4())}, api_version=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"


def test_federated_credential_patch_keeps_its_id_and_refuses_a_taken_issuer_and_subject(arm_server: AcrLocal) -> None:
    """A PATCH of a federated identity credential keeps its id, and refuses (400, as a create does) the issuer and
    subject of another credential of the application, leaving both as they were."""
    g = graph(arm_server, admin_of(arm_server))
    app = g.call("POST", "/v1.0/applications", {"displayName": "fic-patch"}, api_version=None).json()
    fics = f"/v1.0/applications/{app['id']}/federatedIdentityCredentials"
    made = {}
    for name, subject in (("first", "repo:o/r:ref:refs/heads/main"), ("second", "repo:o/r:environment:prod")):
        r = g.call("POST", fics, {"name": name, "issuer": "https://token.actions.githubusercontent.com",
                                  "subject": subject, "audiences": ["api://AzureADTokenExchange"]}, api_version=None)
        assert r.status_code == 201, r.text
        made[name] = r.json()
    r = g.call("PATCH", f"{fics}/{made['second']['id']}", {"subject": "repo:o/r:environment:staging"},
               api_version=None)
    assert r.status_code == 204, r.text
    listed = g.call("GET", fics, api_version=None).json()["value"]
    assert [(fc["id"], fc["subject"]) for fc in listed] == \
        [(made["first"]["id"], made["first"]["subject"]), (made["second"]["id"], "repo:o/r:environment:staging")]
    r = g.call("PATCH", f"{fics}/second", {"subject": made["first"]["subject"]}, api_version=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidFederatedIdentityCredentialValue", r.text
    assert g.call("GET", fics, api_version=None).json()["value"] == listed


@pytest.mark.parametrize("change", [
    {"publicClient": {"redirectUris": 5}}, {"web": {"redirectUris": "https://localhost/cb"}},
    {"spa": {"redirectUris": [1]}}, {"web": {"implicitGrantSettings": 3}}, {"requiredResourceAccess": [5]},
    {"appRoles": ["reader"]}, {"tags": [1]},
])
def test_application_values_of_the_wrong_json_type_inside_are_400(arm_server: AcrLocal, change: dict[str, object]
                                                                   ) -> None:
    """Arrays and nested objects of an application are checked inside too: a redirectUris that is a number (which
    made the application a public client people could sign in to) or items that are not text or objects are
    Graph's 400, and the application is unchanged, on create and on update."""
    g = graph(arm_server, admin_of(arm_server))
    app = g.call("POST", "/v1.0/applications", {"displayName": "typed"}, api_version=None).json()
    before = g.call("GET", f"/v1.0/applications/{app['id']}", api_version=None).json()
    r = g.call("PATCH", f"/v1.0/applications/{app['id']}", change, api_version=None)
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest", r.text
    assert g.call("GET", f"/v1.0/applications/{app['id']}", api_version=None).json() == before
    created = g.call("POST", "/v1.0/applications", {"displayName": "typed-2", **change}, api_version=None)
    assert created.status_code == 400, created.text
    tenant = admin_of(arm_server).tenant_id
    device = arm_server.session().post(f"{arm_server.shared}/{tenant}/oauth2/v2.0/devicecode",
                                       data={"client_id": app["appId"], "scope": "openid"})
    assert device.json()["error_codes"] == [700016], device.text  # not a public client
