"""Every parser that faces the network, fuzzed without a server: each either accepts its input or refuses it with
its documented error (a ``ValueError`` of acrlocal's, or the protocol error its room answers). Anything else
(``TypeError``, ``KeyError``, ``UnicodeError``, ``RecursionError``...) would be a 500 in production."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from multidict import CIMultiDict

from acrlocal import inbound
from acrlocal.arm import odata
from acrlocal.arm.errors import ArmError
from acrlocal.arm.graph import core as graph_core
from acrlocal.arm.graph.errors import GraphError
from acrlocal.arm.paths import parse_path as parse_arm_path
from acrlocal.arm.templates import Deferred, Target, TemplateError, expressions, jsonc, prepare
from acrlocal.identity.bootstrap import bootstrap
from acrlocal.identity.directory import Directory
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.tokens import InvalidToken, TokenIssuer, pinned_header
from acrlocal.rbac.conditions import parse_condition
from acrlocal.rbac.errors import InvalidCondition
from acrlocal.rbac.errors import InvalidScope as InvalidArmScope
from acrlocal.rbac.scopes import parse_scope
from acrlocal.registry import names, token_service
from acrlocal.registry.errors import RegistryError
from acrlocal.registry.manifests import parse_manifest
from acrlocal.registry.paths import parse_path as parse_registry_path
from acrlocal.registry.scope_maps import InvalidScopeMapAction, parse_action
from acrlocal.registry.scopes import InvalidScope, parse_scopes
from acrlocal.registry.token_codec import ISSUER, InvalidRegistryToken, RegistryTokens
from acrlocal.registry.token_keys import TokenKeys
from acrlocal.registry.wire import page_size, parse_content_range
from acrlocal.storage.digest import Digest, DigestError
from acrlocal.storage.sql import open_engine
from tests.fuzz import arm_templates
from tests.fuzz import strategies as s
from tests.fuzz.conftest import count


def refuses_only_with(errors: tuple[type[BaseException], ...], parse: Callable[[], Any], kind: str) -> Any:
    count(kind)
    try:
        return parse()
    except errors:
        return None


@given(s.repository_names)
def test_repository_names(text: str) -> None:
    name = refuses_only_with((RegistryError,), lambda: names.check_repository(text), "repository")
    if name is not None:
        assert name == text and ".." not in name.split("/") and not name.startswith("/")


@given(s.tags)
def test_tags(text: str) -> None:
    refuses_only_with((RegistryError,), lambda: names.check_tag(text), "tag")


@given(s.digests)
def test_digests(text: str) -> None:
    digest = refuses_only_with((DigestError,), lambda: Digest.parse(text), "digest")
    if digest is not None:
        assert str(digest) == text and "/" not in str(digest)
    refuses_only_with((RegistryError,), lambda: names.parse_digest(text), "digest")


@given(s.references)
def test_references(text: str) -> None:
    refuses_only_with((RegistryError,), lambda: names.parse_reference(text), "reference")


@given(st.one_of(s.repository_names, s.junk), st.sampled_from(["manifests", "blobs", "tags", "referrers", "_tags",
                                                                "_manifests", "uploads", ""]), s.references)
def test_registry_paths(name: str, kind: str, ref: str) -> None:
    for raw in (f"/v2/{name}/{kind}/{ref}", f"/acr/v1/{name}/{kind}/{ref}", f"/v2/{name}/blobs/uploads/{ref}"):
        refuses_only_with((), lambda raw=raw: parse_registry_path(raw), "registry path")


@given(s.content_ranges)
def test_content_range(text: str) -> None:
    found = refuses_only_with((RegistryError,), lambda: parse_content_range(text), "content range")
    if found is not None:
        assert 0 <= found[0] <= found[1]


@given(st.one_of(st.none(), s.junk, st.integers(-5, 10**20).map(str), st.text(alphabet="0123456789¹²³٣", max_size=4)))
@example("¹")  # str.isdigit() is true for superscripts, which int() refuses: was a 500 for /v2/_catalog?n=¹
def test_page_size(text: str | None) -> None:
    n = refuses_only_with((RegistryError,), lambda: page_size(text, 1000), "page size")
    if n is not None:
        assert 0 <= n <= 1000


@given(st.lists(s.registry_scopes, max_size=4))
def test_registry_scopes(values: list[str]) -> None:
    refuses_only_with((InvalidScope,), lambda: parse_scopes(values), "scope")


@given(s.near(st.builds(lambda n, a: f"repositories/{n}/{a}", s.repository_names,
                        st.sampled_from(["content/read", "content/write", "content/delete", "metadata/read"]))))
def test_scope_map_actions(text: str) -> None:
    refuses_only_with((InvalidScopeMapAction,), lambda: parse_action(text), "scope map action")


@given(st.one_of(s.arm_ids(), s.junk))
def test_arm_paths_and_scopes(path: str) -> None:
    refuses_only_with((ArmError,), lambda: parse_arm_path(path), "arm id")
    refuses_only_with((InvalidArmScope,), lambda: parse_scope(path), "arm scope")


@given(s.odata_filters)
def test_odata_filters(text: str) -> None:
    refuses_only_with((ArmError,), lambda: odata.parse_filter(text, fields=("principalId", "roleName"),
                                                              functions=("atScope", "assignedTo")), "arm filter")
    refuses_only_with((GraphError,), lambda: graph_core.parse_filter(text), "graph filter")


@given(s.near(st.builds(lambda r, n: f"@Resource[Microsoft.ContainerRegistry/registries/repositories:name] {r} '{n}'",
                        st.sampled_from(["StringEquals", "StringLike", "StringNotEquals", "ForAnyOfAnyValues:"]),
                        s.repository_names)))
def test_role_assignment_conditions(text: str) -> None:
    refuses_only_with((InvalidCondition,), lambda: parse_condition(f"(({text}))", "2.0"), "condition")


@given(s.near(st.builds(lambda f, a: f"{f}({a})", st.sampled_from(["concat", "parameters", "resourceId", "json",
                                                                   "variables", "format", "base64ToJson"]),
                        st.text(max_size=30))))
def test_template_expressions(text: str) -> None:
    refuses_only_with((TemplateError,), lambda: expressions.parse(text), "template expression")


@given(st.one_of(st.binary(max_size=200), s.json_values().map(lambda v: json.dumps(v).encode()),
                 st.integers(0, 3000).map(lambda n: b"[" * n + b"]" * n)))
def test_json_bodies(raw: bytes) -> None:
    refuses_only_with((inbound.MalformedRequest,), lambda: inbound.parse_json(raw), "json")
    refuses_only_with((TemplateError,), lambda: jsonc.loads(raw), "jsonc")


class TemplateFacts:
    """What a template reads from outside, as :class:`~acrlocal.arm.deployments.DeploymentEnvironment` answers:
    fixed facts; a resource that is not there is ARM's ``ResourceNotFound``, or (``defer``, a what-if) unknown."""

    def __init__(self, defer: bool) -> None:
        self.defer = defer

    def subscription(self) -> dict[str, Any]:
        return {"id": f"/subscriptions/{SUB}", "subscriptionId": SUB, "tenantId": SUB, "displayName": "s"}

    def resource_group(self) -> dict[str, Any]:
        return {"id": f"/subscriptions/{SUB}/resourceGroups/fuzz-deploy", "name": "fuzz-deploy",
                "location": "westus", "properties": {"provisioningState": "Succeeded"}}

    def tenant(self) -> dict[str, Any]:
        return {"tenantId": SUB, "displayName": "t"}

    def deployment(self) -> dict[str, Any]:
        return {"name": "fuzz", "properties": {"mode": "Incremental"}}

    def environment(self) -> dict[str, Any]:
        return {"name": "acrlocal", "suffixes": {"acrLoginServer": ".localhost"}}

    def reference(self, resource_id: str, api_version: str | None, full: bool) -> Any:
        if self.defer:
            raise Deferred(resource_id)
        raise TemplateError(f"The Resource '{resource_id}' was not found.", code="ResourceNotFound")

    def invoke(self, resource_id: str, action: str, api_version: str | None, body: Any) -> Any:
        return {"keys": [{"value": "k"}], "passwords": [{"value": "p"}]}

    def now(self) -> datetime:
        return datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


