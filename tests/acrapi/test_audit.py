"""The audit log: repository events (push, pull, delete, untag, refused by a lock) recorded with operation,
repository, tag, digest, caller address and result, read back over ARM (``listAuditEvents``), and never a secret."""

from __future__ import annotations

import json
from typing import Any

from tests.acrapi.conftest import registry_path
from tests.arm.conftest import Arm, admin_of
from tests.harness import AcrLocal
from tests.registry.conftest import RegistryClient


def events(arm: Arm, server: AcrLocal, **body: Any) -> list[dict[str, Any]]:
    r = arm.call("POST", registry_path(server) + "/listAuditEvents", body)
    assert r.status_code == 200, r.text
    return list(r.json()["value"])


def test_repository_events_are_recorded(arm: Arm, acrlocal: AcrLocal, registry: RegistryClient, repo: str) -> None:
    image = registry.push_image(repo, "v1")
    assert registry.get(f"/v2/{repo}/manifests/v1", headers={"User-Agent": "audit-test/1.0"}).status_code == 200
    registry.head(f"/v2/{repo}/manifests/v1")  # a HEAD is not a pull
    registry.put(f"/v2/{repo}/manifests/v2", data=image.body, headers={"Content-Type": image.media_type})
    assert registry.delete(f"/acr/v1/{repo}/_tags/v2").status_code == 202
    assert registry.patch(f"/acr/v1/{repo}/_tags/v1", json={"deleteEnabled": False}).status_code == 200
    assert registry.delete(f"/v2/{repo}/manifests/v1").status_code == 405
    assert registry.patch(f"/acr/v1/{repo}/_tags/v1", json={"deleteEnabled": True}).status_code == 200
    assert registry.delete(f"/acr/v1/{repo}").status_code == 202

    found = list(reversed(events(arm, acrlocal, repository=repo)))
    summary = [(e["OperationName"], e["Tag"], e["ResultType"]) for e in found]
    assert summary == [("Push", "v1", "Success"), ("Pull", "v1", "Success"), ("Push", "v2", "Success"),
                       ("Untag", "v2", "Success"), ("Delete", None, "Denied"), ("Delete", None, "Success")]
    push, pull = found[0], found[1]
    assert push["Digest"] == image.digest and push["MediaType"] == image.media_type and push["Size"] == len(image.body)
    assert pull["UserAgent"] == "audit-test/1.0" and pull["CallerIpAddress"] == "127.0.0.1"
    assert all(e["Repository"] == repo and e["Registry"] == "acrlocal" for e in found)
    assert all(e["LoginServer"] == acrlocal.login_server() for e in found)
    assert "deleteEnabled" in found[4]["ResultDescription"]
    assert found[0]["TimeGenerated"] <= found[-1]["TimeGenerated"]

    only_pulls = events(arm, acrlocal, repository=repo, operation="Pull")
    assert [e["OperationName"] for e in only_pulls] == ["Pull"]
    assert len(events(arm, acrlocal, repository=repo, top=2)) == 2


def test_audit_api_validates_and_never_holds_secrets(arm: Arm, acrlocal: AcrLocal, registry: RegistryClient,
                                                    repo: str) -> None:
    registry.push_image(repo, "v1")
    for body in ({"table": "Nope"}, {"top": 0}, {"top": "ten"}, {"since": "yesterday"}):
        r = arm.call("POST", registry_path(acrlocal) + "/listAuditEvents", body)
        assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidRequestContent", r.text
    assert isinstance(events(arm, acrlocal, table="ContainerRegistryLoginEvents"), list)
    secret = admin_of(acrlocal).secret
    text = json.dumps(events(arm, acrlocal, top=10_000)) + json.dumps(
        events(arm, acrlocal, table="ContainerRegistryLoginEvents", top=10_000))
    assert secret not in text and (arm.token or "") not in text
    unauthenticated = Arm(acrlocal, None).call("POST", registry_path(acrlocal) + "/listAuditEvents", {})
    assert unauthenticated.status_code == 401


def test_buffer_is_bounded_and_token_service_events_are_mapped(tmp_path: Any, database_url: str) -> None:
    import asyncio

    from acrlocal.registry.audit import LOGIN_TABLE, REPOSITORY_TABLE, AuditLog, RepositoryEvent, query
    from acrlocal.registry.auth_events import AuthEvent
    from acrlocal.storage.sql import open_engine

    engine = open_engine(database_url)
    log = AuditLog(engine, buffer=3)
    for i in range(5):
        log.add(RepositoryEvent(time=float(i), registry="reg", identity=None, identity_kind=None, operation="Pull",
                                repository=f"r{i}", result="Success"))
    assert log.dropped == 2
    asyncio.run(log.flush())
    odd = "refresh token issued\tto \\N\n'x' \u00e9"  # what PostgreSQL's COPY must escape, or reads as NULL
    log.record(AuthEvent("login", "reg", "principal", "oid-1", "granted", detail=odd,
                         address="127.0.0.1", time=10.0))
    log.record(AuthEvent("login", "reg", "token", "tok", "failed", detail="wrong password", address="127.0.0.1",
                         time=11.0))
    log.record(AuthEvent("authorization", "reg", "token", "tok", "denied", "other", ("pull", "push"),
                         detail="no scope", address="127.0.0.1", time=12.0))
    log.record(AuthEvent("authorization", "reg", "token", "tok", "granted", "mine", ("pull",), time=13.0))
    log.record(object())  # type: ignore[arg-type]  # never raises, whatever it is given
    asyncio.run(log.flush())
    repos = query(engine, "reg", REPOSITORY_TABLE, top=100)
    assert [e["Repository"] for e in repos] == ["other", "r4", "r3", "r2"]  # the two oldest dropped; newest first
    assert repos[0]["OperationName"] == "Push" and repos[0]["ResultType"] == "Denied"
    assert repos[0]["Identity"] == "tok" and repos[0]["IdentityType"] == "token"
    logins = query(engine, "reg", LOGIN_TABLE)
    assert [(e["Identity"], e["ResultType"]) for e in logins] == [("tok", "Failure"), ("oid-1", "Success")]
    assert logins[1]["ResultDescription"] == odd and logins[1]["CallerIpAddress"] == "127.0.0.1"
    engine.dispose()
