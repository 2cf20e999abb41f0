"""A person signing in, fuzzed over HTTP against a server of the module's own: the sign-in page
(``/{tenant}/oauth2/v2.0/authorize``, GET and POST), device flows (``/devicecode``, ``/devicelogin``), the
signed-out page, and the user grants of both token endpoints (v2 ``/oauth2/v2.0/token`` and v1 ``/oauth2/token``),
with near-valid values (a real user, password, client, PKCE pair, refresh token, device code, authorization
code; each mutated now and then) as well as junk.

Properties: never a 5xx; a page is HTML, a token endpoint's refusal is OAuth's JSON ``error``; a sign-in
redirects only to the loopback ``redirect_uri`` it was given; a wrong password never signs anyone in; and the
server's log holds no traceback and nothing at ERROR level."""

from __future__ import annotations

import base64
import hashlib
import re
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as s
from tests.fuzz.conftest import World, assert_logged_no_error, clean

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
PASSWORD = "Str0ng-Passw0rd!"
ARM_USER_SCOPE = "https://management.core.windows.net//.default openid profile offline_access"
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
VERIFIER = "v" * 43
CHALLENGE = base64.urlsafe_b64encode(hashlib.sha256(VERIFIER.encode()).digest()).rstrip(b"=").decode()


@dataclass
class Person:
    upn: str
    refresh_token: str
    public_client: str


@pytest.fixture(scope="module")
def person(world: World) -> Person:
    upn = f"fuzz-{uuid.uuid4().hex[:6]}@{world.domain}"
    r = world.http.post(f"{world.server.shared}/v1.0/users", json={
        "accountEnabled": True, "displayName": "Fuzz", "mailNickname": "fuzz", "userPrincipalName": upn,
        "passwordProfile": {"password": PASSWORD, "forceChangePasswordNextSignIn": False}},
        headers={"Authorization": f"Bearer {world.graph}"})
    assert r.status_code == 201, r.text
    app = world.http.post(f"{world.server.shared}/v1.0/applications",
                          json={"displayName": "fuzz-public", "isFallbackPublicClient": True},
                          headers={"Authorization": f"Bearer {world.graph}"})
    assert app.status_code == 201, app.text
    granted = world.http.post(f"{world.server.shared}/{world.tenant}/oauth2/v2.0/token", data={
        "grant_type": "password", "client_id": AZ_CLI, "username": upn, "password": PASSWORD,
        "scope": ARM_USER_SCOPE})
    assert granted.status_code == 200, granted.text
    return Person(upn, granted.json()["refresh_token"], app.json()["appId"])


def tenants(world: World) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([world.tenant, "organizations", "common", "Common", str(uuid.uuid4())]),
                     s.mutated(st.just(world.tenant)), s.junk)


def client_ids(person: Person) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from([AZ_CLI, AZ_CLI.upper(), person.public_client, str(uuid.uuid4())]),
                     s.mutated(st.just(AZ_CLI)), s.junk)


scopes = st.one_of(st.sampled_from([ARM_USER_SCOPE, "openid", "openid profile", "https://graph.microsoft.com/User.Read",
                                    "User.Read", "https://management.azure.com/.default https://x/.default",
                                    "https://containerregistry.azure.net/.default offline_access", ""]),
                   s.mutated(st.just(ARM_USER_SCOPE)), s.junk)
redirect_uris = s.near(st.sampled_from(["http://localhost:51234/", "http://localhost", "http://127.0.0.1:8400/cb?x=1",
                                        "http://[::1]:9/", "http://localhost:99999/", "http://localhost:-1/",
                                        "http://localhost:1/#frag", "https://localhost:1/",
                                        "https://attacker.example/cb", "http://user@localhost:2/",
                                        "http://localhost:1/%zz", "http://[::1/"]))


def no_such_path(r: Any) -> bool:
    """The shared endpoint's answer for a path no endpoint has (an empty tenant, a tenant with a ``/``): ARM's
    gateway 400 ``InvalidRequestUri``."""
    return r.status_code == 400 and r.headers.get("Content-Type", "").startswith("application/json") and \
        isinstance(r.json().get("error"), dict) and r.json()["error"].get("code") == "InvalidRequestUri"


