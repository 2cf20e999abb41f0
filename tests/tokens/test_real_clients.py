"""The token service driven by real, unmodified clients:

- azure-containerregistry with ``ManagedIdentityCredential`` inside a VM, at ``https://acrlocal.azurecr.io``
  with nothing set by hand (IMDS at 169.254.169.254, the VM's trust store), the VM's user-assigned identity
  holding AcrPush on the registry (made through ARM with Azure's management SDKs), with the default audience and
  with ``audience=`` the ARM audience;
- podman login (the all-zero user and a refresh token), then skopeo push and pull with that login;
- the docker CLI's ``docker login`` (client only: there is no docker engine here) into a temp ``DOCKER_CONFIG``,
  then oras-py pull and push with the credentials docker wrote.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import oras.client
import pytest

from tests.compute.conftest import mgmt_for
from tests.dockerd import require
from tests.harness import REFRESH_TOKEN_USER, AcrLocal
from tests.interop.tools import Containers
from tests.ocitools import config_blob, image, tar_layer, write_layout
from tests.registry.conftest import RegistryClient
from tests.tokens.conftest import ACR_PUSH, assign, registry_id
from tests.vmexec import vm_client

ARM_AUDIENCE = "https://management.azure.com"


@pytest.fixture(scope="module")
def vm_identity(server: AcrLocal) -> dict[str, Any]:
    """A VM whose user-assigned identity has AcrPush on the default registry."""
    mgmt = mgmt_for(server)
    group = mgmt.group("tokens")
    identity = mgmt.identity(group, "pusher")
    vm = mgmt.vm(group, "vm-pusher", {"type": "UserAssigned", "userAssignedIdentities": {identity.id: {}}})
    from tests.arm.conftest import Arm, admin_of

    arm = Arm(server, admin_of(server).token(server))
    assign(arm, identity.principal_id, ACR_PUSH, registry_id(server))
    return {"vm": vm, "identity": identity}


SDK_SCRIPT = """
import io, json
from azure.identity import ManagedIdentityCredential
from azure.containerregistry import ContainerRegistryClient
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
cred = ManagedIdentityCredential(client_id={client_id!r})
kw = {{"audience": {audience!r}}} if {audience!r} else {{}}
client = ContainerRegistryClient({endpoint!r}, cred, **kw)
repo = {repo!r}
layer = b"layer of " + repo.encode()
layer_digest, _ = client.upload_blob(repo, io.BytesIO(layer))
config_digest, _ = client.upload_blob(repo, io.BytesIO(b"{{}}"))
manifest = {{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": 2}},
    "layers": [{{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                "size": len(layer)}}]}}
digest = client.set_manifest(repo, manifest, tag="v1")
names = list(client.list_repository_names())
props = client.get_repository_properties(repo)
downloaded = b"".join(client.download_blob(repo, layer_digest))
try:
    client.delete_manifest(repo, digest)
    deleted = "deleted"
except ClientAuthenticationError as exc:
    deleted = "ClientAuthenticationError"
except HttpResponseError as exc:
    deleted = f"HttpResponseError {{exc.status_code}}"
report(ok=True, digest=digest, names=names, manifests=props.manifest_count, same=downloaded == layer,
       deleted=deleted)
