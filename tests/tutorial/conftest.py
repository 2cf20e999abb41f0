"""The tutorial's world: a server of its own (the tutorial's names are global: one registry may be called
mycontainerregistry), and ``az`` on PATH as a shim that runs acrlocal's CLI against it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness import SRC, AcrLocal, running

REPO_ROOT = SRC.parent


@dataclass
class Shell:
    """bash with ``az`` = acrlocal's CLI on PATH, as a user of the tutorial has it."""

    server: AcrLocal
    bin_dir: Path
    profile: Path

    def env(self, **extra: str) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "IDENTITY_", "MSI_", "ACRLOCAL_"))}
        return {**keep, "PATH": f"{self.bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "PYTHONPATH": str(SRC), "ACRLOCAL_DATA_DIR": str(self.server.data_dir),
                "ACRLOCAL_CONFIG_DIR": str(self.profile), **extra}

    def run(self, script: str, *, check: bool = True, timeout: float = 600,
            **extra: str) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                              env=self.env(**extra), timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(f"exit {proc.returncode}\n--- script\n{script}\n--- stdout\n{proc.stdout[-4000:]}"
                                 f"\n--- stderr\n{proc.stderr[-4000:]}")
        return proc

    def out(self, script: str, **extra: str) -> str:
        return self.run(script, **extra).stdout.strip()


@pytest.fixture(scope="module")
def tutorial_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("tutorial") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def shell(tutorial_server: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> Shell:
    root = tmp_path_factory.mktemp("tutorial-shell")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    az = bin_dir / "az"
    az.write_text(f"#!/bin/sh\n# az is acrlocal's az-shaped CLI\nexec {sys.executable} -m acrlocal \"$@\"\n")
    az.chmod(0o755)
    return Shell(tutorial_server, bin_dir, root / "profile")
