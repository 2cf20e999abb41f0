"""skopeo, buildah and podman, each run fully inside a test's temp dir.

As root, containers/image keeps its blob-info cache in ``/var/lib/containers/cache`` and buildah creates
``/run/containers``; the cache would also make later pushes mount instead of upload. So every tool runs with a
temp ``HOME``/XDG dirs and with the rootless markers set (``_CONTAINERS_ROOTLESS_UID`` and
``_CONTAINERS_USERNS_CONFIGURED``, which tell the tools they are already in their user namespace), which moves
those files under ``HOME``. Storage is vfs under the temp dir; policy, registries.conf, containers.conf and the
auth file are temp files. The registry's CA is trusted through a cert dir holding it as ``ca.crt``; TLS
verification stays on.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.harness import AcrLocal
from tests.ocitools import config_blob, image, layout_index, tar_layer, write_layout


class ToolError(AssertionError):
    pass


class Containers:
    def __init__(self, root: Path, server: AcrLocal, anonymous: bool = False) -> None:
        self.root = root
        self.home = root / "home"
        for sub in ("run", "tmp", ".config", ".local/share"):
            (self.home / sub).mkdir(parents=True, exist_ok=True)
        self.policy = self.home / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        (self.home / "registries.conf").write_text("")
        # Logged in as the local administrator (the all-zero user and an ACR refresh token, as `az acr login`
        # leaves it); `anonymous=True` leaves the auth file empty.
        (self.home / "auth.json").write_text(json.dumps({"auths": {}} if anonymous else server.docker_auth()))
        (self.home / "containers.conf").write_text(
            "[engine]\n"
            'events_logger = "file"\n'
            f'events_logfile_path = "{self.home}/events.log"\n'
            'cgroup_manager = "cgroupfs"\n'
            "[network]\n"
            f'network_config_dir = "{self.home}/networks"\n'
        )
        self.cert_dir = root / "certs"
        self.cert_dir.mkdir(exist_ok=True)
        (self.cert_dir / "ca.crt").write_bytes(Path(server.ca).read_bytes())
        self.login_server = server.login_server()
        # podman refuses a runroot path longer than 50 characters; pytest's temp paths are longer.
        self.short = Path(tempfile.mkdtemp(prefix="acrlocal-"))

    def close(self) -> None:
        shutil.rmtree(self.short, ignore_errors=True)

    def __enter__(self) -> Containers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "XDG_RUNTIME_DIR": str(self.home / "run"),
            "XDG_CONFIG_HOME": str(self.home / ".config"),
            "XDG_DATA_HOME": str(self.home / ".local" / "share"),
            "TMPDIR": str(self.home / "tmp"),
            "CONTAINERS_REGISTRIES_CONF": str(self.home / "registries.conf"),
            "CONTAINERS_CONF": str(self.home / "containers.conf"),
            "REGISTRY_AUTH_FILE": str(self.home / "auth.json"),
            "_CONTAINERS_ROOTLESS_UID": "1000",
            "_CONTAINERS_USERNS_CONFIGURED": "done",
        }

    def run(self, *cmd: str, timeout: float = 600) -> str:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env(), timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise ToolError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return proc.stdout

    def ref(self, repository: str) -> str:
        return f"{self.login_server}/{repository}"

    # -- the tools ---------------------------------------------------------------------------------

    def skopeo(self, *args: str) -> str:
        return self.run("skopeo", "--policy", str(self.policy), *args)

    def buildah(self, *args: str) -> str:
        return self.run("buildah", "--storage-driver", "vfs", "--root", str(self.root / "buildah-root"),
                        "--runroot", str(self.root / "buildah-runroot"), *args)

    def podman(self, *args: str) -> str:
        return self.run("podman", "--storage-driver", "vfs", "--root", str(self.root / "podman-root"),
                        "--runroot", str(self.short / "run"), "--tmpdir", str(self.root / "podman-tmp"),
                        *args)


def skopeo_round_trip(root: Path, server: AcrLocal, repository: str) -> None:
    """skopeo pushes an image of six layers to ``repository`` on ``server`` and pulls it back whole."""
    layers = [tar_layer({f"etc/file{i}": b"x" * (1000 + i)}) for i in range(6)]
    config = config_blob(diff_ids=[layer.digest for layer in layers])
    manifest = image(config, layers)
    layout = root / "layout"
    write_layout(layout, {"v1": manifest}, [config, *layers])
    with Containers(root, server) as tools:
        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), f"oci:{layout}:v1",
                     f"docker://{tools.ref(repository)}:v1")
        out = root / "pulled"
        tools.skopeo("copy", "--dest-oci-accept-uncompressed-layers", "--src-cert-dir", str(tools.cert_dir),
                     f"docker://{tools.ref(repository)}:v1", f"oci:{out}:v1")
    assert layout_index(out)["manifests"][0]["digest"] == manifest.digest
