"""``az identity list-resources`` (listAssociatedResources: the resources an identity is assigned to) and
``Microsoft.ManagedIdentity/operations``, with Microsoft's az."""

from __future__ import annotations

from tests.az.conftest import Az, unique


def test_identity_list_resources_and_operations(host_az: Az) -> None:
    az = host_az
    rg, ident, vm = unique("rg-"), unique("id-"), unique("vm-")
    az("group", "create", "-n", rg, "-l", "westus")
    identity = az("identity", "create", "-g", rg, "-n", ident)
    assert az("identity", "list-resources", "-g", rg, "-n", ident) == []
    made = az.acrlocal("vm", "create", "-g", rg, "-n", vm, "--image", "UbuntuLTS")
    assert made.returncode == 0, made.stderr
    az("vm", "identity", "assign", "-g", rg, "-n", vm, "--identities", identity["id"])
    listed = az("identity", "list-resources", "-g", rg, "-n", ident)
    assert [(r["name"], r["type"], r["resourceGroup"]) for r in listed] == \
        [(vm, "Microsoft.Compute/virtualMachines", rg)]

    operations = az("rest", "--method", "get", "--url",
                    "/providers/Microsoft.ManagedIdentity/operations?api-version=2023-01-31")
    names = [o["name"] for o in operations["value"]]
    assert "Microsoft.ManagedIdentity/userAssignedIdentities/read" in names
    assert "Microsoft.ManagedIdentity/userAssignedIdentities/listAssociatedResources/action" in names
    az.acrlocal("vm", "delete", "-g", rg, "-n", vm, "--yes")
    az("group", "delete", "-n", rg, "--yes")
