""""Use an Azure managed identity to authenticate to an Azure container registry", end to end, with the
article's command lines and names (``mycontainerregistry.azurecr.io`` in the VM); on the host ``az`` is acrlocal's
CLI (a shim on PATH).

What the article leaves to the reader is done first: the resource group, the registry, an ``aci-helloworld:v1``
image pushed by a principal that holds AcrPush (``podman login -u <appId> -p <secret>``, as from CI, then
skopeo), and the Docker-enabled VM. Example 1 steps into the VM with ``az ssh vm``, Example 2 with ``az vm
run-command invoke``; in the VM ``az`` is the VM's az and ``docker`` the VM's Docker Engine (podman where the host
has no docker.io). Around the article's steps the test shows what stays denied: the pull before the role
assignment, a push with AcrPull, and the pull after the identity left the VM. (The article typed as a person types
it, with Microsoft's az in the VM, is tests/tutorial/test_typed.py.)
"""

from __future__ import annotations

import json
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout
from tests.tutorial.conftest import Shell

pytestmark = pytest.mark.skipif(shutil.which("podman") is None or shutil.which("skopeo") is None,
                                reason="the image is pushed with podman and skopeo")
DIGEST = "docker image inspect {ref} --format '{{{{index .RepoDigests 0}}}}' 2>/dev/null | sed 's/.*@//' || " \
         "docker image inspect {ref} --format '{{{{.Digest}}}}'"
IMAGE = "aci-helloworld:v1"


@pytest.fixture(scope="module")
def world(shell: Shell, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The article's prerequisites (deleted afterwards with the group)."""
    sh = shell.run
    sh("az group create --name myResourceGroup --location westus")
    sh("az acr create --resource-group myResourceGroup --name mycontainerregistry --sku Basic")
    created = json.loads(shell.out("""
        az vm create \\
            --resource-group myResourceGroup \\
            --name myDockerVM \\
            --image UbuntuLTS \\
            --admin-username azureuser \\
            --generate-ssh-keys
    """))
    assert created["powerState"] == "VM running"

    # aci-helloworld:v1, built here as an OCI layout and pushed by a service principal with AcrPush
    root = tmp_path_factory.mktemp("aci-helloworld")
    layer = tar_layer({"hello.txt": b"Hello from a managed identity\n"})
    config = config_blob(diff_ids=[layer.digest])
    manifest = image(config, [layer])
    write_layout(root / "layout", {"v1": manifest}, [config, layer])
    registry_id = shell.out("az acr show --resource-group myResourceGroup --name myContainerRegistry "
                            "--query id --output tsv")
    pusher = json.loads(shell.out(f"az ad sp create-for-rbac --name acrPusher --role acrpush "
                                  f"--scopes {registry_id}"))
    host_login_server = shell.out("az acr show --name myContainerRegistry --query loginServer --output tsv")
    with Containers(root / "tools", shell.server, anonymous=True) as tools:
        # as from CI: the service principal logs in with its app id and client secret
        assert "Login Succeeded" in tools.podman("login", "--cert-dir", str(tools.cert_dir), "-u", pusher["appId"],
                                                 "-p", pusher["password"], host_login_server)
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir),
                     f"oci:{root / 'layout'}:v1", f"docker://{host_login_server}/{IMAGE}")
        # AcrPush pushes and pulls, but does not delete
        with pytest.raises(AssertionError, match=r"(?i)denied|unauthorized"):
            tools.skopeo("delete", "--cert-dir", str(tools.cert_dir), f"docker://{host_login_server}/{IMAGE}")
    yield {"digest": manifest.digest, "server": "mycontainerregistry.azurecr.io"}
    shell.run("az group delete --name myResourceGroup --yes")


def in_vm_ssh(shell: Shell, script: str, *, check: bool = True) -> Any:
    """The VM's shell: ``az ssh vm`` with a command, as ``ssh azureuser@publicIpAddress '...'``."""
    return shell.run("az ssh vm --resource-group myResourceGroup --name myDockerVM -- "
                     + shlex.quote("set -e\n" + script), check=check)


