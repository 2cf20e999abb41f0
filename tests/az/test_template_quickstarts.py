"""The project's own templates equivalent to Microsoft's quickstarts (a Linux VM reachable over ssh; a container
registry with its admin user and a pulling identity), each deployed, redeployed (idempotent), what-if'd and
deleted with Microsoft's az."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from tests.az.conftest import Az, unique

TEMPLATES = Path(__file__).parent / "templates"
KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 test@acrlocal"


def test_linux_vm_quickstart(host_az: Az) -> None:
    az = host_az
    group = unique("rg-qs-")
    az("group", "create", "-n", group, "-l", "westeurope")
    template = str(TEMPLATES / "linux-vm.json")
    args = ("-g", group, "--template-file", template, "--parameters", "adminUsername=azureuser",
            f"adminPublicKey={KEY}")
    created = az("deployment", "group", "create", "-n", "vm", *args)
    outputs = created["properties"]["outputs"]
    public = outputs["publicIp"]["value"]
    assert ipaddress.ip_address(public) in ipaddress.ip_network("127.77.0.0/16")
    assert outputs["sshCommand"]["value"] == f"ssh azureuser@{public}"
    assert outputs["hostname"]["value"].startswith("simplelinuxvm-")
    assert created["properties"]["parameters"]["adminPublicKey"] == {"type": "SecureString"}  # never echoed
    vm = az("vm", "show", "-d", "-g", group, "-n", "simpleLinuxVM")
    assert vm["publicIps"] == public and vm["hardwareProfile"]["vmSize"] == "Standard_B2s"
    assert vm["storageProfile"]["imageReference"]["offer"] == "0001-com-ubuntu-server-jammy"
    assert [s["name"] for s in az("network", "vnet", "subnet", "list", "-g", group, "--vnet-name",
                                  "simpleLinuxVM-vnet")] == ["subnet0", "subnet1"]

    again = az("deployment", "group", "create", "-n", "vm", *args)
    assert again["properties"]["outputs"]["publicIp"]["value"] == public  # the same address: nothing new
    assert az("vm", "show", "-g", group, "-n", "simpleLinuxVM")["vmId"] == vm["vmId"]
    assert len(az("network", "public-ip", "list", "-g", group)) == 1

    same = az("deployment", "group", "what-if", *args, "--no-pretty-print")
    kinds = {c["resourceId"].rsplit("/", 2)[-2]: c["changeType"] for c in same["changes"]}
    assert kinds == {"networkSecurityGroups": "NoChange", "virtualNetworks": "NoChange",
                     "publicIPAddresses": "NoChange", "networkInterfaces": "NoChange",
                     "virtualMachines": "NoChange"}, same["changes"]
    bigger = az("deployment", "group", "what-if", *args, "vmSize=Standard_D2s_v5", "--no-pretty-print")
    vm_change = next(c for c in bigger["changes"] if c["resourceId"].endswith("/simpleLinuxVM"))
    assert vm_change["changeType"] == "Modify"
    assert [d["path"] for d in vm_change["delta"]] == ["properties.hardwareProfile.vmSize"]

    az("deployment", "group", "delete", "-g", group, "-n", "vm")
    az("group", "delete", "-n", group, "--yes")
    assert az("group", "exists", "-n", group) is False


def test_container_registry_quickstart_with_complete_mode(host_az: Az) -> None:
    az = host_az
    group = unique("rg-qs-")
    az("group", "create", "-n", group, "-l", "westus")
    stray = az("identity", "create", "-g", group, "-n", "stray")
    template = str(TEMPLATES / "registry.json")
    az("deployment", "group", "create", "-g", group, "-n", "acr", "--template-file", template)
    preview = az("deployment", "group", "what-if", "-g", group, "--template-file", template, "--mode", "Complete",
                 "--no-pretty-print")
    by_kind = {c["resourceId"]: c["changeType"] for c in preview["changes"]}
    assert by_kind[stray["id"]] == "Delete"
    az("deployment", "group", "create", "-g", group, "-n", "acr", "--template-file", template, "--mode", "Complete")
    names = [i["name"] for i in az("identity", "list", "-g", group)]
    assert "stray" not in names and len(names) == 1
    assert len(az("acr", "list", "-g", group)) == 1
    az("group", "delete", "-n", group, "--yes")
