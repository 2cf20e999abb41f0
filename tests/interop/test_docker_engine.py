"""Docker Engine against acrlocal, as the README tells a user to use it: `acrlocal acr login` (which runs
`docker login` with an ACR refresh token, as `az acr login` does), then `docker push`, `docker pull` and
`docker run` of the pulled image; and what docker gets without valid credentials. The engine is a private
``dockerd`` (see :mod:`tests.dockerd`); docker.io missing fails these tests (``ACRLOCAL_TEST_NO_DOCKER=1``
skips them)."""

from __future__ import annotations

import base64
import io
import json
import shutil
import tarfile
import uuid
from pathlib import Path

import pytest

from tests.dockerd import PrivateDockerd
from tests.harness import REFRESH_TOKEN_USER, AcrLocal

BUSYBOX = Path("/bin/busybox")


def busybox_rootfs() -> bytes:
    """A tar of a root file system holding only Debian's static busybox (busybox-static) as /bin/sh."""
    if not BUSYBOX.exists():
        pytest.fail("/bin/busybox is missing: install Debian's busybox-static (scripts/test does)")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        tar.add(str(BUSYBOX.resolve()), arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return raw.getvalue()


def refused_by_registry(stderr: str) -> bool:
    """docker's words for a registry's 401 or 403 (an anonymous token that may not push or pull)."""
    return any(w in stderr for w in ("unauthorized", "authentication required", "requested access to the "
                                     "resource is denied"))


def import_image(engine: PrivateDockerd, config: Path, tmp_path: Path, ref: str) -> None:
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(busybox_rootfs())
    engine.docker(config, "import", str(rootfs), ref)


def test_acr_login_then_docker_push_pull_and_run(acrlocal: AcrLocal, docker_engine: PrivateDockerd,
                                                 tmp_path: Path) -> None:
    config = tmp_path / "home" / ".docker"
    login = acrlocal.cli("acr", "login", "-n", "acrlocal",
                         env={"DOCKER_COMMAND": "docker", "DOCKER_HOST": docker_engine.host,
                              "DOCKER_CONFIG": str(config)})
    assert "Login Succeeded" in login.stdout, (login.stdout, login.stderr)
    entry = json.loads((config / "config.json").read_text())["auths"][acrlocal.login_server()]
    user, _, refresh = base64.b64decode(entry["auth"]).decode().partition(":")
    assert user == REFRESH_TOKEN_USER and refresh.count(".") == 2

    ref = f"{acrlocal.login_server()}/engine/hello-{uuid.uuid4().hex[:8]}:v1"
    import_image(docker_engine, config, tmp_path, ref)
    pushed = docker_engine.docker(config, "push", ref)
    digest = pushed.stdout.rsplit("digest: ", 1)[1].split()[0]
    shown = json.loads(acrlocal.cli("acr", "repository", "show-tags", "-n", "acrlocal", "--repository",
                                    ref.split("/", 1)[1].split(":")[0], "-o", "json").stdout)
    assert shown == ["v1"]

    docker_engine.docker(config, "rmi", ref)
    pulled = docker_engine.docker(config, "pull", ref)
    assert digest in pulled.stdout
    ran = docker_engine.docker(config, "run", "--rm", "--network", "none", ref, "/bin/sh", "-c",
                               "echo hello from $(cat /proc/1/comm) in a container")
    assert ran.stdout.strip() == "hello from sh in a container"
    docker_engine.docker(config, "rmi", ref)


def test_docker_without_valid_credentials_is_refused(acrlocal: AcrLocal, docker_engine: PrivateDockerd,
                                                     tmp_path: Path) -> None:
    config = tmp_path / "home" / ".docker"
    refused = docker_engine.docker(config, "login", "--username", REFRESH_TOKEN_USER, "--password-stdin",
                                   acrlocal.login_server(), input="not-a-refresh-token", check=False)
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower(), refused.stderr
    assert not (config / "config.json").exists() or acrlocal.login_server() not in (config / "config.json").read_text()

    ref = f"{acrlocal.login_server()}/engine/anonymous-{uuid.uuid4().hex[:8]}:v1"
    import_image(docker_engine, config, tmp_path, ref)
    push = docker_engine.docker(config, "push", ref, check=False)
    assert push.returncode != 0 and refused_by_registry(push.stderr), push.stderr
    docker_engine.docker(config, "rmi", ref)
    pull = docker_engine.docker(config, "pull", ref, check=False)
    assert pull.returncode != 0 and refused_by_registry(pull.stderr), pull.stderr
    shutil.rmtree(config, ignore_errors=True)
