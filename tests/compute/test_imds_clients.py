"""A VM's managed identities through IMDS, driven by the real clients inside the VM with no environment variable
set by hand (they find IMDS at 169.254.169.254, as on Azure): azure-identity (sync and async
ManagedIdentityCredential, DefaultAzureCredential) and msal's ManagedIdentityClient. Every token is verified on the
host with PyJWT against acrlocal's JWKS."""

from __future__ import annotations

from typing import Any

import pytest

from tests.clients import verify_with_jwks
from tests.compute.conftest import Mgmt
from tests.harness import AcrLocal
from tests.vmexec import vm_client

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


def check(server: AcrLocal, result: dict[str, Any], audience: str, principal_id: str, mirid: str) -> dict[str, Any]:
    assert result["ok"], result
    claims = verify_with_jwks(result["token"], server.shared, server.ca, audience)
    assert claims["oid"] == principal_id and claims["xms_mirid"].lower() == mirid.lower()
    assert claims["aud"] == audience and claims["exp"] - claims["iat"] == 24 * 3600
    return claims


def test_system_assigned_identity_with_managed_identity_credential(acrlocal: AcrLocal,
                                                                   world: dict[str, Any]) -> None:
    vm = world["vm"]
    result = vm_client(acrlocal, vm.id, f"""
        from azure.identity import ManagedIdentityCredential
        attempt(lambda: ManagedIdentityCredential().get_token("{ARM}/.default"))
    """)
    claims = check(acrlocal, result, ARM, vm.identity.principal_id, vm.id)
    assert claims["tid"] == vm.identity.tenant_id


@pytest.mark.parametrize("how", ["client_id", "object_id", "resource_id"])
def test_user_assigned_identity_by_each_selector(acrlocal: AcrLocal, world: dict[str, Any], how: str) -> None:
    u2 = world["u2"]
    value = {"client_id": u2.client_id, "object_id": u2.principal_id, "resource_id": u2.id}[how]
    result = vm_client(acrlocal, world["vm"].id, f"""
        from azure.identity import ManagedIdentityCredential
        c = ManagedIdentityCredential(identity_config={{{how!r}: {value!r}}})
        attempt(lambda: c.get_token("{ACR}/.default"))
    """)
    check(acrlocal, result, ACR, u2.principal_id, u2.id)


def test_default_azure_credential_finds_imds(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    """DefaultAzureCredential probes 169.254.169.254 (no variable tells it where IMDS is) and signs in there; the
    VM's system-assigned identity, or the one AZURE_CLIENT_ID names."""
    vm, u1 = world["vm"], world["u1"]
    code = f"""
        from azure.identity import DefaultAzureCredential
        attempt(lambda: DefaultAzureCredential().get_token("{ARM}/.default"))
    """
    check(acrlocal, vm_client(acrlocal, vm.id, code), ARM, vm.identity.principal_id, vm.id)
    check(acrlocal, vm_client(acrlocal, vm.id, code, env={"AZURE_CLIENT_ID": u1.client_id}), ARM, u1.principal_id,
          u1.id)


def test_no_app_service_variables_in_a_vm(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    result = vm_client(acrlocal, world["vm"].id, """
        import os
        report(names=sorted(n for n in os.environ if n.startswith(("IDENTITY_", "MSI_", "AZURE_", "IMDS_"))))
    """)
    assert result["names"] == []


@pytest.mark.parametrize("key", ["msi_res_id", "resource_id"])
def test_async_credential(acrlocal: AcrLocal, world: dict[str, Any], key: str) -> None:
    """The async credential sends identity_config's key as it is: IMDS knows the resource id as msi_res_id, and
    ignores resource_id (as Azure's does), so that request is the VM's system identity."""
    u2, vm = world["u2"], world["vm"]
    result = vm_client(acrlocal, vm.id, f"""
        import asyncio
        from azure.identity.aio import ManagedIdentityCredential
        async def main():
            async with ManagedIdentityCredential(identity_config={{{key!r}: {u2.id!r}}}) as c:
                return await c.get_token("{ARM}/.default")
        attempt(lambda: asyncio.run(main()))
    """)
    if key == "msi_res_id":
        check(acrlocal, result, ARM, u2.principal_id, u2.id)
    else:
        check(acrlocal, result, ARM, vm.identity.principal_id, vm.id)


@pytest.mark.parametrize("which", ["system", "client_id", "resource_id", "object_id"])
def test_msal_managed_identity_client(acrlocal: AcrLocal, world: dict[str, Any], which: str) -> None:
    vm, u1 = world["vm"], world["u1"]
    identity = {
        "system": "msal.SystemAssignedManagedIdentity()",
        "client_id": f"msal.UserAssignedManagedIdentity(client_id={u1.client_id!r})",
        "resource_id": f"msal.UserAssignedManagedIdentity(resource_id={u1.id!r})",
        "object_id": f"msal.UserAssignedManagedIdentity(object_id={u1.principal_id!r})",
    }[which]
    result = vm_client(acrlocal, vm.id, f"""
        import msal, requests
        client = msal.ManagedIdentityClient({identity}, http_client=requests.Session())
        attempt(lambda: client.acquire_token_for_client(resource="https://management.core.windows.net/"))
    """)
    principal, mirid = (vm.identity.principal_id, vm.id) if which == "system" else (u1.principal_id, u1.id)
    check(acrlocal, result, "https://management.core.windows.net/", principal, mirid)


def test_identity_not_on_the_vm_is_unavailable(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    stranger = world["stranger"]
    result = vm_client(acrlocal, world["vm"].id, f"""
        from azure.identity import ManagedIdentityCredential
        attempt(lambda: ManagedIdentityCredential(client_id={stranger.client_id!r}).get_token("{ARM}/.default"))
    """)
    assert not result["ok"] and result["error"] == "CredentialUnavailableError"
    assert "Identity not found" in result["message"]


def test_two_user_assigned_identities_and_no_selector(acrlocal: AcrLocal, world: dict[str, Any]) -> None:
    result = vm_client(acrlocal, world["users_only"].id, f"""
        import msal, requests
        client = msal.ManagedIdentityClient(msal.SystemAssignedManagedIdentity(), http_client=requests.Session())
        report(ok=False, raw=client.acquire_token_for_client(resource="{ARM}"))
    """)
    assert result["raw"]["error"] == "invalid_request"
    assert result["raw"]["error_description"].startswith("Multiple user assigned identities exist")