def answer_is_html(r: Any) -> None:
    """A page, or Entra's JSON error for a tenant that is not one (AADSTS90002, as Entra answers it), or the
    answer for a path that names no page (:func:`no_such_path`)."""
    if no_such_path(r):
        return
    if r.headers.get("Content-Type", "").startswith("application/json"):
        assert r.status_code == 400 and r.json()["error_codes"] == [90002], r.text[:300]
        return
    assert r.headers.get("Content-Type", "").startswith("text/html"), (r.status_code, r.headers, r.text[:300])


def refusal_is_oauth(r: Any) -> None:
    if r.status_code >= 400 and not no_such_path(r):
        body = r.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("error_codes"), list), r.text[:300]


@given(st.data(), st.sampled_from(["GET", "POST"]),
       st.dictionaries(st.sampled_from(["response_type", "code_challenge", "code_challenge_method", "state", "nonce",
                                        "login_hint", "response_mode", "prompt"]),
                       st.one_of(st.sampled_from(["code", "S256", "plain", "form_post", "query", "fragment",
                                                  CHALLENGE, "login"]), s.junk), max_size=8),
       st.dictionaries(st.sampled_from(["username", "password", "code", "extra"]), s.junk, max_size=3))
def test_authorize_page(world: World, person: Person, data: st.DataObject, method: str, odd: dict[str, str],
                        odd_form: dict[str, str]) -> None:
    tenant = data.draw(tenants(world))
    query = {"client_id": data.draw(client_ids(person)), "redirect_uri": data.draw(redirect_uris),
             "response_type": "code", "code_challenge": CHALLENGE, "code_challenge_method": "S256",
             "scope": data.draw(scopes), **odd}
    for key in data.draw(st.lists(st.sampled_from(sorted(query)), max_size=3)):
        query.pop(key, None)
    right = data.draw(st.booleans())
    form = {"username": data.draw(st.one_of(st.just(person.upn), s.mutated(st.just(person.upn)))),
            "password": PASSWORD if right else data.draw(s.near(st.just(PASSWORD))), **odd_form}
    url = f"{world.server.shared}/{urllib.parse.quote(clean(tenant), safe='')}/oauth2/v2.0/authorize"
    r = world.answered(lambda: world.http.request(method, url, params=clean(query),
                                                  data=clean(form) if method == "POST" else None,
                                                  allow_redirects=False), "authorize")
    if r.status_code in (301, 302, 303, 307, 308):
        location = r.headers["Location"]
        assert method == "POST" and location.startswith(query["redirect_uri"]), (location, query)
        assert form["password"] == PASSWORD and form["username"].lower() == person.upn.lower()
        assert urllib.parse.urlsplit(location).hostname in ("localhost", "127.0.0.1", "::1")
    else:
        answer_is_html(r)
    if method == "POST" and form["password"] != PASSWORD:
        assert "code=" not in r.headers.get("Location", "") and "name='code'" not in r.text


@given(st.data(), st.sampled_from(["GET", "POST"]), st.booleans(),
       st.dictionaries(st.sampled_from(["code", "username", "password", "extra"]), s.junk, max_size=3))
def test_device_login_page(world: World, person: Person, data: st.DataObject, method: str, start: bool,
                           odd: dict[str, str]) -> None:
    code: str = data.draw(s.junk)
    device_code = None
    if start:
        r = world.answered(lambda: world.http.post(f"{world.server.shared}/{world.tenant}/oauth2/v2.0/devicecode",
                                                   data={"client_id": AZ_CLI, "scope": ARM_USER_SCOPE}), "devicecode")
        assert r.status_code == 200, r.text
        flow = r.json()
        device_code = flow["device_code"]
        code = data.draw(st.one_of(st.just(flow["user_code"]), st.just(flow["user_code"].lower()),
                                   s.mutated(st.just(flow["user_code"]))))
    form: dict[str, str] = {"code": code}
    if data.draw(st.booleans()):
        form["username"] = data.draw(st.one_of(st.just(person.upn), s.near(st.just(person.upn))))
        form["password"] = data.draw(st.one_of(st.just(PASSWORD), s.near(st.just(PASSWORD))))
    form.update(odd)
    r = world.answered(lambda: world.http.request(method, f"{world.server.shared}/devicelogin",
                                                  data=clean(form) if method == "POST" else None,
                                                  params=clean(odd) if method == "GET" else None,
                                                  allow_redirects=False), "devicelogin")
    answer_is_html(r)
    if device_code is not None:
        poll = world.answered(lambda: world.http.post(f"{world.server.shared}/{world.tenant}/oauth2/v2.0/token", data={
            "grant_type": DEVICE_GRANT, "client_id": AZ_CLI, "device_code": device_code}), "device poll")
        refusal_is_oauth(poll)
        if poll.status_code == 200:
            assert form.get("password") == PASSWORD and form.get("username", "").lower() == person.upn.lower()


