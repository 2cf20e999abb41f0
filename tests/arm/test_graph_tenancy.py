"""Microsoft Graph answers everything in its own JSON error shape, and every read is scoped to the caller's
tenant: a token of another tenant finds nothing of this one, by object id, by app id, by list or by getByIds
(issue 8, item 4: a tenant-2 token used to read a tenant-1 application by object id)."""

from __future__ import annotations

import uuid

import pytest

from acrlocal.identity.directory import Directory
from tests.arm.conftest import Arm, Principal, admin_of
from tests.harness import AcrLocal

GRAPH = "https://graph.microsoft.com/.default"


def graph(server: AcrLocal, principal: Principal) -> Arm:
    return Arm(server, principal.token(server, GRAPH))


def other_tenant(server: AcrLocal) -> Principal:
    """A service principal of a second tenant, made in the server's database (no API creates tenants)."""
    engine = server.database()
    try:
        directory = Directory(engine)
        tenant = directory.create_tenant(f"other-{uuid.uuid4().hex[:6]}")
        sp = directory.create_service_principal(tenant.id, "intruder")
        _, secret = directory.add_secret(sp.object_id, "test")
    finally:
        engine.dispose()
    return Principal(tenant.id, sp.app_id, sp.object_id, secret)


def assert_graph_error(response: object, status: int, code: str) -> None:
    r = response
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    error = r.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == code and error["message"] and "request-id" in error["innerError"]


def test_every_graph_error_is_graphs_json(arm_server: AcrLocal) -> None:
    g = graph(arm_server, admin_of(arm_server))
    assert_graph_error(g.call("GET", "/v1.0/noSuchCollection", api_version=None), 400, "BadRequest")
    assert "noSuchCollection" in g.call("GET", "/v1.0/noSuchCollection", api_version=None).json()["error"]["message"]
    assert_graph_error(g.call("GET", "/beta/applications/x/noSuchThing", api_version=None), 400, "BadRequest")
    assert_graph_error(g.call("PUT", "/v1.0/applications", {}, api_version=None), 405, "Request_BadRequest")
    assert_graph_error(g.call("GET", f"/v1.0/applications/{uuid.uuid4()}", api_version=None), 404,
                       "Request_ResourceNotFound")
    assert_graph_error(g.call("POST", "/v1.0/applications", api_version=None, data=b"{not json",
                              headers={"Content-Type": "application/json"}), 400, "BadRequest")
    nested = b"[" * 100_000 + b"]" * 100_000
    assert_graph_error(g.call("POST", "/v1.0/applications", api_version=None, data=nested,
                              headers={"Content-Type": "application/json"}), 400, "BadRequest")
    assert_graph_error(g.call("GET", "/v1.0/applications?$filter=displayName%20ne%20'x'", api_version=None), 400,
                       "Request_UnsupportedQuery")
    anonymous = Arm(arm_server, None)
    assert_graph_error(anonymous.call("GET", "/v1.0/noSuchCollection", api_version=None), 401,
                       "InvalidAuthenticationToken")
    assert_graph_error(Arm(arm_server, "not-a-token").call("GET", "/v1.0/me", api_version=None), 401,
                       "InvalidAuthenticationToken")
    # A service principal has no /me.
    assert_graph_error(g.call("GET", "/v1.0/me", api_version=None), 400, "BadRequest")


@pytest.fixture(scope="module")
def tenant_one_objects(arm_server: AcrLocal) -> dict[str, str]:
    g = graph(arm_server, admin_of(arm_server))
    app = g.call("POST", "/v1.0/applications", {"displayName": "tenant-one-app",
                                                 "identifierUris": [f"api://tenant-one-{uuid.uuid4().hex[:6]}"]},
                 api_version=None).json()
    sp = g.call("POST", "/v1.0/servicePrincipals", {"appId": app["appId"]}, api_version=None).json()
    password = g.call("POST", f"/v1.0/applications/{app['id']}/addPassword", {"passwordCredential": {}},
                      api_version=None).json()
    group = g.call("POST", "/v1.0/groups", {"displayName": "tenant-one-group", "mailNickname": "t1g",
                                            "mailEnabled": False, "securityEnabled": True}, api_version=None).json()
    users = g.call("GET", "/v1.0/users", api_version=None).json()["value"]
    return {"app": app["id"], "appId": app["appId"], "sp": sp["id"], "keyId": password["keyId"],
            "group": group["id"], "user": users[0]["id"], "upn": users[0]["userPrincipalName"],
            "uri": app["identifierUris"][0]}


