"""``ssh azureuser@<publicIpAddress>`` as the tutorial types it after ``az vm create --generate-ssh-keys``: OpenSSH's
client with the key az generated reaches the VM's own sshd at the VM's public IP address (a loopback address
127.77.x.y), port 22, as the VM's admin user, and honours the network security group's inbound rules (a rule
denying port 22 closes it, removing the rule opens it again); a stopped or deleted VM refuses the connection.
Then the tutorial's host commands with Microsoft's az, in order, and its VM commands typed over ssh: ``az login
--identity``, ``az acr login``, ``docker pull``.

The server runs in a network namespace of its own (only ``lo``), so that its VMs' addresses and port 22 are its
alone; az, ssh and skopeo run in that namespace too."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.az.conftest import Az, Contained, unique
from tests.az.test_person import NETNS
from tests.harness import AcrLocal, running
from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout

pytestmark = [
    pytest.mark.skipif(shutil.which("ssh") is None or not Path("/usr/sbin/sshd").exists(),
                       reason="openssh-client and openssh-server are needed"),
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="aci-helloworld is pushed with skopeo"),
]


@pytest.fixture(scope="module")
def az_server(az_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """A server with the default ssh port (22) in a network namespace of its own; its VMs' az is Microsoft's."""
    if os.geteuid() != 0:
        pytest.fail("VMs and a private network namespace need root", pytrace=False)
    with running(tmp_path_factory.mktemp("vmssh") / "data", wrapper=NETNS, vm_az=az_exe) as server:
        yield server


@pytest.fixture(scope="module")
def contained(az_server: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Contained:
    assert az_server.proc is not None
    return Contained(tmp_path_factory.mktemp("contained"), netns_pid=az_server.proc.pid)


def ssh(az: Az, address: str, command: str, *, key: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``ssh azureuser@address command`` in az's home (its ``~/.ssh``), as the user who ran ``az vm create``.
    (OpenSSH looks for ``~/.ssh/id_rsa`` in the passwd entry's home, not ``$HOME``: the key is named.)"""
    home = Path(az.env["HOME"])
    argv = ["ssh", "-i", str(key or home / ".ssh" / "id_rsa"), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={home}/.ssh/known_hosts",
            "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR", f"azureuser@{address}", command]
    return subprocess.run(az.contained.argv(argv), env=az.env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)


def forget_host_key(az: Az, address: str) -> None:
    """``ssh-keygen -R address``, as a user does when a public IP address comes back on another VM (an earlier test's
    VM had this address, with another host key)."""
    known_hosts = Path(az.env["HOME"]) / ".ssh" / "known_hosts"
    if known_hosts.exists():
        subprocess.run(["ssh-keygen", "-f", str(known_hosts), "-R", address], capture_output=True, check=True)


def test_ssh_at_the_public_ip_address(host_az: Az, az_server: AcrLocal, tmp_path: Path) -> None:
    az = host_az
    group = unique("rg-ssh-")
    az("group", "create", "-n", group, "-l", "westus")
    vm = az("vm", "create", "--resource-group", group, "--name", "myDockerVM", "--image", "UbuntuLTS",
            "--admin-username", "azureuser", "--generate-ssh-keys")
    address = vm["publicIpAddress"]
    assert address.startswith("127.77.")
    forget_host_key(az, address)

    data = az_server.data_dir
    done = ssh(az, address, f"id -un; hostname; sudo -n true && echo sudo-ok; cat {data}/admin.json 2>/dev/null "
                            "|| echo no-admin-json; ps -e -o comm= | tr '\\n' ' '")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:4] == ["azureuser", "myDockerVM", "sudo-ok", "no-admin-json"], done.stdout
    assert "sshd" in lines[4].split() and len(lines[4].split()) < 10  # the VM's processes only

    # a key that is not the VM's
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    refused = ssh(az, address, "true", key=other)
    assert refused.returncode == 255 and "Permission denied (publickey)" in refused.stderr

    # the network security group: a rule denying port 22 before az's default-allow-ssh closes it
    az("network", "nsg", "rule", "create", "-g", group, "--nsg-name", "myDockerVMNSG", "-n", "deny-ssh",
       "--priority", "900", "--access", "Deny", "--protocol", "Tcp", "--direction", "Inbound",
       "--destination-port-ranges", "22")
    closed = ssh(az, address, "true")
    assert closed.returncode == 255 and "Connection refused" not in closed.stderr, closed.stderr
    az("network", "nsg", "rule", "delete", "-g", group, "--nsg-name", "myDockerVMNSG", "-n", "deny-ssh")
    # ... and az's own rule narrowed to addresses this machine is not
    az("network", "nsg", "rule", "update", "-g", group, "--nsg-name", "myDockerVMNSG", "-n", "default-allow-ssh",
       "--source-address-prefixes", "203.0.113.0/24")
    assert ssh(az, address, "true").returncode == 255
    az("network", "nsg", "rule", "update", "-g", group, "--nsg-name", "myDockerVMNSG", "-n", "default-allow-ssh",
       "--source-address-prefixes", "Internet")
    assert ssh(az, address, "echo open").stdout == "open\n"

    # a stopped VM answers nothing; started, it does again; deleted, never
    az("vm", "stop", "-g", group, "-n", "myDockerVM")
    stopped = ssh(az, address, "true")
    assert stopped.returncode == 255 and "Connection refused" in stopped.stderr
    az("vm", "start", "-g", group, "-n", "myDockerVM")
    assert ssh(az, address, "echo started").stdout == "started\n"
    az("vm", "delete", "-g", group, "-n", "myDockerVM", "--yes")
    assert "Connection refused" in ssh(az, address, "true").stderr
    az("group", "delete", "-n", group, "--yes")


