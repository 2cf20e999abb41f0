"""Resource groups and ARM's errors for bad input: each refused request leaves nothing changed."""

from __future__ import annotations

import pytest

from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.harness import AcrLocal


def groups(admin: Arm, sub: str) -> list[str]:
    r = admin.call("GET", f"/subscriptions/{sub}/resourcegroups")
    assert r.status_code == 200, r.text
    return sorted(g["name"] for g in r.json()["value"])


def test_group_lifecycle_with_any_keyword_case(arm_server: AcrLocal, admin: Arm) -> None:
    sub = subscription_of(arm_server)
    r = admin.call("PUT", f"/subscriptions/{sub}/resourcegroups/Life-Cycle_1", {"location": "West US 2",
                                                                                 "tags": {"a": "b"}})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["id"] == f"/subscriptions/{sub}/resourceGroups/Life-Cycle_1"
    assert body["type"] == "Microsoft.Resources/resourceGroups" and body["location"] == "westus2"
    assert body["properties"]["provisioningState"] == "Succeeded" and body["tags"] == {"a": "b"}
    again = admin.call("PUT", f"/SUBSCRIPTIONS/{sub.upper()}/resourceGroups/life-cycle_1", {"location": "westus2"})
    assert again.status_code == 200 and again.json()["name"] == "Life-Cycle_1"
    assert admin.call("HEAD", f"/subscriptions/{sub}/resourceGroups/LIFE-CYCLE_1").status_code == 204
    patched = admin.call("PATCH", f"/subscriptions/{sub}/resourceGroups/life-cycle_1", {"tags": {"x": "y"}})
    assert patched.status_code == 200 and patched.json()["tags"] == {"x": "y"}
    moved = admin.call("PUT", f"/subscriptions/{sub}/resourceGroups/life-cycle_1", {"location": "eastus"})
    assert moved.status_code == 409 and moved.json()["error"]["code"] == "InvalidResourceGroupLocation"
    assert admin.call("DELETE", f"/subscriptions/{sub}/resourceGroups/life-cycle_1").status_code == 200
    assert admin.call("HEAD", f"/subscriptions/{sub}/resourceGroups/life-cycle_1").status_code == 404
    gone = admin.call("GET", f"/subscriptions/{sub}/resourceGroups/life-cycle_1")
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "ResourceGroupNotFound"


