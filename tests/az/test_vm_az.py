"""Microsoft's az CLI as a VM's ``az``: the server is told which az to give VMs (``ACRLOCAL_VM_AZ``); in the VM
``az`` sets itself up for this server on first use (``acrlocal az-setup --apply``), then the tutorial's Example 2
runs with it: ``az login --identity``, ``az acr login --name``, ``docker pull`` (podman)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.az.conftest import Az
from tests.harness import AcrLocal
from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout

pytestmark = pytest.mark.skipif(shutil.which("podman") is None or shutil.which("skopeo") is None,
                                reason="the VM's docker is podman; the image is pushed with skopeo")


@pytest.fixture(scope="module")
def vm_az_server(az_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    server = AcrLocal(tmp_path_factory.mktemp("vm-az") / "data")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ACRLOCAL_VM_AZ", str(az_exe))
        server.start()
    try:
        yield server
    finally:
        server.stop()


def cli(server: AcrLocal, *args: str) -> Any:
    proc = server.cli(*args, check=False)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_the_vm_az_is_microsofts_set_up_for_this_server(vm_az_server: AcrLocal, az_exe: Path,
                                                        tmp_path: Path) -> None:
    server = vm_az_server
    name = f"vmaz{uuid.uuid4().hex[:8]}"
    cli(server, "group", "create", "-n", "myResourceGroup", "-l", "westus")
    registry = cli(server, "acr", "create", "-g", "myResourceGroup", "-n", name, "--sku", "Basic")
    layer = tar_layer({"hello.txt": b"pulled with Microsoft's az in a VM\n"})
    config = config_blob(diff_ids=[layer.digest])
    manifest = image(config, [layer])
    write_layout(tmp_path / "layout", {"v1": manifest}, [config, layer])
    token = cli(server, "acr", "login", "-n", registry["loginServer"], "--expose-token", "--query", "accessToken")
    with Containers(tmp_path / "tools", server, anonymous=True) as tools:  # the local administrator pushes
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), "--dest-creds",
                     f"00000000-0000-0000-0000-000000000000:{token}",
                     f"oci:{tmp_path / 'layout'}:v1", f"docker://{registry['loginServer']}/aci-helloworld:v1")
    principal = cli(server, "vm", "create", "-g", "myResourceGroup", "-n", "myDockerVM", "--assign-identity",
                    "--query", "identity.systemAssignedIdentity")
    cli(server, "role", "assignment", "create", "--assignee", principal, "--scope", registry["id"], "--role",
        "acrpull")
    pulled = f"{name}.localhost:{server.shared.rsplit(':', 1)[1]}/aci-helloworld:v1"
    proc = server.cli("ssh", "vm", "-g", "myResourceGroup", "-n", "myDockerVM", "--", f"""set -e
        cat "$(command -v az)" | grep -c "Microsoft's Azure CLI"
        az cloud show --query name --output tsv
        az login --identity --query '[0].user.name' --output tsv
        az acr login --name {name}
        docker pull -q {pulled}
        docker image inspect {pulled} --format '{{{{.Digest}}}}'
    """, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["1", "AcrLocal", "systemAssignedIdentity"]
    assert "Login Succeeded!" in proc.stdout and lines[-1] == manifest.digest
    home = server.data_dir / "vms" / cli(server, "vm", "show", "-g", "myResourceGroup", "-n", "myDockerVM",
                                          "--query", "vmId") / "home"
    assert (home / ".azure" / ".acrlocal-endpoint").read_text() == server.shared
    cli(server, "group", "delete", "-n", "myResourceGroup", "--yes")


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