def test_the_tutorial_from_the_host_with_ssh(host_az: Az, az_server: AcrLocal, contained: Contained,
                                             tmp_path: Path) -> None:
    """The article's host commands with Microsoft's az, in order, then its VM commands over ssh, both
    examples."""
    az = host_az
    az("group", "create", "--name", "myResourceGroup", "--location", "westus")
    az("acr", "create", "--resource-group", "myResourceGroup", "--name", "mycontainerregistry", "--sku", "Basic")
    _push_aci_helloworld(az, contained, tmp_path)
    vm = az("vm", "create", "--resource-group", "myResourceGroup", "--name", "myDockerVM", "--image", "UbuntuLTS",
            "--admin-username", "azureuser", "--generate-ssh-keys")
    public_ip = vm["publicIpAddress"]
    forget_host_key(az, public_ip)

    # Example 1: a user-assigned identity
    az("identity", "create", "--resource-group", "myResourceGroup", "--name", "myACRId")
    identity = az("identity", "show", "--resource-group", "myResourceGroup", "--name", "myACRId")
    user_id, sp_id = identity["id"], identity["principalId"]
    az("vm", "identity", "assign", "--resource-group", "myResourceGroup", "--name", "myDockerVM", "--identities",
       user_id)
    resource_id = az("acr", "show", "--resource-group", "myResourceGroup", "--name", "myContainerRegistry",
                     "--query", "id")
    pull = ("az acr login --name myContainerRegistry && "
            "docker pull mycontainerregistry.azurecr.io/aci-helloworld:v1 && "
            "docker rmi mycontainerregistry.azurecr.io/aci-helloworld:v1 >/dev/null")
    denied = ssh(az, public_ip, f"az login --identity --resource-id {user_id} --output none; {pull}")
    assert denied.returncode != 0 and "Downloaded" not in denied.stdout
    az("role", "assignment", "create", "--assignee", sp_id, "--scope", resource_id, "--role", "acrpull")
    done = ssh(az, public_ip, f"az login --identity --resource-id {user_id} --query '[0].user.name' --output tsv "
                              f"&& {pull}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("userAssignedIdentity\n") and "Login Succeeded" in done.stdout
    assert "Downloaded newer image for mycontainerregistry.azurecr.io/aci-helloworld:v1" in done.stdout \
        or "mycontainerregistry.azurecr.io/aci-helloworld:v1" in done.stdout.splitlines()[-1]

    # Example 2: the VM's system-assigned identity
    az("vm", "identity", "assign", "--resource-group", "myResourceGroup", "--name", "myDockerVM")
    sp_id = az("vm", "show", "--resource-group", "myResourceGroup", "--name", "myDockerVM", "--query",
               "identity.principalId")
    az("role", "assignment", "create", "--assignee", sp_id, "--scope", resource_id, "--role", "acrpull")
    done = ssh(az, public_ip, f"az login --identity --query '[0].user.name' --output tsv && {pull}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith("systemAssignedIdentity\n") and "Login Succeeded" in done.stdout
    az("group", "delete", "--name", "myResourceGroup", "--yes")


def _push_aci_helloworld(az: Az, contained: Contained, root: Path) -> None:
    """What the article assumes: aci-helloworld:v1 in the registry, pushed by the local administrator."""
    layer = tar_layer({"hello.txt": b"Hello from a managed identity, over ssh\n"})
    config = config_blob(diff_ids=[layer.digest])
    write_layout(root / "layout", {"v1": image(config, [layer])}, [config, layer])
    token = az("acr", "login", "--name", "myContainerRegistry", "--expose-token")
    login_server = token["loginServer"]
    contained.names.add(login_server.split(":")[0])
    with Containers(root / "tools", az.server, anonymous=True) as tools:
        argv = ["skopeo", "copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), "--dest-creds",
                f"00000000-0000-0000-0000-000000000000:{token['accessToken']}", f"oci:{root / 'layout'}:v1",
                f"docker://{login_server}/aci-helloworld:v1"]
        proc = subprocess.run(contained.argv(argv), env=tools.env(), capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
