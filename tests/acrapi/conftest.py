"""The /acr/v1 tests share the data-plane tests' fixtures (a registry client, a storage probe, a fresh repository)
and add an azure-containerregistry client on the session server, signed in as the local administrator (Owner of
the default subscription, so the token service grants it everything)."""

from __future__ import annotations

import pytest
from azure.containerregistry import ContainerRegistryClient

from tests.arm.conftest import admin_of
from tests.harness import AcrLocal
from tests.registry.conftest import registry, repo, storage  # noqa: F401


@pytest.fixture
def sdk(acrlocal: AcrLocal) -> ContainerRegistryClient:
    credential = admin_of(acrlocal).credential(acrlocal)
    return ContainerRegistryClient(f"https://{acrlocal.login_server()}", credential, connection_verify=acrlocal.ca)
