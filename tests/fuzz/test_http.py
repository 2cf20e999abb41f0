"""The same inputs over HTTP, against a running server of the module's own: the registry's data plane and
token service, ARM, Microsoft Graph and Entra's token endpoint, with and without valid credentials.

Properties: never a 5xx; a refused write changes nothing (the registry's repositories and the pushed
repository's tags, ARM's resource groups and resources are the same before and after); and, at the end, the
server's log holds no traceback and nothing at ERROR level."""

from __future__ import annotations

import base64
import json
import urllib.parse
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fuzz import strategies as s
from tests.fuzz.conftest import ARM_SCOPE, REPO, World, assert_logged_no_error, clean, count, latin1
from tests.harness import REFRESH_TOKEN_USER
from tests.rawhttp import send

# -- the registry ------------------------------------------------------------------------------------------------

registry_kinds = st.sampled_from(["manifests", "blobs", "tags", "referrers", "blobs/uploads", "_tags", "_manifests"])
queries = st.dictionaries(st.sampled_from(["n", "last", "digest", "mount", "from", "artifactType", "orderby",
                                           "api-version", "service", "scope"]),
                          st.one_of(s.junk, s.digests, s.repository_names, st.integers(-1, 10**15).map(str)),
                          max_size=3)
methods = st.sampled_from(["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"])
WRITES = ("PUT", "PATCH", "POST", "DELETE")


@given(methods, s.repository_names, registry_kinds, s.references, queries, st.binary(max_size=64),
       st.dictionaries(st.sampled_from(["Content-Range", "Content-Type", "Range", "Accept", "If-None-Match"]),
                       st.one_of(s.content_ranges, s.junk).map(lambda v: v.encode("utf-8", "replace")
                                                               .decode("latin-1")), max_size=2),
       st.booleans())
def test_registry_requests(world: World, method: str, name: str, kind: str, ref: str, query: dict[str, str],
                           body: bytes, headers: dict[str, str], authenticated: bool) -> None:
    name, ref, query = clean(name), clean(ref), clean(query)
    prefix = "/acr/v1/" if kind.startswith("_") else "/v2/"
    path = f"{prefix}{urllib.parse.quote(name, safe='/')}/{kind}/{urllib.parse.quote(ref, safe=':')}"
    if authenticated:
        token = world.registry_token(f"repository:{name}:pull,push,delete,metadata_read,metadata_write")
        if token is not None:
            headers = {**headers, "Authorization": f"Bearer {token}"}
    before = (world.catalog(), world.tags()) if method in WRITES else None
    r = world.answered(lambda: world.http.request(method, world.registry + path, params=query, data=body,
                                                  headers=headers, allow_redirects=False), "registry")
    if before is not None and r.status_code >= 400:
        assert (world.catalog(), world.tags()) == before, f"{method} {path} was refused but changed something"


MANIFEST_TYPES = ["application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json", "application/json", "text/plain"]


