"""The challenge, /oauth2/exchange and /oauth2/token on the wire, with the local administrator and with service
principals whose role assignments are made through ARM."""

from __future__ import annotations

import base64

from azure.containerregistry._helpers import _parse_challenge, _parse_exp_time

from tests.arm.conftest import Arm
from tests.harness import REFRESH_TOKEN_USER, AcrLocal, parse_challenge
from tests.tokens.conftest import (
    ACR_PULL,
    ACR_PUSH,
    TokenClient,
    assign,
    claims,
    make_principal,
    principal_token,
    registry_id,
    unassign,
)


def test_challenge_is_exactly_what_the_clients_parse(server: AcrLocal, tokens: TokenClient) -> None:
    ls = tokens.login_server
    base = tokens.v2("GET", "/v2/", None)
    assert base.status_code == 401
    assert base.headers["WWW-Authenticate"] == f'Bearer realm="https://{ls}/oauth2/token",service="{ls}"'
    assert base.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert base.json()["errors"][0]["code"] == "UNAUTHORIZED"
    catalog = tokens.v2("GET", "/v2/_catalog", None)
    assert catalog.headers["WWW-Authenticate"] == (f'Bearer realm="https://{ls}/oauth2/token",service="{ls}",'
                                                   'scope="registry:catalog:*"')
    push = tokens.v2("POST", "/v2/library/hello/blobs/uploads/", None)
    assert push.headers["WWW-Authenticate"].endswith(',scope="repository:library/hello:pull,push"')
    # azure-containerregistry's own parser reads it.
    assert _parse_challenge(push.headers["WWW-Authenticate"]) == {
        "realm": f"https://{ls}/oauth2/token", "service": ls, "scope": "repository:library/hello:pull,push"}
    # The login server the client used, if it is one of the registry's...
    other = "127.0.0.1:" + ls.rsplit(":", 1)[1]
    r = server.session().get(f"https://{ls}/v2/", headers={"Host": other})
    assert parse_challenge(r.headers["WWW-Authenticate"])["service"] == other
    # ...never a host the client made up (credentials would go to that realm).
    r = server.session().get(f"https://{ls}/v2/", headers={"Host": "evil.example:443"})
    assert parse_challenge(r.headers["WWW-Authenticate"])["realm"] == f"https://{ls}/oauth2/token"


def test_refresh_token_survives_the_sdk_parser_and_grants_by_intersection(server: AcrLocal,
                                                                         tokens: TokenClient) -> None:
    refresh = tokens.refresh_token(server.admin_token())
    payload = refresh.split(".")[1]
    assert "-" not in payload and "_" not in payload
    assert _parse_exp_time(refresh) > 0  # azure-containerregistry's own parsing (standard base64)
    rt = claims(refresh)
    assert rt["grant_type"] == "refresh_token" and rt["aud"] == tokens.login_server
    assert rt["sub"] == server.admin_credential()["objectId"]
    # Two scope parameters, one holding two scopes, one naming a host:port in the name.
    r = tokens.token(refresh, "repository:a/b:pull,push", "repository:c:pull registry:catalog:*",
                     "repository:localhost:5000/x:pull")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["expires_in"] >= 60
    access = claims(body["access_token"])
    assert access["aud"] == tokens.login_server and access["iss"] == "Azure Container Registry"
    granted = {(a["type"], a["name"]): sorted(a["actions"]) for a in access["access"]}
    # The administrator is Owner: everything asked for is granted; the host-prefixed name is a name it may
    # pull like any other (no such repository exists here, so the grant is harmless).
    assert granted[("repository", "a/b")] == ["pull", "push"]
    assert granted[("repository", "c")] == ["pull"]
    assert granted[("registry", "catalog")] == ["*"]
    # GET with Basic (the all-zero user and the refresh token), as podman, skopeo and docker do.
    r = tokens.basic_token(REFRESH_TOKEN_USER, refresh, "repository:a/b:pull")
    assert r.status_code == 200 and r.json()["token"] == r.json()["access_token"]
    assert "refresh_token" not in r.json()


def test_access_token_is_valid_on_every_login_server_of_the_registry(server: AcrLocal, tokens: TokenClient) -> None:
    refresh = tokens.refresh_token(server.admin_token())
    token = tokens.access_token(refresh, "registry:catalog:*")
    assert tokens.v2("GET", "/v2/_catalog", token).status_code == 200
    port = tokens.login_server.rsplit(":", 1)[1]
    other = TokenClient(server, f"127.0.0.1:{port}")
    assert other.v2("GET", "/v2/_catalog", token).status_code == 200


