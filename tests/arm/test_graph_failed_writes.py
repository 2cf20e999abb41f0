"""Graph writes are whole or not at all: when the database refuses one of a write's rows (a trigger,
``tests/db_faults.py``), the object is not left half-made (a group without its owner, a service principal object
that a retry finds taken) or half-deleted (an application gone with its principal left behind)."""

from __future__ import annotations

import pytest

from tests.arm.conftest import Arm, admin_of
from tests.db_faults import failed, refused
from tests.harness import AcrLocal


@pytest.fixture(scope="module")
def g(arm_server: AcrLocal) -> Arm:
    return Arm(arm_server, admin_of(arm_server).token(arm_server, "https://graph.microsoft.com/.default"))



def _listed(g: Arm, collection: str, condition: str) -> list[dict[str, object]]:
    r = g.call("GET", f"/v1.0/{collection}?$filter={condition}", api_version=None)
    assert r.status_code == 200, r.text
    return list(r.json()["value"])


def test_a_group_whose_owner_cannot_be_stored_is_not_made(arm_server: AcrLocal, g: Arm) -> None:
    with refused(arm_server, "directory_owners", "INSERT", "1 = 1"):
        failed(g.call("POST", "/v1.0/groups", {"displayName": "half-made-group", "mailEnabled": False,
                                                "mailNickname": "half", "securityEnabled": True}, api_version=None))
    assert _listed(g, "groups", "displayName eq 'half-made-group'") == []
    made = g.call("POST", "/v1.0/groups", {"displayName": "half-made-group", "mailEnabled": False,
                                           "mailNickname": "half", "securityEnabled": True}, api_version=None)
    assert made.status_code == 201, made.text
    owners = g.call("GET", f"/v1.0/groups/{made.json()['id']}/owners", api_version=None).json()["value"]
    assert [o["id"] for o in owners] == [admin_of(arm_server).object_id]


def test_a_service_principal_whose_owner_cannot_be_stored_is_not_made(arm_server: AcrLocal, g: Arm) -> None:
    app = g.call("POST", "/v1.0/applications", {"displayName": "half-made-sp"}, api_version=None)
    assert app.status_code == 201, app.text
    app_id = app.json()["appId"]
    with refused(arm_server, "directory_owners", "INSERT", "1 = 1"):
        failed(g.call("POST", "/v1.0/servicePrincipals", {"appId": app_id}, api_version=None))
    assert _listed(g, "servicePrincipals", f"appId eq '{app_id}'") == []
    retried = g.call("POST", "/v1.0/servicePrincipals", {"appId": app_id}, api_version=None)
    assert retried.status_code == 201, retried.text  # not 409: nothing of the failed one is left
    owners = g.call("GET", f"/v1.0/servicePrincipals/{retried.json()['id']}/owners", api_version=None).json()
    assert [o["id"] for o in owners["value"]] == [admin_of(arm_server).object_id]
    again = g.call("POST", "/v1.0/servicePrincipals", {"appId": app_id}, api_version=None)
    assert again.status_code == 409 and again.json()["error"]["code"] == "Request_MultipleObjectsWithSameKeyValue"


def test_an_application_whose_principal_cannot_be_deleted_stays_whole(arm_server: AcrLocal, g: Arm) -> None:
    app = g.call("POST", "/v1.0/applications", {"displayName": "half-deleted"}, api_version=None).json()
    sp = g.call("POST", "/v1.0/servicePrincipals", {"appId": app["appId"]}, api_version=None)
    assert sp.status_code == 201, sp.text
    with refused(arm_server, "principals", "DELETE", f"OLD.app_id = '{app['appId']}'"):
        failed(g.call("DELETE", f"/v1.0/applications/{app['id']}", api_version=None))
    assert g.call("GET", f"/v1.0/applications/{app['id']}", api_version=None).status_code == 200
    assert g.call("GET", f"/v1.0/servicePrincipals/{sp.json()['id']}", api_version=None).status_code == 200
    assert g.call("DELETE", f"/v1.0/applications/{app['id']}", api_version=None).status_code == 204
    assert g.call("GET", f"/v1.0/servicePrincipals/{sp.json()['id']}", api_version=None).status_code == 404
