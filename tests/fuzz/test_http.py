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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
from hypothesis import given, reject
from hypothesis import strategies as st

from tests.fuzz import strategies as s
from tests.fuzz.conftest import count
from tests.harness import REFRESH_TOKEN_USER, AcrLocal, running
from tests.ocitools import config_blob, image, tar_layer
from tests.rawhttp import send

ARM_SCOPE = "https://management.azure.com/.default"


def clean(value: Any) -> Any:
    """What an HTTP client can send of a drawn value: text as UTF-8 (a lone surrogate becomes ``?``), recursively."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    return value


def latin1(value: str) -> str:
    """A header value ``requests`` can send: the UTF-8 bytes of ``value`` as latin-1 text."""
    return value.encode("utf-8", "replace").decode("latin-1")

GRAPH_SCOPE = "https://graph.microsoft.com/.default"
REPO = "fuzz/base"


@dataclass(repr=False)
class World:
    server: AcrLocal
    http: requests.Session
    refresh: str
    arm: str
    graph: str
    manifest: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)

    @property
    def login(self) -> str:
        return self.server.login_server()

    @property
    def registry(self) -> str:
        return f"https://{self.login}"

    @property
    def subscription(self) -> str:
        return str(self.server.status["subscriptionId"])

    @property
    def tenant(self) -> str:
        return str(self.server.status["tenantId"])

    def registry_token(self, scope: str) -> str | None:
        """An access token for ``scope`` as the local administrator, or ``None`` if the token service refuses
        the scope (a name that is not a repository name); remembered per scope."""
        if scope not in self.tokens:
            r = self.http.post(f"{self.registry}/oauth2/token", data={
                "grant_type": "refresh_token", "service": self.login, "refresh_token": self.refresh, "scope": scope})
            assert r.status_code < 500, r.text
            if r.status_code != 200:
                return None
            if len(self.tokens) > 500:
                self.tokens.clear()
            self.tokens[scope] = r.json()["access_token"]
        return self.tokens[scope]

    def __repr__(self) -> str:
        return f"World({self.server.shared})"

    def answered(self, send: Callable[[], requests.Response], kind: str) -> requests.Response:
        """The response to ``send()``, which must not be a 5xx; a request ``requests`` itself refuses to send (a
        header value it finds invalid, a URL it cannot parse) is rejected as an example, not sent."""
        try:
            r = send()
        except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
            reject()
        count(kind, r.status_code)
        assert r.status_code < 500, f"{r.request.method} {r.request.url} -> {r.status_code}: {r.text[:500]}"
        return r

    def catalog(self) -> list[str]:
        token = self.registry_token("registry:catalog:*")
        r = self.http.get(f"{self.registry}/v2/_catalog", params={"n": "1000"},
                          headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        return list(r.json()["repositories"])

    def tags(self, repo: str = REPO) -> list[str]:
        token = self.registry_token(f"repository:{repo}:pull")
        r = self.http.get(f"{self.registry}/v2/{repo}/tags/list", headers={"Authorization": f"Bearer {token}"})
        return list(r.json().get("tags") or []) if r.status_code == 200 else []

    def arm_state(self) -> tuple[list[str], list[str]]:
        auth = {"Authorization": f"Bearer {self.arm}"}
        base = f"{self.server.shared}/subscriptions/{self.subscription}"
        groups = self.http.get(f"{base}/resourcegroups", params={"api-version": "2022-09-01"}, headers=auth)
        resources = self.http.get(f"{base}/resources", params={"api-version": "2022-09-01"}, headers=auth)
        assert groups.status_code == 200 and resources.status_code == 200, (groups.text, resources.text)
        return (sorted(g["id"] for g in groups.json()["value"]), sorted(r["id"] for r in resources.json()["value"]))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with running(tmp_path_factory.mktemp("fuzz-http") / "data") as server:
        http = server.session()
        _, refresh = server.registry_credentials()
        w = World(server, http, refresh, server.admin_token(ARM_SCOPE), server.admin_token(GRAPH_SCOPE), {})
        # A repository with an image, so that mutated manifests may refer to blobs that exist.
        token = w.registry_token(f"repository:{REPO}:pull,push")
        auth = {"Authorization": f"Bearer {token}"}
        layer, config = tar_layer({"hello.txt": b"fuzz\n"}), config_blob()
        for blob in (config, layer):
            r = http.post(f"{w.registry}/v2/{REPO}/blobs/uploads/?digest={blob.digest}", data=blob.data,
                          headers=auth)
            assert r.status_code == 201, r.text
        built = image(config, [layer])
        r = http.put(f"{w.registry}/v2/{REPO}/manifests/v1", data=built.body,
                     headers={**auth, "Content-Type": built.media_type})
        assert r.status_code == 201, r.text
        w.manifest = json.loads(built.body)
        yield w


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
    log = world.server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log, log[-6000:]
