"""A person's grants at the Entra endpoints, on the wire: the password grant (as msal sends it), refresh tokens
and their revocation, the device flow, the authorization code with PKCE, and what the sign-in pages refuse.
(Microsoft's az drives the same endpoints in tests/az/test_person.py and test_browser_signin.py.)"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests

from tests.harness import AcrLocal

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM_SCOPE = "https://management.core.windows.net//.default openid profile offline_access"
PASSWORD = "Str0ng-Passw0rd!"


def admin(server: AcrLocal) -> dict[str, str]:
    return dict(json.loads((server.data_dir / "admin.json").read_text()))


def token(server: AcrLocal, tenant: str, **form: str) -> requests.Response:
    return server.session().post(f"{server.shared}/{tenant}/oauth2/v2.0/token", data=form)


def password_grant(server: AcrLocal, user: str, password: str, tenant: str = "organizations",
                   client_id: str = AZ_CLI, scope: str = ARM_SCOPE) -> requests.Response:
    return token(server, tenant, grant_type="password", client_id=client_id, username=user, password=password,
                 scope=scope, client_info="1")


def claims(value: str) -> dict[str, Any]:
    return dict(jwt.decode(value, options={"verify_signature": False}))


def graph(server: AcrLocal, method: str, path: str, body: Any = None) -> requests.Response:
    a = admin(server)
    access = token(server, a["tenantId"], grant_type="client_credentials", client_id=a["clientId"],
                   client_secret=a["clientSecret"], scope="https://graph.microsoft.com/.default").json()
    return server.session().request(method, f"{server.shared}/v1.0{path}", json=body,
                                    headers={"Authorization": f"Bearer {access['access_token']}"})


@pytest.fixture(scope="module")
def person(acrlocal: AcrLocal) -> dict[str, str]:
    domain = admin(acrlocal)["userPrincipalName"].split("@")[1]
    upn = f"carol-{uuid.uuid4().hex[:6]}@{domain}"
    r = graph(acrlocal, "POST", "/users", {"accountEnabled": True, "displayName": "Carol", "mailNickname": "carol",
                                           "userPrincipalName": upn, "passwordProfile": {"password": PASSWORD}})
    assert r.status_code == 201, r.text
    return {"upn": upn, "id": r.json()["id"]}


def test_password_grant_tokens_and_claims(acrlocal: AcrLocal, person: dict[str, str]) -> None:
    realm = acrlocal.session().get(f"{acrlocal.shared}/common/userrealm/{person['upn']}",
                                   params={"api-version": "1.0"}).json()
    assert realm["account_type"] == "Managed"
    r = password_grant(acrlocal, person["upn"], PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    access, ident = claims(body["access_token"]), claims(body["id_token"])
    assert (access["idtyp"], access["upn"], access["oid"], access["appid"]) == ("user", person["upn"], person["id"],
                                                                              AZ_CLI)
    assert access["aud"] == "https://management.core.windows.net/" and access["scp"] == "user_impersonation"
    assert ident["aud"] == AZ_CLI and ident["preferred_username"] == person["upn"]
    info = json.loads(base64.urlsafe_b64decode(body["client_info"] + "=="))
    assert info == {"uid": person["id"], "utid": admin(acrlocal)["tenantId"]}
    # The ID token is no access token anywhere: ARM refuses its audience.
    arm = acrlocal.session().get(f"{acrlocal.shared}/subscriptions", params={"api-version": "2022-12-01"},
                                 headers={"Authorization": f"Bearer {body['id_token']}"})
    assert arm.status_code == 401
    # A refresh token gets tokens for another resource, in the user's own tenant.
    again = token(acrlocal, admin(acrlocal)["tenantId"], grant_type="refresh_token", client_id=AZ_CLI,
                  refresh_token=body["refresh_token"], scope="https://graph.microsoft.com/.default")
    assert again.status_code == 200, again.text
    assert claims(again.json()["access_token"])["aud"] == "https://graph.microsoft.com"
    other_client = token(acrlocal, "organizations", grant_type="refresh_token", client_id=str(uuid.uuid4()),
                         refresh_token=body["refresh_token"], scope=ARM_SCOPE)
    assert other_client.status_code == 400 and other_client.json()["error"] == "invalid_grant"


def test_refusals_say_nothing_about_who_exists(acrlocal: AcrLocal, person: dict[str, str]) -> None:
    wrong = password_grant(acrlocal, person["upn"], "Wr0ng-Password!")
    unknown = password_grant(acrlocal, f"nobody-{uuid.uuid4().hex[:6]}@example.com", "Wr0ng-Password!")
    for r in (wrong, unknown):
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant" and r.json()["error_codes"] == [50126]
    confidential = password_grant(acrlocal, person["upn"], PASSWORD, client_id=admin(acrlocal)["clientId"])
    assert confidential.json()["error_codes"] == [700016]
    two = password_grant(acrlocal, person["upn"], PASSWORD, scope="https://management.core.windows.net//.default "
                         "https://graph.microsoft.com/.default")
    assert two.json()["error_codes"] == [28000]
    client_credentials_on_alias = token(acrlocal, "organizations", grant_type="client_credentials",
                                        client_id=admin(acrlocal)["clientId"],
                                        client_secret=admin(acrlocal)["clientSecret"], scope=ARM_SCOPE)
    assert client_credentials_on_alias.status_code == 400


def test_new_password_and_disabled_account_revoke(acrlocal: AcrLocal, person: dict[str, str]) -> None:
    refresh = password_grant(acrlocal, person["upn"], PASSWORD).json()["refresh_token"]
    try:
        r = graph(acrlocal, "PATCH", f"/users/{person['id']}", {"passwordProfile": {"password": PASSWORD + "2"}})
        assert r.status_code == 204, r.text
        revoked = token(acrlocal, "organizations", grant_type="refresh_token", client_id=AZ_CLI,
                        refresh_token=refresh, scope=ARM_SCOPE)
        assert revoked.status_code == 400 and revoked.json()["error_codes"] == [700082]
        assert password_grant(acrlocal, person["upn"], PASSWORD).json()["error_codes"] == [50126]
        assert password_grant(acrlocal, person["upn"], PASSWORD + "2").status_code == 200
        assert graph(acrlocal, "PATCH", f"/users/{person['id']}", {"accountEnabled": False}).status_code == 204
        assert password_grant(acrlocal, person["upn"], PASSWORD + "2").json()["error_codes"] == [50057]
        disabled = graph(acrlocal, "GET",
                         "/users?$filter=accountEnabled%20eq%20false&$select=id,accountEnabled").json()
        # (other tests of the session's server may have left users of theirs disabled)
        listed = [(u["id"], u["accountEnabled"]) for u in disabled["value"]]
        assert (person["id"], False) in listed and all(enabled is False for _, enabled in listed), listed
    finally:  # the module's other tests sign in as this person
        assert graph(acrlocal, "PATCH", f"/users/{person['id']}", {"accountEnabled": True,
                                                                    "passwordProfile": {"password": PASSWORD}}
                     ).status_code == 204


def test_device_flow(acrlocal: AcrLocal, person: dict[str, str]) -> None:
    s = acrlocal.session()
    start = s.post(f"{acrlocal.shared}/organizations/oauth2/v2.0/devicecode",
                   data={"client_id": AZ_CLI, "scope": ARM_SCOPE}).json()
    assert start["interval"] == 5 and start["verification_uri"].endswith("/devicelogin")
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": AZ_CLI,
            "device_code": start["device_code"]}
    assert token(acrlocal, "organizations", **poll).json()["error"] == "authorization_pending"
    wrong_code = s.post(f"{acrlocal.shared}/devicelogin", data={"code": "NOTACODE"})
    assert "didn't work" in wrong_code.text
    page = s.post(f"{acrlocal.shared}/devicelogin", data={"code": start["user_code"].lower()})
    assert "Are you trying to sign in to Microsoft Azure CLI?" in page.text
    bad = s.post(f"{acrlocal.shared}/devicelogin", data={"code": start["user_code"], "username": person["upn"],
                                                         "password": "nope"})
    assert "Your account or password is incorrect." in bad.text
    assert token(acrlocal, "organizations", **poll).json()["error"] == "authorization_pending"
    done = s.post(f"{acrlocal.shared}/devicelogin", data={"code": start["user_code"], "username": person["upn"],
                                                          "password": PASSWORD})
    assert "You have signed in" in done.text
    granted = token(acrlocal, "organizations", **poll)
    assert granted.status_code == 200 and claims(granted.json()["access_token"])["oid"] == person["id"]
    assert token(acrlocal, "organizations", **poll).json()["error"] == "expired_token"  # used once


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def test_authorization_code_with_pkce(acrlocal: AcrLocal, person: dict[str, str]) -> None:
    s = acrlocal.session()
    verifier, challenge = _pkce()
    redirect = "http://localhost:51234/"
    params = {"client_id": AZ_CLI, "response_type": "code", "redirect_uri": redirect, "scope": ARM_SCOPE,
              "state": "st8", "nonce": "n0nce", "code_challenge": challenge, "code_challenge_method": "S256",
              "login_hint": "<script>alert(1)</script>"}
    url = f"{acrlocal.shared}/organizations/oauth2/v2.0/authorize"
    page = s.get(url, params=params)
    assert page.status_code == 200 and "<script>alert(1)" not in page.text and "&lt;script&gt;" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    # Not a loopback redirect, no PKCE, an unknown client: an error page, never a redirect.
    for change in ({"redirect_uri": "https://attacker.example/cb"}, {"code_challenge": ""},
                   {"client_id": str(uuid.uuid4())}):
        refused = s.get(url, params={**params, **change}, allow_redirects=False)
        assert refused.status_code == 400 and "Location" not in refused.headers, change
    signed_in = s.post(url, params=params, data={"username": person["upn"], "password": PASSWORD},
                       allow_redirects=False)
    assert signed_in.status_code == 302
    location = urlsplit(signed_in.headers["Location"])
    assert f"{location.scheme}://{location.netloc}/" == redirect
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["state"] == "st8" and query["code"]
    form = {"grant_type": "authorization_code", "client_id": AZ_CLI, "code": query["code"], "redirect_uri": redirect,
            "scope": ARM_SCOPE}
    wrong = token(acrlocal, "organizations", **form, code_verifier="x" * 43)
    assert wrong.json()["error_codes"] == [501481]
    # The code is gone after one redemption, even a failed one.
    assert token(acrlocal, "organizations", **form, code_verifier=verifier).json()["error_codes"] == [70008]

    signed_in = s.post(url, params={**params, "response_mode": "form_post"},
                       data={"username": person["upn"], "password": PASSWORD})
    code = re.search(r"name='code' value='([^']+)'", signed_in.text)
    assert code and "script-src 'nonce-" in signed_in.headers["Content-Security-Policy"]
    ok = token(acrlocal, "organizations", **{**form, "code": code.group(1)}, code_verifier=verifier)
    assert ok.status_code == 200, ok.text
    assert claims(ok.json()["id_token"])["nonce"] == "n0nce"


def test_end_session_endpoint_signs_out_and_never_redirects_where_the_query_says(acrlocal: AcrLocal) -> None:
    """The discovery document's ``end_session_endpoint`` answers the signed-out page (acrlocal keeps no browser
    session), even asked to redirect to another site; an unknown tenant gets Entra's error."""
    s = acrlocal.session()
    tenant = admin(acrlocal)["tenantId"]
    found = s.get(f"{acrlocal.shared}/{tenant}/v2.0/.well-known/openid-configuration").json()
    logout = found["end_session_endpoint"]
    assert logout == f"{acrlocal.shared}/{tenant}/oauth2/v2.0/logout"
    r = s.get(logout, params={"post_logout_redirect_uri": "https://attacker.example/"}, allow_redirects=False)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html"), r.text
    assert "id=signed-out" in r.text and "attacker.example" not in r.text and "Location" not in r.headers
    r = s.get(f"{acrlocal.shared}/organizations/oauth2/v2.0/logout")
    assert r.status_code == 200 and "id=signed-out" in r.text
    r = s.get(f"{acrlocal.shared}/{uuid.uuid4()}/oauth2/v2.0/logout")
    assert r.status_code == 400 and r.json()["error_codes"] == [90002], r.text  # Entra's tenant not found


