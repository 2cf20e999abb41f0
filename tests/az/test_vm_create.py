"""``az vm create`` as Microsoft's tutorial types it, with Microsoft's az: a deployment of a virtual network, a
network security group, a public IP address (a loopback address of this machine), a network interface and the
VM; ``--generate-ssh-keys`` writes ``~/.ssh/id_rsa[.pub]``; then ``az vm show -d``, ``az vm list-ip-addresses``,
the network resources as ``az network`` shows them, and Azure's refusals to delete what is in use."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tests.az.conftest import Az, unique


def test_vm_create_as_the_tutorial_types_it(host_az: Az) -> None:
    az = host_az
    group = unique("rg-vmc-")
    az("group", "create", "-n", group, "-l", "westus")
    home = az.env["HOME"]
    vm = az("vm", "create", "--resource-group", group, "--name", "myDockerVM", "--image", "UbuntuLTS",
            "--admin-username", "azureuser", "--generate-ssh-keys")
    assert vm["powerState"] == "VM running"
    public = vm["publicIpAddress"]
    assert ipaddress.ip_address(public) in ipaddress.ip_network("127.77.0.0/16")
    assert vm["privateIpAddress"] == "10.0.0.4"
    key = Path(home, ".ssh", "id_rsa.pub").read_text().strip()
    assert key.startswith("ssh-rsa ")

    shown = az("vm", "show", "-d", "-g", group, "-n", "myDockerVM")
    assert shown["publicIps"] == public and shown["powerState"] == "VM running"
    assert shown["osProfile"]["adminUsername"] == "azureuser"
    keys = shown["osProfile"]["linuxConfiguration"]["ssh"]["publicKeys"]
    assert [(k["keyData"].strip(), k["path"]) for k in keys] == [(key, "/home/azureuser/.ssh/authorized_keys")]
    assert shown["storageProfile"]["imageReference"]["offer"] == "UbuntuServer"
    addresses = az("vm", "list-ip-addresses", "-g", group, "-n", "myDockerVM")
    assert addresses[0]["virtualMachine"]["network"]["publicIpAddresses"][0]["ipAddress"] == public

    vnet = az("network", "vnet", "show", "-g", group, "-n", "myDockerVMVNET")
    assert vnet["addressSpace"]["addressPrefixes"] == ["10.0.0.0/16"]
    assert vnet["subnets"][0]["name"] == "myDockerVMSubnet" and vnet["provisioningState"] == "Succeeded"
    rules = az("network", "nsg", "rule", "list", "-g", group, "--nsg-name", "myDockerVMNSG")
    assert [(r["name"], r["destinationPortRange"], r["access"]) for r in rules] == [("default-allow-ssh", "22",
                                                                                      "Allow")]
    nic = az("network", "nic", "show", "-g", group, "-n", "myDockerVMVMNic")
    assert nic["virtualMachine"]["id"] == shown["id"]
    ip = az("network", "public-ip", "show", "-g", group, "-n", "myDockerVMPublicIP")
    assert ip["ipAddress"] == public and ip["ipConfiguration"]["id"].startswith(nic["id"])

    in_use = az.fail("network", "nic", "delete", "-g", group, "-n", "myDockerVMVMNic")
    assert "NicInUse" in in_use.stderr
    ip_in_use = az.fail("network", "public-ip", "delete", "-g", group, "-n", "myDockerVMPublicIP")
    assert "PublicIPAddressCannotBeDeleted" in ip_in_use.stderr

    # A second VM in the same group reuses the network and gets its own public address.
    second = az("vm", "create", "-g", group, "-n", "vm2", "--image", "Ubuntu2204", "--admin-username", "azureuser",
                "--ssh-key-values", f"{home}/.ssh/id_rsa.pub")
    assert second["publicIpAddress"] != public and second["privateIpAddress"] == "10.0.0.5"

    # an image the marketplace does not have: Azure's errors, and nothing made
    missing = az.fail("vm", "image", "list-skus", "-l", "westus", "-p", "Canonical", "-f", "NoSuchOffer")
    assert "Artifact: VMImage was not found." in missing.stderr
    missing = az.fail("vm", "image", "list-offers", "-l", "westus", "-p", "NoSuchPublisher")
    assert "Publisher: NoSuchPublisher was not found." in missing.stderr
    missing = az.fail("vm", "create", "-g", group, "-n", "vm3", "--image", "Canonical:NoSuchOffer:1:latest",
                      "--admin-username", "azureuser", "--ssh-key-values", f"{home}/.ssh/id_rsa.pub")
    assert "Artifact: VMImage was not found." in missing.stderr
    assert az.fail("vm", "show", "-g", group, "-n", "vm3").returncode == 3

    az("vm", "delete", "-g", group, "-n", "vm2", "--yes")
    az("group", "delete", "-n", group, "--yes")
    assert az("group", "exists", "-n", group) is False