@pytest.mark.parametrize("name", ["bad name", "ends-with-dot.", "a" * 91, "semi;colon", "star*"])
def test_bad_group_names_are_400_and_create_nothing(arm_server: AcrLocal, admin: Arm, name: str) -> None:
    sub = subscription_of(arm_server)
    before = groups(admin, sub)
    r = admin.call("PUT", f"/subscriptions/{sub}/resourcegroups/{name}", {"location": "westus"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] in ("InvalidResourceGroup", "InvalidRequestUri")
    assert groups(admin, sub) == before


@pytest.mark.parametrize(("data", "code"), [
    (b"{not json", "InvalidRequestContent"),
    (b"[1, 2]", "InvalidRequestContent"),
    (b'{"location": "westus", "tags": ["x"]}', "InvalidRequestContent"),
    (b'{"location": "westus", "tags": {"k": 5}}', "InvalidTag"),
    (b'{"tags": {}}', "LocationRequired"),
])
def test_bad_bodies_are_400_and_create_nothing(arm_server: AcrLocal, admin: Arm, data: bytes, code: str) -> None:
    sub = subscription_of(arm_server)
    before = groups(admin, sub)
    r = admin.call("PUT", f"/subscriptions/{sub}/resourcegroups/badbody", data=data,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert groups(admin, sub) == before


def test_unknown_things_are_404_in_arm_shape(arm_server: AcrLocal, admin: Arm) -> None:
    sub = subscription_of(arm_server)
    r = admin.call("GET", "/subscriptions/00000000-0000-0000-0000-000000000000/resourcegroups")
    assert r.status_code == 404 and r.json()["error"]["code"] == "SubscriptionNotFound"
    r = admin.call("GET", "/subscriptions/not-a-guid/resourcegroups")
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidSubscriptionId"
    r = admin.call("GET", f"/subscriptions/{sub}/resourceGroups/nosuchgroup/providers/"
                   "Microsoft.ContainerRegistry/registries/nosuchreg")
    assert r.status_code == 404 and r.json()["error"]["code"] == "ResourceGroupNotFound"
    r = admin.call("GET", f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/"
                   "Microsoft.ContainerRegistry/registries/nosuchreg")
    assert r.status_code == 404
    error = r.json()["error"]
    assert error["code"] == "ResourceNotFound"
    assert "Microsoft.ContainerRegistry/registries/nosuchreg" in error["message"]
    r = admin.call("GET", f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/Microsoft.Nope/things/x")
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResourceNamespace"
    r = admin.call("GET", f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/"
                   "Microsoft.ContainerRegistry/nope/x")
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResourceType"
    r = admin.call("DELETE", f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/"
                   "Microsoft.ContainerRegistry/registries/nosuchreg")
    assert r.status_code == 204


def test_providers_list_registered_namespaces(arm_server: AcrLocal, admin: Arm) -> None:
    sub = subscription_of(arm_server)
    r = admin.call("GET", f"/subscriptions/{sub}/providers")
    assert r.status_code == 200
    namespaces = {p["namespace"]: p for p in r.json()["value"]}
    acr = namespaces["Microsoft.ContainerRegistry"]
    assert acr["registrationState"] == "Registered"
    registries = next(t for t in acr["resourceTypes"] if t["resourceType"] == "registries")
    assert "2023-07-01" in registries["apiVersions"] and registries["locations"]
    one = admin.call("GET", f"/subscriptions/{sub}/providers/microsoft.authorization")
    assert one.status_code == 200 and one.json()["namespace"] == "Microsoft.Authorization"
    reg = admin.call("POST", f"/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/register")
    assert reg.status_code == 200 and reg.json()["registrationState"] == "Registered"


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "POST"])
def test_a_provider_is_only_read(arm_server: AcrLocal, admin: Arm, method: str) -> None:
    """A write to ``/subscriptions/{sub}/providers/{namespace}`` is 405, not the provider's GET answer as though
    it had been written or deleted."""
    sub = subscription_of(arm_server)
    for namespace in ("Microsoft.Resources", "Microsoft.ContainerRegistry"):
        r = admin.call(method, f"/subscriptions/{sub}/providers/{namespace}", {"properties": {}})
        assert r.status_code == 405 and r.json()["error"]["code"] == "MethodNotAllowed", (namespace, r.text)


@pytest.mark.parametrize("managed_by", [5, ["/subscriptions/x"], {"id": "/subscriptions/x"}, True])
def test_patch_refuses_a_managed_by_that_is_not_a_string(arm_server: AcrLocal, admin: Arm, managed_by: object) -> None:
    """A PATCH whose managedBy is not a string is refused as a PUT's is (400 InvalidRequestContent), and the group
    keeps its tags and managedBy."""
    sub = subscription_of(arm_server)
    url = f"/subscriptions/{sub}/resourcegroups/patch-managed-by"
    made = admin.call("PUT", url, {"location": "westus", "tags": {"a": "b"}, "managedBy": "/subscriptions/owner"})
    assert made.status_code in (200, 201), made.text
    r = admin.call("PATCH", url, {"tags": {"x": "y"}, "managedBy": managed_by})
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent", r.text
    assert "'managedBy' must be a string" in r.json()["error"]["message"]
    kept = admin.call("GET", url).json()
    assert (kept["tags"], kept["managedBy"]) == ({"a": "b"}, "/subscriptions/owner")


@pytest.mark.parametrize("tail", ["resourceGroups/a%0Ab", "resourceGroups/%0A",
                                  "resourceGroups/g/providers/Microsoft.Resources/deployments/%0A/validate"])
def test_a_line_feed_in_the_path_is_answered_in_arm_shape(arm_server: AcrLocal, admin: Arm, tail: str) -> None:
    """A path holding an encoded line feed is ARM's (a 400 in ARM's error shape), not the web framework's plain-text
    404: the route's pattern matches line feeds too."""
    sub = subscription_of(arm_server)
    before = groups(admin, sub)
    r = admin.call("PUT" if tail.count("/") == 1 else "POST", f"/subscriptions/{sub}/{tail}", {"location": "westus"})
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json"), r.text
    assert r.json()["error"]["code"] in ("InvalidResourceGroup", "InvalidRequestUri"), r.text
    assert groups(admin, sub) == before


def test_a_line_feed_in_a_graph_path_names_no_collection(arm_server: AcrLocal) -> None:
    """``/v1.0/groups/%0A`` names a group whose id is a line feed (none), not the list of groups."""
    token = admin_of(arm_server).token(arm_server, "https://graph.microsoft.com/.default")
    for path in ("/v1.0/groups/%0A", "/v1.0/users%0A", "/v1.0/%0A"):
        r = arm_server.session().get(arm_server.shared + path, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code in (400, 404) and "value" not in r.json(), (path, r.text)
        assert r.json()["error"]["code"] in ("Request_ResourceNotFound", "BadRequest"), (path, r.text)


@pytest.mark.parametrize("name", ["..", ".", "..%2F", "...."])
def test_a_deployment_named_only_dots_is_refused(arm_server: AcrLocal, admin: Arm, name: str) -> None:
    """``.`` and ``..`` are URL dot-segments that clients resolve away: a deployment so named could not be reached
    at any of its URLs (its Azure-AsyncOperation neither), so the name is InvalidDeploymentName, and nothing is
    deployed."""
    sub = subscription_of(arm_server)
    before = groups(admin, sub)
    template = {"$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
                "contentVersion": "1.0.0.0", "resources": []}
    path = f"/subscriptions/{sub}/resourcegroups/acrlocal/providers/Microsoft.Resources/deployments/{name}"
    for tail in ("", "/validate"):
        r = admin.session.request("PUT" if not tail else "POST", f"{arm_server.shared}{path}{tail}",
                                  params={"api-version": "2022-09-01"}, json={"properties": {
                                      "mode": "Incremental", "template": template}},
                                  headers={"Authorization": f"Bearer {admin.token}"})
        if name in (".", ".."):
            continue  # (requests resolves them itself: the request is for another path)
        assert r.status_code == 400 and r.json()["error"]["code"] in ("InvalidDeploymentName", "InvalidRequestUri"), \
            r.text
    assert groups(admin, sub) == before


RULE = {"priority": 200, "direction": "Outbound", "access": "Deny", "protocol": "Udp", "sourcePortRange": "*",
        "destinationPortRange": "53", "sourceAddressPrefix": "*", "destinationAddressPrefix": "Internet"}


@pytest.mark.parametrize(("change", "code"), [
    ({"destinationPortRanges": 1}, "InvalidRequestContent"),
    ({"sourceAddressPrefixes": "10.0.0.0/8"}, "InvalidRequestContent"),
    ({"destinationAddressPrefixes": {"a": 1}}, "InvalidRequestContent"),
    ({"destinationAddressPrefix": 5}, "SecurityRuleInvalidAddressPrefix"),
    ({"sourceAddressPrefixes": ["10.0.0.0/8", ["x"]]}, "SecurityRuleInvalidAddressPrefix"),
    ({"destinationPortRange": True}, "SecurityRuleInvalidPortRange"),
    ({"destinationPortRange": "22\n"}, "SecurityRuleInvalidPortRange"),
])
def test_security_rule_fields_of_the_wrong_json_type_are_400(arm_server: AcrLocal, admin: Arm,
                                                             change: dict[str, object], code: str) -> None:
    """A security rule whose port or address ranges are not arrays, or whose prefixes are not text: ARM's 400,
    and no rule (before: a 500 for an array that was a number)."""
    sub = subscription_of(arm_server)
    nsg = f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/Microsoft.Network/networkSecurityGroups/rules-nsg"
    assert admin.call("PUT", nsg, {"location": "westus"}, api_version="2023-09-01").status_code in (200, 201)
    r = admin.call("PUT", f"{nsg}/securityRules/odd", {"properties": {**RULE, **change}}, api_version="2023-09-01")
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    assert admin.call("GET", f"{nsg}/securityRules/odd", api_version="2023-09-01").status_code == 404
    within = admin.call("PUT", nsg, {"location": "westus", "properties": {"securityRules": [
        {"name": "odd", "properties": {**RULE, **change}}]}}, api_version="2023-09-01")
    assert within.status_code == 400 and within.json()["error"]["code"] == code, within.text


@pytest.mark.parametrize(("properties", "code"), [
    ({"addressPrefixes": {"a": 1}}, "InvalidRequestContent"),
    ({"addressPrefixes": 5}, "InvalidRequestContent"),
    ({"addressPrefixes": True}, "InvalidRequestContent"),
    ({"addressPrefixes": [5]}, "InvalidAddressPrefixFormat"),
    ({"addressPrefixes": []}, "NetcfgInvalidSubnet"),
])
def test_a_subnets_address_prefixes_of_the_wrong_json_type_are_400(arm_server: AcrLocal, admin: Arm,
                                                                    properties: dict[str, object], code: str) -> None:
    """A subnet whose ``addressPrefixes`` is not an array of prefixes: ARM's 400, and no subnet (before: a 500 for an
    object, a number or ``true``)."""
    sub = subscription_of(arm_server)
    vnet = f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/Microsoft.Network/virtualNetworks/prefixes-vnet"
    assert admin.call("PUT", vnet, {"location": "westus", "properties": {"addressSpace": {"addressPrefixes": [
        "10.7.0.0/16"]}}}, api_version="2023-09-01").status_code in (200, 201)
    r = admin.call("PUT", f"{vnet}/subnets/odd", {"properties": properties}, api_version="2023-09-01")
    assert r.status_code == 400 and r.json()["error"]["code"] == code, r.text
    assert admin.call("GET", f"{vnet}/subnets/odd", api_version="2023-09-01").status_code == 404
    kept = admin.call("PUT", f"{vnet}/subnets/odd", {"properties": {"addressPrefixes": ["10.7.1.0/24"]}},
                      api_version="2023-09-01")
    assert kept.status_code in (200, 201) and kept.json()["properties"]["addressPrefix"] == "10.7.1.0/24", kept.text
    assert admin.call("DELETE", f"{vnet}/subnets/odd", api_version="2023-09-01").status_code in (200, 202, 204)


@pytest.mark.parametrize("path", ["/nothing/here", "/x/providers/Microsoft.Authorization/roleDefinitions",
                                  "/subscription", "/v2.0/me"])
def test_a_path_no_endpoint_has_is_a_400_in_the_services_json(arm_server: AcrLocal, path: str) -> None:
    """A path no route takes: ARM's gateway answers 400 ``InvalidRequestUri`` in ARM's JSON (before: the framework's
    plain-text 404, which az printed as "404: Not Found"), and Graph on its own host name its ``BadRequest``."""
    http = arm_server.session()
    r = http.get(f"{arm_server.shared}{path}", params={"api-version": "2022-04-01"})
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/json"), r.text
    assert r.json()["error"]["code"] == "InvalidRequestUri" and path in r.json()["error"]["message"]
    assert r.headers["x-ms-request-id"]
    graph = http.get(f"{arm_server.shared}{path}", headers={"Host": "graph.microsoft.com"})
    assert graph.status_code == 400 and graph.json()["error"]["code"] == "BadRequest", graph.text
    assert graph.json()["error"]["innerError"]["request-id"]
    # What routes take keeps its answers: the health check, and a method a route does not take.
    assert http.get(f"{arm_server.shared}/healthz").status_code == 200
    assert http.delete(f"{arm_server.shared}/healthz").status_code == 405