SUB = "00000000-0000-0000-0000-0000000000aa"


@given(st.data(), st.booleans(), st.booleans())
def test_templates(data: st.DataObject, at_subscription: bool, defer: bool) -> None:
    """A deployment's template and parameters, planned, each resource's body and the outputs evaluated: a plan or
    a :class:`TemplateError` (:class:`Deferred` for what a what-if cannot know yet), nothing else."""
    body = data.draw(arm_templates.deployment_bodies(subscription=at_subscription))
    template, parameters = body["properties"]["template"], body["properties"]["parameters"]
    if data.draw(st.booleans()):  # a piece anywhere in it dropped or replaced by other JSON
        try:
            template = json.loads(data.draw(s.mutated_documents(template)))
        except ValueError:
            return
    target = Target(SUB, None if at_subscription else "fuzz-deploy")
    plan = refuses_only_with((TemplateError,), lambda: prepare(template, parameters, target, TemplateFacts(defer)),
                             "template")
    if plan is None:
        return
    refuses_only_with((TemplateError,), plan.waves, "template waves")
    for resource in plan.deployable:
        refuses_only_with((TemplateError,), lambda r=resource: plan.body(r, keep_unknown=True), "template body")
        refuses_only_with((TemplateError, Deferred), lambda r=resource: plan.body(r), "template body")
    refuses_only_with((TemplateError, Deferred), plan.outputs, "template outputs")


