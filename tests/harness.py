"""Start, stop and kill a real acrlocal server process for tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests

SRC = Path(__file__).resolve().parents[1] / "src"
#: Registry throttling stays on in tests, with limits far above what any test sends (tests push hundreds of blobs;
#: ACR's Standard SKU allows 500 writes a minute). A later ``--registry-rate-limit`` in ``extra_args`` wins.
TEST_RATE_LIMIT = "1000000/1000000"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def acrlocal_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "acrlocal", *args]


class CASession(requests.Session):
    """``requests`` lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify``; this session passes it per request."""

    def __init__(self, ca: str) -> None:
        super().__init__()
        self.ca = ca

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.ca)
        return super().request(method, url, *args, **kwargs)


class AcrLocal:
    """A server process on ``data_dir``. ``status`` is what ``acrlocal status`` prints."""

    def __init__(self, data_dir: Path, *extra_args: str) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] = {}
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        state = self.data_dir / "server.json"
        state.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            acrlocal_cmd(
                "up", "--data-dir", str(self.data_dir), "--port", "0", "--registry-port-base", "0",
                "--imds-port-base", "0", "--log-level", "info", "--registry-rate-limit", TEST_RATE_LIMIT,
                *self.extra_args,
            ),
            stdout=log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"acrlocal exited with {self.proc.returncode}:\n{self.log()}")
            if state.exists():
                try:
                    self.status = json.loads(state.read_text())
                    break
                except json.JSONDecodeError:
                    pass
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"acrlocal did not start in {timeout}s:\n{self.log()}")
        return self.status

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code (``None`` if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> dict[str, Any]:
        self.stop()
        return self.start()

    @property
    def profile_dir(self) -> Path:
        """The CLI profile (``ACRLOCAL_CONFIG_DIR``) ``cli`` uses for this server."""
        return self.data_dir.parent / f"{self.data_dir.name}-cli-profile"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    # -- where things are --------------------------------------------------------------------------

    @property
    def ca(self) -> str:
        return str(self.status["caPath"])

    @property
    def shared(self) -> str:
        return str(self.status["endpoints"]["shared"])

    def registry(self, name: str = "acrlocal") -> dict[str, Any]:
        for reg in self.status["registries"]:
            if reg["name"] == name:
                return dict(reg)
        raise KeyError(name)

    def login_server(self, name: str = "acrlocal") -> str:
        return str(self.registry(name)["loginServer"])

    def url(self, path: str, registry: str = "acrlocal") -> str:
        return f"https://{self.login_server(registry)}{path}"

    def session(self) -> requests.Session:
        """A requests session that trusts this server's CA (whatever ``REQUESTS_CA_BUNDLE`` says)."""
        return CASession(self.ca)

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``acrlocal ARGS`` against this server: its data dir, and a CLI profile of its own (never ``~``)."""
        proc = subprocess.run(
            acrlocal_cmd(*args), capture_output=True, text=True, input=input,
            env=child_env(**{"ACRLOCAL_DATA_DIR": str(self.data_dir), "ACRLOCAL_CONFIG_DIR": str(self.profile_dir),
                             **(env or {})}),
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"acrlocal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc
