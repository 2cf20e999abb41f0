"""The real az CLI against the control plane: cloud register, service-principal login, groups, registries,
``ad sp create-for-rbac`` (our Microsoft Graph), role assignments, ``acr login --expose-token``.

az is large and pins its own SDK versions, so it is not a test dependency: these tests run when an ``az``
executable is found (``$ACRLOCAL_TEST_AZ``, else ``az`` on ``PATH``) and are skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.arm.conftest import admin_of
from tests.harness import AcrLocal

AZ = os.environ.get("ACRLOCAL_TEST_AZ") or shutil.which("az")
pytestmark = pytest.mark.skipif(AZ is None, reason="no az CLI (set ACRLOCAL_TEST_AZ to its path)")


class Az:
    def __init__(self, server: AcrLocal, config_dir: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_"))}
        self.env.update(AZURE_CONFIG_DIR=str(config_dir), REQUESTS_CA_BUNDLE=server.ca,
                        AZURE_CORE_COLLECT_TELEMETRY="false", AZURE_CORE_INSTANCE_DISCOVERY="false",
                        AZURE_CORE_NO_COLOR="1", AZURE_CORE_ONLY_SHOW_ERRORS="1")

    def __call__(self, *args: str, check: bool = True) -> Any:
        assert AZ is not None
        proc = subprocess.run([AZ, *args, "-o", "json"], capture_output=True, text=True, env=self.env, timeout=180,
                              stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
        return json.loads(proc.stdout) if proc.returncode == 0 and proc.stdout.strip() else proc


def test_az_end_to_end(arm_server: AcrLocal, tmp_path: Path) -> None:
    az = Az(arm_server, tmp_path / "azure")
    az("cloud", "register", "-n", "AcrLocal", "--endpoint-resource-manager", arm_server.shared + "/")
    az("cloud", "set", "-n", "AcrLocal")
    admin = admin_of(arm_server)
    accounts = az("login", "--service-principal", "-u", admin.client_id, "-p", admin.secret, "--tenant",
                  admin.tenant_id)
    assert [a["tenantId"] for a in accounts] == [admin.tenant_id]

    assert az("group", "create", "-n", "az-demo", "-l", "westus")["properties"]["provisioningState"] == "Succeeded"
    registry = az("acr", "create", "-g", "az-demo", "-n", "azdemoreg01", "--sku", "Basic")
    assert registry["loginServer"].startswith("localhost:")
    assert "azdemoreg01" in [r["name"] for r in az("acr", "list")]
    assert az("acr", "update", "-n", "azdemoreg01", "--admin-enabled", "true")["adminUserEnabled"] is True
    assert az("acr", "credential", "show", "-n", "azdemoreg01")["username"] == "azdemoreg01"

    robot = az("ad", "sp", "create-for-rbac", "-n", "az-robot", "--role", "acrpull", "--scopes", registry["id"])
    assert robot["password"] and robot["tenant"] == admin.tenant_id
    listed = az("role", "assignment", "list", "--scope", registry["id"])
    assert [(a["principalName"], a["roleDefinitionName"]) for a in listed] == [(robot["appId"], "AcrPull")]
    group_id = az("group", "show", "-n", "az-demo")["id"]
    az("role", "assignment", "create", "--assignee", robot["appId"], "--role", "Reader", "--scope", group_id)
    az("role", "assignment", "delete", "--assignee", robot["appId"], "--role", "Reader", "--scope", group_id)
    roles = az("role", "assignment", "list", "--assignee", robot["appId"], "--all")
    assert [a["roleDefinitionName"] for a in roles] == ["AcrPull"]

    token = az("acr", "login", "-n", "azdemoreg01", "--expose-token")
    assert token["loginServer"] == registry["loginServer"] and token["accessToken"]

    az("acr", "delete", "-n", "azdemoreg01", "--yes")
    az("group", "delete", "-n", "az-demo", "--yes")
    assert "az-demo" not in [g["name"] for g in az("group", "list")]