IMAGE = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                    "digest": "sha256:" + "4" * 64},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 10,
                     "digest": "sha256:" + "5" * 64, "annotations": {"a": "b"}}],
         "subject": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 3,
                     "digest": "sha256:" + "6" * 64},
         "annotations": {"org.opencontainers.image.created": "2024-01-01T00:00:00Z"}}
INDEX = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
         "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 7,
                        "digest": "sha256:" + "7" * 64, "platform": {"architecture": "amd64", "os": "linux"}}]}
MANIFEST_TYPES = [None, "application/json", "application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.v2+json",
                  "application/vnd.docker.distribution.manifest.list.v2+json", "text/plain; charset=\udcff"]


@given(st.one_of(s.mutated_documents(IMAGE), s.mutated_documents(INDEX)), st.sampled_from(MANIFEST_TYPES))
def test_manifests(body: bytes, content_type: str | None) -> None:
    parsed = refuses_only_with((RegistryError,), lambda: parse_manifest(body, content_type), "manifest")
    if parsed is not None:
        assert all(isinstance(d, Digest) for d in parsed.blobs + parsed.manifests)


def request_with(headers: list[tuple[str, str]]) -> Any:
    """What the header readers look at: header values as aiohttp decodes them (UTF-8 with surrogateescape)."""
    return SimpleNamespace(headers=CIMultiDict(headers))


header_values = st.one_of(
    st.builds(lambda scheme, rest: f"{scheme} {rest}", st.sampled_from(["Bearer", "bearer", "Basic", "basic", "Foo"]),
              s.junk),
    st.builds(lambda scheme, user, pw: f"{scheme} " + base64.b64encode(f"{user}:{pw}".encode("utf-8", "replace"))
              .decode(), st.sampled_from(["Basic", "basic"]), s.junk, s.junk),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", "surrogateescape")),
    s.junk)


@given(header_values)
def test_authorization_headers(value: str) -> None:
    request = request_with([("Authorization", value)])
    refuses_only_with((inbound.MalformedRequest,), lambda: inbound.authorization(request), "authorization")
    refuses_only_with((RegistryError,), lambda: token_service._basic(request), "basic")


# -- tokens ------------------------------------------------------------------------------------------------------


