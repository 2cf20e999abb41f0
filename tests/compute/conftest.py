"""Fixtures for VMs and managed identities, made through the control plane with Azure's own management SDKs
(azure-mgmt-resource, azure-mgmt-msi, azure-mgmt-compute) as the local administrator."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from azure.identity import ClientSecretCredential
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.msi import ManagedServiceIdentityClient
from azure.mgmt.resource.resources import ResourceManagementClient

from tests.harness import AcrLocal

LOCATION = "westeurope"


@dataclass
class Mgmt:
    server: AcrLocal
    tenant: str
    subscription: str
    credential: ClientSecretCredential
    resources: ResourceManagementClient
    msi: ManagedServiceIdentityClient
    compute: ComputeManagementClient

    def group(self, prefix: str = "rg") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.resources.resource_groups.create_or_update(name, {"location": LOCATION})
        return name

    def identity(self, group: str, name: str | None = None) -> Any:
        return self.msi.user_assigned_identities.create_or_update(group, name or f"id-{uuid.uuid4().hex[:6]}",
                                                                   {"location": LOCATION})

    def vm(self, group: str, name: str | None = None, identity: dict[str, Any] | None = None,
           tags: dict[str, str] | None = None) -> Any:
        body: dict[str, Any] = {
            "location": LOCATION,
            "tags": tags or {},
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_B1s"},
                "storageProfile": {"imageReference": {"publisher": "Canonical", "offer": "ubuntu-24_04-lts",
                                                      "sku": "server", "version": "latest"}},
                "osProfile": {"computerName": name or "vm", "adminUsername": "azureuser",
                              "adminPassword": "Never-Stored-1!"},
            },
        }
        if identity is not None:
            body["identity"] = identity
        poller = self.compute.virtual_machines.begin_create_or_update(group, name or f"vm-{uuid.uuid4().hex[:6]}",
                                                                       body)
        return poller.result()

    def token(self, scope: str = "https://management.azure.com/.default") -> str:
        return str(self.credential.get_token(scope).token)

    def arm(self, method: str, path: str, body: Any = None, api_version: str = "2024-07-01",
            token: str | None = None) -> requests.Response:
        return self.server.session().request(method, self.server.shared + path, params={"api-version": api_version},
                                             json=body, headers={"Authorization": f"Bearer {token or self.token()}"})


def mgmt_for(server: AcrLocal) -> Mgmt:
    admin = json.loads((server.data_dir / "admin.json").read_text())
    cred = ClientSecretCredential(admin["tenantId"], admin["clientId"], admin["clientSecret"],
                                  authority=server.shared, connection_verify=server.ca,
                                  disable_instance_discovery=True)
    kw: dict[str, Any] = {"base_url": server.shared, "connection_verify": server.ca,
                          "credential_scopes": ["https://management.azure.com/.default"]}
    sub = admin["subscriptionId"]
    return Mgmt(server, admin["tenantId"], sub, cred, ResourceManagementClient(cred, sub, **kw),
                ManagedServiceIdentityClient(cred, sub, **kw), ComputeManagementClient(cred, sub, **kw))


@pytest.fixture(scope="session")
def mgmt(acrlocal: AcrLocal) -> Mgmt:
    return mgmt_for(acrlocal)


@pytest.fixture
def group(mgmt: Mgmt) -> Iterator[str]:
    name = mgmt.group()
    yield name
    mgmt.resources.resource_groups.begin_delete(name).result()
