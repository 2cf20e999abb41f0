"""Which ssh connections a network security group lets through to a VM's public address (Azure's inbound
evaluation: rules and the default ones by priority, the first match decides), and a door that cannot be opened
said once (a port taken, or port 22 refused). The whole path, with az and OpenSSH, is tests/az/test_vm_ssh.py."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shutil
import socket
import subprocess
import sys
from typing import Any

import pytest

from acrlocal.arm.vm_ssh import Inbound, VmSshDoors, nsg_allows
from tests.harness import child_env

HOST = Inbound(ipaddress.IPv4Address("127.0.0.1"), 50123, ipaddress.IPv4Address("10.0.0.4"), 22,
               (ipaddress.IPv4Network("10.0.0.0/16"),))


def rule(priority: int = 1000, access: str = "Allow", **props: Any) -> dict[str, Any]:
    """A rule as stored (what ``az network nsg rule create`` sends, normalized); az's default-allow-ssh."""
    return {"protocol": "Tcp", "sourcePortRange": "*", "destinationPortRange": "22", "sourceAddressPrefix": "*",
            "destinationAddressPrefix": "*", "access": access, "priority": priority, "direction": "Inbound",
            **props}


def test_az_vm_creates_rule_lets_ssh_in_and_the_defaults_deny_the_rest() -> None:
    assert nsg_allows([rule()], HOST)
    assert not nsg_allows([], HOST)  # DenyAllInBound
    assert not nsg_allows([rule(destinationPortRange="80")], HOST)
    assert not nsg_allows([rule(protocol="Udp")], HOST)
    assert nsg_allows([rule(protocol="*")], HOST)
    assert not nsg_allows([rule(direction="Outbound")], HOST)


def test_the_lowest_priority_number_that_matches_decides() -> None:
    assert not nsg_allows([rule(), rule(900, "Deny", destinationPortRange="*")], HOST)
    assert nsg_allows([rule(1100, "Deny"), rule()], HOST)
    assert nsg_allows([rule(900, "Deny", destinationPortRange="443"), rule()], HOST)


@pytest.mark.parametrize(("props", "allowed"), [
    ({"sourceAddressPrefix": "Internet"}, True),       # this machine is outside the virtual network
    ({"sourceAddressPrefix": "VirtualNetwork"}, False),
    ({"sourceAddressPrefix": "AzureLoadBalancer"}, False),
    ({"sourceAddressPrefix": "127.0.0.0/8"}, True),
    ({"sourceAddressPrefix": "127.0.0.1"}, True),
    ({"sourceAddressPrefix": "203.0.113.0/24"}, False),
    ({"sourceAddressPrefix": None, "sourceAddressPrefixes": ["203.0.113.0/24", "127.0.0.1/32"]}, True),
    ({"destinationAddressPrefix": "10.0.0.4"}, True),  # the VM's private address, as Azure evaluates it
    ({"destinationAddressPrefix": "VirtualNetwork"}, True),
    ({"destinationAddressPrefix": "10.0.0.5/32"}, False),
    ({"destinationAddressPrefix": "Internet"}, False),
    ({"destinationPortRange": "20-25"}, True),
    ({"destinationPortRange": None, "destinationPortRanges": ["80", "22"]}, True),
    ({"destinationPortRange": "23-65535"}, False),
    ({"sourcePortRange": "50000-50200"}, True),
    ({"sourcePortRange": "1-1023"}, False),
])
def test_what_a_rule_matches(props: dict[str, Any], allowed: bool) -> None:
    assert nsg_allows([rule(**props)], HOST) is allowed


def test_a_door_that_cannot_be_opened_is_said_once(caplog: pytest.LogCaptureFixture) -> None:
    taken = socket.socket()
    taken.bind(("127.77.255.254", 0))
    taken.listen()
    port = taken.getsockname()[1]

    async def scenario() -> None:
        doors = VmSshDoors(None, None, list, port)  # type: ignore[arg-type] # opening touches neither
        doors._loop = asyncio.get_running_loop()
        with caplog.at_level(logging.WARNING, "acrlocal.arm.vm_ssh"):
            doors._open("127.77.255.254")
            doors._open("127.77.255.254")
        assert doors.addresses == []

    try:
        asyncio.run(scenario())
    finally:
        taken.close()
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and f"cannot listen for ssh at 127.77.255.254:{port}" in said[0]
    assert "acrlocal ssh vm" in said[0]


SCENARIO = """
import asyncio, logging
from acrlocal.arm.vm_ssh import VmSshDoors
logging.basicConfig(level=logging.WARNING, format="%(message)s")
async def scenario():
    doors = VmSshDoors(None, None, list, 22)
    doors._loop = asyncio.get_running_loop()
    doors._open("127.77.255.253")
    doors._open("127.77.255.252")
    print(doors.addresses)
asyncio.run(scenario())
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_port_22_refused_says_why_and_what_to_use_instead() -> None:
    """A server that may not bind ports below 1024 (here root without CAP_NET_BIND_SERVICE, as in a container that
    drops it; a user other than root is refused VMs altogether): the kernel refuses port 22 (EACCES), and the log
    says so once, with what to use instead."""
    proc = subprocess.run(["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service",
                           sys.executable, "-c", SCENARIO], capture_output=True, text=True, env=child_env(),
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    said = proc.stderr.strip().splitlines()
    assert len(said) == 1, said
    assert "binding 127.77.255.253:22 was refused (Permission denied)" in said[0]
    assert "CAP_NET_BIND_SERVICE" in said[0] and "`ssh azureuser@<publicIpAddress>` is refused" in said[0]
    assert "acrlocal ssh vm -g <group> -n <vm>" in said[0] and "--vm-ssh-port 2222" in said[0]