"""


@pytest.mark.parametrize("audience", [None, ARM_AUDIENCE])
def test_azure_containerregistry_with_a_vm_managed_identity(server: AcrLocal, vm_identity: dict[str, Any],
                                                            audience: str | None) -> None:
    vm, identity = vm_identity["vm"], vm_identity["identity"]
    repo = f"sdk/mi-{'arm' if audience else 'acr'}"
    result = vm_client(server, vm.id, SDK_SCRIPT.format(client_id=identity.client_id, audience=audience,
                                                         endpoint="https://acrlocal.azurecr.io", repo=repo))
    assert result["ok"] and result["same"], result
    assert repo in result["names"] and result["manifests"] == 1
    # AcrPush may not delete: ACR's 401, which the SDK raises as ClientAuthenticationError.
    assert result["deleted"] == "ClientAuthenticationError"
    admin = RegistryClient(server)
    assert admin.get(f"/v2/{repo}/manifests/v1").headers["Docker-Content-Digest"] == result["digest"]


def test_podman_login_then_skopeo_push_and_pull(server: AcrLocal, tmp_path: Path) -> None:
    _, refresh = server.registry_credentials()
    layout = tmp_path / "layout"
    layer = tar_layer({"hello": b"hello through podman login\n"})
    config = config_blob(diff_ids=[layer.digest])
    manifest = image(config, [layer])
    write_layout(layout, {"v1": manifest}, [config, layer])
    with Containers(tmp_path, server, anonymous=True) as tools:
        ref = tools.ref("logins/podman")
        with pytest.raises(AssertionError):  # not logged in yet: the push is refused
            tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1",
                         f"docker://{ref}:v1")
        out = subprocess.run(
            ["podman", "login", "--cert-dir", str(tools.cert_dir), "--username", REFRESH_TOKEN_USER,
             "--password-stdin", server.login_server()],
            input=refresh, capture_output=True, text=True, env=tools.env(), timeout=120)
        assert out.returncode == 0, out.stderr
        assert "Login Succeeded" in out.stdout
        auth = json.loads((tools.home / "auth.json").read_text())["auths"][server.login_server()]["auth"]
        assert base64.b64decode(auth).decode() == f"{REFRESH_TOKEN_USER}:{refresh}"
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1",
                     f"docker://{ref}:v1")
        pulled = tmp_path / "pulled"
        tools.skopeo("copy", "--src-cert-dir", str(tools.cert_dir), "--dest-oci-accept-uncompressed-layers",
                     f"docker://{ref}:v1", f"oci:{pulled}:v1")
        assert json.loads((pulled / "index.json").read_text())["manifests"][0]["digest"] == manifest.digest
        # A wrong password is refused at login.
        bad = subprocess.run(
            ["podman", "login", "--cert-dir", str(tools.cert_dir), "--username", REFRESH_TOKEN_USER,
             "--password-stdin", server.login_server()],
            input="not-a-refresh-token", capture_output=True, text=True, env=tools.env(), timeout=120)
        assert bad.returncode != 0


def test_docker_login_without_an_engine_then_oras_pull_and_push(server: AcrLocal, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    require("docker")
    _, refresh = server.registry_credentials()
    home = tmp_path / "home"
    config = home / ".docker"
    config.mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(config),
           # No engine: the CLI logs in by itself (loopback registries are reached without a client certificate).
           "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    out = subprocess.run(["docker", "login", "--username", REFRESH_TOKEN_USER, "--password-stdin",
                          server.login_server()], input=refresh, capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "Login Succeeded" in out.stdout
    written = json.loads((config / "config.json").read_text())["auths"][server.login_server()]
    assert base64.b64decode(written["auth"]).decode() == f"{REFRESH_TOKEN_USER}:{refresh}"
    assert "identitytoken" not in written

    # oras-py reads that file (it only reads ~/.docker/config.json), pushes (upgrading its pull-only token on the
    # 403) and pulls.
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    client = oras.client.OrasClient(hostname=server.login_server(), tls_verify=server.ca)
    artifact = tmp_path / "artifact.txt"
    artifact.write_text("pushed by oras-py with docker's login\n")
    target = f"{server.login_server()}/logins/oras:v1"
    response = client.push(target=target, files=[str(artifact)], disable_path_validation=True, quiet=True)
    assert response.status_code == 201
    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert Path(files[0]).read_text() == artifact.read_text()

    # Logged out (no credentials), oras-py gets an anonymous token, which pulls nothing.
    (config / "config.json").write_text(json.dumps({"auths": {}}))
    anonymous = oras.client.OrasClient(hostname=server.login_server(), tls_verify=server.ca)
    with pytest.raises(Exception):  # noqa: B017 - oras-py raises its own errors or ValueError
        anonymous.pull(target=target, outdir=str(tmp_path / "anon"))
