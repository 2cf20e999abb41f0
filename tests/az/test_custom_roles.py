"""Custom role definitions with Microsoft's az: ``az role definition create|list|update|delete``, assignable
scopes, evaluated exactly like built-in roles (in ARM and at the registry's token service); built-in roles stay
read-only."""

from __future__ import annotations

import json
from pathlib import Path

from tests.az.conftest import Az, Contained, unique
from tests.harness import AcrLocal


def test_custom_role_lifecycle_and_evaluation(host_az: Az, az_exe: Path, az_server: AcrLocal, contained: Contained,
                                              tmp_path: Path) -> None:
    az = host_az
    sub = az_server.admin_credential()["subscriptionId"]
    rg, registry, role_name = unique("rg-"), unique("reg"), unique("Registry Reader Puller ")
    az("group", "create", "-n", rg, "-l", "westus")
    reg = az("acr", "create", "-g", rg, "-n", registry, "--sku", "Basic")
    scope = f"/subscriptions/{sub}/resourceGroups/{rg}"
    definition = {"Name": role_name, "Description": "reads registries and pulls",
                  "Actions": ["Microsoft.ContainerRegistry/registries/read",
                              "Microsoft.ContainerRegistry/registries/pull/read",
                              "Microsoft.Resources/subscriptions/resourceGroups/read"],
                  "NotActions": [], "DataActions": [], "NotDataActions": [], "AssignableScopes": [scope]}
    created = az("role", "definition", "create", "--role-definition", json.dumps(definition))
    assert (created["roleName"], created["roleType"]) == (role_name, "CustomRole")
    assert created["assignableScopes"] == [scope]
    listed = az("role", "definition", "list", "--custom-role-only", "--name", role_name, "--scope", scope)
    assert [d["name"] for d in listed] == [created["name"]]
    again = az.fail("role", "definition", "create", "--role-definition", json.dumps(definition))
    assert "same name" in again.stderr

    updated = az("role", "definition", "update", "--role-definition",
                 json.dumps({**created, "description": "reads and pulls"}))
    assert updated["description"] == "reads and pulls" and updated["name"] == created["name"]

    robot = az("ad", "sp", "create-for-rbac", "-n", unique("robot-"), "--role", role_name, "--scopes", reg["id"])
    as_robot = Az(az_exe, az_server, tmp_path / "robot", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    as_robot.setup()
    as_robot("login", "--service-principal", "-u", robot["appId"], "-p", robot["password"], "--tenant",
             robot["tenant"])
    # The custom role's actions hold in ARM (registries/read) and at the registry (pull/read)...
    assert as_robot("acr", "show", "-n", registry, "-g", rg)["id"] == reg["id"]
    assert as_robot("acr", "login", "-n", registry, "--expose-token")["accessToken"]
    # ... and nothing else does.
    denied = as_robot.fail("acr", "update", "-n", registry, "-g", rg, "--admin-enabled", "true")
    assert "AuthorizationFailed" in denied.stderr

    # Built-in roles are read-only; a custom role in use cannot be deleted.
    builtin = az.fail("role", "definition", "delete", "--name", "AcrPull", "--scope", scope)
    assert "built-in" in builtin.stderr
    in_use = az.fail("role", "definition", "delete", "--name", role_name, "--scope", scope)
    assert "existing role assignments" in in_use.stderr
    az("role", "assignment", "delete", "--assignee", robot["appId"], "--role", role_name, "--scope", reg["id"])
    az("role", "definition", "delete", "--name", role_name, "--scope", scope)
    assert az("role", "definition", "list", "--custom-role-only", "--name", role_name, "--scope", scope) == []
    az("ad", "app", "delete", "--id", robot["appId"])
    az("group", "delete", "-n", rg, "--yes")
