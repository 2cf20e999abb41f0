"""IMDS on the wire, at 169.254.169.254 inside each VM (requests made by ``requests`` in the VM, with no
environment variable pointing anywhere): exact error bodies, field types, selectors encoded or not, the token cache,
throttling, instance metadata, a VM that boots again after a restart, and nothing answering from the host."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import jwt
import pytest

from tests.compute.conftest import Mgmt, mgmt_for
from tests.harness import AcrLocal
from tests.vmexec import vm_requests

ARM = "https://management.azure.com"
TOKEN_PATH = "/metadata/identity/oauth2/token"
IMDS = "http://169.254.169.254"


@pytest.fixture(scope="module")
def world(mgmt: Mgmt) -> dict[str, Any]:
    group = mgmt.group("wire")
    u1, u2, stranger = mgmt.identity(group), mgmt.identity(group), mgmt.identity(group)
    vm = mgmt.vm(group, "wire-vm", {"type": "SystemAssigned, UserAssigned",
                                    "userAssignedIdentities": {u1.id: {}, u2.id: {}}}, tags={"env": "test", "a": "b"})
    lonely = mgmt.vm(group, "no-identity")
    one_user = mgmt.vm(group, "one-user", {"type": "UserAssigned", "userAssignedIdentities": {u1.id: {}}})
    return {"group": group, "u1": u1, "u2": u2, "stranger": stranger, "vm": vm, "lonely": lonely,
            "one_user": one_user}


def call(query: str = f"api-version=2018-02-01&resource={ARM}", headers: dict[str, str] | None = None,
         path: str = TOKEN_PATH) -> dict[str, Any]:
    return {"url": f"{IMDS}{path}?{query}", "headers": {"Metadata": "true"} if headers is None else headers}


class Answer:
    """One response as ``requests`` in the VM saw it."""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.status_code = raw["status"]
        self.headers = raw["headers"]
        self.text = raw["text"]
        self._json = raw["json"]

    def json(self) -> Any:
        return self._json


def imds_many(server: AcrLocal, vm: Any, calls: list[dict[str, Any]]) -> list[Answer]:
    return [Answer(a) for a in vm_requests(server, vm.id, calls)]


def imds(server: AcrLocal, vm: Any, query: str = f"api-version=2018-02-01&resource={ARM}",
         headers: dict[str, str] | None = None, path: str = TOKEN_PATH) -> Answer:
    return imds_many(server, vm, [call(query, headers, path)])[0]


def test_response_fields_are_strings_and_resource_is_echoed(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    resource = "https://management.core.windows.net/"
    r = imds(acrlocal, world["vm"], f"api-version=2018-02-01&resource={quote(resource, safe='')}")
    assert r.status_code == 200 and "Retry-After" not in r.headers
    body = r.json()
    assert set(body) == {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before",
                         "resource", "token_type"}
    assert all(isinstance(v, str) for v in body.values())
    assert body["resource"] == resource and body["token_type"] == "Bearer"
    assert 86000 < int(body["expires_in"]) <= 86400
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["aud"] == resource and str(claims["exp"]) == body["expires_on"]
    assert claims["appid"] == body["client_id"]


@pytest.mark.parametrize("encode", [True, False])
@pytest.mark.parametrize("selector", ["client_id", "object_id", "msi_res_id", "mi_res_id"])
def test_selectors_encoded_or_not(acrlocal: AcrLocal, world: dict[str, Any], selector: str, encode: bool) -> None:
    u2 = world["u2"]
    value = {"client_id": u2.client_id, "object_id": u2.principal_id}.get(selector, u2.id)
    q = quote if encode else (lambda s, safe="": s)
    r = imds(acrlocal, world["vm"], f"api-version=2019-08-01&resource={q(ARM, safe='')}&{selector}={q(value, safe='')}")
    assert r.status_code == 200, r.text
    assert jwt.decode(r.json()["access_token"], options={"verify_signature": False})["oid"] == u2.principal_id


def test_no_selector_picks_system_then_the_only_user_assigned(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    vm_claims = jwt.decode(imds(acrlocal, world["vm"]).json()["access_token"], options={"verify_signature": False})
    assert vm_claims["oid"] == world["vm"].identity.principal_id
    one = jwt.decode(imds(acrlocal, world["one_user"]).json()["access_token"], options={"verify_signature": False})
    assert one["oid"] == world["u1"].principal_id


REFUSALS = [
    ("no metadata header", {"headers": {}}, "Required metadata header not specified"),
    ("metadata false", {"headers": {"Metadata": "false"}}, "Required metadata header not specified"),
    ("forwarded", {"headers": {"Metadata": "true", "X-Forwarded-For": "10.0.0.1"}}, None),
    ("identity of another VM", {"query": "api-version=2018-02-01&resource=R&client_id=STRANGER"},
     "Identity not found"),
    ("no resource", {"query": "api-version=2018-02-01"}, "Required query variable 'resource' is missing"),
    ("no api-version", {"query": f"resource={ARM}"}, "Required query variable 'api-version' is missing"),
    ("old api-version", {"query": f"api-version=2017-09-01&resource={ARM}"}, None),
]


def test_refusals_are_400_with_the_imds_body(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    calls = []
    for _case, kwargs, _description in REFUSALS:
        if "query" in kwargs:
            kwargs = {**kwargs, "query": kwargs["query"].replace("STRANGER", world["stranger"].client_id)}
        calls.append(call(**kwargs))
    for (case, _kwargs, description), r in zip(REFUSALS, imds_many(acrlocal, world["vm"], calls), strict=True):
        assert r.status_code == 400, case
        body = r.json()
        assert body["error"] == "invalid_request" and set(body) == {"error", "error_description"}
        if description:
            assert body["error_description"] == description
        assert "Retry-After" not in r.headers


def test_vm_without_identity_and_ambiguous_user_identities(acrlocal: AcrLocal, world: dict[str, Any],
                                                           mgmt: Mgmt) -> None:
    assert imds(acrlocal, world["lonely"]).json() == {"error": "invalid_request",
                                                      "error_description": "Identity not found"}
    users = mgmt.vm(world["group"], "two-users", {"type": "UserAssigned", "userAssignedIdentities": {
        world["u1"].id: {}, world["u2"].id: {}}})
    r = imds(acrlocal, users)
    assert r.status_code == 400
    assert r.json()["error_description"] == ("Multiple user assigned identities exist, please specify the clientId / "
                                             "resourceId of the identity in the token request")


def test_tokens_are_cached_per_identity_and_resource(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    first, second, other = (a.json() for a in imds_many(acrlocal, world["vm"], [
        call(), call(), call("api-version=2018-02-01&resource=https://vault.azure.net")]))
    assert first["access_token"] == second["access_token"]
    assert int(second["expires_in"]) <= int(first["expires_in"])
    assert other["access_token"] != first["access_token"]


def test_no_app_service_endpoint_in_a_vm(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    """An Azure VM has IMDS, not App Service's endpoint: no IDENTITY_ENDPOINT, and IMDS does not serve it."""
    r = imds(acrlocal, world["vm"], f"api-version=2019-08-01&resource={ARM}", path="/msi/token",
             headers={"X-IDENTITY-HEADER": "x"})
    assert r.status_code == 404


