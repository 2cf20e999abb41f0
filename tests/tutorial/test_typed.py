"""The tutorial typed as a person types it: each of the article's VM lines sent to a shell in the VM (tmux
``send-keys`` on ``acrlocal ssh vm``) and read back from the screen (``capture-pane``), with Microsoft's az in the
VM (its default AzureCloud, nothing set up) and the VM's Docker Engine; the host's lines are the article's too
(``az`` there is acrlocal's CLI). Both examples, Microsoft's IMDS curl line, and the denials: before the role
assignment, and after the identities left the VM."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.az.conftest import find_az
from tests.harness import SRC, AcrLocal, running
from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout
from tests.tutorial.conftest import Shell
from tests.vmexec import vm_client

BUSYBOX = Path("/bin/busybox")
PROMPT = "azureuser@myDockerVM:~$"
HELLO = "Hello from aci-helloworld, pulled with a managed identity"
pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
    pytest.mark.skipif(shutil.which("dockerd") is None, reason="the VM's Docker Engine needs docker.io"),
    pytest.mark.skipif(not BUSYBOX.exists() or shutil.which("skopeo") is None,
                       reason="busybox-static and skopeo make and push aci-helloworld"),
]


class Terminal:
    """A tmux pane (a private tmux server) running one command; lines are typed into it and the screen read."""

    def __init__(self, root: Path, command: list[str], env: dict[str, str]) -> None:
        self.socket = str(root / "tmux.sock")
        self.env = env
        self.tmux("new-session", "-d", "-s", "t", "-x", "220", "-y", "50", " ".join(_quote(a) for a in command))

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(["tmux", "-S", self.socket, *args], capture_output=True, text=True, env=self.env,
                              timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-S", "-", "-t", "t")

    def wait_for(self, pattern: str, timeout: float = 300) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.screen()
            if re.search(pattern, text):
                return text
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} did not appear on the screen:\n{self.screen()[-4000:]}")

    def type(self, line: str, timeout: float = 300) -> str:
        """Type ``line`` and Enter at the prompt; what the screen shows until the next prompt."""
        self.tmux("clear-history", "-t", "t")
        self.tmux("send-keys", "-t", "t", "clear", "Enter")
        self.wait_for(rf"(?m)^{re.escape(PROMPT)} ?$", 60)
        self.tmux("send-keys", "-t", "t", "-l", line)
        self.tmux("send-keys", "-t", "t", "Enter")
        # the next prompt ends the output (on a line of its own, or after output with no final newline)
        text = self.wait_for(rf"{re.escape(PROMPT)} {re.escape(line)}\n(?:.*\n)*?.*?{re.escape(PROMPT)} ?\s*$",
                             timeout)
        shown = text.split(f"{PROMPT} {line}\n", 1)[1]
        return shown.rsplit(PROMPT, 1)[0]

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=60)


def _quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


@pytest.fixture(scope="module")
def typed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """A server whose VMs get Microsoft's az, as a host with az installed gives them."""
    az = find_az()
    if az is None:
        pytest.fail("Microsoft's az CLI was not found (./scripts/test installs it into .venv-az)", pytrace=False)
    with running(tmp_path_factory.mktemp("typed") / "data", vm_az=az) as server:
        yield server


