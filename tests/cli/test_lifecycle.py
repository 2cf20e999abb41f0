"""``acrlocal up --detach`` and ``acrlocal down``: a background server that is ready when ``up`` returns."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.conftest import run


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    data = tmp_path / "data"
    yield data
    pid_file = data / "server.pid"
    if pid_file.exists():  # a failed test must not leave its server behind
        pid = int(pid_file.read_text())
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)


UP = ["up", "--detach", "--port", "0", "--registry-port-base", "0"]


def test_up_detach_returns_ready_and_down_stops_it(data_dir: Path, tmp_path: Path) -> None:
    env = {"ACRLOCAL_DATA_DIR": str(data_dir), "ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}
    proc = run(*UP, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Setting up acrlocal in" in proc.stderr  # progress on a fresh data dir
    pid = int((data_dir / "server.pid").read_text())
    assert f"is running (pid {pid})" in proc.stdout
    assert "Stop with `acrlocal down`" in proc.stdout
    status = json.loads(run("status", env=env).stdout)
    assert status["pid"] == pid and _alive(pid)
    assert (data_dir / "server.log").exists()

    again = run(*UP, env=env)
    assert again.returncode == 1
    assert again.stderr == f"ERROR: acrlocal is already running on {data_dir} (pid {pid}).\n"

    down = run("down", env=env)
    assert (down.returncode, down.stdout, down.stderr) == (0, "", "")
    assert not _alive(pid)
    assert not (data_dir / "server.json").exists() and not (data_dir / "server.pid").exists()
    after = run("status", env=env)
    assert after.returncode == 1 and "acrlocal is not running" in after.stderr


def test_restart_keeps_state_and_shows_no_setup_progress(data_dir: Path, tmp_path: Path) -> None:
    env = {"ACRLOCAL_DATA_DIR": str(data_dir), "ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}
    assert run(*UP, env=env).returncode == 0
    ca = (data_dir / "tls" / "ca.pem").read_bytes()
    assert run("down", env=env).returncode == 0
    second = run(*UP, env=env)
    assert second.returncode == 0, second.stderr
    assert "Setting up" not in second.stderr
    assert (data_dir / "tls" / "ca.pem").read_bytes() == ca
    assert run("down", env=env).returncode == 0


def test_up_detach_reports_a_server_that_cannot_start(data_dir: Path, tmp_path: Path) -> None:
    env = {"ACRLOCAL_DATA_DIR": str(data_dir), "ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}
    proc = run("up", "--detach", "--port", "0", "--database-url", "nosuchdb://x", env=env)
    assert proc.returncode == 1
    assert "ERROR: acrlocal exited with code 1 while starting" in proc.stderr
    assert not (data_dir / "server.pid").exists()


def test_up_refuses_the_removed_imds_port_base(data_dir: Path, tmp_path: Path) -> None:
    """VMs reach IMDS inside their own network namespace: a host port base would do nothing, so it is refused
    before anything starts or is written, not accepted and ignored."""
    env = {"ACRLOCAL_DATA_DIR": str(data_dir), "ACRLOCAL_CONFIG_DIR": str(tmp_path / "profile")}
    for flag in (["--imds-port-base", "50342"], ["--imds-port-base=0"]):
        proc = run("up", "--detach", "--port", "0", *flag, env=env)
        assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
        assert proc.stderr == ("ERROR: --imds-port-base was removed: VMs reach IMDS at 169.254.169.254:80 inside "
                               "their own network namespace, and no port on the host serves it; leave the option "
                               "out.\n")
        assert not data_dir.exists()
    assert "imds-port-base" not in run("up", "--help", env=env).stdout
