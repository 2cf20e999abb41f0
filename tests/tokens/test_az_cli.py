"""The tutorial's flow with the real az CLI inside a VM: ``az login --identity`` through the VM's IMDS, then ``az acr
login --expose-token`` (the token service's challenge and ``/oauth2/exchange``), ``az acr repository list`` (a
refresh token redeemed at ``/oauth2/token``), and a pull with that login; the identity holds AcrPull only, so a
push is refused.

az is large and pins its own SDK versions, so it is not a test dependency: this runs when an ``az`` executable is
found (``$ACRLOCAL_TEST_AZ``, else ``az`` on ``PATH``) and is skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.arm.conftest import Arm, admin_of
from tests.compute.conftest import mgmt_for, vm_env
from tests.harness import REFRESH_TOKEN_USER, AcrLocal
from tests.interop.tools import Containers, ToolError
from tests.registry.conftest import RegistryClient
from tests.tokens.conftest import ACR_PULL, assign, claims, registry_id

READER = "acdd72a7-3385-48ef-bd42-f606fba81ae7"
AZ = os.environ.get("ACRLOCAL_TEST_AZ") or shutil.which("az")
pytestmark = pytest.mark.skipif(AZ is None, reason="no az CLI (set ACRLOCAL_TEST_AZ to its path)")


def az(env: dict[str, str], *args: str) -> Any:
    assert AZ is not None
    proc = subprocess.run([AZ, *args, "-o", "json"], capture_output=True, text=True, env=env, timeout=300,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise AssertionError(f"az {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_az_login_identity_then_acr_login_and_pull(server: AcrLocal, tmp_path: Path) -> None:
    mgmt = mgmt_for(server)
    group = mgmt.group("aztut")
    identity = mgmt.identity(group, "puller")
    vm = mgmt.vm(group, "vm-tutorial", {"type": "UserAssigned", "userAssignedIdentities": {identity.id: {}}})
    arm = Arm(server, admin_of(server).token(server))
    assign(arm, identity.principal_id, ACR_PULL, registry_id(server))
    # az finds the login server through ARM (or else as <name><suffix>, which needs DNS for acrlocal.localhost that
    # this machine does not have): Reader on the registry lets the identity read the registry resource. Reader
    # grants pull too, and nothing more.
    assign(arm, identity.principal_id, READER, registry_id(server))
    RegistryClient(server).push_image("tutorial/hello", "v1")

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))}
    env.update(AZURE_CONFIG_DIR=str(tmp_path / "azure"), REQUESTS_CA_BUNDLE=server.ca,
               AZURE_CORE_COLLECT_TELEMETRY="false", AZURE_CORE_INSTANCE_DISCOVERY="false",
               AZURE_CORE_ONLY_SHOW_ERRORS="1",
               AZURE_POD_IDENTITY_AUTHORITY_HOST=vm_env(server, vm)["AZURE_POD_IDENTITY_AUTHORITY_HOST"])
    az(env, "cloud", "register", "-n", "AcrLocal", "--endpoint-resource-manager", server.shared + "/")
    az(env, "cloud", "set", "-n", "AcrLocal")
    accounts = az(env, "login", "--identity", "--client-id", identity.client_id)
    assert accounts[0]["user"]["type"] == "servicePrincipal"

    login = az(env, "acr", "login", "--name", "acrlocal", "--expose-token")
    assert login["loginServer"] == server.login_server()
    assert login["username"] == REFRESH_TOKEN_USER
    refresh = login["accessToken"]
    assert claims(refresh)["sub"] == identity.principal_id and claims(refresh)["grant_type"] == "refresh_token"

    # az redeems the refresh token itself for /acr/v1 (POST /oauth2/token, grant_type=refresh_token).
    assert "tutorial/hello" in az(env, "acr", "repository", "list", "--name", "acrlocal")

    with Containers(tmp_path, server, anonymous=True) as tools:
        out = subprocess.run(["podman", "login", "--cert-dir", str(tools.cert_dir), "--username", REFRESH_TOKEN_USER,
                              "--password-stdin", login["loginServer"]], input=refresh, capture_output=True,
                             text=True, env=tools.env(), timeout=120)
        assert out.returncode == 0, out.stderr
        ref = tools.ref("tutorial/hello")
        pulled = tmp_path / "pulled"
        tools.skopeo("copy", "--src-cert-dir", str(tools.cert_dir), "--dest-oci-accept-uncompressed-layers",
                     f"docker://{ref}:v1", f"oci:{pulled}:v1")
        assert json.loads((pulled / "index.json").read_text())["manifests"]
        # AcrPull may not push: skopeo's push is refused and nothing is stored.
        with pytest.raises(ToolError):
            tools.skopeo("copy", "--dest-cert-dir", str(tools.cert_dir), f"oci:{pulled}:v1",
                         f"docker://{tools.ref('tutorial/pushed')}:v1")
    assert RegistryClient(server).get("/v2/tutorial/pushed/tags/list").status_code == 404