@given(st.data(), st.sampled_from(MANIFEST_TYPES), st.one_of(st.just("fuzzed"), s.references))
def test_manifest_pushes(world: World, data: st.DataObject, content_type: str, reference: str) -> None:
    reference = clean(reference)
    body = data.draw(s.mutated_documents(world.manifest))
    token = world.registry_token(f"repository:{REPO}:pull,push")
    before = (world.catalog(), world.tags())
    r = world.answered(lambda: world.http.put(f"{world.registry}/v2/{REPO}/manifests/{urllib.parse.quote(reference)}",
                                      data=body, headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": content_type}), "manifest push")
    if r.status_code >= 400:
        assert (world.catalog(), world.tags()) == before


@given(s.content_ranges, st.binary(max_size=64), s.digests, st.booleans())
def test_chunked_uploads(world: World, content_range: str, chunk: bytes, digest: str, close: bool) -> None:
    token = world.registry_token("repository:fuzz/uploads:pull,push")
    auth = {"Authorization": f"Bearer {token}"}
    r = world.answered(lambda: world.http.post(f"{world.registry}/v2/fuzz/uploads/blobs/uploads/", headers=auth),
                       "upload")
    location = world.registry + r.headers["Location"]
    world.answered(lambda: world.http.patch(location, data=chunk, headers={
        **auth, "Content-Range": content_range.encode("utf-8", "replace").decode("latin-1"),
        "Content-Type": "application/octet-stream"}), "upload chunk")
    if close:
        world.answered(lambda: world.http.put(location, params={"digest": digest}, headers=auth), "upload close")
    else:
        world.answered(lambda: world.http.get(location, headers=auth), "upload status")
        world.answered(lambda: world.http.delete(location, headers=auth), "upload cancel")


basic_values = st.one_of(
    st.builds(lambda u, p: base64.b64encode(f"{u}:{p}".encode("utf-8", "replace")).decode(),
              st.one_of(st.just(REFRESH_TOKEN_USER), s.junk), s.junk),
    s.junk)


@given(st.sampled_from(["GET", "POST"]), st.sampled_from(["/oauth2/token", "/oauth2/exchange"]),
       st.dictionaries(st.sampled_from(["grant_type", "service", "scope", "refresh_token", "access_token",
                                        "username", "password", "tenant"]),
                       st.one_of(s.junk, s.registry_scopes, st.sampled_from(["refresh_token", "access_token",
                                                                             "password"])), max_size=5),
       st.one_of(st.none(), basic_values))
def test_registry_token_service(world: World, method: str, path: str, fields: dict[str, str],
                                basic: str | None) -> None:
    headers = {"Authorization": latin1(f"Basic {basic}")} if basic is not None else {}
    kwargs: dict[str, Any] = {"params": clean(fields)} if method == "GET" else {"data": clean(fields)}
    world.answered(lambda: world.http.request(method, world.registry + path, headers=headers, **kwargs),
                   "token service")


@given(st.sampled_from(["Authorization", "X-IDENTITY-HEADER", "Content-Type", "Content-Range", "Accept",
                        "x-ms-client-request-id", "client-request-id", "Host"]),
       st.binary(min_size=1, max_size=30).filter(lambda b: b"\r" not in b and b"\n" not in b),
       st.sampled_from(["registry", "shared"]),
       st.sampled_from(["/v2/", f"/v2/{REPO}/tags/list", "/oauth2/token?service=x", "/v1.0/me",
                        "/subscriptions?api-version=2022-12-01", "/common/discovery/instance", "/healthz"]))
def test_raw_header_bytes(world: World, name: str, value: bytes, where: str, path: str) -> None:
    """Header values no client library would send (any bytes but CR and LF), on every listener."""
    port = int(world.server.registry()["port"] if where == "registry" else world.server.shared.rsplit(":", 1)[1])
    headers = [(name.encode(), value)] if name != "Host" else []
    r = send(port, world.server.ca, "GET", path, headers=headers, timeout=30)
    count("raw header", r.status)
    assert r.status < 500, (name, value, path, r.body[:300])


# -- ARM, Graph and Entra --------------------------------------------------------------------------------------

RESOURCE_GROUP = {"location": "westus", "tags": {"a": "b"}}
REGISTRY = {"location": "westus", "sku": {"name": "Standard"}, "properties": {"adminUserEnabled": False}}
ROLE_ASSIGNMENT = {"properties": {"roleDefinitionId": "/providers/Microsoft.Authorization/roleDefinitions/"
                                  "7f951dda-4ed3-4680-a7ca-43fe172d538d",
                                  "principalId": str(uuid.UUID(int=1)), "principalType": "ServicePrincipal"}}
IDENTITY = {"location": "westus"}
api_versions = st.one_of(st.sampled_from(["2022-09-01", "2023-07-01", "2022-04-01", "2023-01-31", "2019-05-01"]),
                         s.junk)


@given(st.sampled_from(["GET", "PUT", "PATCH", "DELETE", "POST"]), st.data(), api_versions,
       st.dictionaries(st.sampled_from(["$filter", "$top", "$skiptoken", "$expand"]),
                       st.one_of(s.odata_filters, s.junk), max_size=2),
       st.one_of(st.none(), st.sampled_from([RESOURCE_GROUP, REGISTRY, ROLE_ASSIGNMENT, IDENTITY])))
def test_arm_requests(world: World, method: str, data: st.DataObject, version: str, query: dict[str, str],
                      valid: dict[str, Any] | None) -> None:
    path = clean(data.draw(st.one_of(s.arm_ids(world.subscription), s.arm_ids()).filter(
        lambda p: "acrlocal" not in p.lower())))
    path = path if path.startswith("/") else "/" + path
    query = clean(query)
    version = clean(version)
    body = data.draw(s.mutated_documents(valid)) if valid is not None else data.draw(st.binary(max_size=64))
    before = world.arm_state() if method != "GET" else None
    r = world.answered(lambda: world.http.request(method, world.server.shared + urllib.parse.quote(path, safe="/()"),
                                          params={"api-version": version, **query}, data=body,
                                          headers={"Authorization": f"Bearer {world.arm}",
                                                   "Content-Type": "application/json"}), "arm")
    if before is not None and r.status_code >= 400:
        assert world.arm_state() == before, f"{method} {path} was refused but changed ARM's state"


graph_paths = st.builds(lambda coll, ident, tail: "/v1.0/" + "/".join(p for p in (coll, ident, tail) if p),
                        st.sampled_from(["applications", "servicePrincipals", "users", "groups", "me",
                                         "directoryObjects", "organization"]),
                        st.one_of(st.just(""), s.guids, s.junk),
                        st.sampled_from(["", "owners", "addPassword", "removePassword", "addKey",
                                         "federatedIdentityCredentials", "members", "$ref", "memberOf"]))
GRAPH_BODIES = [{"displayName": "fuzz"}, {"passwordCredential": {"displayName": "x"}},
                {"keyCredential": {"type": "AsymmetricX509Cert", "usage": "Verify", "key": "AAAA"},
                 "passwordCredential": None, "proof": "x.y.z"}]


@given(st.sampled_from(["GET", "POST", "PATCH", "DELETE"]), graph_paths, st.data(),
       st.dictionaries(st.sampled_from(["$filter", "$top", "$select", "$skiptoken"]),
                       st.one_of(s.odata_filters, s.junk), max_size=2))
def test_graph_requests(world: World, method: str, path: str, data: st.DataObject, query: dict[str, str]) -> None:
    body = data.draw(s.mutated_documents(data.draw(st.sampled_from(GRAPH_BODIES))))
    path, query = clean(path), clean(query)
    world.answered(lambda: world.http.request(method, world.server.shared + urllib.parse.quote(path, safe="/$"),
                                      params=query, data=body, headers={"Authorization": f"Bearer {world.graph}",
                                                                        "Content-Type": "application/json"}),
                   "graph")


@given(st.sampled_from(["oauth2/v2.0/token", "oauth2/token", "oauth2/v2.0/devicecode"]),
       st.one_of(st.none(), s.junk),
       st.dictionaries(st.sampled_from(["grant_type", "client_id", "client_secret", "scope", "resource",
                                        "client_assertion", "client_assertion_type", "refresh_token", "username",
                                        "password", "code", "device_code", "code_verifier", "redirect_uri"]),
                       st.one_of(s.junk, st.sampled_from(["client_credentials", "password", "refresh_token",
                                                          "authorization_code", ARM_SCOPE,
                                                          "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                                                          "a.b.c"])), max_size=6))
def test_entra_token_endpoint(world: World, path: str, tenant: str | None, form: dict[str, str]) -> None:
    where = urllib.parse.quote(clean(tenant) if tenant is not None else world.tenant, safe="")
    world.answered(lambda: world.http.post(f"{world.server.shared}/{where}/{path}", data=clean(form)), "entra")


# -- the registry's metadata (/acr/v1/), its token exchange, and Graph's writes on people ---------------------------

ATTRIBUTES = ["deleteEnabled", "writeEnabled", "listEnabled", "readEnabled"]
ALL_ENABLED = dict.fromkeys(ATTRIBUTES, True)


def acr_v1(world: World, method: str, path: str, **kwargs: Any) -> Any:
    token = world.registry_token(f"repository:{REPO}:pull,metadata_read,metadata_write")
    return world.answered(lambda: world.http.request(method, f"{world.registry}/acr/v1/{path}", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"}, **kwargs), "acr v1")


def acr_v1_state(world: World) -> Any:
    """What a PATCH may change: the attributes of the repository, of tag v1 and of its manifest."""
    digest = acr_v1(world, "GET", f"{REPO}/_tags/v1").json()["tag"]["digest"]
    return [acr_v1(world, "GET", path).json() for path in (REPO, f"{REPO}/_tags/v1", f"{REPO}/_manifests/{digest}")]


@given(st.data(), st.sampled_from(["repository", "tag", "manifest", "catalog", "tags", "manifests"]),
       st.dictionaries(st.sampled_from(["n", "last", "orderby", "digest"]),
                       st.one_of(st.sampled_from(["timedesc", "timeasc", "TimeDesc", "1", "0", "v1", "-1"]),
                                 st.integers(-1, 10**12).map(str), s.tags, s.digests, s.junk), max_size=3))
def test_acr_metadata(world: World, data: st.DataObject, what: str, query: dict[str, str]) -> None:
    """/acr/v1/: the catalog and listings with near-valid queries, and PATCH of the changeable attributes with
    near-valid bodies (the attributes with booleans, one of them odd, other JSON, cut bytes); a refused PATCH
    changes nothing, and every attribute is set back after each example."""
    digest = acr_v1(world, "GET", f"{REPO}/_tags/v1").json()["tag"]["digest"]
    path = {"repository": REPO, "tag": f"{REPO}/_tags/{data.draw(st.one_of(st.just('v1'), s.tags))}",
            "manifest": f"{REPO}/_manifests/{data.draw(st.one_of(st.just(digest), s.digests))}",
            "catalog": "_catalog", "tags": f"{REPO}/_tags", "manifests": f"{REPO}/_manifests"}[what]
    path = urllib.parse.quote(clean(path), safe="/:")
    if what in ("catalog", "tags", "manifests"):
        r = acr_v1(world, "GET", path, params=clean(query))
        if r.status_code >= 400:
            assert isinstance(r.json()["errors"][0]["code"], str), r.text
        return
    valid = {k: data.draw(st.booleans()) for k in data.draw(st.lists(st.sampled_from(
        [*ATTRIBUTES, "teleportEnabled"]), min_size=1, unique=True))}
    body = data.draw(st.one_of(st.just(json.dumps(valid).encode()),
                               s.one_odd_value(valid).map(lambda d: json.dumps(d).encode()),
                               s.mutated_documents(valid)))
    before = acr_v1_state(world)
    try:
        r = acr_v1(world, "PATCH", path, data=body)
        if r.status_code >= 400:
            assert isinstance(r.json()["errors"][0]["code"], str), r.text
            assert acr_v1_state(world) == before, f"a refused PATCH of {path} changed something: {r.text}"
    finally:
        for undo in (REPO, f"{REPO}/_tags/v1", f"{REPO}/_manifests/{digest}"):
            assert acr_v1(world, "PATCH", undo, json=ALL_ENABLED).status_code == 200


@given(st.data(), st.sampled_from(["access_token", "access_token_refresh_token", "refresh_token", "password"]))
def test_registry_token_exchange(world: World, data: st.DataObject, grant: str) -> None:
    """/oauth2/exchange with near-valid forms: Entra tokens of every audience the world holds, mutated; the
    registry's own refresh token; service and tenant right, wrong or missing."""
    form = {"grant_type": grant,
            "service": data.draw(st.one_of(st.just(world.login), st.just(world.login.upper()), s.junk)),
            "tenant": data.draw(st.one_of(st.just(world.tenant), s.guids, s.junk)),
            "access_token": data.draw(st.one_of(st.sampled_from([world.arm, world.graph, world.refresh]),
                                                s.mutated(st.sampled_from([world.arm, world.graph])), s.junk)),
            "refresh_token": data.draw(st.one_of(st.just(world.refresh), s.mutated(st.just(world.refresh)), s.junk))}
    for key in data.draw(st.lists(st.sampled_from(sorted(form)), max_size=2, unique=True)):
        del form[key]
    r = world.answered(lambda: world.http.post(f"{world.registry}/oauth2/exchange", data=clean(form)), "exchange")
    if r.status_code == 200:
        assert form.get("access_token") in (world.arm, world.graph, world.refresh) or \
            form.get("refresh_token") == world.refresh, form
    else:
        assert r.json(), r.text


def graph(world: World, method: str, path: str, body: bytes | None = None) -> Any:
    return world.answered(lambda: world.http.request(method, f"{world.server.shared}/v1.0{path}", data=body, headers={
        "Authorization": f"Bearer {world.graph}", "Content-Type": "application/json"}), "graph write")


@pytest.fixture(scope="module")
def people(world: World) -> dict[str, str]:
    """A user and a group of the world's tenant, for the Graph writes to change."""
    user = graph(world, "POST", "/users", json.dumps({
        "accountEnabled": True, "displayName": "Fuzz", "mailNickname": "fuzz", "userPrincipalName":
        f"fuzz-{uuid.uuid4().hex[:6]}@{world.domain}", "passwordProfile": {"password": "Str0ng-Passw0rd!"}}).encode())
    group = graph(world, "POST", "/groups", json.dumps({
        "displayName": "fuzz", "mailNickname": "fuzz", "mailEnabled": False, "securityEnabled": True}).encode())
    assert user.status_code == 201 and group.status_code == 201, (user.text, group.text)
    return {"user": user.json()["id"], "group": group.json()["id"]}


def _user_body(world: World) -> dict[str, Any]:
    return {"accountEnabled": True, "displayName": "Fuzz Two", "mailNickname": "fuzz2", "givenName": "F",
            "surname": "Z", "jobTitle": "t", "usageLocation": "US",
            "userPrincipalName": f"fuzz2-{uuid.uuid4().hex[:6]}@{world.domain}",
            "passwordProfile": {"password": "An0ther-Passw0rd!", "forceChangePasswordNextSignIn": False}}


GROUP_BODY = {"displayName": "fuzz2", "mailNickname": "fuzz2", "mailEnabled": False, "securityEnabled": True,
              "description": "d"}


@given(st.data(), st.sampled_from(["create user", "update user", "create group", "update group", "add member",
                                   "add owner"]))
def test_graph_writes_on_people(world: World, people: dict[str, str], data: st.DataObject, what: str) -> None:
    """Users and groups created and updated, members and owners added, with valid bodies of which one value is
    now and then odd, and mutated documents; a refused update changes nothing, and the answer is Graph's."""
    ref = {"@odata.id": f"{world.server.shared}/v1.0/directoryObjects/{people['user']}"}
    method, path, valid = {
        "create user": ("POST", "/users", _user_body(world)),
        "update user": ("PATCH", f"/users/{people['user']}", {k: v for k, v in _user_body(world).items()
                                                               if k != "userPrincipalName"}),
        "create group": ("POST", "/groups", GROUP_BODY),
        "update group": ("PATCH", f"/groups/{people['group']}", GROUP_BODY),
        "add member": ("POST", f"/groups/{people['group']}/members/$ref", ref),
        "add owner": ("POST", f"/groups/{people['group']}/owners/$ref", ref)}[what]
    if what.startswith("update"):
        valid = {k: v for k, v in valid.items() if data.draw(st.booleans())} or {"displayName": "x"}
    body = data.draw(st.one_of(st.just(valid), s.one_odd_value(valid), s.one_odd_value(valid)).map(
        lambda d: json.dumps(clean(d)).encode()) | s.mutated_documents(valid))
    target = f"/users/{people['user']}" if what == "update user" else f"/groups/{people['group']}"
    before = graph(world, "GET", target).json() if what.startswith("update") else None
    r = graph(world, method, path, body)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), r.text
        if before is not None:
            assert graph(world, "GET", target).json() == before, f"a refused {what} changed it: {r.text}"
    elif what == "update user" and b"passwordProfile" in body:
        pass  # (a new password: the user's sign-ins start again; nothing here depends on them)


@pytest.fixture(scope="module")
def application(world: World) -> dict[str, str]:
    """An application of the world's tenant and its service principal, for Graph's writes to change."""
    app = graph(world, "POST", "/applications", json.dumps({"displayName": "fuzz-app"}).encode())
    assert app.status_code == 201, app.text
    sp = graph(world, "POST", "/servicePrincipals", json.dumps({"appId": app.json()["appId"]}).encode())
    assert sp.status_code == 201, sp.text
    return {"id": app.json()["id"], "appId": app.json()["appId"], "sp": sp.json()["id"]}


APPLICATION_BODY: dict[str, Any] = {
    "displayName": "fuzz-app", "signInAudience": "AzureADMultipleOrgs", "isFallbackPublicClient": True,
    "identifierUris": ["api://fuzz-app"], "tags": ["t"], "notes": "n",
    "web": {"redirectUris": ["https://localhost/cb"], "homePageUrl": "https://localhost/",
            "implicitGrantSettings": {"enableIdTokenIssuance": True}},
    "publicClient": {"redirectUris": ["http://localhost"]}, "spa": {"redirectUris": ["https://localhost/spa"]},
    "requiredResourceAccess": [{"resourceAppId": "00000003-0000-0000-c000-000000000000", "resourceAccess": [
        {"id": "e1fe6dd8-ba31-4d61-89e7-88639da4683d", "type": "Scope"}]}],
    "api": {"requestedAccessTokenVersion": 2, "oauth2PermissionScopes": []},
    "appRoles": [{"allowedMemberTypes": ["Application"], "description": "d", "displayName": "r", "isEnabled": True,
                  "id": "11111111-1111-1111-1111-111111111111", "value": "r.all"}],
    "optionalClaims": {"idToken": [{"name": "email"}]}, "groupMembershipClaims": "SecurityGroup"}
SP_BODY: dict[str, Any] = {"accountEnabled": True, "appRoleAssignmentRequired": False, "tags": ["t"], "notes": "n",
                           "homepage": "https://localhost/", "replyUrls": ["https://localhost/cb"],
                           "notificationEmailAddresses": ["a@b.example"], "description": "d"}
FIC_BODY: dict[str, Any] = {"name": "fic1", "issuer": "https://token.actions.githubusercontent.com",
                            "subject": "repo:o/r:ref:refs/heads/main", "audiences": ["api://AzureADTokenExchange"],
                            "description": "d"}


@given(st.data(), st.sampled_from(["update application", "update service principal", "add password",
                                   "remove password", "create credential", "update credential"]))
def test_graph_writes_on_applications(world: World, application: dict[str, str], data: st.DataObject,
                                      what: str) -> None:
    """An application and its service principal updated, passwords added and removed, federated credentials
    created and updated, with valid bodies one of whose values is odd; then the application is read, listed,
    and a person starts signing in to it (which reads what was written)."""
    app, sp = f"/applications/{application['id']}", f"/servicePrincipals/{application['sp']}"
    method, path, valid = {
        "update application": ("PATCH", app, APPLICATION_BODY),
        "update service principal": ("PATCH", sp, SP_BODY),
        "add password": ("POST", f"{app}/addPassword", {"passwordCredential": {
            "displayName": "p", "endDateTime": "2099-01-01T00:00:00Z"}}),
        "remove password": ("POST", f"{sp}/removePassword", {"keyId": str(uuid.uuid4())}),
        "create credential": ("POST", f"{app}/federatedIdentityCredentials", FIC_BODY),
        "update credential": ("PATCH", f"{app}/federatedIdentityCredentials/fic1", FIC_BODY)}[what]
    if method == "PATCH":
        valid = {k: v for k, v in valid.items() if data.draw(st.booleans())} or {"notes": "x"}
    body = data.draw(st.one_of(st.just(valid), s.one_odd_value(valid), s.one_odd_value(valid)).map(
        lambda d: json.dumps(clean(d)).encode()) | s.mutated_documents(valid))
    before = graph(world, "GET", app).json() if method == "PATCH" else None
    r = graph(world, method, path, body)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), r.text
        if before is not None and path == app:
            assert graph(world, "GET", app).json() == before, f"a refused {what} changed it: {r.text}"
    for read in (app, sp, data.draw(st.sampled_from(["/applications", f"{app}/federatedIdentityCredentials"]))):
        assert graph(world, "GET", read).status_code == 200
    tenant = data.draw(st.sampled_from([world.tenant, "organizations"]))
    started = world.answered(lambda: world.http.post(f"{world.server.shared}/{tenant}/oauth2/v2.0/devicecode",
                                                     data={"client_id": application["appId"], "scope": "openid"}),
                             "devicecode")
    assert started.status_code in (200, 400), started.text


def test_the_server_logged_no_error(world: World) -> None:
    assert_logged_no_error(world)
