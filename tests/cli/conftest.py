"""Helpers for driving ``acrlocal`` as a subprocess, the way a user or a script does."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.harness import acrlocal_cmd, child_env


def built(module: str) -> bool:
    """Whether a room's module is part of this build (its CLI tests run once it lands)."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_arm = pytest.mark.skipif(not built("acrlocal.arm.routes"), reason="the ARM control plane is not built yet")
needs_identities = pytest.mark.skipif(not built("acrlocal.arm.identities"),
                                      reason="Microsoft.ManagedIdentity is not built yet")
needs_compute = pytest.mark.skipif(not built("acrlocal.arm.compute"),
                                   reason="Microsoft.Compute is not built yet")


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(acrlocal_cmd(*args), capture_output=True, text=True, input=input,
                          env=child_env(**(env or {})), timeout=120)


def ok_json(proc: subprocess.CompletedProcess[str]) -> Any:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its content, to show a failed command changed nothing."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
