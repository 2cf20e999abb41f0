"""``docker-credential-acrlocal`` inside a VM: docker (the VM's own Docker Engine) and skopeo get registry
credentials from the VM's managed identity through ``credHelpers`` in ``~/.docker/config.json``, with no
``acr login``; the protocol's other verbs; denial follows RBAC."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import AcrLocal
from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout

pytestmark = pytest.mark.skipif(shutil.which("skopeo") is None or shutil.which("podman") is None,
                                reason="skopeo and podman are needed")
EMPTY_GUID = "00000000-0000-0000-0000-000000000000"
REPO = f"credhelper/hello-{uuid.uuid4().hex[:6]}"
HOST = "acrlocal.azurecr.io"
ENGINE = shutil.which("dockerd") is not None


def az(server: AcrLocal, *args: str) -> Any:
    proc = server.cli(*args, check=False)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def in_vm(server: AcrLocal, group: str, script: str) -> tuple[int, str, str]:
    proc = server.cli("vm", "ssh", "-g", group, "-n", "helpervm", "--", script, check=False)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def world(acrlocal: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("credhelper")
    layer = tar_layer({"hello.txt": b"credentials from the VM's identity\n"})
    config = config_blob(diff_ids=[layer.digest])
    write_layout(root / "layout", {"v1": image(config, [layer])}, [config, layer])
    with Containers(root / "tools", acrlocal) as tools:  # pushed by the local administrator
        tools.skopeo("copy", "--dest-cert-dir", str(tools.cert_dir), f"oci:{root / 'layout'}:v1",
                     f"docker://{tools.ref(REPO)}:v1")
    group = f"cred-{uuid.uuid4().hex[:8]}"
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    principal = az(acrlocal, "vm", "create", "-g", group, "-n", "helpervm", "--assign-identity",
                   "--query", "identity.systemAssignedIdentity")
    registry = az(acrlocal, "acr", "show", "-n", "acrlocal", "--query", "id")
    code, _, err = in_vm(acrlocal, group, "mkdir -p ~/.docker && echo '"
                         + json.dumps({"credHelpers": {HOST: "acrlocal"}}) + "' > ~/.docker/config.json")
    assert code == 0, err
    yield {"group": group, "principal": principal, "registry": registry}
    az(acrlocal, "group", "delete", "-n", group, "--yes")


def test_protocol_verbs(acrlocal: AcrLocal, world: dict[str, str]) -> None:
    code, out, _ = in_vm(acrlocal, world["group"], "echo nosuch.azurecr.io | docker-credential-acrlocal get")
    assert (code, out) == (1, "credentials not found in native keychain\n")
    code, out, _ = in_vm(acrlocal, world["group"], "echo '{}' | docker-credential-acrlocal store")
    assert code == 1 and out.startswith("docker-credential-acrlocal: docker-credential-acrlocal does not store")
    code, out, _ = in_vm(acrlocal, world["group"], f"echo {HOST} | docker-credential-acrlocal erase && "
                         "docker-credential-acrlocal list && docker-credential-acrlocal version")
    assert code == 0 and out.splitlines()[0] == "{}" and out.splitlines()[1].startswith("docker-credential-acrlocal")
    code, out, _ = in_vm(acrlocal, world["group"], "docker-credential-acrlocal frobnicate")
    assert code == 1 and out.startswith("Usage: docker-credential-acrlocal")


def test_pull_with_the_identity_through_cred_helpers(acrlocal: AcrLocal, world: dict[str, str]) -> None:
    group = world["group"]
    # no role yet: the helper hands out the identity's token; the registry refuses the pull
    code, out, err = in_vm(acrlocal, group, f"skopeo inspect docker://{HOST}/{REPO}:v1")
    assert code != 0 and "denied" in err + out

    assignment = az(acrlocal, "role", "assignment", "create", "--assignee", world["principal"], "--scope",
                    world["registry"], "--role", "acrpull")
    try:
        code, out, err = in_vm(acrlocal, group, f"echo https://{HOST} | docker-credential-acrlocal get")
        assert code == 0, err
        creds = json.loads(out)
        assert creds["ServerURL"] == f"https://{HOST}" and creds["Username"] == EMPTY_GUID and creds["Secret"]
        code, out, err = in_vm(acrlocal, group, f"skopeo inspect docker://{HOST}/{REPO}:v1")
        assert code == 0, err
        assert json.loads(out)["Name"] == f"{HOST}/{REPO}"
        if ENGINE:
            code, out, err = in_vm(acrlocal, group, f"docker pull -q {HOST}/{REPO}:v1 && "
                                   f"docker image inspect -f ok {HOST}/{REPO}:v1 && cat ~/.docker/config.json")
            assert code == 0, err
            assert out.splitlines()[-2] == "ok"
            assert json.loads(out.splitlines()[-1]) == {"credHelpers": {HOST: "acrlocal"}}  # nothing stored
        # AcrPull does not push
        code, out, err = in_vm(acrlocal, group, f"skopeo copy docker://{HOST}/{REPO}:v1 "
                               f"docker://{HOST}/{REPO}:pushed")
        assert code != 0 and "denied" in err + out
    finally:
        az(acrlocal, "role", "assignment", "delete", "--ids", assignment["id"])

    # the identity gone from the VM: nothing to sign in with, so the pull is anonymous and denied
    az(acrlocal, "vm", "identity", "remove", "-g", group, "-n", "helpervm", "--identities", "[system]")
    code, out, _ = in_vm(acrlocal, group, f"echo {HOST} | docker-credential-acrlocal get")
    assert (code, out) == (1, "credentials not found in native keychain\n")
    code, out, err = in_vm(acrlocal, group, f"skopeo inspect docker://{HOST}/{REPO}:v1")
    assert code != 0 and ("denied" in err + out or "unauthorized" in err + out)
