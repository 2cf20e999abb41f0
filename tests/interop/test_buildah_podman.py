"""An image built by buildah from scratch, pushed to acrlocal, pulled by podman (vfs storage in temp dirs)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness import AcrLocal
from tests.interop.tools import Containers
from tests.registry.conftest import RegistryClient


def test_buildah_push_then_podman_pull(acrlocal: AcrLocal, registry: RegistryClient, tmp_path: Path) -> None:
    with Containers(tmp_path, acrlocal) as tools:
        run(tools, registry, tmp_path)


def run(tools: Containers, registry: RegistryClient, tmp_path: Path) -> None:
    policy = ["--signature-policy", str(tools.policy)]
    container = tools.buildah("from", *policy, "scratch").strip()
    payload = tmp_path / "hello.txt"
    payload.write_text("hello from buildah, through acrlocal\n")
    tools.buildah("add", container, str(payload), "/hello.txt")
    tools.buildah("config", "--label", "org.example.built-by=buildah", "--env", "GREETING=hi", container)
    tools.buildah("commit", *policy, container, "localhost/built:latest")
    ref = tools.ref("buildah/hello")
    tools.buildah("push", *policy, "--cert-dir", str(tools.cert_dir), "localhost/built:latest", f"docker://{ref}:v1")

    pushed = registry.get("/v2/buildah/hello/manifests/v1")
    assert pushed.status_code == 200
    manifest = json.loads(pushed.content)
    assert len(manifest["layers"]) == 1

    tools.podman("pull", *policy, "--cert-dir", str(tools.cert_dir), f"{ref}:v1")
    info = json.loads(tools.podman("image", "inspect", f"{ref}:v1"))[0]
    assert info["Digest"] == pushed.headers["Docker-Content-Digest"]
    assert info["Labels"]["org.example.built-by"] == "buildah"
    assert "GREETING=hi" in info["Config"]["Env"]
    mounted = Path(tools.podman("image", "mount", f"{ref}:v1").strip())
    try:
        assert (mounted / "hello.txt").read_text() == "hello from buildah, through acrlocal\n"
    finally:
        tools.podman("image", "unmount", f"{ref}:v1")

    # podman can push it back under another name (the layer is mounted, not uploaded again).
    tools.podman("push", *policy, "--cert-dir", str(tools.cert_dir), f"{ref}:v1", f"{tools.ref('podman/again')}:v1")
    again = registry.head("/v2/podman/again/manifests/v1")
    assert again.status_code == 200
