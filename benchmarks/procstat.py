"""CPU time and resident memory of a server process and all its descendants, read from ``/proc``.

Processes that exit between two reads are skipped (their CPU time is then counted in the parent's ``cutime`` and
``cstime`` once reaped). Linux only; a missing ``/proc`` entry for the root process raises ``ProcessLookupError``.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (field 3 onwards, so index 0 is the state)."""
    raw = (PROC / str(pid) / "stat").read_text()
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir(PROC):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid``, its reaped children, and its live descendants."""
    total = 0
    for i, p in enumerate(descendants(pid)):
        try:
            f = _stat_fields(p)
        except OSError:
            if i == 0:
                raise ProcessLookupError(pid) from None
            continue
        # utime, stime, cutime, cstime are fields 14-17 of the stat line (indexes 11-14 here).
        total += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return total / CLK_TCK


def rss_bytes(pids: list[int]) -> int:
    total = 0
    for p in pids:
        try:
            total += int((PROC / str(p) / "statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


class RssSampler:
    """Samples the summed RSS of a process tree every ``interval`` seconds in a thread; ``peak`` is the largest sum,
    ``peak_process`` the largest RSS of any one process of the tree (a server with workers: one worker's).

    The tree is re-listed every ``rescan`` samples (listing walks all of ``/proc``), so a child started
    mid-workload is counted from its next rescan.
    """

    def __init__(self, pid: int, interval: float = 0.02, rescan: int = 25) -> None:
        self.pid = pid
        self.interval = interval
        self.rescan = rescan
        self.peak = 0
        self.peak_process = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"rss-{pid}", daemon=True)

    def _run(self) -> None:
        pids = descendants(self.pid)
        n = 0
        while not self._stop.is_set():
            if n % self.rescan == 0 and n:
                pids = descendants(self.pid)
            self._sample(pids)
            n += 1
            self._stop.wait(self.interval)

    def _sample(self, pids: list[int]) -> None:
        each = [rss_bytes([p]) for p in pids]
        self.peak = max(self.peak, sum(each))
        self.peak_process = max(self.peak_process, *each, 0)

    def __enter__(self) -> RssSampler:
        self._sample(descendants(self.pid))
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(descendants(self.pid))


def children_cpu_seconds() -> float:
    """User + system CPU seconds of this process's children that have been waited for (the clients)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Meter:
    """Wall time, server CPU seconds, server peak RSS, and the CPU seconds of the clients (this process's
    children, once waited for) over a ``with`` block."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.sampler = RssSampler(pid, interval)
        self.wall = 0.0
        self.cpu = 0.0
        self.client_cpu = 0.0

    @property
    def peak_rss(self) -> int:
        return self.sampler.peak

    @property
    def peak_process_rss(self) -> int:
        return self.sampler.peak_process

    def __enter__(self) -> Meter:
        self._cpu0 = cpu_seconds(self.pid)
        self._client0 = children_cpu_seconds()
        self.sampler.__enter__()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._t0
        self.sampler.__exit__()
        self.cpu = cpu_seconds(self.pid) - self._cpu0
        self.client_cpu = children_cpu_seconds() - self._client0