def _new_person(server: AcrLocal, name: str) -> dict[str, str]:
    domain = admin(server)["userPrincipalName"].split("@")[1]
    upn = f"{name}-{uuid.uuid4().hex[:6]}@{domain}"
    r = graph(server, "POST", "/users", {"accountEnabled": True, "displayName": name, "mailNickname": name,
                                         "userPrincipalName": upn, "passwordProfile": {"password": PASSWORD}})
    assert r.status_code == 201, r.text
    return {"upn": upn, "id": r.json()["id"]}


def _approved_device_flow(server: AcrLocal, upn: str) -> dict[str, str]:
    s = server.session()
    start = s.post(f"{server.shared}/organizations/oauth2/v2.0/devicecode",
                   data={"client_id": AZ_CLI, "scope": ARM_SCOPE}).json()
    done = s.post(f"{server.shared}/devicelogin", data={"code": start["user_code"], "username": upn,
                                                        "password": PASSWORD})
    assert "You have signed in" in done.text
    return {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": AZ_CLI,
            "device_code": start["device_code"]}


def _signed_in_code(server: AcrLocal, upn: str) -> dict[str, str]:
    verifier, challenge = _pkce()
    redirect = "http://localhost:51234/"
    params = {"client_id": AZ_CLI, "response_type": "code", "redirect_uri": redirect, "scope": ARM_SCOPE,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    signed_in = server.session().post(f"{server.shared}/organizations/oauth2/v2.0/authorize", params=params,
                                      data={"username": upn, "password": PASSWORD}, allow_redirects=False)
    assert signed_in.status_code == 302, signed_in.text
    code = parse_qs(urlsplit(signed_in.headers["Location"]).query)["code"][0]
    return {"grant_type": "authorization_code", "client_id": AZ_CLI, "code": code, "redirect_uri": redirect,
            "scope": ARM_SCOPE, "code_verifier": verifier}


def test_a_user_disabled_or_deleted_after_signing_in_gets_no_tokens_for_that_sign_in(acrlocal: AcrLocal) -> None:
    """A device flow approved, or an authorization code issued, before the user was disabled or deleted: the poll
    and the redemption are refused with Entra's error for that account (not 'pending' until the flow expires, and
    never tokens for a disabled account)."""
    for change, expected in (("disable", 50057), ("delete", 50034)):
        user = _new_person(acrlocal, f"dave-{change}")
        flow, code = _approved_device_flow(acrlocal, user["upn"]), _signed_in_code(acrlocal, user["upn"])
        if change == "disable":
            r = graph(acrlocal, "PATCH", f"/users/{user['id']}", {"accountEnabled": False})
        else:
            r = graph(acrlocal, "DELETE", f"/users/{user['id']}")
        assert r.status_code == 204, r.text
        for form in (flow, code):
            refused = token(acrlocal, "organizations", **form)
            assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
            assert refused.json()["error_codes"] == [expected], (change, form["grant_type"], refused.text)
            assert "access_token" not in refused.json()
        # Both were used up by the refusal.
        assert token(acrlocal, "organizations", **flow).json()["error"] == "expired_token"
        assert token(acrlocal, "organizations", **code).json()["error_codes"] == [70008]


def _public_client(server: AcrLocal, name: str) -> dict[str, str]:
    """An application of the default tenant registered as a public client (people sign in to it)."""
    r = graph(server, "POST", "/applications", {"displayName": name, "isFallbackPublicClient": True})
    assert r.status_code == 201, r.text
    return {"id": r.json()["id"], "appId": r.json()["appId"]}


def test_an_application_deleted_after_a_person_signed_in_to_it_gets_no_more_tokens(
        acrlocal: AcrLocal, person: dict[str, str]) -> None:
    """A refresh token, an approved device flow and an authorization code of a public client whose application is
    deleted afterwards: each is refused with Entra's answer for a client not in the directory (AADSTS700016)."""
    tenant = admin(acrlocal)["tenantId"]
    app = _public_client(acrlocal, "deleted-later")
    signed_in = password_grant(acrlocal, person["upn"], PASSWORD, tenant=tenant, client_id=app["appId"])
    assert signed_in.status_code == 200, signed_in.text
    refresh = {"grant_type": "refresh_token", "client_id": app["appId"], "scope": ARM_SCOPE,
               "refresh_token": signed_in.json()["refresh_token"]}
    assert token(acrlocal, tenant, **refresh).status_code == 200
    s = acrlocal.session()
    start = s.post(f"{acrlocal.shared}/{tenant}/oauth2/v2.0/devicecode",
                   data={"client_id": app["appId"], "scope": ARM_SCOPE}).json()
    done = s.post(f"{acrlocal.shared}/devicelogin", data={"code": start["user_code"], "username": person["upn"],
                                                          "password": PASSWORD})
    assert "You have signed in" in done.text
    flow = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": app["appId"],
            "device_code": start["device_code"]}
    verifier, challenge = _pkce()
    redirect = "http://localhost:51234/"
    params = {"client_id": app["appId"], "response_type": "code", "redirect_uri": redirect, "scope": ARM_SCOPE,
              "code_challenge": challenge, "code_challenge_method": "S256"}
    authorized = s.post(f"{acrlocal.shared}/{tenant}/oauth2/v2.0/authorize", params=params,
                        data={"username": person["upn"], "password": PASSWORD}, allow_redirects=False)
    assert authorized.status_code == 302, authorized.text
    code = {"grant_type": "authorization_code", "client_id": app["appId"], "redirect_uri": redirect,
            "scope": ARM_SCOPE, "code_verifier": verifier,
            "code": parse_qs(urlsplit(authorized.headers["Location"]).query)["code"][0]}

    assert graph(acrlocal, "DELETE", f"/applications/{app['id']}").status_code == 204
    for form in (refresh, flow, code):
        refused = token(acrlocal, tenant, **form)
        assert refused.status_code == 400 and refused.json()["error_codes"] == [700016], (form["grant_type"],
                                                                                          refused.text)
        assert refused.json()["error"] == "unauthorized_client" and "access_token" not in refused.json()
        v1 = acrlocal.session().post(f"{acrlocal.shared}/{tenant}/oauth2/token",
                                     data={**form, "resource": "https://management.core.windows.net/"})
        assert v1.status_code == 400 and "access_token" not in v1.json(), v1.text


