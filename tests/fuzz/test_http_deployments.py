"""ARM template deployments, fuzzed over HTTP against a server of the module's own: ``validate``, ``whatIf`` and
PUT of deployments at resource group and subscription scope: valid templates that deploy, some with one odd
value, and near-valid templates of every part (see :mod:`tests.fuzz.arm_templates`), now and then mutated into
junk.

Properties: never a 5xx; ``validate`` and ``whatIf`` change nothing (ARM's groups and resources are the same
before and after), and neither does a refused PUT; an accepted deployment ends (Succeeded, Failed or Canceled;
never left running), and it, its operations and its exported template can be read; and the server's log holds
no traceback and nothing at ERROR level."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fuzz import arm_templates as t
from tests.fuzz import strategies as s
from tests.fuzz.conftest import World, assert_logged_no_error, clean

API = "2022-09-01"
#: Deployments end in well under a second; this only bounds a test that would otherwise hang.
END_WITHIN_S = 120.0
#: Each example deploys: half the profile's examples (the long profile still runs many).
HALF = settings(max_examples=max(10, settings().max_examples // 2))


@pytest.fixture(scope="module", autouse=True)
def groups(world: World) -> None:
    for group in t.GROUPS:
        r = world.http.put(f"{world.server.shared}/subscriptions/{world.subscription}/resourcegroups/{group}",
                           params={"api-version": API}, json={"location": "westus"},
                           headers={"Authorization": f"Bearer {world.arm}"})
        assert r.status_code in (200, 201), r.text


def scope(world: World, group: str | None) -> str:
    base = f"{world.server.shared}/subscriptions/{world.subscription}"
    return f"{base}/resourceGroups/{group}" if group else base


def call(world: World, method: str, url: str, body: bytes | None = None, kind: str = "deployment") -> requests.Response:
    return world.answered(lambda: world.http.request(method, url, params={"api-version": API}, data=body,
                                                     headers={"Authorization": f"Bearer {world.arm}",
                                                              "Content-Type": "application/json"}), kind)


def body_bytes(data: st.DataObject, subscription: bool) -> bytes:
    if data.draw(st.integers(0, 2)):
        body = clean(data.draw(t.deploying_bodies(subscription)))
    else:
        body = clean(data.draw(t.deployment_bodies(subscription=subscription)))
    if data.draw(st.integers(0, 4)) == 0:
        return data.draw(s.mutated_documents(body))
    return json.dumps(body).encode()


def ended(world: World, r: requests.Response) -> dict[str, Any]:
    """The final status of an accepted deployment, polled at its ``Azure-AsyncOperation``."""
    status_url = r.headers["Azure-AsyncOperation"]
    deadline = time.monotonic() + END_WITHIN_S
    while True:
        polled = world.answered(lambda: world.http.get(status_url, headers={"Authorization": f"Bearer {world.arm}"}),
                                "deployment status")
        assert polled.status_code == 200, polled.text
        status: dict[str, Any] = polled.json()
        if status["status"] != "Running":
            return status
        assert time.monotonic() < deadline, f"the deployment never ended: {r.text[:1000]}"
        time.sleep(0.02)


# ("." and ".." are dot-segments: the client resolves them away, and the request is for another path)
deployment_names = st.one_of(st.sampled_from(["fzd0", "fzd1", "fzd2"]), s.arm_names).filter(
    lambda n: n not in (".", ".."))


@HALF
@given(st.data(), st.sampled_from(["validate", "whatIf"]), st.sampled_from([*t.GROUPS[:1], None]),
       deployment_names)
def test_validate_and_what_if_change_nothing(world: World, data: st.DataObject, action: str, group: str | None,
                                             name: str) -> None:
    raw = body_bytes(data, group is None)
    before = world.arm_state()
    where = f"{scope(world, group)}/providers/Microsoft.Resources/deployments/{quote(clean(name), safe='')}"
    r = call(world, "POST", f"{where}/{action}", raw, action)
    if r.status_code == 202 and "Location" in r.headers:
        result = call(world, "GET", r.headers["Location"].split("?")[0], kind="what-if result")
        assert result.status_code in (200, 204), result.text
    elif r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), r.text
    assert world.arm_state() == before, f"{action} changed ARM's state"


@HALF
@given(st.data(), st.sampled_from([*t.GROUPS, None]), deployment_names)
def test_deployments(world: World, data: st.DataObject, group: str | None, name: str) -> None:
    raw = body_bytes(data, group is None)
    before = world.arm_state()
    where = f"{scope(world, group)}/providers/Microsoft.Resources/deployments/{quote(clean(name), safe='')}"
    r = call(world, "PUT", where, raw)
    if r.status_code >= 400:
        error = r.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), r.text
        if error["code"] != "DeploymentActive":
            after = world.arm_state()
            changed = [sorted(set(a) ^ set(b)) for a, b in zip(before, after, strict=True)]
            assert after == before, f"a refused deployment changed ARM's state: {changed} {r.text[:500]}"
        return
    assert r.status_code in (200, 201), r.text
    accepted = [r]
    try:
        _follow(world, data, where, raw, group, accepted)
    finally:  # (an example that failed half-way leaves no deployment running into the next one's state checks)
        with contextlib.suppress(Exception):
            ended(world, accepted[-1])


def _follow(world: World, data: st.DataObject, where: str, raw: bytes, group: str | None,
            accepted: list[requests.Response]) -> None:
    """While the deployment runs (or just after): nothing, a cancel, a delete, or the same PUT again; then it
    ends, and it, its operations and its template are read."""
    follow = data.draw(st.sampled_from(["", "", "cancel", "delete", "again"]))
    if follow == "cancel":
        assert call(world, "POST", where + "/cancel").status_code in (204, 409)
    elif follow == "again":
        again = call(world, "PUT", where, raw)
        assert again.status_code in (200, 201, 409), again.text
        if again.status_code != 409:
            accepted.append(again)
    status = ended(world, accepted[-1])
    assert status["status"] in ("Succeeded", "Failed", "Canceled"), status
    if follow == "delete":
        deleted = call(world, "DELETE", where)
        assert deleted.status_code in (202, 204), deleted.text
        assert call(world, "GET", where).status_code == 404
        return
    stored = call(world, "GET", where)
    assert stored.status_code == 200, stored.text
    assert stored.json()["properties"]["provisioningState"] == status["status"]
    for tail, method in (("/operations", "GET"), ("/exportTemplate", "POST")):
        assert call(world, method, where + tail).status_code == 200
    for op in call(world, "GET", where + "/operations").json()["value"]:
        assert call(world, "GET", f"{where}/operations/{op['operationId']}").status_code == 200
    assert call(world, "GET", f"{scope(world, group)}/providers/Microsoft.Resources/deployments").status_code == 200


def test_the_server_logged_no_error(world: World) -> None:
    assert_logged_no_error(world)
