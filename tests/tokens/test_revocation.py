"""Registry tokens end with what they were issued for: a registry deleted and made again under the same name
refuses the old one's tokens (issue 8, item 2); disabling the admin user, disabling or deleting a scoped token and
deleting a registry refuse the access tokens already issued to them on the next request (issue 8, item 13)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests

from tests.arm.conftest import Arm, subscription_of
from tests.harness import AcrLocal, CASession
from tests.tokens.conftest import TokenClient

REGISTRY_API = "2023-07-01"


class _ByName(CASession):
    """Requests to ``https://<name>.<suffix>:<shared port>/...``, the registry's login server by name, sent to the
    shared port on ``localhost`` with the name in ``Host`` (nothing resolves ``*.localhost`` here)."""

    def __init__(self, ca: str, shared: str) -> None:
        super().__init__(ca)
        self.shared = urlsplit(shared).netloc

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        parts = urlsplit(str(url))
        headers = dict(kwargs.pop("headers", None) or {})
        headers["Host"] = parts.netloc
        return super().request(method, urlunsplit(parts._replace(netloc=self.shared)), *args, headers=headers,
                               **kwargs)


class NamedRegistry(TokenClient):
    def http(self) -> requests.Session:
        return _ByName(self.server.ca, self.server.shared)


def _registry_url(server: AcrLocal, name: str) -> str:
    return (f"/subscriptions/{subscription_of(server)}/resourceGroups/revocation/providers/"
            f"Microsoft.ContainerRegistry/registries/{name}")


def create_registry(arm: Arm, name: str) -> dict[str, Any]:
    arm.call("PUT", f"/subscriptions/{subscription_of(arm.server)}/resourceGroups/revocation", {"location": "westus"})
    r = arm.call("PUT", _registry_url(arm.server, name), {"location": "westus", "sku": {"name": "Standard"},
                                                           "properties": {"adminUserEnabled": True}},
                 api_version=REGISTRY_API)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def delete_registry(arm: Arm, name: str) -> None:
    assert arm.call("DELETE", _registry_url(arm.server, name), api_version=REGISTRY_API).status_code == 200


@pytest.fixture
def registry_name(arm: Arm) -> Iterator[str]:
    name = f"reborn{uuid.uuid4().hex[:8]}"
    create_registry(arm, name)
    yield name
    arm.call("DELETE", _registry_url(arm.server, name), api_version=REGISTRY_API)


def by_name(server: AcrLocal, name: str) -> NamedRegistry:
    return NamedRegistry(server, f"{name}.localhost:{urlsplit(server.shared).port}")


def assert_refused(r: requests.Response) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["errors"][0]["code"] == "UNAUTHORIZED", r.text


def test_a_registry_made_again_under_the_same_name_refuses_the_old_ones_tokens(
        server: AcrLocal, arm: Arm, registry_name: str) -> None:
    registry = by_name(server, registry_name)
    refresh = registry.refresh_token(server.admin_token())
    access = registry.access_token(refresh, "repository:app/web:pull,push,delete")
    assert registry.v2("POST", "/v2/app/web/blobs/uploads/", access).status_code == 202
    assert registry.v2("GET", "/v2/app/web/tags/list", access).status_code == 404  # known to the cache now

    delete_registry(arm, registry_name)
    create_registry(arm, registry_name)

    for method, path in (("GET", "/v2/app/web/tags/list"), ("POST", "/v2/app/web/blobs/uploads/"),
                         ("DELETE", f"/v2/app/web/manifests/sha256:{'0' * 64}")):
        r = registry.v2(method, path, access)
        assert_refused(r)
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"], (method, path)
    assert_refused(registry.token(refresh, "repository:app/web:pull"))
    # The new registry's own tokens work.
    fresh = registry.access_token(registry.refresh_token(server.admin_token()), "repository:app/web:pull,push")
    assert registry.v2("POST", "/v2/app/web/blobs/uploads/", fresh).status_code == 202


def _admin_access_token(arm: Arm, registry: NamedRegistry, name: str, scope: str) -> str:
    r = arm.call("POST", _registry_url(arm.server, name) + "/listCredentials", api_version=REGISTRY_API)
    assert r.status_code == 200, r.text
    r = registry.basic_token(name, r.json()["passwords"][0]["value"], scope)
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _scoped_token(arm: Arm, name: str, token: str, actions: list[str]) -> str:
    base = _registry_url(arm.server, name)
    r = arm.call("PUT", f"{base}/scopeMaps/{token}-map", {"properties": {"actions": actions}}, api_version=REGISTRY_API)
    assert r.status_code == 201, r.text
    r = arm.call("PUT", f"{base}/tokens/{token}", {"properties": {"scopeMapId": r.json()["id"]}},
                 api_version=REGISTRY_API)
    assert r.status_code == 201, r.text
    r = arm.call("POST", f"{base}/generateCredentials", {"tokenId": r.json()["id"]}, api_version=REGISTRY_API)
    assert r.status_code == 200, r.text
    return str(r.json()["passwords"][0]["value"])


def _works(registry: NamedRegistry, token: str) -> None:
    """The token pulls (twice: the second answer comes from the authorizer's cache of granted decisions)."""
    for _ in range(2):
        assert registry.v2("GET", "/v2/app/web/tags/list", token).status_code == 404  # allowed; nothing pushed


def _refused(registry: NamedRegistry, token: str) -> None:
    for _ in range(2):
        r = registry.v2("GET", "/v2/app/web/tags/list", token)
        assert_refused(r)
        assert 'error="invalid_token"' in r.headers["WWW-Authenticate"]


def test_disabling_the_admin_user_refuses_its_access_tokens_on_the_next_request(
        server: AcrLocal, arm: Arm, registry_name: str) -> None:
    registry = by_name(server, registry_name)
    token = _admin_access_token(arm, registry, registry_name, "repository:app/web:pull")
    _works(registry, token)
    url = _registry_url(server, registry_name)
    r = arm.call("PATCH", url, {"properties": {"adminUserEnabled": False}}, api_version=REGISTRY_API)
    assert r.status_code == 200, r.text
    _refused(registry, token)
    assert "admin user" in registry.v2("GET", "/v2/app/web/tags/list", token).json()["errors"][0]["message"]
    # The state is read at each request: enabled again, the same token is accepted again.
    assert arm.call("PATCH", url, {"properties": {"adminUserEnabled": True}},
                    api_version=REGISTRY_API).status_code == 200
    _works(registry, token)


@pytest.mark.parametrize("revoke", ["disable", "delete"])
def test_disabling_or_deleting_a_scoped_token_refuses_its_access_tokens_on_the_next_request(
        server: AcrLocal, arm: Arm, registry_name: str, revoke: str) -> None:
    registry = by_name(server, registry_name)
    name = f"puller-{revoke}"
    password = _scoped_token(arm, registry_name, name, ["repositories/app/web/content/read"])
    r = registry.basic_token(name, password, "repository:app/web:pull")
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    _works(registry, token)
    url = f"{_registry_url(server, registry_name)}/tokens/{name}"
    if revoke == "disable":
        r = arm.call("PATCH", url, {"properties": {"status": "disabled"}}, api_version=REGISTRY_API)
    else:
        r = arm.call("DELETE", url, api_version=REGISTRY_API)
    assert r.status_code == 200, r.text
    _refused(registry, token)
    assert name in registry.v2("GET", "/v2/app/web/tags/list", token).json()["errors"][0]["message"]


def test_deleting_a_registry_refuses_its_access_tokens_on_the_next_request(
        server: AcrLocal, arm: Arm, registry_name: str) -> None:
    registry = by_name(server, registry_name)
    token = registry.access_token(registry.refresh_token(server.admin_token()), "repository:app/web:pull")
    _works(registry, token)
    delete_registry(arm, registry_name)
    for _ in range(2):
        r = registry.v2("GET", "/v2/app/web/tags/list", token)
        assert r.status_code == 404 and r.json()["errors"][0]["code"] == "NAME_UNKNOWN", r.text
    assert registry.token(token, "repository:app/web:pull").status_code == 404
