"""A template deployment belongs to the replica that runs it: another replica starting leaves it running, and once
its replica is gone (killed while it ran) the first replica to read it ends it ``Failed``.

The deployment is held in the middle of its run by locks the test takes (``arm_resources``, then the deployment's
row once its virtual network is written: reads go on), so that what the other replica does happens while it runs,
whatever the timing, and while its replica holds no lock of the control plane (a replica starting reconciles under
that lock).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

from tests.arm import races
from tests.arm.conftest import admin_of, subscription_of
from tests.harness import AcrLocal
from tests.replicas.conftest import Replicas, start_replicas, stop_replicas
from tests.table_locks import BOUND_S, wait_until, waiters

TEMPLATE = {
    "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
    "contentVersion": "1.0.0.0",
    "parameters": {"name": {"type": "string"}},
    "resources": [{"type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-09-01",
                   "name": "[parameters('name')]", "location": "westus",
                   "properties": {"addressSpace": {"addressPrefixes": ["10.1.0.0/16"]}}}],
}

Send = Callable[..., requests.Response]


def _direct(server: AcrLocal, token: str) -> Send:
    """Requests to this replica's own port (not through the load balancer), as the administrator."""
    base = re.sub(r":\d+$", f":{server.status['listeningPort']}", server.status["endpoints"]["shared"])
    session = server.session()

    def send(method: str, path: str, body: Any = None) -> requests.Response:
        return session.request(method, base + path, params={"api-version": races.api_version(path)}, json=body,
                               headers={"Authorization": f"Bearer {token}"}, timeout=BOUND_S * 2)

    return send


@dataclass
class Pair:
    """Two replicas over one database (``first``, ``second``), the database, the administrator's ARM token, a
    resource group made through the first, and a request function for each replica's own port."""

    replicas: Replicas
    engine: sa.Engine
    token: str
    group: str

    @property
    def first(self) -> AcrLocal:
        return self.replicas.servers[0]

    @property
    def second(self) -> AcrLocal:
        return self.replicas.servers[1]

    def on(self, server: AcrLocal) -> Send:
        return _direct(server, self.token)


@contextmanager
def two_replicas(root: Path, group: str) -> Iterator[Pair]:
    """Started replicas and resource group ``group``; everything stopped when the block ends."""
    replicas = start_replicas(root)
    engine = replicas.front.database()
    try:
        first = replicas.servers[0]
        token = admin_of(first).token(first)
        path = f"/subscriptions/{subscription_of(first)}/resourceGroups/{group}"
        assert _direct(first, token)("PUT", path, {"location": "westus"}).status_code == 201
        yield Pair(replicas, engine, token, path)
    finally:
        engine.dispose()
        stop_replicas(replicas)


@contextmanager
def _held(engine: sa.Engine, send: Send, path: str) -> Iterator[None]:
    """A deployment PUT through ``send`` at ``path``, held in the middle of its run until the block ends: between two
    of its resources' writes, when its replica holds no lock of the control plane (another replica may start)."""
    watcher = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    resources, row = engine.connect(), engine.connect()
    try:
        held_resources, held_row = resources.begin(), row.begin()
        try:
            resources.execute(sa.text("LOCK TABLE arm_resources IN EXCLUSIVE MODE"))
            put = send("PUT", path, {"properties": {"mode": "Incremental", "template": TEMPLATE,
                                                    "parameters": {"name": {"value": path.rsplit("/", 1)[-1]}}}})
            assert put.status_code == 201, put.text
            wait_until(lambda: waiters(watcher, "arm_resources") > 0, "the deployment's write of its resource")
            # its state is saved outside the control plane's lock: hold its row, then let the resource go
            row.execute(sa.text("SELECT 1 FROM arm_deployments WHERE id_key = :k FOR UPDATE"), {"k": path.lower()})
            held_resources.rollback()
            wait_until(lambda: bool(watcher.execute(sa.text(SAVING)).scalar_one()),
                       "the deployment's save of its state")
            yield
        finally:
            for held in (held_resources, held_row):
                if held.is_active:
                    held.rollback()
    finally:
        resources.close()
        row.close()
        watcher.close()


#: Whether a session waits for a row lock in an update of a deployment (its state saved).
SAVING = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE "
          "'UPDATE arm_deployments%'")


def _state(send: Send, path: str) -> dict[str, Any]:
    r = send("GET", path)
    assert r.status_code == 200, r.text
    return dict(r.json()["properties"])


