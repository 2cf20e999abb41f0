"""Deployment runners (``arm/runners.py``): a runner lives while its process holds its lock, on either backend."""

from __future__ import annotations

from pathlib import Path

from acrlocal.arm.runners import DeploymentRunners
from acrlocal.storage.sql import open_engine


def test_a_runner_lives_while_it_holds_its_lock_and_is_gone_for_good_once_it_let_it_go(
        each_database_url: str, tmp_path: Path) -> None:
    engine = open_engine(each_database_url)
    try:
        running, reader = DeploymentRunners(engine), DeploymentRunners(engine)
        running.start()
        assert running.me != reader.me
        assert reader.alive(running.me) and running.alive(running.me)
        assert reader.alive(running.me)  # asking again leaves it held
        assert not reader.alive(None)  # a row from before runners were named
        running.close()
        assert not reader.alive(running.me)
        running.start()  # (the same id again: only a test does that) gone stays gone for whoever found it so
        assert not reader.alive(running.me)
        running.close()
        assert not list(tmp_path.glob("*deployment-runner-*")), "a lock file outlived its runner"
    finally:
        engine.dispose()