@given(st.data(), st.sampled_from(["oauth2/v2.0/devicecode", "oauth2/devicecode"]),
       st.dictionaries(st.sampled_from(["client_id", "scope", "resource", "claims", "client_info"]),
                       s.junk, max_size=3))
def test_device_code_endpoint(world: World, person: Person, data: st.DataObject, path: str,
                              odd: dict[str, str]) -> None:
    tenant = data.draw(tenants(world))
    form = {"client_id": data.draw(client_ids(person)), "scope": data.draw(scopes), **odd}
    r = world.answered(lambda: world.http.post(
        f"{world.server.shared}/{urllib.parse.quote(clean(tenant), safe='')}/{path}", data=clean(form)),
        "devicecode")
    refusal_is_oauth(r)


@given(st.data(), st.sampled_from(["GET", "POST"]),
       st.dictionaries(st.sampled_from(["post_logout_redirect_uri", "id_token_hint", "state", "logout_hint"]),
                       st.one_of(redirect_uris, s.junk), max_size=3))
def test_logout_page(world: World, data: st.DataObject, method: str, query: dict[str, str]) -> None:
    tenant = data.draw(tenants(world))
    r = world.answered(lambda: world.http.request(
        method, f"{world.server.shared}/{urllib.parse.quote(clean(tenant), safe='')}/oauth2/v2.0/logout",
        params=clean(query), data=clean(query) if method == "POST" else None, allow_redirects=False), "logout")
    assert not 300 <= r.status_code < 400, (r.status_code, r.headers)  # it never redirects
    answer_is_html(r)


@given(st.data(), st.sampled_from(["oauth2/v2.0/token", "oauth2/token"]),
       st.sampled_from(["password", "refresh_token", "authorization_code", DEVICE_GRANT]),
       st.dictionaries(st.sampled_from(["client_info", "claims", "code_verifier", "redirect_uri", "client_secret",
                                        "resource", "scope"]), s.junk, max_size=2))
def test_user_grants(world: World, person: Person, data: st.DataObject, path: str, grant: str,
                     odd: dict[str, str]) -> None:
    tenant = data.draw(tenants(world))
    form: dict[str, str] = {"grant_type": grant, "client_id": data.draw(client_ids(person)),
                            "scope": data.draw(scopes)}
    if path == "oauth2/token":
        form["resource"] = data.draw(st.one_of(st.sampled_from(["https://management.core.windows.net/",
                                                                "https://graph.microsoft.com", ""]), s.junk))
    if grant == "password":
        form["username"] = data.draw(st.one_of(st.just(person.upn), s.near(st.just(person.upn))))
        form["password"] = data.draw(st.one_of(st.just(PASSWORD), s.near(st.just(PASSWORD))))
    elif grant == "refresh_token":
        form["refresh_token"] = data.draw(st.one_of(st.just(person.refresh_token),
                                                    s.near(st.just(person.refresh_token))))
    elif grant == "authorization_code":
        form.update(code=data.draw(s.near(st.just("A" * 64))), redirect_uri=data.draw(redirect_uris),
                    code_verifier=data.draw(s.near(st.just(VERIFIER))))
    else:
        form["device_code"] = data.draw(s.near(st.just("D" * 64)))
    form.update(odd)
    for key in data.draw(st.lists(st.sampled_from(sorted(form)), max_size=2)):
        form.pop(key, None)
    r = world.answered(lambda: world.http.post(
        f"{world.server.shared}/{urllib.parse.quote(clean(tenant), safe='')}/{path}", data=clean(form)), "user grant")
    refusal_is_oauth(r)
    if r.status_code == 200:
        assert grant in ("password", "refresh_token")
        if grant == "password":
            assert form["password"] == PASSWORD


def test_signing_in_still_works(world: World, person: Person) -> None:
    r = world.http.post(f"{world.server.shared}/organizations/oauth2/v2.0/token", data={
        "grant_type": "password", "client_id": AZ_CLI, "username": person.upn, "password": PASSWORD,
        "scope": ARM_USER_SCOPE})
    assert r.status_code == 200, r.text
    assert re.fullmatch(r"[\w-]+\.[\w-]+\.[\w-]+", r.json()["access_token"])


def test_the_server_logged_no_error(world: World) -> None:
    assert_logged_no_error(world)
