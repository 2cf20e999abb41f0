"""Role definitions and role assignments at every scope, with ARM's validation errors."""

from __future__ import annotations

import uuid

import pytest

from tests.arm.conftest import Arm, new_group, new_principal, subscription_of
from tests.harness import AcrLocal

ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
API = "2022-04-01"
CONDITION = "((!(ActionMatches{'Microsoft.Storage/storageAccounts/blobServices/containers/blobs/read'})))"


@pytest.fixture(scope="module")
def group(arm_server: AcrLocal, admin: Arm) -> str:
    return new_group(arm_server, admin, "assignments")


def role_id(sub: str, guid: str) -> str:
    return f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/{guid}"


def test_role_definitions_by_name_and_id(arm_server: AcrLocal, admin: Arm, group: str) -> None:
    sub = subscription_of(arm_server)
    r = admin.call("GET", f"{group}/providers/Microsoft.Authorization/roleDefinitions", api_version=API,
                   headers={}, )
    names = {d["properties"]["roleName"] for d in r.json()["value"]}
    assert {"Owner", "Contributor", "Reader", "AcrPull", "AcrPush", "User Access Administrator"} <= names
    r = admin.call("GET", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions"
                   "?$filter=roleName%20eq%20%27acrpull%27", api_version=API)
    (pull,) = r.json()["value"]
    assert pull["name"] == ACR_PULL and pull["id"] == role_id(sub, ACR_PULL)
    assert pull["properties"]["permissions"][0]["actions"] == ["Microsoft.ContainerRegistry/registries/pull/read"]
    one = admin.call("GET", f"/providers/Microsoft.Authorization/roleDefinitions/{OWNER}", api_version=API)
    assert one.status_code == 200 and one.json()["properties"]["roleName"] == "Owner"
    none = admin.call("GET", f"/providers/Microsoft.Authorization/roleDefinitions/{uuid.uuid4()}", api_version=API)
    assert none.status_code == 404 and none.json()["error"]["code"] == "RoleDefinitionDoesNotExist"


def test_assignment_lifecycle_and_filters(arm_server: AcrLocal, admin: Arm, group: str) -> None:
    sub = subscription_of(arm_server)
    principal = new_principal(arm_server, "assignee")
    name = str(uuid.uuid4())
    url = f"{group}/providers/Microsoft.Authorization/roleAssignments/{name}"
    body = {"properties": {"roleDefinitionId": role_id(sub, ACR_PULL), "principalId": principal.object_id}}
    r = admin.call("PUT", url, body, api_version=API)
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["id"] == url and created["name"] == name
    assert created["type"] == "Microsoft.Authorization/roleAssignments"
    assert created["properties"]["principalType"] == "ServicePrincipal"
    assert created["properties"]["scope"] == group
    assert admin.call("GET", url, api_version=API).json() == created
    again = admin.call("PUT", f"{group}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", body,
                       api_version=API)
    assert again.status_code == 409 and again.json()["error"]["code"] == "RoleAssignmentExists"
    flt = f"$filter=principalId%20eq%20%27{principal.object_id}%27"
    at_sub = admin.call("GET", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments?{flt}",
                        api_version=API).json()["value"]
    assert [a["name"] for a in at_sub] == [name]  # below the subscription, so listed there
    at_scope = admin.call("GET", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments"
                          "?$filter=atScope()", api_version=API).json()["value"]
    assert name not in [a["name"] for a in at_scope]
    assigned = admin.call("GET", f"{group}/providers/Microsoft.Authorization/roleAssignments"
                          f"?$filter=atScope()%20and%20assignedTo(%27{principal.object_id}%27)",
                          api_version=API).json()["value"]
    assert [a["name"] for a in assigned] == [name]
    deleted = admin.call("DELETE", url, api_version=API)
    assert deleted.status_code == 200 and deleted.json()["name"] == name
    assert admin.call("GET", url, api_version=API).status_code == 404
    assert admin.call("DELETE", url, api_version=API).status_code == 204


