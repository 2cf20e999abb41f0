"""The upload and digest locks hold across the processes of one server (``up --workers``): a process waits for
the lock another holds, then goes on."""

from __future__ import annotations

import asyncio
import multiprocessing
from pathlib import Path

from acrlocal.registry.locks import KeyedLocks


def _hold(path: str, log: str, started: multiprocessing.synchronize.Event, go: multiprocessing.synchronize.Event) \
        -> None:
    async def main() -> None:
        locks = KeyedLocks()
        locks.share(Path(path))
        async with locks("sha256:" + "a" * 64):
            with open(log, "a") as f:
                f.write("held\n")
            started.set()
            await asyncio.to_thread(go.wait, 30)
            with open(log, "a") as f:
                f.write("released\n")

    asyncio.run(main())


def test_a_digest_lock_held_by_another_process_is_waited_for(tmp_path: Path) -> None:
    path, log = tmp_path / "digests.lock", tmp_path / "log"
    context = multiprocessing.get_context("spawn")
    started, go = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(path), str(log), started, go))
    holder.start()
    try:
        assert started.wait(60)

        async def main() -> None:
            locks = KeyedLocks()
            locks.share(path)
            async with locks("sha256:" + "b" * 64):  # another key: not held up
                pass
            waiting = asyncio.ensure_future(_take(locks))
            await asyncio.sleep(0.2)
            assert not waiting.done()  # the other process holds it
            go.set()
            await asyncio.wait_for(waiting, 30)

        async def _take(locks: KeyedLocks) -> None:
            async with locks("sha256:" + "a" * 64):
                with open(log, "a") as f:
                    f.write("taken\n")

        asyncio.run(main())
    finally:
        go.set()
        holder.join(30)
    assert log.read_text().splitlines() == ["held", "released", "taken"]
