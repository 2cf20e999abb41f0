"""The /acr/v1 tests share the data-plane tests' fixtures (a registry client, a storage probe, a fresh repository)
and add an azure-containerregistry client on the session server, signed in as the local administrator (Owner of
the default subscription, so the token service grants it everything)."""

from __future__ import annotations

import pytest
from azure.containerregistry import ContainerRegistryClient

from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.harness import AcrLocal
from tests.registry.conftest import registry, repo, storage  # noqa: F401


@pytest.fixture
def sdk(acrlocal: AcrLocal) -> ContainerRegistryClient:
    credential = admin_of(acrlocal).credential(acrlocal)
    return ContainerRegistryClient(f"https://{acrlocal.login_server()}", credential, connection_verify=acrlocal.ca)


@pytest.fixture(scope="module")
def arm(acrlocal: AcrLocal) -> Arm:
    """ARM as the local administrator."""
    return Arm(acrlocal, admin_of(acrlocal).token(acrlocal))


def registry_path(server: AcrLocal) -> str:
    """The default registry's ARM id."""
    return (f"/subscriptions/{subscription_of(server)}/resourceGroups/acrlocal/providers/"
            "Microsoft.ContainerRegistry/registries/acrlocal")