@pytest.fixture(scope="module")
def host(typed_server: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Shell:
    root = tmp_path_factory.mktemp("typed-shell")
    (root / "bin").mkdir()
    az = root / "bin" / "az"
    az.write_text(f"#!/bin/sh\n# az is acrlocal's az-shaped CLI\nexec {sys.executable} -m acrlocal \"$@\"\n")
    az.chmod(0o755)
    return Shell(typed_server, root / "bin", root / "profile")


@pytest.fixture(scope="module")
def vm_terminal(host: Shell, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Terminal]:
    """The article's prerequisites (the group, the registry with aci-helloworld:v1, the VM made by the article's
    own command), then a terminal on the VM's shell."""
    sh = host.run
    sh("az group create --name myResourceGroup --location westus")
    sh("az acr create --resource-group myResourceGroup --name mycontainerregistry --sku Basic")
    created = json.loads(host.out("""
        az vm create \\
            --resource-group myResourceGroup \\
            --name myDockerVM \\
            --image UbuntuLTS \\
            --admin-username azureuser \\
            --generate-ssh-keys
    """))
    assert created["powerState"] == "VM running"
    root = tmp_path_factory.mktemp("aci-helloworld")
    layer = tar_layer({"bin/busybox": BUSYBOX.read_bytes()}, modes={"bin/busybox": 0o755})
    config = config_blob(diff_ids=[layer.digest], cmd=["/bin/busybox", "echo", HELLO])
    write_layout(root / "layout", {"v1": image(config, [layer])}, [config, layer])
    login_server = host.out("az acr show --name myContainerRegistry --query loginServer --output tsv")
    token = host.out("az acr login --name myContainerRegistry --expose-token --query accessToken --output tsv")
    with Containers(root / "tools", host.server, anonymous=True) as tools:  # the local administrator pushes
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), "--dest-creds",
                     f"00000000-0000-0000-0000-000000000000:{token}", f"oci:{root / 'layout'}:v1",
                     f"docker://{login_server}/aci-helloworld:v1")
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color", "LANG": "C.UTF-8",
           "PYTHONPATH": str(SRC), "ACRLOCAL_DATA_DIR": str(host.server.data_dir),
           "ACRLOCAL_CONFIG_DIR": str(host.profile), "HOME": str(root)}
    terminal = Terminal(root, [sys.executable, "-m", "acrlocal", "ssh", "vm", "--resource-group", "myResourceGroup",
                               "--name", "myDockerVM"], env)
    try:
        terminal.wait_for(re.escape(PROMPT), 120)
        yield terminal
    finally:
        terminal.close()
        host.run("az group delete --name myResourceGroup --yes", check=False)


def test_the_article_typed_into_the_vm(host: Shell, vm_terminal: Terminal) -> None:
    vm = vm_terminal.type
    # "Install Docker on the VM", and its check
    out = vm("sudo apt install docker.io -y")
    assert "packages come from the host" in out and "docker.io is already the newest version" in out
    out = vm("sudo docker run -it hello-world")
    assert "Unable to find image 'hello-world:latest' locally" in out
    assert "lookup registry-1.docker.io" in out and "no such host" in out  # Docker's own words, offline

    # Microsoft's "how to use managed identities on a VM" page, its curl line verbatim: no identity yet
    out = vm("curl 'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource="
             "https%3A%2F%2Fmanagement.azure.com%2F' -H Metadata:true -s")
    assert json.loads(out) == {"error": "invalid_request", "error_description": "Identity not found"}

    # Example 1, on the host
    host.run("az identity create --resource-group myResourceGroup --name myACRId")
    user_id = host.out("az identity show --resource-group myResourceGroup --name myACRId --query id --output tsv")
    sp_id = host.out("az identity show --resource-group myResourceGroup --name myACRId --query principalId "
                     "--output tsv")
    host.run(f"az vm identity assign --resource-group myResourceGroup --name myDockerVM --identities {user_id}")
    resource_id = host.out("az acr show --resource-group myResourceGroup --name myContainerRegistry --query id "
                           "--output tsv")

    # before the role assignment: the identity signs in to nothing, and the registry refuses the pull
    out = vm(f"az login --identity --resource-id {user_id}")
    assert "No access was configured for the managed identity, hence no subscriptions were found" in out
    out = vm("docker pull mycontainerregistry.azurecr.io/aci-helloworld:v1")
    assert "unauthorized" in out or "denied" in out

    host.run(f"az role assignment create --assignee {sp_id} --scope {resource_id} --role acrpull")

    # Example 1, in the VM: the article's lines; az 2.91 itself refuses --username and names the option to use
    out = vm(f"az login --identity --username {user_id}")
    assert "--username is no longer supported" in out
    out = vm(f"az login --identity --resource-id {user_id}")
    assert '"environmentName": "AzureCloud"' in out and '"name": "userAssignedIdentity"' in out
    out = vm("az acr login --name myContainerRegistry")
    assert "Login Succeeded" in out
    out = vm("docker pull mycontainerregistry.azurecr.io/aci-helloworld:v1")
    assert "Status: Downloaded newer image for mycontainerregistry.azurecr.io/aci-helloworld:v1" in out
    out = vm("docker run mycontainerregistry.azurecr.io/aci-helloworld:v1")
    assert out.strip() == HELLO

    # Example 2, on the host
    host.run("az vm identity assign --resource-group myResourceGroup --name myDockerVM")
    sp_id = host.out("az vm show --resource-group myResourceGroup --name myDockerVM --query identity.principalId "
                     "--out tsv")
    host.run(f"az role assignment create --assignee {sp_id} --scope {resource_id} --role acrpull")
    # ... and in the VM
    vm("docker rmi -f mycontainerregistry.azurecr.io/aci-helloworld:v1")
    out = vm("az login --identity")
    assert '"name": "systemAssignedIdentity"' in out
    out = vm("curl 'http://169.254.169.254/metadata/identity/oauth2/token?api-version=2018-02-01&resource="
             "https%3A%2F%2Fmanagement.azure.com%2F' -H Metadata:true -s")
    token: dict[str, Any] = json.loads(out)
    assert token["resource"] == "https://management.azure.com/" and token["token_type"] == "Bearer"
    out = vm("az acr login --name myContainerRegistry")
    assert "Login Succeeded" in out
    out = vm("docker pull mycontainerregistry.azurecr.io/aci-helloworld:v1")
    assert "Downloaded newer image" in out

    # the identities leave the VM: nothing signs in, and the credentials docker holds stop working
    host.run(f"az vm identity remove --resource-group myResourceGroup --name myDockerVM --identities [system] "
             f"{user_id}")
    vm("docker rmi -f mycontainerregistry.azurecr.io/aci-helloworld:v1")
    out = vm("az login --identity")
    assert "Identity not found" in out
    out = vm("docker pull mycontainerregistry.azurecr.io/aci-helloworld:v1")
    assert "unauthorized" in out or "denied" in out


