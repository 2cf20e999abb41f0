"""Fixtures for the token service tests: a server of the package's own (tests change registries, role
assignments and principals), principals with secrets, role assignments through ARM, raw token requests."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests

from acrlocal.identity.directory import Directory
from tests.arm.conftest import Arm, Principal, admin_of, new_principal, subscription_of
from tests.harness import ACR_SCOPE, REFRESH_TOKEN_USER, AcrLocal, running

ACR_PULL = "7f951dda-4ed3-4680-a7ca-43fe172d538d"
ACR_PUSH = "8311e382-0749-4cb8-b61a-304f252e45ec"
ACR_DELETE = "c2f4ef07-c644-48eb-af81-4b1b4947fb11"
ROLE_API = "2022-04-01"
REGISTRY_API = "2023-07-01"


@pytest.fixture(scope="package")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("tokens") / "data") as server:
        yield server


@pytest.fixture(scope="package")
def arm(server: AcrLocal) -> Arm:
    """ARM as the local administrator (Owner of the default subscription)."""
    return Arm(server, admin_of(server).token(server))


def registry_id(server: AcrLocal, name: str = "acrlocal") -> str:
    """The registry's ARM id, as the control plane lists it."""
    arm = Arm(server, admin_of(server).token(server))
    r = arm.call("GET", f"/subscriptions/{subscription_of(server)}/providers/Microsoft.ContainerRegistry/registries",
                 api_version=REGISTRY_API)
    assert r.status_code == 200, r.text
    (found,) = [reg["id"] for reg in r.json()["value"] if reg["name"] == name]
    return str(found)


def assign(arm: Arm, principal: str, role: str, scope: str) -> str:
    """A role assignment made through ARM; returns its id."""
    sub = subscription_of(arm.server)
    url = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}"
    body = {"properties": {"roleDefinitionId": f"/subscriptions/{sub}/providers/Microsoft.Authorization/"
                                               f"roleDefinitions/{role}", "principalId": principal,
                           "principalType": "ServicePrincipal"}}
    r = arm.call("PUT", url, body, api_version=ROLE_API)
    assert r.status_code == 201, r.text
    return url


def unassign(arm: Arm, assignment: str) -> None:
    r = arm.call("DELETE", assignment, api_version=ROLE_API)
    assert r.status_code == 200, r.text


def registry_properties(arm: Arm, registry: str, **properties: Any) -> dict[str, Any]:
    """PATCH a registry's properties through ARM; returns the resource."""
    rid = registry_id(arm.server, registry)
    r = arm.call("PATCH", rid, {"properties": properties}, api_version=REGISTRY_API)
    assert r.status_code == 200, r.text
    return dict(r.json())


def admin_password(arm: Arm, registry: str = "acrlocal") -> str:
    r = arm.call("POST", registry_id(arm.server, registry) + "/listCredentials", api_version=REGISTRY_API)
    assert r.status_code == 200, r.text
    return str(r.json()["passwords"][0]["value"])


@dataclass
class TokenClient:
    """Raw requests to one registry's token service and data plane (no automatic challenge handling)."""

    server: AcrLocal
    login_server: str

    @property
    def base(self) -> str:
        return f"https://{self.login_server}"

    def http(self) -> requests.Session:
        return self.server.session()

    def exchange(self, aad_token: str, **form: str) -> requests.Response:
        data = {"grant_type": "access_token", "service": self.login_server, "access_token": aad_token, **form}
        return self.http().post(self.base + "/oauth2/exchange", data=data)

    def refresh_token(self, aad_token: str) -> str:
        r = self.exchange(aad_token)
        assert r.status_code == 200, r.text
        return str(r.json()["refresh_token"])

    def token(self, refresh_token: str, *scopes: str) -> requests.Response:
        data = [("grant_type", "refresh_token"), ("service", self.login_server), ("refresh_token", refresh_token)]
        data += [("scope", s) for s in scopes]
        return self.http().post(self.base + "/oauth2/token", data=data)

    def access_token(self, refresh_token: str, *scopes: str) -> str:
        r = self.token(refresh_token, *scopes)
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def basic_token(self, user: str | None, password: str | None, *scopes: str) -> requests.Response:
        params = [("service", self.login_server)] + [("scope", s) for s in scopes]
        auth = (user, password) if user is not None and password is not None else None
        return self.http().get(self.base + "/oauth2/token", params=params, auth=auth)

    def v2(self, method: str, path: str, token: str | None, **kw: Any) -> requests.Response:
        headers = dict(kw.pop("headers", None) or {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return self.http().request(method, self.base + path, headers=headers, allow_redirects=False, **kw)


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


@pytest.fixture(scope="package")
def tokens(server: AcrLocal) -> TokenClient:
    return TokenClient(server, server.login_server())


def principal_token(server: AcrLocal, principal: Principal, scope: str = ACR_SCOPE) -> str:
    return server.entra_token(principal.tenant_id, principal.client_id, principal.secret, scope)


def make_principal(server: AcrLocal, name: str) -> Principal:
    return new_principal(server, f"{name}-{uuid.uuid4().hex[:6]}")


def other_tenant_principal(server: AcrLocal, name: str) -> Principal:
    """A service principal in a second tenant of the directory (made in the server's database, as the
    directory has no tenant-creation API)."""
    engine = server.database()
    try:
        directory = Directory(engine)
        tenant = directory.create_tenant(f"tenant-{uuid.uuid4().hex[:6]}")
        sp = directory.create_service_principal(tenant.id, name)
        _, secret = directory.add_secret(sp.object_id, "test")
    finally:
        engine.dispose()
    return Principal(tenant.id, sp.app_id, sp.object_id, secret)


__all__ = ["ACR_DELETE", "ACR_PULL", "ACR_PUSH", "REFRESH_TOKEN_USER", "TokenClient", "admin_password", "assign",
           "claims", "make_principal", "other_tenant_principal", "principal_token", "registry_id",
           "registry_properties", "unassign"]