def _until(send: Send, path: str, wanted: str) -> dict[str, Any]:
    deadline = time.monotonic() + BOUND_S
    while (props := _state(send, path))["provisioningState"] != wanted:
        assert time.monotonic() < deadline, f"still {props['provisioningState']}, not {wanted}: {props}"
        time.sleep(0.2)
    return props


def test_a_deployment_runs_on_while_another_replica_starts_and_ends_failed_once_its_replica_is_gone(
        tmp_path: Path) -> None:
    with two_replicas(tmp_path / "replicas", "runners") as pair:
        first, second = pair.first, pair.second
        on_first, on_second = pair.on(first), pair.on(second)
        deployments = f"{pair.group}/providers/Microsoft.Resources/deployments"

        with _held(pair.engine, on_first, f"{deployments}/held"):
            second.stop()
            second.start()  # a replica starting: before, it ended every deployment not ended yet as Failed
            on_second = pair.on(second)
            assert _state(on_second, f"{deployments}/held")["provisioningState"] in ("Accepted", "Running")
        assert _until(on_second, f"{deployments}/held", "Succeeded")["outputResources"]

        with _held(pair.engine, on_first, f"{deployments}/orphaned"):
            first.kill9()  # in the middle of the run: nobody runs it any more
        props = _until(on_second, f"{deployments}/orphaned", "Failed")
        assert props["error"]["code"] == "DeploymentFailed"
        assert "stopped while the deployment was running" in props["error"]["message"]
        assert _state(on_second, f"{deployments}/orphaned")["provisioningState"] == "Failed"  # and it stays so
        # and the name can be deployed again, now by the live replica
        again = on_second("PUT", f"{deployments}/orphaned", {"properties": {
            "mode": "Incremental", "template": TEMPLATE, "parameters": {"name": {"value": "orphaned"}}}})
        assert again.status_code in (200, 201), again.text
        _until(on_second, f"{deployments}/orphaned", "Succeeded")


def _chain(prefix: str, length: int) -> dict[str, Any]:
    """A template of ``length`` virtual networks, each depending on the one before (a wave each)."""
    resources: list[dict[str, Any]] = []
    for i in range(length):
        resource: dict[str, Any] = {
            "type": "Microsoft.Network/virtualNetworks", "apiVersion": "2023-09-01", "name": f"{prefix}{i}",
            "location": "westus", "properties": {"addressSpace": {"addressPrefixes": [f"10.{i}.0.0/16"]}}}
        if i:
            resource["dependsOn"] = [f"[resourceId('Microsoft.Network/virtualNetworks', '{prefix}{i - 1}')]"]
        resources.append(resource)
    return {**TEMPLATE, "parameters": {}, "resources": resources}


def test_a_deployment_is_cancelled_through_a_replica_that_does_not_run_it(tmp_path: Path) -> None:
    """The cancel reaches the runner through the deployment's row: it stops before its next wave."""
    with two_replicas(tmp_path / "replicas", "cancels") as pair:
        on_first, on_second = pair.on(pair.first), pair.on(pair.second)
        path = f"{pair.group}/providers/Microsoft.Resources/deployments/chain"
        watcher = pair.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        holder = pair.engine.connect()
        try:
            held = holder.begin()
            try:
                holder.execute(sa.text("LOCK TABLE arm_resources IN EXCLUSIVE MODE"))
                put = on_first("PUT", path, {"properties": {"mode": "Incremental", "template": _chain("chain", 3)}})
                assert put.status_code == 201, put.text
                wait_until(lambda: waiters(watcher, "arm_resources") > 0, "the deployment's first resource")
                cancel = on_second("POST", f"{path}/cancel")  # while the runner holds the control plane's lock
                assert cancel.status_code == 204, cancel.text
            finally:
                held.rollback()
        finally:
            holder.close()
            watcher.close()
        _until(on_second, path, "Canceled")
        names = {r["name"] for r in on_second("GET", f"{pair.group}/resources").json()["value"]}
        assert "chain0" in names and not {"chain1", "chain2"} & names, names
        again = on_second("POST", f"{path}/cancel")
        assert again.status_code == 409 and races.code(again) == "DeploymentCannotBeCanceled", again.text
        # a new run under the name forgets the cancel asked of the last one
        rerun = on_second("PUT", path, {"properties": {"mode": "Incremental", "template": _chain("chain", 3)}})
        assert rerun.status_code in (200, 201), rerun.text
        _until(on_second, path, "Succeeded")
