"""Registry tokens end with what they were issued for: a registry deleted and made again under the same name
refuses the old one's tokens (issue 8, item 2)."""

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
