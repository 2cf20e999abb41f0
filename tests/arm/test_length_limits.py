"""Values longer than acrlocal keeps are refused with the protocol's 400 before the database sees them, on SQLite
(which would keep them whole) as on PostgreSQL (which would refuse the statement: a 500 before), and nothing is
made. Values at the limit are kept."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.arm.test_graph import graph
from tests.harness import AcrLocal

IDENTITIES = "providers/Microsoft.ManagedIdentity/userAssignedIdentities"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def names(admin: Arm, path: str) -> list[str]:
    r = admin.call("GET", path)
    assert r.status_code == 200, r.text
    return sorted(v["name"] for v in r.json()["value"])


def assert_arm_400(r: Any) -> None:
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] and error["message"], error


@pytest.mark.parametrize(("body", "field"), [
    ({"location": "l" * 100}, "location"),
    ({"location": "westus", "managedBy": "/subscriptions/x/" + "m" * 1100}, "managed_by"),
])
def test_an_over_long_group_field_is_400(arm_server: AcrLocal, admin: Arm, body: dict[str, Any], field: str) -> None:
    sub = subscription_of(arm_server)
    before = names(admin, f"/subscriptions/{sub}/resourcegroups")
    r = admin.call("PUT", f"/subscriptions/{sub}/resourcegroups/toolong-{uuid.uuid4().hex[:6]}", body)
    assert_arm_400(r)
    assert field in r.json()["error"]["message"]
    assert names(admin, f"/subscriptions/{sub}/resourcegroups") == before


def test_an_over_long_resource_field_is_400(arm_server: AcrLocal, admin: Arm) -> None:
    sub = subscription_of(arm_server)
    group = f"/subscriptions/{sub}/resourceGroups/limits-{uuid.uuid4().hex[:6]}"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    r = admin.call("PUT", f"{group}/{IDENTITIES}/far", {"location": "l" * 65}, api_version="2023-01-31")
    assert_arm_400(r)
    assert names(admin, f"{group}/{IDENTITIES}") == []
    at_limit = admin.call("PUT", f"{group}/{IDENTITIES}/near", {"location": "l" * 64}, api_version="2023-01-31")
    assert at_limit.status_code == 201, at_limit.text


@pytest.mark.parametrize("properties", [{"conditionVersion": "2.0" + "0" * 20,
                                         "condition": "@Resource[x] StringEquals 'y'"},
                                        {"principalType": "P" * 40}])
def test_an_over_long_role_assignment_field_is_400(arm_server: AcrLocal, admin: Arm,
                                                   properties: dict[str, str]) -> None:
    sub = subscription_of(arm_server)
    principal = admin_of(arm_server).object_id
    path = f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments"
    before = admin.call("GET", path, api_version="2022-04-01").json()["value"]
    r = admin.call("PUT", f"{path}/{uuid.uuid4()}", {"properties": {
        "roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{ACR_PULL}",
        "principalId": principal, **properties}}, api_version="2022-04-01")
    assert_arm_400(r)
    assert admin.call("GET", path, api_version="2022-04-01").json()["value"] == before


def test_an_over_long_graph_display_name_is_400_request_bad_request(arm_server: AcrLocal) -> None:
    g = graph(arm_server, admin_of(arm_server))
    marker = uuid.uuid4().hex[:8]
    r = g.call("POST", "/v1.0/applications", {"displayName": marker + "d" * 300}, api_version=None)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "Request_BadRequest"
    apps = g.call("GET", "/v1.0/applications", api_version=None).json()["value"]
    assert not [a for a in apps if a["displayName"].startswith(marker)]
    kept = g.call("POST", "/v1.0/applications", {"displayName": marker + "d" * 248}, api_version=None)
    assert kept.status_code == 201, kept.text
    fic = g.call("POST", f"/v1.0/applications/{kept.json()['id']}/federatedIdentityCredentials", {
        "name": "n" * 200, "issuer": "https://issuer.example", "subject": "s", "audiences": ["api://AzureADTokenExchange"]},
        api_version=None)
    assert fic.status_code == 400, fic.text
    assert fic.json()["error"]["code"] in ("Request_BadRequest", "BadRequest")