@pytest.mark.parametrize(("props", "status", "code"), [
    ({"roleDefinitionId": ACR_PULL, "principalId": "11111111-2222-3333-4444-555555555555"}, 400, "PrincipalNotFound"),
    ({"roleDefinitionId": str(uuid.uuid4()), "principalId": None}, 400, "RoleDefinitionDoesNotExist"),
    ({"roleDefinitionId": "AcrPull!", "principalId": None}, 400, "InvalidRoleDefinitionId"),
    ({"roleDefinitionId": ACR_PULL, "principalId": "not-a-guid"}, 400, "InvalidPrincipalId"),
    ({"roleDefinitionId": ACR_PULL, "principalId": None, "principalType": "User"}, 400, "UnmatchedPrincipalType"),
    # A condition's version of another JSON type than a string (found by the fuzz suite: a list was a 500).
    ({"roleDefinitionId": ACR_PULL, "principalId": None, "condition": CONDITION, "conditionVersion": ["", ""]}, 400,
     "InvalidRoleAssignmentCondition"),
    ({"roleDefinitionId": ACR_PULL, "principalId": None, "condition": CONDITION, "conditionVersion": 2.0}, 400,
     "InvalidRoleAssignmentCondition"),
    ({"roleDefinitionId": ACR_PULL, "principalId": None, "condition": CONDITION, "conditionVersion": "1.0"}, 400,
     "InvalidRoleAssignmentCondition"),
])
def test_invalid_assignments_are_refused_and_nothing_is_written(arm_server: AcrLocal, admin: Arm, group: str,
                                                                props: dict[str, object], status: int,
                                                                code: str) -> None:
    principal = new_principal(arm_server, "invalid-target")
    body = {k: (principal.object_id if k == "principalId" and v is None else v) for k, v in props.items()}
    before = admin.call("GET", f"{group}/providers/Microsoft.Authorization/roleAssignments", api_version=API).json()
    r = admin.call("PUT", f"{group}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                   {"properties": body}, api_version=API)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    after = admin.call("GET", f"{group}/providers/Microsoft.Authorization/roleAssignments", api_version=API).json()
    assert after == before


def test_assignment_id_must_be_a_guid_and_scope_must_exist(arm_server: AcrLocal, admin: Arm, group: str) -> None:
    principal = new_principal(arm_server, "guidless")
    body = {"properties": {"roleDefinitionId": ACR_PULL, "principalId": principal.object_id}}
    r = admin.call("PUT", f"{group}/providers/Microsoft.Authorization/roleAssignments/not-a-guid", body,
                   api_version=API)
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRoleAssignmentId"
    sub = subscription_of(arm_server)
    r = admin.call("PUT", f"/subscriptions/{sub}/resourceGroups/nosuchgroup/providers/Microsoft.Authorization/"
                   f"roleAssignments/{uuid.uuid4()}", body, api_version=API)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceGroupNotFound"
    r = admin.call("PUT", f"{group}/providers/Microsoft.ContainerRegistry/registries/nosuchregistry/providers/"
                   f"Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", body, api_version=API)
    assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceNotFound"


def test_deleting_a_group_removes_its_assignments(arm_server: AcrLocal, admin: Arm) -> None:
    sub = subscription_of(arm_server)
    scope = f"/subscriptions/{sub}/resourceGroups/doomed"
    assert admin.call("PUT", scope, {"location": "westus"}).status_code == 201
    principal = new_principal(arm_server, "doomed-assignee")
    url = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
    assert admin.call("PUT", url, {"properties": {"roleDefinitionId": ACR_PULL,
                                                  "principalId": principal.object_id}},
                      api_version=API).status_code == 201
    assert admin.call("DELETE", scope).status_code == 200
    flt = f"$filter=principalId%20eq%20%27{principal.object_id}%27"
    left = admin.call("GET", f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleAssignments?{flt}",
                      api_version=API).json()["value"]
    assert left == []
