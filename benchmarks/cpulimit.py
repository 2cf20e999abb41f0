"""A CPU quota for a group of processes, from the kernel's cgroups: a replica given half a core behaves like a
machine of half a core, so a benchmark on two shared cores can ask whether the replicas scale, apart from what the
client and the load balancer take of the same cores.

Uses the cgroup v2 ``cpu`` controller where it is enabled (``cpu.max``), else v1's (``cpu.cfs_quota_us``). Where
neither can be written (no cgroup file system, not root), :class:`CpuLimit` raises :class:`OSError` saying so. The
group is removed again by :meth:`CpuLimit.close`, after its processes have been moved back to the group they came
from (or have exited).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from benchmarks.procstat import descendants

ROOT = Path("/sys/fs/cgroup")
#: The scheduler's accounting period: short, so that a throttled group waits milliseconds, not a tenth of a second.
PERIOD_US = 20_000


def _v2_root() -> Path | None:
    for root in (ROOT, ROOT / "unified"):
        enabled = root / "cgroup.subtree_control"  # the controllers its child groups get
        if enabled.exists() and "cpu" in enabled.read_text().split():
            return root
    return None


class CpuLimit:
    """A cgroup named ``name`` whose processes share ``cpus`` cores' worth of CPU time (``0.5``: half of one)."""

    def __init__(self, name: str, cpus: float) -> None:
        if cpus <= 0:
            raise ValueError(f"a CPU quota must be above 0 cores, not {cpus}")
        quota = max(1000, round(cpus * PERIOD_US))
        v2 = _v2_root()
        if v2 is not None:
            self._dir, self._parent = v2 / name, v2
            self._dir.mkdir()
            (self._dir / "cpu.max").write_text(f"{quota} {PERIOD_US}\n")
        elif (ROOT / "cpu" / "cpu.cfs_quota_us").exists():
            self._dir, self._parent = ROOT / "cpu" / name, ROOT / "cpu"
            self._dir.mkdir()
            (self._dir / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
            (self._dir / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        else:
            raise OSError(f"no cgroup cpu controller under {ROOT} to give a process {cpus} cores")
        self.cpus = cpus

    def add(self, pid: int) -> None:
        """Move ``pid`` and the processes below it into the group (their threads move with them)."""
        for each in descendants(pid):
            with contextlib.suppress(ProcessLookupError):
                (self._dir / "cgroup.procs").write_text(f"{each}\n")

    def close(self) -> None:
        """Move what is left back to the parent group and remove the group."""
        with contextlib.suppress(FileNotFoundError):
            for line in (self._dir / "cgroup.procs").read_text().split():
                with contextlib.suppress(ProcessLookupError, OSError):
                    (self._parent / "cgroup.procs").write_text(f"{line}\n")
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(self._dir)
