"""A replica starting reconciles under the control plane's write lock: what another replica is in the middle of
making is not taken for the leftover of a crash.

A user-assigned identity is made in two steps (its principal in the directory, then its ARM resource). The test
holds the second step of one made through the first replica (a lock on ``arm_resources``) and restarts the second
replica meanwhile: before, its start found a principal without its identity and deleted it, so the identity, once
made, had no principal; now the start waits for the write, and the identity keeps its principal.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import sqlalchemy as sa

from tests.arm import races
from tests.replicas.test_deployment_runners import Send, two_replicas
from tests.table_locks import wait_until, waiters

#: Room for the restarted replica to reach its reconciliation, were it not waiting for the write.
SETTLE_S = 5.0


def test_a_replica_starting_waits_for_an_identity_another_replica_is_making(tmp_path: Path) -> None:
    with two_replicas(tmp_path / "replicas", "start-under-lock") as pair:
        second, on_first = pair.second, pair.on(pair.first)
        identity = f"{pair.group}/providers/{races.IDENTITIES}/made-meanwhile"
        watcher = pair.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        holder = pair.engine.connect()
        answers: dict[str, object] = {}
        try:
            held = holder.begin()
            try:
                holder.execute(sa.text("LOCK TABLE arm_resources IN EXCLUSIVE MODE"))
                put = threading.Thread(target=lambda: answers.update(put=_put(on_first, identity)))
                put.start()
                wait_until(lambda: waiters(watcher, "arm_resources") > 0, "the identity's write of its resource")
                second.stop()
                restart = threading.Thread(target=lambda: answers.update(started=second.start(timeout=60)))
                restart.start()
                time.sleep(SETTLE_S)
                principals = watcher.execute(sa.text(
                    "SELECT count(*) FROM principals WHERE lower(resource_id) = :r"), {"r": identity.lower()})
                assert principals.scalar_one() == 1, "a replica's start deleted the principal of an identity in making"
            finally:
                held.rollback()
            put.join(60)
            restart.join(90)
        finally:
            holder.close()
            watcher.close()
        assert answers.get("put") == 201 and answers.get("started"), answers
        shown = on_first("GET", identity)
        principal = shown.json()["properties"]["principalId"]
        assert races.count(pair.engine, "SELECT count(*) FROM principals WHERE object_id = :p", p=principal) == 1


def _put(send: Send, identity: str) -> int:
    return int(send("PUT", identity, {"location": "westus"}).status_code)
