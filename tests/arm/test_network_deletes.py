"""Deleting a network resource that is in use is refused (ARM's 400) before anything of it goes: a security group
keeps its rules, a virtual network its subnets."""

from __future__ import annotations

import uuid

from tests.arm.conftest import Arm, arm_error, subscription_of
from tests.harness import AcrLocal

NETWORK = "2024-05-01"
NET = "/providers/Microsoft.Network"


def _put(admin: Arm, path: str, body: dict[str, object]) -> dict[str, object]:
    r = admin.call("PUT", path, body, api_version=NETWORK)
    assert r.status_code in (200, 201), r.text
    return dict(r.json())


def _names(admin: Arm, path: str) -> list[str]:
    r = admin.call("GET", path, api_version=NETWORK)
    assert r.status_code == 200, r.text
    return sorted(item["name"] for item in r.json()["value"])


def test_refused_delete_of_a_network_resource_in_use_deletes_nothing(arm_server: AcrLocal, admin: Arm) -> None:
    """A security group that an interface uses, and a virtual network with a subnet that an interface uses, are
    not deleted (400 ``InUseNetworkSecurityGroupCannotBeDeleted``, ``InUseSubnetCannotBeDeleted``), and neither
    are the group's rules nor the network's other subnets; once the interface is gone both deletes succeed."""
    group = f"/subscriptions/{subscription_of(arm_server)}/resourceGroups/net-in-use-{uuid.uuid4().hex[:6]}"
    assert admin.call("PUT", group, {"location": "westus"}).status_code == 201
    nsg, vnet, nic = f"{group}{NET}/networkSecurityGroups/nsg", f"{group}{NET}/virtualNetworks/vnet", \
        f"{group}{NET}/networkInterfaces/nic"
    rule = {"protocol": "Tcp", "access": "Allow", "direction": "Inbound", "sourceAddressPrefix": "*",
            "sourcePortRange": "*", "destinationAddressPrefix": "*"}
    _put(admin, nsg, {"location": "westus", "properties": {"securityRules": [
        {"name": "ssh", "properties": {**rule, "priority": 100, "destinationPortRange": "22"}},
        {"name": "https", "properties": {**rule, "priority": 110, "destinationPortRange": "443"}}]}})
    subnets = ["first", "used", "last"]
    _put(admin, vnet, {"location": "westus", "properties": {
        "addressSpace": {"addressPrefixes": ["10.9.0.0/16"]},
        "subnets": [{"name": name, "properties": {"addressPrefix": f"10.9.{i}.0/24"}}
                    for i, name in enumerate(subnets)]}})
    _put(admin, nic, {"location": "westus", "properties": {
        "networkSecurityGroup": {"id": nsg},
        "ipConfigurations": [{"name": "ipconfig1", "properties": {"subnet": {"id": f"{vnet}/subnets/used"}}}]}})

    arm_error(admin.call("DELETE", nsg, api_version=NETWORK), 400, "InUseNetworkSecurityGroupCannotBeDeleted")
    assert _names(admin, f"{nsg}/securityRules") == ["https", "ssh"]
    assert admin.call("GET", nsg, api_version=NETWORK).status_code == 200
    arm_error(admin.call("DELETE", vnet, api_version=NETWORK), 400, "InUseSubnetCannotBeDeleted")
    assert _names(admin, f"{vnet}/subnets") == sorted(subnets)
    assert admin.call("GET", vnet, api_version=NETWORK).status_code == 200

    assert admin.call("DELETE", nic, api_version=NETWORK).status_code == 200
    for path in (nsg, vnet):
        assert admin.call("DELETE", path, api_version=NETWORK).status_code == 200
        assert admin.call("GET", path, api_version=NETWORK).status_code == 404
