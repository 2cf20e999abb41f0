"""A private Docker Engine for tests: Debian's ``dockerd`` on a unix socket under a temp dir.

It has its own ``--data-root``, ``--exec-root``, pid file and (empty) daemon configuration, no bridge and no
iptables rules (containers run with ``--network none``), and runs in a mount namespace of its own, so the mounts it
makes never show on the host, even if it is killed. It is stopped (SIGTERM, then SIGKILL) when the block ends.
Clients reach it through ``DOCKER_HOST`` (see :meth:`PrivateDockerd.env`).

Docker treats registries on 127.0.0.0/8 as "insecure", whatever it is told: it speaks TLS to them but does not
check the certificate (acrlocal serves only https, so TLS is still what is spoken).

When the engine is missing the tests that need it fail, as CI installs ``docker.io``; on a machine without it, set
``ACRLOCAL_TEST_NO_DOCKER=1`` to skip them instead.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

NO_DOCKER = "ACRLOCAL_TEST_NO_DOCKER"


def require(*tools: str) -> None:
    """Fail the test when a tool is missing, or skip it when ``$ACRLOCAL_TEST_NO_DOCKER`` says docker is not
    available here."""
    missing = [t for t in tools if shutil.which(t) is None]
    if os.environ.get(NO_DOCKER):
        pytest.skip(f"${NO_DOCKER} is set: docker is not available here")
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: install Debian's docker.io (scripts/test does), or set "
                    f"{NO_DOCKER}=1 to skip the docker tests on this machine")


class PrivateDockerd:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = root / "docker.sock"
        self.log_path = root / "dockerd.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self, config: Path, **extra: str) -> dict[str, str]:
        """An environment for the docker CLI: this engine, and ``config`` as its configuration directory."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(config.parent),
                "DOCKER_HOST": self.host, "DOCKER_CONFIG": str(config), **extra}

    def start(self, timeout: float = 60.0) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "daemon.json"
        # dockerd 20.10 keeps its identity key in /etc/docker/key.json unless told otherwise: this engine keeps it
        # in its own root, so that the host's /etc is left as it was
        config.write_text(json.dumps({"deprecated-key-path": str(self.root / "key.json")}))
        argv = ["unshare", "--mount", "--propagation", "private", "dockerd",
                "--data-root", str(self.root / "data"), "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "dockerd.pid"), "--host", self.host, "--config-file", str(config),
                "--bridge=none", "--iptables=false", "--ip6tables=false", "--log-level", "warn"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dockerd exited with {self.proc.returncode}:\n{self.log()}")
            if self.socket.exists():
                probe = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"],
                                       env=self.env(self.root / "probe"), capture_output=True, text=True)
                if probe.returncode == 0:
                    return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"dockerd did not answer within {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (dockerd stops its containers and its containerd), SIGKILL to the whole group if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except FileNotFoundError:
            return ""

    def docker(self, config: Path, *args: str, input: str | None = None, check: bool = True,
               timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against this engine with the configuration directory ``config``."""
        proc = subprocess.run(["docker", *args], env=self.env(config), capture_output=True, text=True, input=input,
                              timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}\n"
                                 f"dockerd's log:\n{self.log()}")
        return proc


@contextmanager
def private_dockerd(root: Path) -> Iterator[PrivateDockerd]:
    engine = PrivateDockerd(root)
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()
