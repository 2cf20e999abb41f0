"""ARM's and Graph's writes hand their store calls to the SQL thread on every backend (``SqlThread.run_long``), and
their reads run where ``SqlThread.run`` puts them (inline on SQLite). A write's call may commit more than once (a
resource, then its children; an application, then its owner): inline on SQLite, another writer taking the lock
between two of its commits could only fail it after the first (``tests/storage/test_sql_thread.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from acrlocal.arm.graph.core import GraphCall
from acrlocal.arm.providers import Call, InternalRequest


@dataclass
class RecordingSql:
    """Stands for the server's SqlThread: records which of its two ways each call took."""

    ways: list[str] = field(default_factory=list)

    async def run(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.ways.append("run")
        return fn(*args, **kwargs)

    async def run_long(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        self.ways.append("run_long")
        return fn(*args, **kwargs)


@dataclass
class Services:
    sql: RecordingSql


@pytest.mark.parametrize(("method", "way"), [("GET", "run"), ("HEAD", "run"), ("PUT", "run_long"),
                                             ("PATCH", "run_long"), ("POST", "run_long"), ("DELETE", "run_long")])
def test_an_arm_calls_way_follows_its_method(method: str, way: str) -> None:
    sql = RecordingSql()
    call = Call(Services(sql), None, None, InternalRequest(method, "/subscriptions/x"), "2024-01-01")  # type: ignore[arg-type]
    assert asyncio.run(call.run(lambda: 42)) == 42
    assert sql.ways == [way]


@pytest.mark.parametrize(("method", "way"), [("GET", "run"), ("POST", "run_long"), ("PATCH", "run_long"),
                                             ("DELETE", "run_long")])
def test_a_graph_calls_way_follows_its_method(method: str, way: str) -> None:
    sql = RecordingSql()
    call = GraphCall(Services(sql), None, InternalRequest(method, "/v1.0/users"), None, {})  # type: ignore[arg-type]
    assert asyncio.run(call.run(lambda: 42)) == 42
    assert sql.ways == [way]
