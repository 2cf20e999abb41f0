"""``examples/managed-identity-tutorial.sh``, as a new user runs it after ``acrlocal up``: on a server of its own,
with acrlocal's CLI as ``az``; it must finish, show both examples and every denial, and clean up after itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tutorial.conftest import REPO_ROOT, Shell

SCRIPT = REPO_ROOT / "examples" / "managed-identity-tutorial.sh"
pytestmark = pytest.mark.skipif(shutil.which("podman") is None or shutil.which("skopeo") is None,
                                reason="the example pushes with skopeo")


def test_the_example_script_runs_the_tutorial(shell: Shell, tmp_path: Path) -> None:
    env = shell.env(ACRLOCAL=f"{sys.executable} -m acrlocal", HOME=str(tmp_path / "home"),
                    TMPDIR=str(tmp_path))
    (tmp_path / "home").mkdir()
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=900,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
    out = proc.stdout
    for marker in ("as the service principal", "pushed localhost:", "pull denied, as expected (no role assignment yet)",
                   "Login Succeeded",
                   "push denied, as expected (AcrPull only)", "MSI                   systemAssignedIdentity",
                   "pull denied, as expected (the identity is gone)", "az login --identity refused, as expected",
                   "Done: both examples of the tutorial ran on this machine"):
        assert marker in out, marker
    assert "UNEXPECTED" not in out
    assert shell.out("az group exists --name myResourceGroup") == "false"  # cleaned up
    assert list((tmp_path / "home").iterdir()) == []

    again = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env={**env, "KEEP": "1"},
                           timeout=900, stdin=subprocess.DEVNULL)
    assert again.returncode == 0, again.stderr[-3000:]
    refused = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 1
    assert "FAILED: myResourceGroup exists (from an earlier run?)" in refused.stderr
    shell.run("az group delete --name myResourceGroup --yes")
