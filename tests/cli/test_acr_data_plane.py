"""``acr login`` and ``acr repository``: the registry's token service and ``/acr/v1`` through the CLI, as az uses
them, with the real container clients (docker CLI without a daemon, podman, skopeo)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.dockerd import require
from tests.harness import AcrLocal

EMPTY_GUID = "00000000-0000-0000-0000-000000000000"


def az(server: AcrLocal, *args: str, env: dict[str, str] | None = None) -> Any:
    proc = server.cli(*args, check=False, env=env)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def test_acr_login_expose_token_gives_a_refresh_token_the_registry_accepts(acrlocal: AcrLocal) -> None:
    proc = acrlocal.cli("acr", "login", "-n", "acrlocal", "--expose-token")
    out = json.loads(proc.stdout)
    assert sorted(out) == ["accessToken", "loginServer", "refreshToken", "username"]
    assert out["username"] == EMPTY_GUID and out["loginServer"] == acrlocal.login_server()
    assert out["accessToken"] == out["refreshToken"]
    assert proc.stderr.count("WARNING: ") == 2
    quiet = acrlocal.cli("acr", "login", "-n", "acrlocal", "--expose-token", "--only-show-errors")
    assert quiet.stderr == ""
    basic = base64.b64encode(f"{EMPTY_GUID}:{out['refreshToken']}".encode()).decode()
    r = acrlocal.session().get(acrlocal.url("/oauth2/token"), params={"service": out["loginServer"]},
                               headers={"Authorization": f"Basic {basic}"})
    assert r.status_code == 200 and (r.json().get("access_token") or r.json().get("token"))
    by_server = json.loads(acrlocal.cli("acr", "login", "-n", acrlocal.login_server(), "--expose-token").stdout)
    assert by_server["loginServer"] == acrlocal.login_server()


def test_acr_login_with_docker_daemon_down_fails_like_az_and_writes_nothing(acrlocal: AcrLocal,
                                                                            tmp_path: Path) -> None:
    require("docker")
    docker_config = tmp_path / "docker"
    proc = acrlocal.cli("acr", "login", "-n", "acrlocal", check=False,
                        env={"DOCKER_COMMAND": "docker", "DOCKER_CONFIG": str(docker_config),
                             "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("WARNING: You may want to use 'acrlocal acr login -n acrlocal --expose-token'")
    assert "An error occurred: DOCKER_COMMAND_ERROR\nCannot connect to the Docker daemon" in proc.stderr
    assert not (docker_config / "config.json").exists()


def _podman(tmp_path: Path, certs: Path, runroot: Path) -> Path:
    """A ``DOCKER_COMMAND`` running podman on storage of its own, trusting the server's CA for ``login``."""
    script = tmp_path / "podman-here"
    root = tmp_path / "podman-root"
    script.write_text(f"""#!/bin/sh
if [ "$1" = login ]; then shift; exec podman --root {root} --runroot {runroot} --storage-driver vfs login \\
  --cert-dir {certs} "$@"; fi
exec podman --root {root} --runroot {runroot} --storage-driver vfs "$@"
""")
    script.chmod(0o755)
    return script


@pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed")
def test_acr_login_logs_podman_in_with_the_refresh_token(acrlocal: AcrLocal, tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copyfile(acrlocal.ca, certs / "ca.crt")
    auth = tmp_path / "auth.json"
    runroot = Path(tempfile.mkdtemp(prefix="acrl-rr-"))  # podman wants a runroot under 50 characters
    try:
        proc = acrlocal.cli("acr", "login", "-n", "acrlocal", check=False,
                            env={"DOCKER_COMMAND": str(_podman(tmp_path, certs, runroot)),
                                 "REGISTRY_AUTH_FILE": str(auth), "XDG_RUNTIME_DIR": str(runroot)})
    finally:
        shutil.rmtree(runroot, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    entry = json.loads(auth.read_text())["auths"][acrlocal.login_server()]
    user, _, secret = base64.b64decode(entry["auth"]).decode().partition(":")
    assert user == EMPTY_GUID and secret


def _oci_layout(path: Path) -> None:
    """A one-layer OCI image layout, tag ``v1``."""
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        body = b"hello from acrlocal\n"
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    layer = gzip.compress(raw.getvalue(), mtime=0)
    diff_id = "sha256:" + hashlib.sha256(raw.getvalue()).hexdigest()
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cdig, csize = put(config)
    ldig, lsize = put(layer)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig,
                                      "size": csize},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldig,
                                       "size": lsize}]}).encode()
    mdig, msize = put(manifest)
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": mdig, "size": msize,
         "annotations": {"org.opencontainers.image.ref.name": "v1"}}]}))


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_repository_commands_and_locks(acrlocal: AcrLocal, tmp_path: Path) -> None:
    refresh = json.loads(acrlocal.cli("acr", "login", "-n", "acrlocal", "--expose-token",
                                      "--only-show-errors").stdout)["refreshToken"]
    certs = tmp_path / "certs"
    certs.mkdir()
    shutil.copyfile(acrlocal.ca, certs / "ca.crt")
    _oci_layout(tmp_path / "layout")
    repo = f"cli/hello{os.getpid()}"
    subprocess.run(["skopeo", "copy", "--dest-cert-dir", str(certs), "--dest-creds", f"{EMPTY_GUID}:{refresh}",
                    f"oci:{tmp_path / 'layout'}:v1", f"docker://{acrlocal.login_server()}/{repo}:v1"],
                   check=True, capture_output=True, env={**os.environ, "HOME": str(tmp_path)})
    assert repo in az(acrlocal, "acr", "repository", "list", "-n", "acrlocal")
    assert az(acrlocal, "acr", "repository", "show-tags", "-n", "acrlocal", "--repository", repo) == ["v1"]
    manifests = az(acrlocal, "acr", "repository", "show-manifests", "-n", "acrlocal", "--repository", repo)
    assert [sorted(m) for m in manifests] == [["digest", "tags", "timestamp"]] and manifests[0]["tags"] == ["v1"]
    attrs = az(acrlocal, "acr", "repository", "show", "-n", "acrlocal", "--repository", repo)
    assert attrs["imageName"] == repo and attrs["changeableAttributes"]["writeEnabled"] is True
    tag = az(acrlocal, "acr", "repository", "show", "-n", "acrlocal", "--image", f"{repo}:v1")
    assert tag["name"] == "v1" and tag["digest"] == manifests[0]["digest"]
    locked = az(acrlocal, "acr", "repository", "update", "-n", "acrlocal", "--repository", repo,
                "--write-enabled", "false", "--delete-enabled", "false")
    assert locked["changeableAttributes"]["writeEnabled"] is False
    err = acrlocal.cli("acr", "repository", "delete", "-n", "acrlocal", "--repository", repo, "--yes", check=False)
    assert err.returncode == 1 and err.stderr.startswith("ERROR: ")
    assert az(acrlocal, "acr", "repository", "show-tags", "-n", "acrlocal", "--repository", repo) == ["v1"]
    az(acrlocal, "acr", "repository", "update", "-n", "acrlocal", "--repository", repo, "--write-enabled",
       "--delete-enabled")
    assert az(acrlocal, "acr", "repository", "delete", "-n", "acrlocal", "--repository", repo, "--yes") is None
    assert repo not in az(acrlocal, "acr", "repository", "list", "-n", "acrlocal")
