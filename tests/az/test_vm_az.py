"""Microsoft's az CLI as a VM's ``az`` (``ACRLOCAL_VM_AZ`` names it, as ``az`` on the server's PATH would): its
default cloud, AzureCloud, with nothing set up; the tutorial's Example 2 runs with it: ``az login --identity``,
``az acr login --name``, ``docker pull <name>.azurecr.io/aci-helloworld:v1`` (Docker Engine, or podman)."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.az.conftest import Az
from tests.harness import AcrLocal
from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None, reason="the image is pushed with skopeo")


def cli(server: AcrLocal, *args: str) -> Any:
    proc = server.cli(*args, check=False)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_the_vm_az_is_microsofts_with_azure_cloud(az_server: AcrLocal, tmp_path: Path) -> None:
    server = az_server
    name = f"vmaz{uuid.uuid4().hex[:8]}"
    group = f"rg-{name}"
    cli(server, "group", "create", "-n", group, "-l", "westus")
    registry = cli(server, "acr", "create", "-g", group, "-n", name, "--sku", "Basic")
    layer = tar_layer({"hello.txt": b"pulled with Microsoft's az in a VM\n"})
    config = config_blob(diff_ids=[layer.digest])
    manifest = image(config, [layer])
    write_layout(tmp_path / "layout", {"v1": manifest}, [config, layer])
    token = cli(server, "acr", "login", "-n", registry["loginServer"], "--expose-token", "--query", "accessToken")
    with Containers(tmp_path / "tools", server, anonymous=True) as tools:  # the local administrator pushes
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), "--dest-creds",
                     f"00000000-0000-0000-0000-000000000000:{token}",
                     f"oci:{tmp_path / 'layout'}:v1", f"docker://{registry['loginServer']}/aci-helloworld:v1")
    principal = cli(server, "vm", "create", "-g", group, "-n", "myDockerVM", "--assign-identity",
                    "--query", "identity.systemAssignedIdentity")
    cli(server, "role", "assignment", "create", "--assignee", principal, "--scope", registry["id"], "--role",
        "acrpull")
    pulled = f"{name}.azurecr.io/aci-helloworld:v1"
    proc = server.cli("ssh", "vm", "-g", group, "-n", "myDockerVM", "--", f"""set -e
        grep -c "Microsoft's Azure CLI" "$(command -v az)"
        az cloud show --query name --output tsv
        az login --identity --query '[0].user.name' --output tsv
        az acr login --name {name}
        docker pull -q {pulled}
        docker image inspect {pulled} --format '{{{{index .RepoDigests 0}}}}' 2>/dev/null || \
            docker image inspect {pulled} --format '{{{{.Digest}}}}'
    """, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["1", "AzureCloud", "systemAssignedIdentity"]
    assert "Login Succeeded" in proc.stdout and lines[-1].endswith(manifest.digest)
    cli(server, "group", "delete", "-n", group, "--yes")


def test_az_vm_run_command_invoke_from_the_host(host_az: Az, az_server: AcrLocal) -> None:
    """Microsoft's ``az vm run-command invoke`` against ``runCommand``: its poller takes the 200 as the finished
    operation and prints Azure's shape."""
    group = f"rc{uuid.uuid4().hex[:8]}"
    host_az("group", "create", "-n", group, "-l", "westus")
    cli(az_server, "vm", "create", "-g", group, "-n", "runner")
    result = host_az("vm", "run-command", "invoke", "-g", group, "-n", "runner", "--command-id", "RunShellScript",
                     "--scripts", 'echo "hello $1 $color"', "echo oops >&2", "--parameters", "world", "color=blue")
    assert result == {"value": [{"code": "ProvisioningState/succeeded", "displayStatus": "Provisioning succeeded",
                                 "level": "Info", "message": "Enable succeeded: \n[stdout]\nhello world blue\n\n"
                                                             "[stderr]\noops\n"}]}
    failed = host_az.fail("vm", "run-command", "invoke", "-g", group, "-n", "runner", "--command-id",
                          "RunPowerShellScript", "--scripts", "dir")
    assert "InvalidParameter" in failed.stderr
    host_az("group", "delete", "-n", group, "--yes")
