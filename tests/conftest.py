"""Fixtures that start real acrlocal servers on loopback and stop them afterwards.

Each server runs as a child process (``python -m acrlocal up``) on its own data directory with every port
chosen by the system, so tests never collide with each other or with a server the user runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import AcrLocal, running


@pytest.fixture(scope="session")
def acrlocal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """One server shared by the whole session (tests use their own repository names)."""
    with running(tmp_path_factory.mktemp("acrlocal-session") / "data") as server:
        yield server


@pytest.fixture
def fresh_acrlocal(tmp_path: Path) -> Iterator[AcrLocal]:
    """A server of the test's own, for tests that restart or kill it."""
    server = AcrLocal(tmp_path / "data")
    try:
        yield server
    finally:
        server.stop()
