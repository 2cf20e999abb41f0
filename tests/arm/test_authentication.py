"""Who may call the control plane at all: tokens from the real Entra endpoint, and ARM's 401s."""

from __future__ import annotations

import jwt
import pytest

from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.harness import AcrLocal


def test_admin_token_from_the_entra_endpoint_lists_the_default_subscription(arm_server: AcrLocal,
                                                                             admin: Arm) -> None:
    r = admin.call("GET", "/subscriptions", api_version="2022-12-01")
    assert r.status_code == 200, r.text
    subs = r.json()["value"]
    cred = admin_of(arm_server)
    assert [s["subscriptionId"] for s in subs] == [subscription_of(arm_server)]
    assert subs[0]["tenantId"] == cred.tenant_id and subs[0]["state"] == "Enabled"
    assert subs[0]["id"] == f"/subscriptions/{subs[0]['subscriptionId']}" and subs[0]["displayName"]
    assert r.headers["x-ms-request-id"] and r.headers["x-ms-correlation-request-id"]


@pytest.mark.parametrize("audience", ["https://management.core.windows.net/", "https://management.azure.com/",
                                      "https://management.core.windows.net", "https://management.azure.com"])
def test_every_arm_audience_is_accepted(arm_server: AcrLocal, audience: str) -> None:
    # v2 scopes: "https://x/.default" asks for audience "https://x", "https://x//.default" for "https://x/".
    token = admin_of(arm_server).token(arm_server, audience + "/.default")
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == audience
    r = Arm(arm_server, token).call("GET", f"/subscriptions/{subscription_of(arm_server)}")
    assert r.status_code == 200, r.text


def test_no_token_is_401_with_a_bearer_challenge(arm_server: AcrLocal) -> None:
    r = Arm(arm_server, None).call("GET", f"/subscriptions/{subscription_of(arm_server)}/resourcegroups")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "AuthenticationFailed"
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer authorization_uri=") and arm_server.shared in challenge


@pytest.mark.parametrize("token", ["not-a-jwt", "eyJhbGciOiJub25lIn0.eyJ0aWQiOiJ4In0."])
def test_bad_token_is_401_invalid_authentication_token(arm_server: AcrLocal, token: str) -> None:
    r = Arm(arm_server, token).call("GET", "/subscriptions")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert "WWW-Authenticate" in r.headers


def test_forged_signature_is_refused(arm_server: AcrLocal, admin: Arm) -> None:
    assert admin.token is not None
    header, payload, _sig = admin.token.split(".")
    r = Arm(arm_server, f"{header}.{payload}.{'A' * 342}").call("GET", "/subscriptions")
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"


def test_token_for_another_audience_is_refused(arm_server: AcrLocal) -> None:
    token = admin_of(arm_server).token(arm_server, "https://containerregistry.azure.net/.default")
    r = Arm(arm_server, token).call("GET", "/subscriptions")
    assert r.status_code == 401
    error = r.json()["error"]
    assert error["code"] == "InvalidAuthenticationTokenAudience"
    assert "https://containerregistry.azure.net" in error["message"]


def test_basic_authorization_is_refused(arm_server: AcrLocal) -> None:
    r = Arm(arm_server, None).call("GET", "/subscriptions", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationFailed"


def test_api_version_is_required(admin: Arm, arm_server: AcrLocal) -> None:
    r = admin.call("GET", f"/subscriptions/{subscription_of(arm_server)}/resourcegroups", api_version=None)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "MissingApiVersionParameter"


def test_correlation_id_is_echoed(admin: Arm) -> None:
    r = admin.call("GET", "/subscriptions", headers={"x-ms-correlation-request-id": "abc-123"})
    assert r.headers["x-ms-correlation-request-id"] == "abc-123"


def test_metadata_endpoints_for_az_cloud_register(arm_server: AcrLocal) -> None:
    s = arm_server.session()
    cloud = s.get(f"{arm_server.shared}//metadata/endpoints", params={"api-version": "2022-09-01"}).json()
    assert cloud["resourceManager"] == arm_server.shared + "/"
    assert cloud["authentication"]["loginEndpoint"].rstrip("/") == arm_server.shared
    assert cloud["authentication"]["audiences"][0] == "https://management.core.windows.net/"
    port = arm_server.shared.rsplit(":", 1)[1]
    assert cloud["suffixes"]["acrLoginServer"] == f"localhost:{port}"
    clouds = s.get(f"{arm_server.shared}/metadata/endpoints", params={"api-version": "2019-05-01"}).json()
    assert clouds == [cloud]
    legacy = s.get(f"{arm_server.shared}/metadata/endpoints").json()
    assert legacy["authentication"]["audiences"]


def test_tenants(admin: Arm, arm_server: AcrLocal) -> None:
    r = admin.call("GET", "/tenants", api_version="2022-12-01")
    assert r.status_code == 200
    assert [t["tenantId"] for t in r.json()["value"]] == [admin_of(arm_server).tenant_id]
