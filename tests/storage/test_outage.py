"""PostgreSQL stopped under a running server: every protocol answers 503 with ``Retry-After`` in its own format
while the database is down, and the server serves again once it is back, without a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import AcrLocal
from tests.postgres import PostgresServer
from tests.registry.conftest import RegistryClient

ARM = "https://management.azure.com/.default"
GRAPH = "https://graph.microsoft.com/.default"


@pytest.fixture
def database() -> Iterator[PostgresServer]:
    server = PostgresServer()  # a server of the test's own: it is stopped and started again
    try:
        server.start()
        yield server
    finally:
        server.stop()


def test_a_database_outage_is_503_and_the_server_recovers(tmp_path: Path, database: PostgresServer) -> None:
    url = database.create_database("outage")
    server = AcrLocal(tmp_path / "data", "--database-url", url, backend="sqlite")
    server.start()
    try:
        registry = RegistryClient(server)
        registry.push_image("outage/app", "v1")
        cred = server.admin_credential()
        arm, graph = server.session(), server.session()
        arm.headers["Authorization"] = "Bearer " + server.admin_token(ARM)
        graph.headers["Authorization"] = "Bearer " + server.admin_token(GRAPH)
        groups = f"{server.shared}/subscriptions/{cred['subscriptionId']}/resourcegroups?api-version=2022-09-01"
        token_url = f"{server.shared}/{cred['tenantId']}/oauth2/v2.0/token"
        token_form = {"grant_type": "client_credentials", "client_id": cred["clientId"],
                      "client_secret": cred["clientSecret"], "scope": ARM}

        def calls() -> dict[str, Any]:
            return {
                "registry": registry.request("GET", "/v2/outage/app/tags/list"),
                "arm": arm.get(groups),
                "graph": graph.get(f"{server.shared}/v1.0/applications"),
                "entra": server.session().post(token_url, data=token_form),
            }

        assert {k: r.status_code for k, r in calls().items()} == dict.fromkeys(("registry", "arm", "graph", "entra"),
                                                                                200)
        database.stop_server()
        down = calls()
        assert {k: r.status_code for k, r in down.items()} == dict.fromkeys(down, 503), \
            {k: r.text[:300] for k, r in down.items()}
        for r in down.values():
            assert int(r.headers["Retry-After"]) > 0
        assert down["registry"].json()["errors"][0]["code"] == "UNAVAILABLE"
        assert down["arm"].json()["error"]["code"] == "ServiceUnavailable"
        assert down["graph"].json()["error"]["code"] == "serviceNotAvailable"
        assert down["entra"].json()["error"] == "temporarily_unavailable"

        database.start_server()
        deadline = time.monotonic() + 30
        while True:
            statuses = {k: r.status_code for k, r in calls().items()}
            if set(statuses.values()) == {200} or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert set(statuses.values()) == {200}, statuses
        registry.push_image("outage/app", "v2")
    finally:
        server.stop()
