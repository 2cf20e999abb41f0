"""A VM's managed identities through IMDS and the App Service endpoint, driven by the real clients: azure-identity
(sync and async ManagedIdentityCredential, DefaultAzureCredential) and msal's ManagedIdentityClient, each in a
child process whose environment points it at the VM's listener and nowhere else. Every token is verified with
PyJWT against acrlocal's JWKS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.clients import client_env, run_client, verify_with_jwks
from tests.compute.conftest import Mgmt, appservice_env, vm_env
from tests.harness import AcrLocal

ARM = "https://management.azure.com"
ACR = "https://containerregistry.azure.net"


@pytest.fixture(scope="module")
def world(mgmt: Mgmt) -> dict[str, Any]:
    """One VM with a system identity and two user-assigned ones; a second VM with only the two user-assigned
    identities (so no selector is ambiguous); an identity on neither."""
    group = mgmt.group("imds")
    u1, u2, stranger = mgmt.identity(group, "uami-one"), mgmt.identity(group, "uami-two"), mgmt.identity(group)
    both = {u1.id: {}, u2.id: {}}
    vm = mgmt.vm(group, "vm-system", {"type": "SystemAssigned, UserAssigned", "userAssignedIdentities": both})
    users_only = mgmt.vm(group, "vm-users", {"type": "UserAssigned", "userAssignedIdentities": both})
    return {"group": group, "u1": u1, "u2": u2, "stranger": stranger, "vm": vm, "users_only": users_only}


def imds_env(server: AcrLocal, vm: Any, home: Path, **extra: str) -> dict[str, str]:
    return client_env(home, AZURE_POD_IDENTITY_AUTHORITY_HOST=vm_env(server, vm)["AZURE_POD_IDENTITY_AUTHORITY_HOST"],
                      **extra)


def check(server: AcrLocal, result: dict[str, Any], audience: str, principal_id: str, mirid: str) -> dict[str, Any]:
    assert result["ok"], result
    claims = verify_with_jwks(result["token"], server.shared, server.ca, audience)
    assert claims["oid"] == principal_id and claims["xms_mirid"].lower() == mirid.lower()
    assert claims["aud"] == audience and claims["exp"] - claims["iat"] == 24 * 3600
    return claims


def test_system_assigned_identity_with_managed_identity_credential(acrlocal: AcrLocal, world: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    vm = world["vm"]
    result = run_client(f"""
        from azure.identity import ManagedIdentityCredential
        attempt(lambda: ManagedIdentityCredential().get_token("{ARM}/.default"))
    """, imds_env(acrlocal, vm, tmp_path))
    claims = check(acrlocal, result, ARM, vm.identity.principal_id, vm.id)
    assert claims["tid"] == vm.identity.tenant_id


@pytest.mark.parametrize("how", ["client_id", "object_id", "resource_id"])
def test_user_assigned_identity_by_each_selector(acrlocal: AcrLocal, world: dict[str, Any], tmp_path: Path,
                                                 how: str) -> None:
    u2 = world["u2"]
    value = {"client_id": u2.client_id, "object_id": u2.principal_id, "resource_id": u2.id}[how]
    result = run_client(f"""
        from azure.identity import ManagedIdentityCredential
        c = ManagedIdentityCredential(identity_config={{{how!r}: {value!r}}})
        attempt(lambda: c.get_token("{ACR}/.default"))
    """, imds_env(acrlocal, world["vm"], tmp_path))
    check(acrlocal, result, ACR, u2.principal_id, u2.id)


def test_default_azure_credential_through_imds(acrlocal: AcrLocal, world: dict[str, Any], tmp_path: Path) -> None:
    u1 = world["u1"]
    result = run_client(f"""
        from azure.identity import DefaultAzureCredential
        attempt(lambda: DefaultAzureCredential().get_token("{ARM}/.default"))
    """, imds_env(acrlocal, world["vm"], tmp_path, AZURE_CLIENT_ID=u1.client_id))
    check(acrlocal, result, ARM, u1.principal_id, u1.id)


def test_default_azure_credential_through_the_app_service_endpoint(acrlocal: AcrLocal, world: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    vm = world["vm"]
    result = run_client(f"""
        from azure.identity import DefaultAzureCredential
        attempt(lambda: DefaultAzureCredential().get_token("{ARM}/.default"))
    """, client_env(tmp_path, **appservice_env(acrlocal, vm)))
    check(acrlocal, result, ARM, vm.identity.principal_id, vm.id)


def test_app_service_endpoint_selects_user_assigned_by_resource_id(acrlocal: AcrLocal, world: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    u1 = world["u1"]
    result = run_client(f"""
        from azure.identity import ManagedIdentityCredential
        attempt(lambda: ManagedIdentityCredential(identity_config={{"resource_id": {u1.id!r}}})
                .get_token("{ACR}/.default"))
    """, client_env(tmp_path, **appservice_env(acrlocal, world["vm"])))
    check(acrlocal, result, ACR, u1.principal_id, u1.id)


@pytest.mark.parametrize("door", ["imds", "appservice"])
def test_async_credential(acrlocal: AcrLocal, world: dict[str, Any], tmp_path: Path, door: str) -> None:
    u2 = world["u2"]
    env = imds_env(acrlocal, world["vm"], tmp_path) if door == "imds" else \
        client_env(tmp_path, **appservice_env(acrlocal, world["vm"]))
    # The async credential sends identity_config's key as it is: IMDS names the resource id msi_res_id, the App
    # Service endpoint resource_id.
    key = "msi_res_id" if door == "imds" else "resource_id"
    result = run_client(f"""
        import asyncio
        from azure.identity.aio import ManagedIdentityCredential
        async def main():
            async with ManagedIdentityCredential(identity_config={{{key!r}: {u2.id!r}}}) as c:
                return await c.get_token("{ARM}/.default")
        attempt(lambda: asyncio.run(main()))
    """, env)
    check(acrlocal, result, ARM, u2.principal_id, u2.id)


@pytest.mark.parametrize("which", ["system", "client_id", "resource_id", "object_id"])
def test_msal_managed_identity_client(acrlocal: AcrLocal, world: dict[str, Any], tmp_path: Path,
                                      which: str) -> None:
    vm, u1 = world["vm"], world["u1"]
    identity = {
        "system": "msal.SystemAssignedManagedIdentity()",
        "client_id": f"msal.UserAssignedManagedIdentity(client_id={u1.client_id!r})",
        "resource_id": f"msal.UserAssignedManagedIdentity(resource_id={u1.id!r})",
        "object_id": f"msal.UserAssignedManagedIdentity(object_id={u1.principal_id!r})",
    }[which]
    result = run_client(f"""
        import msal, requests
        client = msal.ManagedIdentityClient({identity}, http_client=requests.Session())
        attempt(lambda: client.acquire_token_for_client(resource="https://management.core.windows.net/"))
    """, imds_env(acrlocal, vm, tmp_path))
    principal, mirid = (vm.identity.principal_id, vm.id) if which == "system" else (u1.principal_id, u1.id)
    check(acrlocal, result, "https://management.core.windows.net/", principal, mirid)


def test_identity_not_on_the_vm_is_unavailable(acrlocal: AcrLocal, world: dict[str, Any], tmp_path: Path) -> None:
    stranger = world["stranger"]
    result = run_client(f"""
        from azure.identity import ManagedIdentityCredential
        attempt(lambda: ManagedIdentityCredential(client_id={stranger.client_id!r}).get_token("{ARM}/.default"))
    """, imds_env(acrlocal, world["vm"], tmp_path))
    assert not result["ok"] and result["error"] == "CredentialUnavailableError"
    assert "Identity not found" in result["message"]


def test_two_user_assigned_identities_and_no_selector(acrlocal: AcrLocal, world: dict[str, Any],
                                                      tmp_path: Path) -> None:
    result = run_client(f"""
        import msal, requests
        client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
        report(ok=False, raw=client.acquire_token_for_client(resource="{ARM}"))
    """, imds_env(acrlocal, world["users_only"], tmp_path))
    assert result["raw"]["error"] == "invalid_request"
    assert result["raw"]["error_description"].startswith("Multiple user assigned identities exist")


def test_wrong_app_service_secret_is_refused(acrlocal: AcrLocal, world: dict[str, Any], tmp_path: Path) -> None:
    env = appservice_env(acrlocal, world["vm"])
    env["IDENTITY_HEADER"] = "not-the-secret"
    result = run_client(f"""
        from azure.identity import ManagedIdentityCredential
        attempt(lambda: ManagedIdentityCredential().get_token("{ARM}/.default"))
    """, client_env(tmp_path, **env))
    assert not result["ok"] and result["error"] in ("CredentialUnavailableError", "ClientAuthenticationError")
    assert "access_token" not in result["message"]
