"""Brute force is throttled (issue 8, item 10): failed passwords and secrets count per user or client name and per
caller address; past the threshold Entra answers AADSTS50053 and the registries' token services 429
TOOMANYREQUESTS, without checking the credential, until the lockout ends; failures are audited. Servers here run
with low limits and short lockouts (``--login-lockout``)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from acrlocal.errors import ConfigError
from acrlocal.lockout import Lockout, LockoutPolicy, parse_lockout
from tests.harness import AcrLocal, running

AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM_SCOPE = "https://management.azure.com/.default"
REGISTRY_API = "2023-07-01"
LOCKOUT_S = 2


# -- the policy, pure ------------------------------------------------------------------------------------------


def test_counts_per_name_and_per_caller_and_lockouts_that_double() -> None:
    lockout = Lockout(LockoutPolicy(name_failures=3, caller_failures=5, lockout_s=10, max_lockout_s=25))
    assert [lockout.failed("a", "alice", now=0) for _ in range(2)] == [None, None]
    started = lockout.failed("a", "alice", now=1)
    assert started is not None and started.what == "name" and started.seconds == 10
    assert lockout.locked("b", "alice", now=5) is not None  # the name, from any caller
    assert lockout.locked("a", "bob", now=5) is None  # another name from the same caller: 3 of its 5
    assert lockout.locked("a", "alice", now=11.5) is None  # over
    relocked = lockout.failed("a", "alice", now=12)  # the next failure locks again at once, twice as long
    assert relocked is not None and relocked.seconds == 20
    assert lockout.failed("a", "carol", now=12.5) is not None  # the caller's fifth failure
    assert lockout.locked("a", "dave", now=13) is not None and lockout.locked("z", "dave", now=13) is None
    assert lockout.failed("c", "alice", now=40).seconds == 25  # type: ignore[union-attr]  # at most max_lockout_s
    lockout.succeeded("alice")
    assert lockout.locked("c", "alice", now=41) is None
    assert lockout.failed("c", "alice", now=41) is None  # counting starts again
    # Failures older than reset_s are forgotten.
    quiet = Lockout(LockoutPolicy(name_failures=2, caller_failures=100, lockout_s=10, reset_s=60))
    quiet.failed(None, "erin", now=0)
    assert quiet.failed(None, "erin", now=100) is None


def test_the_last_three_wrong_credentials_of_a_name_are_not_counted_again() -> None:
    """As Entra's smart lockout: a client retrying the same stale password does not lock its account; the caller's
    count still counts every failure."""
    lockout = Lockout(LockoutPolicy(name_failures=3, caller_failures=100, lockout_s=10))
    assert [lockout.failed("a", "alice", now=0, tried="stale") for _ in range(5)] == [None] * 5
    assert lockout.locked("b", "alice", now=1) is None  # one failure of alice's three
    assert lockout.failed("a", "alice", now=1, tried="guess1") is None
    assert lockout.failed("a", "alice", now=1, tried="stale") is None  # still among the last three
    started = lockout.failed("a", "alice", now=2, tried="guess2")
    assert started is not None and started.what == "name"
    caller = Lockout(LockoutPolicy(name_failures=100, caller_failures=3, lockout_s=10))
    assert caller.failed("a", "bob", now=0, tried="stale") is None
    assert caller.failed("a", "bob", now=0, tried="stale") is None
    started = caller.failed("a", "bob", now=0, tried="stale")
    assert started is not None and started.what == "caller"
    # Only the last three are remembered: a fourth older one counts again.
    four = Lockout(LockoutPolicy(name_failures=5, caller_failures=100, lockout_s=10))
    for tried in ("p1", "p2", "p3", "p4"):
        assert four.failed(None, "carol", now=0, tried=tried) is None
    assert four.failed(None, "carol", now=0, tried="p1") is not None  # p1 had left the last three: the fifth


def test_the_policy_is_parsed_or_refused() -> None:
    assert parse_lockout("10/100/60") == LockoutPolicy(10, 100, 60.0)
    assert not parse_lockout("off").enabled
    assert Lockout(parse_lockout("off")).failed("a", "x", now=0) is None
    for bad in ("10/100", "0/1/1", "ten/100/60", "-1/2/3"):
        with pytest.raises(ConfigError, match="NAME/CALLER/SECONDS"):
            parse_lockout(bad)


# -- on the wire ------------------------------------------------------------------------------------------------


@pytest.fixture
def strict(tmp_path: Path) -> Iterator[AcrLocal]:
    """A server that locks a name after 3 failures and a caller after 8, for LOCKOUT_S seconds."""
    with running(tmp_path / "data", "--login-lockout", f"3/8/{LOCKOUT_S}") as server:
        yield server


def admin(server: AcrLocal) -> dict[str, str]:
    return dict(json.loads((server.data_dir / "admin.json").read_text()))


def entra(server: AcrLocal, tenant: str, **form: str) -> requests.Response:
    return server.session().post(f"{server.shared}/{tenant}/oauth2/v2.0/token", data=form)


def password(server: AcrLocal, user: str, secret: str) -> requests.Response:
    return entra(server, "organizations", grant_type="password", client_id=AZ_CLI, username=user, password=secret,
                 scope=ARM_SCOPE)


def client_secret(server: AcrLocal, client_id: str, secret: str) -> requests.Response:
    return entra(server, admin(server)["tenantId"], grant_type="client_credentials", client_id=client_id,
                 client_secret=secret, scope=ARM_SCOPE)


def assert_aadsts(r: requests.Response, status: int, code: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body = dict(r.json())
    assert body["error_codes"] == [code] and body["error_description"].startswith(f"AADSTS{code}:"), body
    return body


def test_entra_locks_a_user_name_after_failed_passwords(strict: AcrLocal) -> None:
    a = admin(strict)
    user, good = a["userPrincipalName"], a["userPassword"]
    for _ in range(4):  # the same wrong password, again and again: counted once, as Entra's smart lockout does
        assert_aadsts(password(strict, user, "stale"), 400, 50126)
    assert password(strict, user, good).status_code == 200  # not locked; the success forgets the failure
    for n in range(3):
        assert_aadsts(password(strict, user, f"wrong{n}"), 400, 50126)
    # Locked: even the right password is refused, unchecked, with Entra's lockout error.
    body = assert_aadsts(password(strict, user, good), 400, 50053)
    assert body["error"] == "invalid_grant" and "locked" in body["error_description"]
    # Another user name is not locked (its failure is the caller's fourth, of 8).
    assert_aadsts(password(strict, f"nobody-{uuid.uuid4().hex[:6]}@example.com", "wrong"), 400, 50126)
    time.sleep(LOCKOUT_S + 0.5)
    assert password(strict, user, good).status_code == 200  # over, and the success forgets the failures
    assert_aadsts(password(strict, user, "wrong"), 400, 50126)
    assert "wrong" not in strict.log() and "stale" not in strict.log() and good not in strict.log()
    assert "sign-in failed" in strict.log()


def test_entra_locks_a_client_after_failed_secrets_and_a_caller_after_failures_across_names(
        strict: AcrLocal) -> None:
    a = admin(strict)
    for n in range(3):
        assert_aadsts(client_secret(strict, a["clientId"], f"not-the-secret-{n}"), 401, 7000215)
    assert_aadsts(client_secret(strict, a["clientId"], a["clientSecret"]), 400, 50053)
    # Five more failures under other names make this caller's eighth: the address is blocked, whatever the name.
    for n in range(4):
        assert_aadsts(password(strict, f"guess{n}@example.com", "wrong"), 400, 50126)
    assert_aadsts(password(strict, "guess4@example.com", "wrong"), 400, 50126)
    body = assert_aadsts(password(strict, a["userPrincipalName"], a["userPassword"]), 400, 50053)
    assert "address" in body["error_description"]
    time.sleep(LOCKOUT_S + 0.5)
    assert client_secret(strict, a["clientId"], a["clientSecret"]).status_code == 200


def test_registry_logins_lock_with_429_and_are_audited(strict: AcrLocal) -> None:
    a = admin(strict)
    http = strict.session()
    arm_token = entra(strict, a["tenantId"], grant_type="client_credentials", client_id=a["clientId"],
                      client_secret=a["clientSecret"], scope=ARM_SCOPE).json()["access_token"]
    registry = (f"{strict.shared}/subscriptions/{a['subscriptionId']}/resourceGroups/acrlocal/providers/"
                "Microsoft.ContainerRegistry/registries/acrlocal")
    headers = {"Authorization": f"Bearer {arm_token}"}
    r = http.patch(registry, params={"api-version": REGISTRY_API}, headers=headers,
                   json={"properties": {"adminUserEnabled": True}})
    assert r.status_code == 200, r.text
    admin_password = http.post(registry + "/listCredentials", params={"api-version": REGISTRY_API},
                               headers=headers).json()["passwords"][0]["value"]
    login_server = strict.login_server()

    def basic(user: str, secret: str) -> requests.Response:
        return http.get(f"https://{login_server}/oauth2/token", auth=(user, secret),
                        params={"service": login_server, "scope": "repository:app:pull"})

    for n in range(3):
        r = basic("acrlocal", f"wrong{n}")
        assert r.status_code == 401 and r.json()["errors"][0]["code"] == "UNAUTHORIZED", r.text
    r = basic("acrlocal", admin_password)
    assert r.status_code == 429, r.text
    assert r.json()["errors"][0]["code"] == "TOOMANYREQUESTS" and int(r.headers["Retry-After"]) >= 1
    # The client secret of a service principal at the registry shares its count with Entra's token endpoint.
    for n in range(3):
        assert basic(a["clientId"], f"wrong{n}").status_code == 401
    assert basic(a["clientId"], a["clientSecret"]).status_code == 429
    assert_aadsts(client_secret(strict, a["clientId"], a["clientSecret"]), 400, 50053)

    logins = http.post(registry + "/listAuditEvents", params={"api-version": REGISTRY_API}, headers=headers,
                       json={"table": "ContainerRegistryLoginEvents", "top": 100}).json()["value"]
    failures = [e for e in logins if e["ResultType"] == "Failure"]
    assert len(failures) >= 8
    assert any("locked for" in (e.get("ResultDescription") or "") for e in failures)
    assert any("refused unchecked" in (e.get("ResultDescription") or "") for e in failures)
    assert not any(admin_password in json.dumps(e) or a["clientSecret"] in json.dumps(e) for e in logins)
    time.sleep(LOCKOUT_S + 0.5)
    assert basic("acrlocal", admin_password).status_code == 200
