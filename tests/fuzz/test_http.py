"""The same inputs over HTTP, against a running server of the module's own: the registry's data plane and
token service, ARM, Microsoft Graph and Entra's token endpoint, with and without valid credentials.

Properties: never a 5xx; a refused write changes nothing (the registry's repositories and the pushed
repository's tags, ARM's resource groups and resources are the same before and after); and, at the end, the
server's log holds no traceback and nothing at ERROR level."""

from __future__ import annotations

import base64
import urllib.parse
import uuid
from typing import Any

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


def test_the_server_logged_no_error(world: World) -> None:
    assert_logged_no_error(world)