class Keys:
    def __init__(self, root: Path) -> None:
        engine = open_engine(f"sqlite:///{root / 'fuzz.db'}")
        self.directory = Directory(engine)
        self.admin = bootstrap(self.directory, root)
        self.ring = KeyRing(engine)
        self.issuer = TokenIssuer(self.ring, "https://localhost:8443")
        self.entra_key = self.ring.active(self.admin.tenantId)
        self.registry = RegistryTokens(TokenKeys(engine))
        self.registry_key = self.registry.keys.active()


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keys]:
    yield Keys(tmp_path_factory.mktemp("fuzz-keys"))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


jwt_headers = st.one_of(st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jwk", "jku", "x5c", "crit", "x5t"]),
                                        st.one_of(s.junk, st.sampled_from(["RS256", "none", "HS256"]),
                                                  s.json_values(5))),
                        s.json_values(5))


@given(jwt_headers, s.json_values(10), st.binary(max_size=40), s.junk)
def test_unsigned_and_forged_jwts(keys: Keys, header: Any, claims: Any, signature: bytes, junk: str) -> None:
    """Tokens with any header and claims and a signature of no key of ours, and junk that is no JWT at all."""
    for token in (f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(signature)}",
                  junk):
        refuses_only_with((InvalidToken,), lambda token=token: pinned_header(token, InvalidToken), "jwt header")
        assert refuses_only_with((InvalidToken,), lambda token=token: keys.issuer.verify(token, None),
                                 "entra token") is None
        assert refuses_only_with((InvalidRegistryToken,), lambda token=token: keys.registry.verify_access(
            token, ["x"]), "registry token") is None


def sign(claims: dict[str, Any], key: Any, kid: str) -> str:
    """An RS256 JWS of ``claims`` exactly as given (PyJWT's ``encode`` would refuse some of them)."""
    return jwt.PyJWS().encode(json.dumps(claims).encode(), key, algorithm="RS256", headers={"kid": kid})


claim_values = st.one_of(s.json_values(6), s.junk, st.integers(-(2**40), 2**40))


@given(st.dictionaries(st.sampled_from(["aud", "iss", "exp", "nbf", "iat", "tid", "oid", "sub", "appid", "idtyp",
                                        "xms_mirid", "roles"]), claim_values, max_size=12), st.booleans())
def test_entra_tokens_signed_with_our_key_but_odd_claims(keys: Keys, odd: dict[str, Any], complete: bool) -> None:
    now = int(time.time())
    claims: dict[str, Any] = {"aud": "https://management.azure.com/", "iss": keys.issuer.issuer(keys.admin.tenantId),
                              "exp": now + 600, "nbf": now, "iat": now, "tid": keys.admin.tenantId,
                              "oid": keys.admin.objectId, "sub": keys.admin.objectId} if complete else {}
    claims.update(odd)
    token = sign(claims, keys.entra_key.private_key, keys.entra_key.kid)
    refuses_only_with((InvalidToken,), lambda: keys.issuer.verify(token, ["https://management.azure.com/"]),
                      "entra claims")


@given(st.dictionaries(st.sampled_from(["aud", "iss", "exp", "nbf", "iat", "sub", "grant_type", "registry",
                                        "registry_uid", "access", "tenant", "jti", "version"]), claim_values,
                       max_size=13),
       st.booleans(), st.sampled_from(["access_token", "refresh_token"]))
def test_registry_tokens_signed_with_our_key_but_odd_claims(keys: Keys, odd: dict[str, Any], complete: bool,
                                                            grant_type: str) -> None:
    now = int(time.time())
    claims: dict[str, Any] = {"aud": "x", "iss": ISSUER, "exp": now + 600, "nbf": now, "iat": now, "sub": "s",
                              "jti": "j", "grant_type": grant_type, "registry": "r", "registry_uid": "u",
                              "tenant": "t", "access": [{"type": "repository", "name": "a", "actions": ["pull"]}]} \
        if complete else {}
    claims.update(odd)
    token = sign(claims, keys.registry_key.private_key, keys.registry_key.kid)
    refuses_only_with((InvalidRegistryToken,), lambda: keys.registry.verify_access(token, ["x"]), "registry claims")
    refuses_only_with((InvalidRegistryToken,), lambda: keys.registry.verify_refresh(token, ["x"]), "registry claims")
