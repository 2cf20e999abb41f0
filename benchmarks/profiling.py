"""Sampling profiles of a server while a workload runs (py-spy), and a text summary of where the time went.

:class:`PySpy` attaches ``py-spy record`` to a running server for the duration of a ``with`` block and writes
collapsed stacks (one ``frame;frame;... count`` line per distinct stack) that :func:`summarise` reads. py-spy
needs ptrace rights over the server (root, or the same user with ptrace allowed); if it cannot attach, the
block still runs and :attr:`PySpy.error` says why. Profiling slows the server: figures measured with it on are
not comparable to the others.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

# A sample is idle when its thread is waiting: the event loop in epoll, an executor worker on its queue.
IDLE = re.compile(r"^(epoll_p?wait|_queue_SimpleQueue_get|PyThread_acquire_lock_timed|select|poll) ")


class PySpy:
    def __init__(self, pid: int, out: Path, rate: int = 200, native: bool = False) -> None:
        self.pid = pid
        self.out = out
        self.rate = rate
        self.native = native
        self.proc: subprocess.Popen[bytes] | None = None
        self.error: str | None = None

    def __enter__(self) -> PySpy:
        exe = shutil.which("py-spy")
        if exe is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return self
        self.out.parent.mkdir(parents=True, exist_ok=True)
        cmd = [exe, "record", "--pid", str(self.pid), "--rate", str(self.rate), "--format", "raw", "--threads",
               "--output", str(self.out)]
        if self.native:
            cmd.append("--native")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        time.sleep(0.5)  # let it attach before the workload starts
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            self.error = f"py-spy wrote no profile: {err.decode(errors='replace')[-500:]}"


def _frame_name(frame: str) -> str:
    """``func (path/to/module.py:123)`` → ``func (pkg/module.py)``: lines vary between samples of a function;
    unnamed native frames (``0x7f.. (libc.so.6)``) are merged per library."""
    m = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.groups()
    if func.startswith("0x"):
        func = "?"
    parts = path.split("/")
    tail = "/".join(parts[-2:]) if len(parts) > 1 else path
    return f"{func} ({tail})"


def load(path: Path) -> Counter[tuple[str, ...]]:
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks[tuple(_frame_name(f) for f in stack.split(";"))] += int(count)
    return stacks


def _idle(stack: tuple[str, ...]) -> bool:
    # Without native frames an executor worker waiting on its queue shows as ``_worker`` itself.
    return any(IDLE.search(f) for f in stack) or stack[-1].startswith("_worker (")


def summarise(path: Path, top: int = 25) -> str:
    """Busy samples (idle waits left out) by self and by inclusive time, as percentages of busy samples."""
    stacks = load(path)
    busy = {s: n for s, n in stacks.items() if not _idle(s)}
    total = sum(busy.values())
    if not total:
        return f"{path.name}: no busy samples"
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    for stack, n in busy.items():
        own[stack[-1]] += n
        for f in set(stack):
            incl[f] += n
    idle = sum(stacks.values()) - total
    lines = [f"## {path.name}: {total} busy samples ({idle} idle)", "", "self %  | function"]
    lines += [f"{100 * n / total:6.1f} | {f}" for f, n in own.most_common(top)]
    lines += ["", "incl % | function"]
    lines += [f"{100 * n / total:6.1f} | {f}" for f, n in incl.most_common(top)]
    return "\n".join(lines)


def main() -> None:
    import sys

    for arg in sys.argv[1:]:
        print(summarise(Path(arg)))
        print()


if __name__ == "__main__":
    main()