def test_an_application_disabled_after_a_person_signed_in_to_it_gets_no_more_tokens(
        acrlocal: AcrLocal, person: dict[str, str]) -> None:
    """A public client whose service principal is disabled (``accountEnabled`` false: "no users are able to sign
    in to this app") issues no tokens: its refresh tokens and a new sign-in are refused with Entra's AADSTS7000112,
    and the sign-in page says so; enabled again, the refresh token it kept works."""
    tenant = admin(acrlocal)["tenantId"]
    app = _public_client(acrlocal, "disabled-later")
    sp = graph(acrlocal, "POST", "/servicePrincipals", {"appId": app["appId"]})
    assert sp.status_code == 201, sp.text
    signed_in = password_grant(acrlocal, person["upn"], PASSWORD, tenant=tenant, client_id=app["appId"])
    assert signed_in.status_code == 200, signed_in.text
    refresh = {"grant_type": "refresh_token", "client_id": app["appId"], "scope": ARM_SCOPE,
               "refresh_token": signed_in.json()["refresh_token"]}

    assert graph(acrlocal, "PATCH", f"/servicePrincipals/{sp.json()['id']}",
                 {"accountEnabled": False}).status_code == 204
    for refused in (token(acrlocal, tenant, **refresh),
                    password_grant(acrlocal, person["upn"], PASSWORD, tenant=tenant, client_id=app["appId"])):
        assert refused.status_code == 400 and refused.json()["error"] == "unauthorized_client", refused.text
        assert refused.json()["error_codes"] == [7000112] and "access_token" not in refused.json()
    _, challenge = _pkce()
    page = acrlocal.session().get(f"{acrlocal.shared}/{tenant}/oauth2/v2.0/authorize", params={
        "client_id": app["appId"], "response_type": "code", "redirect_uri": "http://localhost:51234/",
        "scope": ARM_SCOPE, "code_challenge": challenge, "code_challenge_method": "S256"})
    assert page.status_code == 400 and "AADSTS7000112" in page.text

    assert graph(acrlocal, "PATCH", f"/servicePrincipals/{sp.json()['id']}",
                 {"accountEnabled": True}).status_code == 204
    assert token(acrlocal, tenant, **refresh).status_code == 200


def test_a_deleted_users_refresh_token_is_refused(acrlocal: AcrLocal) -> None:
    """Deleting a user deletes their refresh tokens: the next refresh is refused (AADSTS700082), on the v2 and the
    v1 endpoint."""
    user = _new_person(acrlocal, "erin")
    refresh = password_grant(acrlocal, user["upn"], PASSWORD).json()["refresh_token"]
    form = {"grant_type": "refresh_token", "client_id": AZ_CLI, "refresh_token": refresh}
    assert token(acrlocal, "organizations", **form, scope=ARM_SCOPE).status_code == 200
    assert graph(acrlocal, "DELETE", f"/users/{user['id']}").status_code == 204
    refused = token(acrlocal, "organizations", **form, scope=ARM_SCOPE)
    assert refused.status_code == 400 and refused.json()["error_codes"] == [700082], refused.text
    v1 = acrlocal.session().post(f"{acrlocal.shared}/{admin(acrlocal)['tenantId']}/oauth2/token",
                                 data={**form, "resource": "https://management.core.windows.net/"})
    assert v1.status_code == 400 and v1.json()["error_codes"] == [700082], v1.text
