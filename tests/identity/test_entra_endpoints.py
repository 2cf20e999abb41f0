"""The Entra endpoints, driven by real clients: azure-identity's ClientSecretCredential and plain HTTP."""

from __future__ import annotations

import json

import jwt
import pytest
import requests
from azure.identity import ClientSecretCredential

from tests.harness import AcrLocal

ARM = "https://management.azure.com/.default"


def admin(server: AcrLocal) -> dict[str, str]:
    return dict(json.loads((server.data_dir / "admin.json").read_text()))


def test_client_secret_credential_gets_a_token_that_verifies_against_jwks(acrlocal: AcrLocal) -> None:
    cred = admin(acrlocal)
    client = ClientSecretCredential(cred["tenantId"], cred["clientId"], cred["clientSecret"],
                                    authority=acrlocal.shared, connection_verify=acrlocal.ca,
                                    disable_instance_discovery=True)
    token = client.get_token(ARM)
    s = acrlocal.session()
    config = s.get(f"{acrlocal.shared}/{cred['tenantId']}/v2.0/.well-known/openid-configuration").json()
    keys = s.get(config["jwks_uri"]).json()
    kid = jwt.get_unverified_header(token.token)["kid"]
    jwk = next(k for k in keys["keys"] if k["kid"] == kid)
    claims = jwt.decode(token.token, jwt.PyJWK(jwk).key, algorithms=["RS256"],
                        audience="https://management.azure.com", issuer=config["issuer"])
    assert claims["oid"] == cred["objectId"] and claims["tid"] == cred["tenantId"]
    assert claims["appid"] == cred["clientId"] and claims["idtyp"] == "app"


def test_v1_endpoint_takes_resource(acrlocal: AcrLocal) -> None:
    cred = admin(acrlocal)
    r = acrlocal.session().post(f"{acrlocal.shared}/{cred['tenantId']}/oauth2/token", data={
        "grant_type": "client_credentials", "client_id": cred["clientId"], "client_secret": cred["clientSecret"],
        "resource": "https://management.core.windows.net/"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["resource"] == "https://management.core.windows.net/"
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["aud"] == body["resource"]


@pytest.mark.parametrize(("change", "status", "error", "code"), [
    ({"client_secret": "wrong"}, 401, "invalid_client", 7000215),
    ({"client_id": "00000000-0000-0000-0000-0000000000aa"}, 400, "unauthorized_client", 700016),
    ({"grant_type": "implicit"}, 400, "unsupported_grant_type", 70003),
    # A person's password grant is only for public clients: a service principal's app id is none.
    ({"grant_type": "password", "username": "x@y.z", "password": "p"}, 400, "unauthorized_client", 700016),
    ({"scope": "https://management.azure.com"}, 400, "invalid_scope", 1002012),
    ({"client_id": ""}, 400, "invalid_request", 900144),
])
def test_bad_requests_get_entra_errors(acrlocal: AcrLocal, change: dict[str, str], status: int, error: str,
                                       code: int) -> None:
    cred = admin(acrlocal)
    form = {"grant_type": "client_credentials", "client_id": cred["clientId"], "client_secret": cred["clientSecret"],
            "scope": ARM} | change
    r = acrlocal.session().post(f"{acrlocal.shared}/{cred['tenantId']}/oauth2/v2.0/token", data=form)
    assert r.status_code == status
    body = r.json()
    assert body["error"] == error and body["error_codes"] == [code]
    assert body["error_description"].startswith(f"AADSTS{code}:")
    assert {"timestamp", "trace_id", "correlation_id"} <= body.keys()
    assert cred["clientSecret"] not in r.text


def test_unknown_tenant(acrlocal: AcrLocal) -> None:
    r = acrlocal.session().get(f"{acrlocal.shared}/11111111-2222-3333-4444-555555555555/discovery/v2.0/keys")
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]


@pytest.mark.parametrize("alias", ["organizations", "common"])
def test_multi_tenant_discovery(acrlocal: AcrLocal, alias: str) -> None:
    """msal discovers ``organizations`` when az builds its public client (``az account clear``); tokens are only
    issued on a tenant's own endpoint."""
    s = acrlocal.session()
    config = s.get(f"{acrlocal.shared}/{alias}/v2.0/.well-known/openid-configuration").json()
    assert config["issuer"] == f"{acrlocal.shared}/{{tenantid}}/v2.0"
    assert config["token_endpoint"] == f"{acrlocal.shared}/{alias}/oauth2/v2.0/token"
    cred = json.loads((acrlocal.data_dir / "admin.json").read_text())
    r = s.post(config["token_endpoint"], data={"grant_type": "client_credentials", "client_id": cred["clientId"],
                                               "client_secret": cred["clientSecret"],
                                               "scope": "https://management.azure.com/.default"})
    assert r.status_code == 400 and r.json()["error_codes"] == [90002]


def test_an_application_without_its_service_principal_gets_no_token(acrlocal: AcrLocal) -> None:
    """Client credentials need the application's service principal in the tenant (AADSTS7000229): none made yet,
    or deleted after it worked, and after it was disabled (deleting a disabled service principal must not let its
    application's secret work again); made again, the secret works."""
    cred = admin(acrlocal)
    s = acrlocal.session()
    graph_token = s.post(f"{acrlocal.shared}/{cred['tenantId']}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": cred["clientId"], "client_secret": cred["clientSecret"],
        "scope": "https://graph.microsoft.com/.default"}).json()["access_token"]

    def graph(method: str, path: str, body: object = None) -> requests.Response:
        return s.request(method, f"{acrlocal.shared}/v1.0{path}", json=body,
                         headers={"Authorization": f"Bearer {graph_token}"})

    app = graph("POST", "/applications", {"displayName": "needs-its-service-principal"}).json()
    secret = graph("POST", f"/applications/{app['id']}/addPassword", {"passwordCredential": {}}).json()["secretText"]

    def client_credentials() -> requests.Response:
        return s.post(f"{acrlocal.shared}/{cred['tenantId']}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": app["appId"], "client_secret": secret, "scope": ARM})

    def missing(r: requests.Response) -> None:
        assert r.status_code == 401 and r.json()["error"] == "invalid_client", r.text
        assert r.json()["error_codes"] == [7000229] and "missing service principal" in r.json()["error_description"]

    missing(client_credentials())
    sp = graph("POST", "/servicePrincipals", {"appId": app["appId"]})
    assert sp.status_code == 201, sp.text
    assert client_credentials().status_code == 200
    assert graph("PATCH", f"/servicePrincipals/{sp.json()['id']}", {"accountEnabled": False}).status_code == 204
    assert client_credentials().json()["error_codes"] == [7000112]
    assert graph("DELETE", f"/servicePrincipals/{sp.json()['id']}").status_code == 204
    missing(client_credentials())
    assert graph("POST", "/servicePrincipals", {"appId": app["appId"]}).status_code == 201
    assert client_credentials().status_code == 200
    assert graph("DELETE", f"/applications/{app['id']}").status_code == 204
