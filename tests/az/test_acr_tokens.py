"""The tutorial's flow with the real az CLI inside a VM whose user-assigned identity holds only AcrPull on the
registry: ``az login --identity`` through the VM's IMDS, ``az acr login --expose-token`` (the token service's
challenge and ``/oauth2/exchange``; the login server is ``<name>.azurecr.io``, built from AzureCloud's ACR suffix
because AcrPull cannot read the registry resource through ARM), ``az acr repository list`` (the refresh token
redeemed at ``/oauth2/token``), then, on the host, podman login and a pull with that refresh token at the
registry's other login server; a push is refused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.arm.conftest import Arm, admin_of
from tests.az.conftest import VmAz
from tests.compute.conftest import mgmt_for
from tests.harness import REFRESH_TOKEN_USER, AcrLocal
from tests.interop.tools import Containers, ToolError
from tests.registry.conftest import RegistryClient
from tests.tokens.conftest import ACR_PULL, assign, claims, registry_id


def test_acrpull_identity_logs_in_with_az_and_pulls(az_server: AcrLocal, tmp_path: Path) -> None:
    server = az_server
    mgmt = mgmt_for(server)
    group = mgmt.group("tutorial")
    identity = mgmt.identity(group, "puller")
    vm = mgmt.vm(group, "vm-tutorial", {"type": "UserAssigned", "userAssignedIdentities": {identity.id: {}}})
    assign(Arm(server, admin_of(server).token(server)), identity.principal_id, ACR_PULL, registry_id(server))
    RegistryClient(server).push_image("tutorial/hello", "v1")

    az = VmAz(server, vm.id)
    accounts = az("login", "--identity", "--client-id", identity.client_id)
    assert accounts[0]["user"]["type"] == "servicePrincipal"

    login = az("acr", "login", "--name", "acrlocal", "--expose-token")
    assert login["username"] == REFRESH_TOKEN_USER
    assert login["loginServer"] == "acrlocal.azurecr.io"
    refresh = login["accessToken"]
    assert claims(refresh)["sub"] == identity.principal_id and claims(refresh)["grant_type"] == "refresh_token"
    assert "tutorial/hello" in az("acr", "repository", "list", "--name", "acrlocal")

    # The refresh token logs in on every login server of the registry (here the one that needs no DNS).
    with Containers(tmp_path, server, anonymous=True) as tools:
        out = subprocess.run(["podman", "login", "--cert-dir", str(tools.cert_dir), "--username", REFRESH_TOKEN_USER,
                              "--password-stdin", server.login_server()], input=refresh, capture_output=True,
                             text=True, env=tools.env(), timeout=120)
        assert out.returncode == 0, out.stderr
        pulled = tmp_path / "pulled"
        tools.skopeo("copy", "--src-cert-dir", str(tools.cert_dir), "--dest-oci-accept-uncompressed-layers",
                     f"docker://{tools.ref('tutorial/hello')}:v1", f"oci:{pulled}:v1")
        assert json.loads((pulled / "index.json").read_text())["manifests"]
        with pytest.raises(ToolError):  # AcrPull may not push
            tools.skopeo("copy", "--dest-cert-dir", str(tools.cert_dir), f"oci:{pulled}:v1",
                         f"docker://{tools.ref('tutorial/pushed')}:v1")
    assert RegistryClient(server).get("/v2/tutorial/pushed/tags/list").status_code == 404