def test_the_azure_sdks_in_the_vm_with_no_settings(host: Shell, vm_terminal: Terminal) -> None:
    """The article's "Use the Azure SDKs" option: production code unchanged in the VM, nothing exported by hand.
    azure-identity's ManagedIdentityCredential and DefaultAzureCredential find IMDS at 169.254.169.254, and
    azure-containerregistry talks to https://mycontainerregistry.azurecr.io, as on Azure; and the SDK is refused
    before the identity holds a role there."""
    vm_id = host.out("az vm show --resource-group myResourceGroup --name myDockerVM --query id --output tsv")
    resource_id = host.out("az acr show --resource-group myResourceGroup --name myContainerRegistry --query id "
                           "--output tsv")
    host.run("az vm identity assign --resource-group myResourceGroup --name myDockerVM")
    sp_id = host.out("az vm show --resource-group myResourceGroup --name myDockerVM --query identity.principalId "
                     "--out tsv")
    code = """
        from azure.containerregistry import ContainerRegistryClient
        from azure.identity import {credential}
        client = ContainerRegistryClient("https://mycontainerregistry.azurecr.io", {credential}())
        try:
            names = list(client.list_repository_names())
            digest = client.get_manifest_properties("aci-helloworld", "v1").digest
        except Exception as exc:
            report(ok=False, error=type(exc).__name__, message=str(exc))
        else:
            report(ok=True, names=names, digest=digest)
    """
    environment = vm_client(host.server, vm_id, "import os\nreport(ok=True, names=sorted(os.environ))")
    assert not [n for n in environment["names"] if n.startswith(("AZURE_", "IDENTITY_", "MSI_", "IMDS_"))]

    denied = vm_client(host.server, vm_id, code.format(credential="ManagedIdentityCredential"))
    assert denied["ok"] is False and denied["error"] == "ClientAuthenticationError", denied

    host.run(f"az role assignment create --assignee {sp_id} --scope {resource_id} --role acrpull")
    for credential in ("ManagedIdentityCredential", "DefaultAzureCredential"):
        result = vm_client(host.server, vm_id, code.format(credential=credential))
        assert result["ok"], result
        assert result["names"] == ["aci-helloworld"] and result["digest"].startswith("sha256:")