def test_principal_without_a_role_gets_an_empty_token_and_cannot_push(server: AcrLocal, tokens: TokenClient) -> None:
    sp = make_principal(server, "norole")
    refresh = tokens.refresh_token(principal_token(server, sp))  # `az acr login` succeeds without a role
    token = tokens.access_token(refresh, "repository:norole/app:pull,push")
    assert claims(token)["access"] == []
    r = tokens.v2("POST", "/v2/norole/app/blobs/uploads/", token)
    assert r.status_code == 401
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    assert 'error="insufficient_scope"' in r.headers["WWW-Authenticate"]


def test_acrpull_pulls_but_cannot_push_and_revocation_stops_new_tokens(server: AcrLocal, arm: Arm,
                                                                      tokens: TokenClient) -> None:
    sp = make_principal(server, "puller")
    assignment = assign(arm, sp.object_id, ACR_PULL, registry_id(server))
    refresh = tokens.refresh_token(principal_token(server, sp))
    token = tokens.access_token(refresh, "repository:pulled/app:pull,push")
    assert claims(token)["access"] == [{"type": "repository", "name": "pulled/app", "actions": ["pull"]}]
    assert tokens.v2("GET", "/v2/pulled/app/tags/list", token).status_code == 404  # allowed; nothing there
    r = tokens.v2("POST", "/v2/pulled/app/blobs/uploads/", token)
    assert r.status_code == 401 and r.json()["errors"][0]["detail"][1] == {
        "Type": "repository", "Name": "pulled/app", "Action": "push"}
    unassign(arm, assignment)
    # The refresh token is still valid, but every new token is computed from current state: nothing.
    assert claims(tokens.access_token(refresh, "repository:pulled/app:pull"))["access"] == []
    # The access token issued before the revocation lives until it expires, as in ACR.
    assert tokens.v2("GET", "/v2/pulled/app/tags/list", token).status_code == 404


def test_a_token_that_did_not_ask_for_push_is_upgraded_by_403_only_if_push_is_allowed(
        server: AcrLocal, arm: Arm, tokens: TokenClient) -> None:
    pusher = make_principal(server, "pusher")
    assign(arm, pusher.object_id, ACR_PUSH, registry_id(server))
    refresh = tokens.refresh_token(principal_token(server, pusher))
    pull_only = tokens.access_token(refresh, "repository:upgrade/app:pull")
    r = tokens.v2("POST", "/v2/upgrade/app/blobs/uploads/", pull_only)
    assert r.status_code == 403 and r.json()["errors"][0]["code"] == "DENIED"
    challenge = parse_challenge(r.headers["WWW-Authenticate"])
    assert challenge["scope"] == "repository:upgrade/app:pull,push" and challenge["error"] == "insufficient_scope"
    upgraded = tokens.access_token(refresh, challenge["scope"])
    assert tokens.v2("POST", "/v2/upgrade/app/blobs/uploads/", upgraded).status_code == 202
    # AcrPush cannot delete: that is a genuine refusal, ACR's 401.
    r = tokens.v2("DELETE", "/v2/upgrade/app/manifests/v1", upgraded)
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    # A token for repository A used on repository B.
    r = tokens.v2("POST", "/v2/upgrade/other/blobs/uploads/", upgraded)
    assert r.status_code == 403 and "repository:upgrade/other:pull,push" in r.headers["WWW-Authenticate"]


def test_bad_requests_get_oci_errors(tokens: TokenClient, server: AcrLocal) -> None:
    http = server.session()
    r = http.post(tokens.base + "/oauth2/exchange", data={"grant_type": "password", "service": tokens.login_server})
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "INVALID_REQUEST"
    r = http.post(tokens.base + "/oauth2/token", data={"grant_type": "client_credentials"})
    assert r.status_code == 400
    r = tokens.basic_token(None, None, "repository:Bad:pull")
    assert r.status_code == 400 and "Bad" in r.json()["errors"][0]["message"]
    r = http.get(tokens.base + "/oauth2/token", params={"service": "other.example:443"})
    assert r.status_code == 400
    r = http.get(tokens.base + "/oauth2/token", headers={"Authorization": "Basic !!!"})
    assert r.status_code == 401
    bad = base64.b64encode(b"someone:secret").decode()
    r = http.get(tokens.base + "/oauth2/token", headers={"Authorization": f"Basic {bad}"})
    assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED"
    r = tokens.basic_token(REFRESH_TOKEN_USER, "not-a-token")
    assert r.status_code == 401
    assert http.get(tokens.base + "/oauth2/nothing").status_code == 404
    assert http.delete(tokens.base + "/oauth2/token").status_code == 405
