"""Helpers for driving the control plane: tokens from the real Entra endpoint, principals, an ARM client."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential

from acrlocal.arm.store import ArmStore, StoredAssignment
from acrlocal.identity.directory import Directory
from acrlocal.rbac.roles import OWNER
from tests.harness import AcrLocal, running

ARM_SCOPE = "https://management.azure.com/.default"


@dataclass
class Principal:
    tenant_id: str
    client_id: str
    object_id: str
    secret: str

    def credential(self, server: AcrLocal) -> ClientSecretCredential:
        return ClientSecretCredential(self.tenant_id, self.client_id, self.secret, authority=server.shared,
                                      connection_verify=server.ca, disable_instance_discovery=True)

    def token(self, server: AcrLocal, scope: str = ARM_SCOPE) -> str:
        return str(self.credential(server).get_token(scope).token)


class Arm:
    """``requests`` against the control plane as one principal; ``api-version`` added unless given."""

    def __init__(self, server: AcrLocal, token: str | None) -> None:
        self.server = server
        self.token = token
        self.session = server.session()

    def call(self, method: str, path: str, body: Any = None, *, api_version: str | None = "2023-07-01",
             headers: dict[str, str] | None = None, data: bytes | None = None) -> requests.Response:
        params = {"api-version": api_version} if api_version else {}
        hdrs = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        hdrs.update(headers or {})
        return self.session.request(method, self.server.shared + path, params=params, json=body, data=data,
                                    headers=hdrs)


def admin_of(server: AcrLocal) -> Principal:
    cred = json.loads((server.data_dir / "admin.json").read_text())
    return Principal(cred["tenantId"], cred["clientId"], cred["objectId"], cred["clientSecret"])


def subscription_of(server: AcrLocal) -> str:
    return str(json.loads((server.data_dir / "admin.json").read_text())["subscriptionId"])


def new_principal(server: AcrLocal, name: str) -> Principal:
    """A service principal with a client secret, made in the server's directory (the same database the running
    server reads; there is no Graph API for it yet)."""
    engine = server.database()
    try:
        directory = Directory(engine)
        tenant = directory.default_tenant()
        sp = directory.create_service_principal(tenant.id, name)
        _, secret = directory.add_secret(sp.object_id, "test")
    finally:
        engine.dispose()
    return Principal(tenant.id, sp.app_id, sp.object_id, secret)


@pytest.fixture(scope="module")
def arm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """A server of this module's own: these tests create and delete groups, registries and assignments."""
    with running(tmp_path_factory.mktemp("arm") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def admin(arm_server: AcrLocal) -> Arm:
    return Arm(arm_server, admin_of(arm_server).token(arm_server))


def new_group(server: AcrLocal, admin: Arm, name: str) -> str:
    """The ARM id of a resource group made (201) in the server's default subscription."""
    scope = f"/subscriptions/{subscription_of(server)}/resourceGroups/{name}"
    r = admin.call("PUT", scope, {"location": "westus"})
    assert r.status_code == 201, r.text
    return scope


CREATE_TENANT = "/providers/Microsoft.AcrLocal/createTenant"
TENANT_API = "2025-01-01"


def arm_error(r: requests.Response, status: int, code: str) -> dict[str, Any]:
    """ARM's error body ``{"error": {"code", "message"}}`` with this status and code."""
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code and error["message"], r.text
    return error


def tenant_names(server: AcrLocal) -> list[str]:
    """The display names of the server's tenants, sorted (read from its database)."""
    engine = server.database()
    try:
        return sorted(t.display_name for t in Directory(engine).tenants())
    finally:
        engine.dispose()


def subscription_owner(server: AcrLocal, name: str) -> Principal:
    """A new service principal that is Owner of the server's default subscription and no directory administrator
    (written to the server's database, as :func:`new_principal`)."""
    owner = new_principal(server, name)
    engine = server.database()
    try:
        ArmStore(engine).add_assignment(StoredAssignment(
            str(uuid.uuid4()), f"/subscriptions/{subscription_of(server)}", OWNER.id, owner.object_id,
            "ServicePrincipal"))
    finally:
        engine.dispose()
    return owner
