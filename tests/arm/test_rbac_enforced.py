"""RBAC on every call: Reader reads, Contributor writes but cannot grant, Owner and User Access Administrator
grant, a principal without a role sees nothing. Every refusal is ARM's 403 and changes nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.arm.conftest import Arm, Principal, new_principal, subscription_of
from tests.harness import AcrLocal

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
USER_ACCESS_ADMIN = "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9"
ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"


def assign(admin: Arm, scope: str, role: str, principal: Principal) -> dict[str, object]:
    sub = scope.split("/")[2]
    r = admin.call("PUT", f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}", {
        "properties": {"roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/roleDefinitions/"
                       f"{role}", "principalId": principal.object_id, "principalType": "ServicePrincipal"}},
        api_version="2022-04-01")
    assert r.status_code == 201, r.text
    return dict(r.json())


@pytest.fixture(scope="module")
def world(arm_server: AcrLocal, admin: Arm) -> dict[str, str]:
    sub = subscription_of(arm_server)
    group = f"/subscriptions/{sub}/resourceGroups/rbac-world"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    r = admin.call("PUT", f"{group}/providers/Microsoft.ContainerRegistry/registries/rbacworldreg",
                   {"location": "westus", "sku": {"name": "Standard"}})
    assert r.status_code == 201, r.text
    return {"sub": sub, "group": group, "registry": r.json()["id"]}


def as_(arm_server: AcrLocal, principal: Principal) -> Arm:
    return Arm(arm_server, principal.token(arm_server))


def test_principal_without_role_sees_nothing_and_is_refused(arm_server: AcrLocal, admin: Arm,
                                                             world: dict[str, str]) -> None:
    nobody = as_(arm_server, new_principal(arm_server, "nobody"))
    assert nobody.call("GET", "/subscriptions").json()["value"] == []
    r = nobody.call("GET", world["registry"])
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "AuthorizationFailed"
    assert "Microsoft.ContainerRegistry/registries/read" in error["message"]
    assert world["registry"].lower() in error["message"].lower()
    r = nobody.call("GET", f"/subscriptions/{world['sub']}/resources")
    assert r.status_code == 403
    r = nobody.call("GET", f"/subscriptions/{world['sub']}")
    assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound"


def test_reader_reads_but_cannot_write(arm_server: AcrLocal, admin: Arm, world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "reader")
    assign(admin, world["group"], READER, principal)
    reader = as_(arm_server, principal)
    subs = reader.call("GET", "/subscriptions").json()["value"]
    assert [s["subscriptionId"] for s in subs] == [world["sub"]]
    assert reader.call("GET", world["registry"]).status_code == 200
    listed = reader.call("GET", f"/subscriptions/{world['sub']}/resources").json()["value"]
    assert [r["id"] for r in listed] == [world["registry"]]  # not the default registry in another group
    r = reader.call("PUT", f"{world['group']}/providers/Microsoft.ContainerRegistry/registries/readerwrites",
                    {"location": "westus", "sku": {"name": "Basic"}})
    assert r.status_code == 403
    error = r.json()["error"]
    assert error["code"] == "AuthorizationFailed"
    assert principal.client_id in error["message"] and principal.object_id in error["message"]
    assert "Microsoft.ContainerRegistry/registries/write" in error["message"]
    assert admin.call("GET", f"{world['group']}/providers/Microsoft.ContainerRegistry/registries/readerwrites"
                      ).status_code == 404
    r = reader.call("DELETE", world["registry"])
    assert r.status_code == 403 and admin.call("GET", world["registry"]).status_code == 200
    r = reader.call("DELETE", world["group"])
    assert r.status_code == 403 and admin.call("GET", world["group"]).status_code == 200


def test_contributor_writes_but_cannot_grant(arm_server: AcrLocal, admin: Arm, world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "contributor")
    assign(admin, world["group"], CONTRIBUTOR, principal)
    contributor = as_(arm_server, principal)
    r = contributor.call("PATCH", world["registry"], {"tags": {"by": "contributor"}})
    assert r.status_code == 200 and r.json()["tags"] == {"by": "contributor"}
    other = new_principal(arm_server, "would-be-granted")
    r = contributor.call("PUT", f"{world['group']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                         {"properties": {"roleDefinitionId": f"/providers/Microsoft.Authorization/roleDefinitions/"
                                         f"{ACR_PULL}", "principalId": other.object_id}}, api_version="2022-04-01")
    assert r.status_code == 403
    assert "Microsoft.Authorization/roleAssignments/write" in r.json()["error"]["message"]
    mine = admin.call("GET", f"{world['group']}/providers/Microsoft.Authorization/roleAssignments",
                      api_version="2022-04-01").json()["value"]
    assert other.object_id not in {a["properties"]["principalId"] for a in mine}
    r = contributor.call("PUT", f"/subscriptions/{world['sub']}/resourceGroups/contrib-elsewhere",
                         {"location": "westus"})
    assert r.status_code == 403  # Contributor on one group is nothing at the subscription


def test_user_access_administrator_grants(arm_server: AcrLocal, admin: Arm, world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "uaa")
    assign(admin, world["registry"], USER_ACCESS_ADMIN, principal)
    uaa = as_(arm_server, principal)
    puller = new_principal(arm_server, "puller")
    granted = assign(uaa, world["registry"], ACR_PULL, puller)
    assert granted["properties"]["scope"] == world["registry"]  # type: ignore[index]
    r = uaa.call("PATCH", world["registry"], {"tags": {"by": "uaa"}})
    assert r.status_code == 403  # managing access is not managing the registry
    r = uaa.call("PUT", f"{world['group']}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}",
                 {"properties": {"roleDefinitionId": ACR_PULL, "principalId": puller.object_id}},
                 api_version="2022-04-01")
    assert r.status_code == 403  # only at the registry it was given


def test_acr_pull_alone_cannot_read_the_registry_resource(arm_server: AcrLocal, admin: Arm,
                                                          world: dict[str, str]) -> None:
    principal = new_principal(arm_server, "pull-only")
    assign(admin, world["registry"], ACR_PULL, principal)
    puller = as_(arm_server, principal)
    assert puller.call("GET", world["registry"]).status_code == 403
    listed = puller.call("GET", f"/subscriptions/{world['sub']}/resources",
                         ).json()
    assert listed["value"] == []  # as `az acr login` sees it: not found, use the login-server suffix
