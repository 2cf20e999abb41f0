"""``Microsoft.ContainerRegistry/registries`` through ARM: the registry really starts and stops serving."""

from __future__ import annotations

import pytest
import requests

from tests.arm.conftest import Arm, new_group, subscription_of
from tests.harness import AcrLocal

ACR = "Microsoft.ContainerRegistry/registries"


@pytest.fixture(scope="module")
def group(arm_server: AcrLocal, admin: Arm) -> str:
    return new_group(arm_server, admin, "registries")


def v2(arm_server: AcrLocal, login_server: str) -> requests.Response:
    return arm_server.session().get(f"https://{login_server}/v2/", timeout=10)


def test_default_registry_is_an_arm_resource(arm_server: AcrLocal, admin: Arm) -> None:
    sub = subscription_of(arm_server)
    r = admin.call("GET", f"/subscriptions/{sub}/resources?$filter=resourceType%20eq%20%27{ACR}%27",
                   api_version="2024-11-01")
    ids = [x["id"] for x in r.json()["value"]]
    default = f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/{ACR}/acrlocal"
    assert default in ids
    body = admin.call("GET", default).json()
    assert body["properties"]["loginServer"] == arm_server.login_server("acrlocal")
    assert body["sku"]["name"] in ("Basic", "Standard", "Premium")
    assert body["properties"]["adminUserEnabled"] is False