def test_example_1_user_assigned_identity(shell: Shell, world: dict[str, Any]) -> None:
    server, digest = world["server"], world["digest"]
    shell.run("az identity create --resource-group myResourceGroup --name myACRId")
    user_id = shell.out("az identity show --resource-group myResourceGroup --name myACRId --query id --output tsv")
    sp_id = shell.out("az identity show --resource-group myResourceGroup --name myACRId --query principalId "
                      "--output tsv")
    assigned = json.loads(shell.out(f"az vm identity assign --resource-group myResourceGroup --name myDockerVM "
                                    f"--identities {user_id}"))
    assert list(assigned["userAssignedIdentities"]) == [user_id]

    # before the role assignment: no subscription to sign in to, and the pull is denied
    before = in_vm_ssh(shell, f"az login --identity --username {user_id}", check=False)
    assert before.returncode == 1 and "No access was configured for the managed identity" in before.stderr
    denied = in_vm_ssh(shell, f"docker pull {server}/{IMAGE}", check=False)
    assert denied.returncode != 0 and "denied" in denied.stderr

    resource_id = shell.out("az acr show --resource-group myResourceGroup --name myContainerRegistry "
                            "--query id --output tsv")
    shell.run(f"az role assignment create --assignee {sp_id} --scope {resource_id} --role acrpull")

    inside = in_vm_ssh(shell, f"""
        az login --identity --username {user_id}
        az acr login --name myContainerRegistry
        docker pull {server}/{IMAGE}
        {DIGEST.format(ref=f"{server}/{IMAGE}")}
        skopeo inspect docker://{server}/{IMAGE} --format '{{{{.Digest}}}}'
    """)
    assert "Login Succeeded" in inside.stdout
    lines = inside.stdout.splitlines()
    assert lines[-2:] == [digest, digest]
    accounts = json.loads(inside.stdout[:inside.stdout.index("Login Succeeded")])
    assert accounts[0]["user"] == {"assignedIdentityInfo": f"MSIResource-{user_id}", "name": "userAssignedIdentity",
                                   "type": "servicePrincipal"}

    # AcrPull does not push, with the same credentials
    pushed = in_vm_ssh(shell, f"skopeo copy docker://{server}/{IMAGE} docker://{server}/aci-helloworld:pushed",
                       check=False)
    assert pushed.returncode != 0 and "denied" in pushed.stderr

    # the identity leaves the VM: it cannot sign in there any more, and a fresh login to the registry fails.
    # (A refresh token obtained before stays valid until it expires, as ACR's do: log the client out first.)
    shell.run(f"az vm identity remove --resource-group myResourceGroup --name myDockerVM --identities {user_id}")
    after = in_vm_ssh(shell, f"""
        docker logout {server}
        if az login --identity --username {user_id}; then exit 10; fi
        if az acr login --name myContainerRegistry; then exit 11; fi
        if docker pull {server}/{IMAGE}; then exit 12; fi
        echo all-denied
    """)
    assert after.stdout.strip().endswith("all-denied")
    assert "Identity not found" in after.stderr or "No managed identity found" in after.stderr


def test_example_2_system_assigned_identity(shell: Shell, world: dict[str, Any]) -> None:
    server, digest = world["server"], world["digest"]
    shell.run("az vm identity assign --resource-group myResourceGroup --name myDockerVM")
    sp_id = shell.out("az vm show --resource-group myResourceGroup --name myDockerVM --query identity.principalId "
                      "--out tsv")
    resource_id = shell.out("az acr show --resource-group myResourceGroup --name myContainerRegistry "
                            "--query id --output tsv")

    def run_command(*lines: str) -> tuple[str, str, str]:
        scripts = " ".join(shlex.quote(line) for line in lines)
        result = json.loads(shell.out(f"az vm run-command invoke --resource-group myResourceGroup --name myDockerVM "
                                      f"--command-id RunShellScript --scripts {scripts}"))
        status = result["value"][0]
        out, _, err = status["message"].partition("\n[stdout]\n")[2].partition("\n[stderr]\n")
        return status["code"], out, err

    code, _, err = run_command(f"docker rmi -f {server}/{IMAGE} >/dev/null 2>&1 || true",
                               f"docker pull {server}/{IMAGE}")
    assert code.startswith("ProvisioningState/failed/") and "denied" in err

    shell.run(f"az role assignment create --assignee {sp_id} --scope {resource_id} --role acrpull")
    code, out, err = run_command("az login --identity --query '[0].user.name' --output tsv",
                                 "az acr login --name myContainerRegistry",
                                 f"docker pull {server}/{IMAGE}",
                                 DIGEST.format(ref=f"{server}/{IMAGE}"))
    assert code == "ProvisioningState/succeeded", err
    assert out.splitlines()[0] == "systemAssignedIdentity"
    assert "Login Succeeded" in out and out.splitlines()[-1] == digest

    code, _, err = run_command(f"skopeo copy docker://{server}/{IMAGE} docker://{server}/aci-helloworld:pushed")
    assert code.startswith("ProvisioningState/failed/") and "denied" in err

    # removing the system-assigned identity deletes its principal: the credentials the VM holds stop working
    shell.run("az vm identity remove --resource-group myResourceGroup --name myDockerVM --identities [system]")
    code, _, err = run_command(f"docker rmi -f {server}/{IMAGE} >/dev/null", f"docker pull {server}/{IMAGE}")
    assert code.startswith("ProvisioningState/failed/")
    assert "the refresh token was not accepted" in err


def test_nothing_leaked_into_the_host(world: dict[str, Any]) -> None:
    assert "mycontainerregistry" not in Path("/etc/hosts").read_text()
    assert not Path(f"/etc/containers/certs.d/{world['server']}").exists()
    assert not Path(f"/etc/docker/certs.d/{world['server']}").exists()
