"""Fixtures that start real acrlocal servers on loopback and stop them afterwards.

Each server runs as a child process (``python -m acrlocal up``) on its own data directory with every port
chosen by the system, so tests never collide with each other or with a server the user runs. ``--backend
postgresql`` puts every such server's metadata (and the ``database_url`` fixture's) on a private PostgreSQL server
started for the session (``tests/postgres.py``); ``--blob-backend azurite`` puts their blobs in a container each
on a private Azurite started for the session (``tests/azurite.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from tests import azurite, harness, postgres
from tests.dockerd import PrivateDockerd, private_dockerd, require
from tests.harness import AcrLocal, running

# Hypothesis (the fuzz suite, the template expressions' properties): ``ci``, the default, runs a bounded slice
# drawn from a seed fixed per test (``derandomize``), so the normal suite runs the same examples every time and a
# landing never fails on a new random draw; ``long`` (``HYPOTHESIS_PROFILE=long``, what ``scripts/fuzz`` runs round
# after round) draws new examples each time, and is where new inputs are looked for.
_QUIET_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("ci", max_examples=40, deadline=None, suppress_health_check=_QUIET_CHECKS,
                          derandomize=True)
settings.register_profile("long", max_examples=300, deadline=None, suppress_health_check=_QUIET_CHECKS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

BACKENDS = ("sqlite", "postgresql")
BLOB_BACKENDS = ("files", "azurite")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=BACKENDS, default=harness.BACKEND,
                     help="metadata backend of the servers and stores tests start: sqlite (default, or "
                          "$ACRLOCAL_TEST_BACKEND) or postgresql (a private server of the session's)")
    parser.addoption("--workers", type=int, default=harness.WORKERS,
                     help="server processes of every test server (acrlocal up --workers; default 1, or "
                          "$ACRLOCAL_TEST_WORKERS)")
    parser.addoption("--blob-backend", choices=BLOB_BACKENDS, default=harness.BLOB_BACKEND,
                     help="blob store of the servers tests start: files (default, or $ACRLOCAL_TEST_BLOB_BACKEND) or "
                          "azurite (a container each on a private Azurite of the session's)")


def pytest_configure(config: pytest.Config) -> None:
    harness.BACKEND = config.getoption("--backend")
    harness.WORKERS = config.getoption("--workers")
    harness.BLOB_BACKEND = config.getoption("--blob-backend")


def pytest_unconfigure(config: pytest.Config) -> None:
    postgres.stop_shared()
    azurite.stop_shared()


def new_database(backend: str, tmp_path: Path) -> str:
    if backend == "postgresql":
        return postgres.shared().create_database()
    return f"sqlite:///{tmp_path / 'acrlocal.db'}"


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """An empty database of the session's backend (``--backend``)."""
    return new_database(harness.BACKEND, tmp_path)


@pytest.fixture(params=BACKENDS)
def each_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each backend in turn, whatever ``--backend`` says (for the schema's own tests)."""
    return new_database(request.param, tmp_path)


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


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateDockerd]:
    """A private Docker Engine (see :mod:`tests.dockerd`) for the session, stopped at its end. Missing docker.io
    fails the test unless ``$ACRLOCAL_TEST_NO_DOCKER`` is set."""
    require("docker", "dockerd", "unshare")
    with private_dockerd(tmp_path_factory.mktemp("dockerd")) as engine:
        yield engine
