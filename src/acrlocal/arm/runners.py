"""Which server process runs a template deployment, and whether that process still lives.

A deployment runs as a task of the process that accepted it (a replica's primary: secondaries forward ARM calls
to it), and only there. Its row names that process (``runner``: a random id drawn at each start), and the process
holds the named lock ``deployment-runner-<id>`` (:class:`~acrlocal.storage.sql.NamedLock`: a session advisory lock
on PostgreSQL, a file lock on SQLite) for as long as it lives; a process that dies lets it go with its connection
or its file descriptors. So a reader that finds a deployment not yet ended under a runner whose lock it can take
knows that nobody runs it any more, and ends it ``Failed`` (``arm/deployments.py``); a deployment another live
replica runs is left alone, whenever this one starts.

Every method blocks for at most one round trip to the database: call them through the server's ``SqlThread``.
"""

from __future__ import annotations

import uuid

from sqlalchemy.engine import Engine

from acrlocal.storage.sql import NamedLock


def _lock_name(runner: str) -> str:
    return f"deployment-runner-{runner}"


class DeploymentRunners:
    """This process's runner id (:attr:`me`) and its lock, and the answer for other runners: gone or alive."""

    def __init__(self, engine: Engine) -> None:
        self.me = uuid.uuid4().hex
        self._engine = engine
        self._mine = NamedLock(engine, _lock_name(self.me))
        self._held = False
        self._gone: set[str] = set()  # a process gone never comes back (a restart draws a new id)

    def start(self) -> None:
        """Hold this process's lock (once, before the process accepts a deployment). Raises ``RuntimeError`` if
        someone holds it already (an id drawn twice) and the database's errors as any statement would."""
        if self._held:
            return
        if not self._mine.acquire():
            raise RuntimeError(f"the lock of deployment runner {self.me} is held by another process")
        self._held = True

    def alive(self, runner: str | None) -> bool:
        """Whether the process ``runner`` names still lives (``None``, a row from before runners were named: no).
        This process always does; another does while its lock cannot be taken."""
        if runner is None or runner in self._gone:
            return False
        if runner == self.me:
            return True
        probe = NamedLock(self._engine, _lock_name(runner))
        if not probe.acquire():
            return True
        probe.release(remove=True)  # nobody takes it again: its file (SQLite) goes
        self._gone.add(runner)
        return False

    def close(self) -> None:
        """Let the lock go (at the end of the process; a process killed lets it go with its connection)."""
        if self._held:
            self._held = False
            self._mine.release(remove=True)