def test_create_serves_and_delete_stops(arm_server: AcrLocal, admin: Arm, group: str) -> None:
    url = f"{group}/providers/{ACR}/Lifecycle01"
    r = admin.call("PUT", url, {"location": "westus", "sku": {"name": "premium"}, "tags": {"t": "1"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == url and body["name"] == "Lifecycle01" and body["type"] == ACR
    assert body["sku"] == {"name": "Premium", "tier": "Premium"}
    props = body["properties"]
    assert props["provisioningState"] == "Succeeded" and props["adminUserEnabled"] is False
    login_server = props["loginServer"]
    assert login_server.startswith("localhost:")
    assert v2(arm_server, login_server).status_code in (200, 401)
    state = arm_server.cli("status", "--output", "json").stdout
    assert "lifecycle01" in state
    update = admin.call("PUT", url, {"location": "westus", "sku": {"name": "Standard"}})
    assert update.status_code == 200 and update.json()["properties"]["loginServer"] == login_server
    listed = admin.call("GET", f"{group}/providers/{ACR}").json()["value"]
    assert [x["name"] for x in listed] == ["Lifecycle01"]
    sub_list = admin.call("GET", f"/subscriptions/{subscription_of(arm_server)}/providers/{ACR}").json()["value"]
    assert "Lifecycle01" in [x["name"] for x in sub_list]
    assert admin.call("DELETE", url).status_code == 200
    assert admin.call("GET", url).status_code == 404
    with pytest.raises(requests.ConnectionError):
        v2(arm_server, login_server)


@pytest.mark.parametrize("name", ["abcd", "a" * 51, "has-dash", "under_score"])
def test_bad_registry_names(arm_server: AcrLocal, admin: Arm, group: str, name: str) -> None:
    r = admin.call("PUT", f"{group}/providers/{ACR}/{name}", {"location": "westus", "sku": {"name": "Basic"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResourceName"
    assert admin.call("GET", f"{group}/providers/{ACR}").json()["value"] == []


@pytest.mark.parametrize(("body", "code"), [
    ({"location": "westus"}, "InvalidRequestContent"),
    ({"location": "westus", "sku": {"name": "Classic"}}, "InvalidSku"),
    ({"sku": {"name": "Basic"}}, "LocationRequired"),
    ({"location": "westus", "sku": {"name": "Basic"}, "properties": {"adminUserEnabled": "yes"}},
     "InvalidRequestContent"),
    ({"location": "westus", "sku": {"name": "Basic"}, "properties": {"anonymousPullEnabled": True}},
     "AnonymousPullNotSupported"),
])
def test_bad_registry_bodies_create_nothing(arm_server: AcrLocal, admin: Arm, group: str, body: dict[str, object],
                                            code: str) -> None:
    r = admin.call("PUT", f"{group}/providers/{ACR}/badbody01", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert admin.call("GET", f"{group}/providers/{ACR}/badbody01").status_code == 404
    assert "badbody01" not in arm_server.cli("status", "--output", "json").stdout


def test_names_are_unique_across_the_server(arm_server: AcrLocal, admin: Arm, group: str) -> None:
    sub = subscription_of(arm_server)
    check = f"/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/checkNameAvailability"
    r = admin.call("POST", check, {"name": "ACRLOCAL", "type": ACR})
    assert r.json()["nameAvailable"] is False and r.json()["reason"] == "AlreadyExists"
    assert admin.call("POST", check, {"name": "ab", "type": ACR}).json()["reason"] == "Invalid"
    assert admin.call("POST", check, {"name": "freename01", "type": ACR}).json() == {"nameAvailable": True}
    clash = admin.call("PUT", f"{group}/providers/{ACR}/AcrLocal", {"location": "westus", "sku": {"name": "Basic"}})
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "AlreadyInUse"


def test_admin_user_credentials(arm_server: AcrLocal, admin: Arm, group: str) -> None:
    url = f"{group}/providers/{ACR}/adminuser01"
    assert admin.call("PUT", url, {"location": "westus", "sku": {"name": "Basic"}}).status_code == 201
    r = admin.call("POST", f"{url}/listCredentials")
    assert r.status_code == 400 and r.json()["error"]["code"] == "AdminUserDisabled"
    r = admin.call("PATCH", url, {"properties": {"adminUserEnabled": True}})
    assert r.status_code == 200 and r.json()["properties"]["adminUserEnabled"] is True
    creds = admin.call("POST", f"{url}/listCredentials").json()
    assert creds["username"] == "adminuser01"
    first = {p["name"]: p["value"] for p in creds["passwords"]}
    assert set(first) == {"password", "password2"} and all(len(v) >= 32 for v in first.values())
    regen = admin.call("POST", f"{url}/regenerateCredential", {"name": "password2"}).json()
    second = {p["name"]: p["value"] for p in regen["passwords"]}
    assert second["password"] == first["password"] and second["password2"] != first["password2"]
    bad = admin.call("POST", f"{url}/regenerateCredential", {"name": "password3"})
    assert bad.status_code == 400
    shown = admin.call("GET", url).text
    assert first["password"] not in shown and second["password2"] not in shown
    assert admin.call("DELETE", url).status_code == 200


def test_deleting_the_group_stops_its_registries(arm_server: AcrLocal, admin: Arm) -> None:
    scope = f"/subscriptions/{subscription_of(arm_server)}/resourceGroups/shortlived"
    assert admin.call("PUT", scope, {"location": "westus"}).status_code == 201
    r = admin.call("PUT", f"{scope}/providers/{ACR}/shortlived01", {"location": "westus", "sku": {"name": "Basic"}})
    login_server = r.json()["properties"]["loginServer"]
    assert v2(arm_server, login_server).status_code in (200, 401)
    assert admin.call("DELETE", scope).status_code == 200
    with pytest.raises(requests.ConnectionError):
        v2(arm_server, login_server)
    assert "shortlived01" not in arm_server.cli("status", "--output", "json").stdout


def test_registries_survive_a_restart(fresh_acrlocal: AcrLocal) -> None:
    from tests.arm.conftest import admin_of

    fresh_acrlocal.start()
    admin = Arm(fresh_acrlocal, admin_of(fresh_acrlocal).token(fresh_acrlocal))
    sub = subscription_of(fresh_acrlocal)
    assert admin.call("PUT", f"/subscriptions/{sub}/resourceGroups/keep", {"location": "westus"}).status_code == 201
    url = f"/subscriptions/{sub}/resourceGroups/keep/providers/{ACR}/keepme01"
    created = admin.call("PUT", url, {"location": "westus", "sku": {"name": "Basic"}}).json()
    fresh_acrlocal.restart()
    admin = Arm(fresh_acrlocal, admin_of(fresh_acrlocal).token(fresh_acrlocal))
    again = admin.call("GET", url).json()
    assert again["properties"]["loginServer"] == created["properties"]["loginServer"]
    assert v2(fresh_acrlocal, again["properties"]["loginServer"]).status_code in (200, 401)
    ids = [x["id"] for x in admin.call("GET", f"/subscriptions/{sub}/resources").json()["value"]]
    assert ids.count(url) == 1 and len(ids) == 2  # the default registry was not duplicated


def test_concurrent_creates_of_one_name_start_one_registry(arm_server: AcrLocal, admin: Arm, group: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    url = f"{group}/providers/{ACR}/racer01"
    body = {"location": "westus", "sku": {"name": "Basic"}}
    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = sorted(pool.map(lambda _: Arm(arm_server, admin.token).call("PUT", url, body).status_code,
                                   range(6)))
    assert statuses == [200] * 5 + [201]
    status = arm_server.cli("status", "--output", "json").stdout
    assert status.count('"name": "racer01"') == 1
    assert admin.call("DELETE", url).status_code == 200