def test_instance_metadata(acrlocal: AcrLocal, world: dict[str, Any], mgmt: Mgmt) -> None:
    vm = world["vm"]
    r = imds(acrlocal, vm, "api-version=2021-02-01", path="/metadata/instance")
    assert r.status_code == 200
    compute = r.json()["compute"]
    assert compute["name"] == "wire-vm" and compute["resourceGroupName"] == world["group"]
    assert compute["subscriptionId"] == mgmt.subscription and compute["vmId"] == vm.vm_id
    assert compute["location"] == "westeurope" and compute["resourceId"].lower() == vm.id.lower()
    assert compute["vmSize"] == "Standard_B1s" and compute["osType"] == "Linux"
    assert compute["osProfile"]["adminUsername"] == "azureuser" and compute["tags"] == "env:test;a:b"
    assert compute["tagsList"] == [{"name": "env", "value": "test"}, {"name": "a", "value": "b"}]
    text, missing, no_header = imds_many(acrlocal, vm, [
        call("api-version=2021-02-01&format=text", path="/metadata/instance/compute/vmId"),
        call("", path="/metadata/instance"),
        call("api-version=2021-02-01", path="/metadata/instance", headers={})])
    assert text.text == vm.vm_id
    assert missing.status_code == 400 and "api-version was not specified" in missing.json()["error"]
    assert no_header.status_code == 400


def test_throttling_answers_429_with_retry_after(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.extra_args = ("--imds-rate-limit", "0.01")
    fresh_acrlocal.start()
    m = mgmt_for(fresh_acrlocal)
    vm = m.vm(m.group(), "throttled", {"type": "SystemAssigned"})
    first, second = imds_many(fresh_acrlocal, vm, [call(), call()])
    assert first.status_code == 200 and "Retry-After" not in first.headers
    assert second.status_code == 429 and int(second.headers["Retry-After"]) >= 1
    assert second.json()["error"] == "too_many_requests"


def test_cache_off_signs_every_token(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.extra_args = ("--no-imds-token-cache",)
    fresh_acrlocal.start()
    m = mgmt_for(fresh_acrlocal)
    vm = m.vm(m.group(), "uncached", {"type": "SystemAssigned"})
    tokens = {a.json()["access_token"] for a in imds_many(fresh_acrlocal, vm, [call()] * 3)}
    assert len(tokens) == 3


def test_a_vm_boots_again_after_a_restart(fresh_acrlocal: AcrLocal) -> None:
    fresh_acrlocal.start()
    m = mgmt_for(fresh_acrlocal)
    vm = m.vm(m.group(), "durable", {"type": "SystemAssigned"})
    token_before = imds(fresh_acrlocal, vm).json()["access_token"]
    fresh_acrlocal.restart()
    after = imds(fresh_acrlocal, vm)
    assert after.status_code == 200
    claims = jwt.decode(after.json()["access_token"], options={"verify_signature": False})
    assert claims["oid"] == jwt.decode(token_before, options={"verify_signature": False})["oid"]
    assert time.time() < claims["exp"]
