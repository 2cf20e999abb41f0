"""Helpers for driving ``acrlocal`` as a subprocess, the way a user or a script does."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.harness import acrlocal_cmd, child_env


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(acrlocal_cmd(*args), capture_output=True, text=True, input=input,
                          env=child_env(**(env or {})), timeout=120)


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its content, to show a failed command changed nothing."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}