def test_another_tenant_reads_nothing_of_this_one(arm_server: AcrLocal, tenant_one_objects: dict[str, str]) -> None:
    o = tenant_one_objects
    theirs = graph(arm_server, other_tenant(arm_server))
    # The reported case: an application by its object id (display name, app id, key ids, secret hints).
    r = theirs.call("GET", f"/v1.0/applications/{o['app']}", api_version=None)
    assert_graph_error(r, 404, "Request_ResourceNotFound")
    assert o["appId"] not in r.text and o["keyId"] not in r.text
    for path in (f"/v1.0/applications(appId='{o['appId']}')", f"/v1.0/servicePrincipals/{o['sp']}",
                 f"/v1.0/servicePrincipals(appId='{o['appId']}')", f"/v1.0/groups/{o['group']}",
                 f"/v1.0/users/{o['user']}", f"/v1.0/users/{o['upn']}", f"/v1.0/applications/{o['app']}/owners",
                 f"/v1.0/applications/{o['app']}/federatedIdentityCredentials", f"/v1.0/groups/{o['group']}/members",
                 f"/v1.0/directoryObjects/{o['user']}"):
        assert_graph_error(theirs.call("GET", path, api_version=None), 404, "Request_ResourceNotFound")
    for collection in ("applications", "servicePrincipals", "users", "groups"):
        listed = theirs.call("GET", f"/v1.0/{collection}", api_version=None).json()["value"]
        assert not {o["app"], o["sp"], o["group"], o["user"]} & {x["id"] for x in listed}, collection
    by_uri = theirs.call("GET", f"/v1.0/applications?$filter=identifierUris/any(x:x%20eq%20'{o['uri']}')",
                         api_version=None).json()["value"]
    assert by_uri == []
    by_ids = theirs.call("POST", "/v1.0/directoryObjects/getByIds",
                         {"ids": [o["app"], o["sp"], o["group"], o["user"]]}, api_version=None)
    assert by_ids.status_code == 200 and by_ids.json()["value"] == []
    check = theirs.call("POST", f"/v1.0/directoryObjects/{o['user']}/checkMemberGroups", {"groupIds": [o["group"]]},
                        api_version=None)
    assert_graph_error(check, 404, "Request_ResourceNotFound")
    # Nor can it write them.
    for method, path, body in (("PATCH", f"/v1.0/applications/{o['app']}", {"displayName": "x"}),
                               ("POST", f"/v1.0/applications/{o['app']}/removePassword", {"keyId": o["keyId"]}),
                               ("DELETE", f"/v1.0/groups/{o['group']}", None),
                               ("DELETE", f"/v1.0/users/{o['user']}", None)):
        r = theirs.call(method, path, body, api_version=None)
        assert r.status_code in (403, 404) and "error" in r.json(), (path, r.text)
    mine = graph(arm_server, admin_of(arm_server))
    app = mine.call("GET", f"/v1.0/applications/{o['app']}", api_version=None).json()
    assert app["displayName"] == "tenant-one-app" and [c["keyId"] for c in app["passwordCredentials"]] == [o["keyId"]]


def test_graph_lists_page_with_next_links(arm_server: AcrLocal) -> None:
    g = graph(arm_server, admin_of(arm_server))
    prefix = f"paged-{uuid.uuid4().hex[:6]}"
    made = [g.call("POST", "/v1.0/groups", {"displayName": f"{prefix}-{i}", "mailNickname": f"{prefix}{i}"},
                   api_version=None).json()["id"] for i in range(5)]
    seen: list[str] = []
    url = f"{arm_server.shared}/v1.0/groups?$filter=startswith(displayName,'{prefix}')&$top=2"
    pages = 0
    while url:
        body = g.session.get(url, headers={"Authorization": f"Bearer {g.token}"}).json()
        seen += [x["id"] for x in body["value"]]
        assert len(body["value"]) <= 2
        url = body.get("@odata.nextLink", "")
        pages += 1
    assert seen == made and pages == 3
    assert_graph_error(g.call("GET", "/v1.0/groups?$top=1000", api_version=None), 400, "Request_UnsupportedQuery")
    assert_graph_error(g.call("GET", "/v1.0/groups?$skiptoken=%%%", api_version=None), 400,
                       "Request_UnsupportedQuery")
