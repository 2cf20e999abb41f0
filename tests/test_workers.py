"""``acrlocal up --workers 2``: two processes on the same ports. Each test talks to both over connections whose
worker it knows (every response names it, ``X-Acrlocal-Worker``): what one does, the other sees at once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.arm import races
from tests.arm.conftest import Arm, admin_of, new_principal, subscription_of
from tests.first_keys import first_key_verifies_at_the_other
from tests.harness import AcrLocal, CASession, running
from tests.interop.tools import skopeo_round_trip
from tests.registry.conftest import (
    RegistryClient,
    move_tag_in_the_database,
    race_index_put_with_child_delete,
    registry_token,
    repository_writer,
    tag_moved_in_the_database,
)

WORKER = "X-Acrlocal-Worker"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM_SCOPE = "https://management.core.windows.net//.default"
PASSWORD = "Str0ng-Passw0rd!"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    with running(tmp_path_factory.mktemp("workers") / "data", "--workers", "2") as server:
        yield server


def one_connection(server: AcrLocal) -> CASession:
    session = CASession(server.ca)
    session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
    return session


def pinned(server: AcrLocal, base: str, probe: str = "/v2/", within: float = 30.0) -> dict[int, CASession]:
    """A session per worker, each on one kept-alive connection that worker accepted (``base`` + ``probe``)."""
    found: dict[int, CASession] = {}
    deadline = time.monotonic() + within
    while len(found) < 2 and time.monotonic() < deadline:
        session = one_connection(server)
        try:
            worker = int(session.get(base + probe, timeout=30).headers[WORKER])
        except requests.ConnectionError:
            time.sleep(0.1)  # (a port a worker has not opened yet)
            continue
        if worker in found:
            session.close()
        else:
            found[worker] = session
    assert sorted(found) == [0, 1], f"workers seen at {base}: {sorted(found)}"
    return found


def on(session: CASession, method: str, url: str, worker: int, **kw: Any) -> requests.Response:
    r = session.request(method, url, timeout=60, **kw)
    assert r.headers.get(WORKER) == str(worker), "the connection moved to another worker"
    return r


def test_both_workers_serve_and_a_tag_moved_by_one_is_read_moved_by_the_other(server: AcrLocal) -> None:
    base = f"https://{server.login_server()}"
    sessions = pinned(server, base)
    client = RegistryClient(server)
    first, second = client.push_image("workers/app", "v1"), client.push_image("workers/app", None)
    token = registry_token(server, base, "repository:workers/app:pull,push", server.registry_credentials())
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{base}/v2/workers/app/manifests/v1"
    for writer, reader in ((0, 1), (1, 0)):
        before, after = (first, second) if writer == 0 else (second, first)
        assert on(sessions[reader], "GET", url, reader, headers=auth).content == before.body  # cached by reader
        r = on(sessions[writer], "PUT", url, writer, data=after.body, headers={**auth, "Content-Type": MANIFEST})
        assert r.status_code == 201, r.text
        assert on(sessions[reader], "GET", url, reader, headers=auth).content == after.body


def test_an_index_put_racing_the_delete_of_its_child_in_the_other_worker_never_both_succeed(server: AcrLocal) -> None:
    """On SQLite both take the database's write lock at their start: one commits first, the other sees it."""
    repo = "workers/index-race"
    base, client, auth = repository_writer(server, repo)
    sessions = pinned(server, base)

    def through(i: int, method: str, url: str, **kw: Any) -> requests.Response:
        return on(sessions[i], method, url, i, **kw)

    for round_ in range(20):
        race_index_put_with_child_delete(client, base, repo, auth, through, round_)


def test_control_plane_writes_raced_through_both_workers_end_in_a_serial_order(server: AcrLocal) -> None:
    """The races of tests/replicas/test_arm_races.py through the two workers of one server (the secondary forwards
    ARM to the primary, whose write lock orders them)."""
    sessions = pinned(server, server.shared, "/healthz")
    auth = {"Authorization": f"Bearer {admin_of(server).token(server)}"}

    def arm(side: int, method: str, path: str, body: Any = None) -> requests.Response:
        return on(sessions[side], method, server.shared + path, side, params={"api-version": races.api_version(path)},
                  json=body, headers=auth)

    sub, engine = subscription_of(server), server.database()
    try:
        groups = []
        for name in ("race-names-a", "race-names-b"):
            assert arm(0, "PUT", f"/subscriptions/{sub}/resourceGroups/{name}", {"location": "westus"}).ok
            groups.append(name)
        principal = new_principal(server, "race-assignee").object_id
        for round_ in range(6):
            races.race_group_put(arm, engine, sub, round_)
            races.race_registry_name(arm, engine, sub, (groups[0], groups[1]), round_)
            races.race_identity_put(arm, engine, sub, groups[0], round_)
            races.race_role_assignment(arm, engine, sub, groups[1], principal, round_)
            races.race_group_delete_with_create_inside(arm, engine, sub, round_)
    finally:
        engine.dispose()


def test_a_lock_set_through_one_worker_holds_in_the_other(server: AcrLocal) -> None:
    base = f"https://{server.login_server()}"
    sessions = pinned(server, base)
    RegistryClient(server).push_image("workers/locked", "v1")
    token = registry_token(server, base, "repository:workers/locked:pull,metadata_read,metadata_write",
                           server.registry_credentials())
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{base}/v2/workers/locked/manifests/v1"
    assert on(sessions[1], "GET", url, 1, headers=auth).status_code == 200
    r = on(sessions[0], "PATCH", f"{base}/acr/v1/workers/locked/_tags/v1", 0, json={"readEnabled": False},
           headers=auth)
    assert r.status_code == 200, r.text
    assert on(sessions[1], "GET", url, 1, headers=auth).status_code == 405
    r = on(sessions[1], "PATCH", f"{base}/acr/v1/workers/locked/_tags/v1", 1, json={"readEnabled": True},
           headers=auth)
    assert r.status_code == 200, r.text
    assert on(sessions[0], "GET", url, 0, headers=auth).status_code == 200


def test_a_registry_made_through_either_worker_is_served_by_both_and_its_revocations_hold_in_both(
        server: AcrLocal) -> None:
    shared = pinned(server, server.shared, "/healthz")
    token = admin_of(server).token(server)
    sub = subscription_of(server)
    path = (f"/subscriptions/{sub}/resourceGroups/acrlocal/providers/Microsoft.ContainerRegistry/registries/"
            "workersreg")
    # made through the secondary: ARM's writes go to the first process, which owns them
    r = on(shared[1], "PUT", server.shared + path, 1, params={"api-version": "2023-07-01"},
           json={"location": "westus", "sku": {"name": "Standard"}, "properties": {"adminUserEnabled": True}},
           headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    base = f"https://{r.json()['properties']['loginServer']}"
    sessions = pinned(server, base)  # both workers serve its port
    arm = Arm(server, token)
    creds = arm.call("POST", f"{path}/listCredentials").json()
    access = registry_token(server, base, "repository:app/web:pull",
                            (creds["username"], creds["passwords"][0]["value"]))
    auth = {"Authorization": f"Bearer {access}"}
    for worker, session in sessions.items():
        assert on(session, "GET", f"{base}/v2/app/web/tags/list", worker, headers=auth).status_code == 404
    assert arm.call("PATCH", path, {"properties": {"adminUserEnabled": False}}).status_code == 200
    for worker, session in sessions.items():
        r = on(session, "GET", f"{base}/v2/app/web/tags/list", worker, headers=auth)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"], r.text
    assert arm.call("DELETE", path).status_code == 200


def test_entra_tokens_from_both_workers_and_forwarded_control_plane_calls(server: AcrLocal) -> None:
    shared = pinned(server, server.shared, "/healthz")
    admin = admin_of(server)
    tokens = {}
    for worker, session in shared.items():
        r = on(session, "POST", f"{server.shared}/{admin.tenant_id}/oauth2/v2.0/token", worker, data={
            "grant_type": "client_credentials", "client_id": admin.client_id, "client_secret": admin.secret,
            "scope": "https://management.azure.com/.default"})
        assert r.status_code == 200, r.text
        tokens[worker] = r.json()["access_token"]
    sub = subscription_of(server)
    group = f"{server.shared}/subscriptions/{sub}/resourceGroups/workersgroup"
    r = on(shared[1], "PUT", group, 1, params={"api-version": "2022-09-01"}, json={"location": "westus"},
           headers={"Authorization": f"Bearer {tokens[0]}"})  # a token one worker signed, used at the other
    assert r.status_code in (200, 201), r.text
    r = on(shared[0], "GET", group, 0, params={"api-version": "2022-09-01"},
           headers={"Authorization": f"Bearer {tokens[1]}"})
    assert r.status_code == 200 and r.json()["name"] == "workersgroup"
    r = on(shared[1], "GET", f"{server.shared}/nosuchtenant/oauth2/v2.0/authorize", 1)  # served there: Entra's error
    assert r.status_code == 400


def test_skopeo_pushes_and_pulls_with_two_workers(server: AcrLocal, tmp_path: Path) -> None:
    skopeo_round_trip(tmp_path, server, "workers/skopeo")
    status = json.loads((server.data_dir / "server.json").read_text())
    assert len(status["workers"]) == 2


def test_each_of_n_processes_enforces_its_share_of_the_limits() -> None:
    from acrlocal.lockout import Lockout, LockoutPolicy
    from acrlocal.registry.throttle import Throttle, parse_policy
    from acrlocal.storage.registries import RegistryRecord

    lockout = Lockout(LockoutPolicy(name_failures=10, caller_failures=100), share=3)
    assert (lockout.policy.name_failures, lockout.policy.caller_failures) == (4, 34)  # rounded up: 3 x 4 >= 10
    started = [lockout.failed("10.0.0.1", "user", now=1.0) for _ in range(4)]
    assert started[:3] == [None] * 3 and started[3] is not None
    throttle = Throttle(parse_policy("60/6"), share=2)
    registry = RegistryRecord(1, "reg", 1, 0.0, {})
    assert [throttle.wait_needed(registry, True, now=0.0) for _ in range(4)] == [0, 0, 0, 20]  # 3 a minute
    assert sum(throttle.wait_needed(registry, False, now=0.0) == 0 for _ in range(40)) == 30


def test_a_console_websocket_through_the_secondary_reaches_the_vm(server: AcrLocal) -> None:
    """VMs belong to the first process; a console's WebSocket that the kernel hands to the other is carried over."""
    import asyncio
    import os
    import ssl

    import aiohttp

    if os.geteuid() != 0:
        pytest.skip("VMs need root")
    arm = Arm(server, admin_of(server).token(server))
    group = f"/subscriptions/{subscription_of(server)}/resourceGroups/workersvm"
    assert arm.call("PUT", group, {"location": "westus"}, api_version="2022-09-01").status_code in (200, 201)
    vm = f"{group}/providers/Microsoft.Compute/virtualMachines/consolevm"
    r = arm.call("PUT", vm, {"location": "westus"}, api_version="2024-07-01")
    assert r.status_code in (200, 201), r.text

    async def attempt() -> tuple[int, bytes, int]:
        ticket = arm.call("POST", f"{vm}/console", {"command": "echo through-the-door"}, api_version="2024-07-01")
        assert ticket.status_code == 200, ticket.text
        url = "wss://" + server.shared.split("://", 1)[1] + ticket.json()["path"]
        out, code = b"", -1
        context = ssl.create_default_context(cafile=server.ca)
        async with aiohttp.ClientSession() as session, session.ws_connect(url, ssl=context) as ws:
            worker = int(ws._response.headers[WORKER])  # the handshake's answer
            await ws.send_bytes(b"\x00")  # end of standard input
            async for message in ws:
                if message.type == aiohttp.WSMsgType.BINARY:
                    if message.data[:1] == b"\x01":
                        out += message.data[1:]
                    elif message.data[:1] == b"\x03":
                        code = int(json.loads(message.data[1:])["exit"])
        return worker, out, code

    # A connection held on the primary: the secondary, holding fewer, takes the next ones first (a busy machine can
    # still leave one to the primary, hence the attempts).
    sessions = pinned(server, server.shared, "/healthz")
    sessions[1].close()
    try:
        for _ in range(40):
            worker, out, code = asyncio.run(attempt())
            if worker == 1:
                break
    finally:
        sessions[0].close()
    assert worker == 1, "the kernel never handed a console to the secondary"
    assert code == 0 and b"through-the-door" in out, (code, out)
    assert arm.call("DELETE", group, api_version="2022-09-01").status_code in (200, 202)


def test_a_client_secret_removed_or_a_principal_disabled_is_refused_at_once_by_both_workers(
        server: AcrLocal) -> None:
    """Each worker keeps what the Entra endpoint looked up while the database is unchanged: a secret removed and a
    service principal disabled through Graph (on the primary) are refused by both at their next request."""
    shared = pinned(server, server.shared, "/healthz")
    made = json.loads(server.cli("ad", "sp", "create-for-rbac", "--name", "workers-secrets", "--only-show-errors",
                                 "--output", "json").stdout)
    graph = Arm(server, admin_of(server).token(server, "https://graph.microsoft.com/.default"))
    r = graph.call("GET", f"/v1.0/applications?$filter=appId eq '{made['appId']}'", api_version=None)
    (app,) = r.json()["value"]
    second = graph.call("POST", f"/v1.0/applications/{app['id']}/addPassword",
                        {"passwordCredential": {"displayName": "second"}}, api_version=None).json()
    url = f"{server.shared}/{made['tenant']}/oauth2/v2.0/token"

    def token(worker: int, secret: str) -> requests.Response:
        return on(shared[worker], "POST", url, worker, data={
            "grant_type": "client_credentials", "client_id": made["appId"], "client_secret": secret,
            "scope": "https://management.azure.com/.default"})

    for worker in (0, 1):
        for _ in range(2):  # the second answer comes from what the worker kept
            assert token(worker, made["password"]).status_code == 200
            assert token(worker, second["secretText"]).status_code == 200
    (first_key,) = [c["keyId"] for c in app["passwordCredentials"]]
    removed = graph.call("POST", f"/v1.0/applications/{app['id']}/removePassword", {"keyId": first_key},
                         api_version=None)
    assert removed.status_code == 204, removed.text
    for worker in (1, 0):
        r = token(worker, made["password"])
        assert r.status_code == 401 and r.json()["error_codes"] == [7000215], r.text
        assert token(worker, second["secretText"]).status_code == 200
    sp = graph.call("GET", f"/v1.0/servicePrincipals?$filter=appId eq '{made['appId']}'", api_version=None)
    (principal,) = sp.json()["value"]
    disabled = graph.call("PATCH", f"/v1.0/servicePrincipals/{principal['id']}", {"accountEnabled": False},
                          api_version=None)
    assert disabled.status_code == 204, disabled.text
    for worker in (1, 0):
        r = token(worker, second["secretText"])
        assert r.status_code == 400 and r.json()["error_codes"] == [7000112], r.text
    assert graph.call("DELETE", f"/v1.0/applications/{app['id']}", api_version=None).status_code == 204
    for worker in (1, 0):
        r = token(worker, second["secretText"])
        assert r.status_code == 400 and r.json()["error_codes"] == [700016], r.text


def test_server_json_appears_once_every_worker_serves(tmp_path: Path) -> None:
    """``server.json`` says the server is up: from then on new connections reach every process (before, the
    default registry's creation wrote it while the second process was still starting, and for seconds every
    connection went to the first)."""
    with running(tmp_path / "data", "--workers", "2") as fresh:
        assert len(fresh.status["workers"]) == 2
        seen: dict[str, int] = {}
        for _ in range(40):  # each on a new connection, which the kernel hands to either process
            r = requests.get(fresh.shared + "/healthz", verify=fresh.ca, timeout=30,
                             headers={"Connection": "close"})
            seen[r.headers[WORKER]] = seen.get(r.headers[WORKER], 0) + 1
        assert sorted(seen) == ["0", "1"], seen


def test_a_new_connection_goes_to_the_process_that_holds_fewer(server: AcrLocal) -> None:
    """Connections opened one after another and kept open alternate between the processes (they share one
    listening socket, and the busier one lets the other accept first), where the kernel's choice by a hash of the
    addresses (SO_REUSEPORT) left 3 or 4 of 4 parallel downloads on one process in most rounds."""
    for _ in range(3):
        sessions = [one_connection(server) for _ in range(16)]
        try:
            held = [s.get(server.shared + "/healthz", timeout=30).headers[WORKER] for s in sessions]
        finally:
            for session in sessions:
                session.close()
        assert held.count("0") in (7, 8, 9), held
        time.sleep(0.3)  # the connections close and each process's figure drops


@contextlib.contextmanager
def primary_frozen(server: AcrLocal) -> Iterator[None]:
    """The primary stopped (SIGSTOP) for the block: what a secondary answers meanwhile, it answered on its own (a
    request forwarded to the primary would wait until the block ends)."""
    pid = int(server.status["workers"][0])
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@pytest.fixture(scope="module")
def person(server: AcrLocal) -> tuple[str, str]:
    graph = Arm(server, admin_of(server).token(server, "https://graph.microsoft.com/.default"))
    domain = json.loads((server.data_dir / "admin.json").read_text())["userPrincipalName"].split("@")[1]
    upn = f"dana-{uuid.uuid4().hex[:6]}@{domain}"
    r = graph.call("POST", "/v1.0/users", {"accountEnabled": True, "displayName": "Dana", "mailNickname": "dana",
                                          "userPrincipalName": upn, "passwordProfile": {"password": PASSWORD}},
                   api_version=None)
    assert r.status_code == 201, r.text
    return upn, PASSWORD


def signed_in_as(result: dict[str, Any], upn: str) -> None:
    assert "access_token" in result, result
    claims = jwt.decode(result["access_token"], options={"verify_signature": False})
    assert (claims["upn"], claims["idtyp"], claims["aud"]) == (upn, "user", "https://management.core.windows.net/")


def az_cli_app(authority: str, session: requests.Session) -> Any:
    """msal's public client as az is (its client id), at ``authority`` through ``session``."""
    import msal

    return msal.PublicClientApplication(AZ_CLI, authority=authority, http_client=session, timeout=20,
                                        instance_discovery=False)


def az_cli_apps(server: AcrLocal) -> tuple[dict[int, CASession], Any, Any]:
    """Sessions pinned to the primary and the secondary on the shared port, and an :func:`az_cli_app` on each; the
    secondary's made while the primary is frozen, so its discovery is served by the secondary alone."""
    shared = pinned(server, server.shared, "/healthz")
    authority = f"{server.shared}/organizations"
    at_primary = az_cli_app(authority, shared[0])
    with primary_frozen(server):
        at_secondary = az_cli_app(authority, shared[1])
    return shared, at_primary, at_secondary


def test_msal_device_code_sign_in_whose_steps_land_on_different_workers(server: AcrLocal,
                                                                         person: tuple[str, str]) -> None:
    """msal starts the device flow at the secondary (the primary frozen meanwhile), the person enters the code at
    the primary and signs in at the secondary, msal polls at the primary and then at the secondary, which answers
    the tokens: every step is served where it lands, from the flow in the database."""
    upn, password = person
    shared, at_primary, at_secondary = az_cli_apps(server)
    with primary_frozen(server):
        flow = at_secondary.initiate_device_flow(scopes=[ARM_SCOPE])
        assert "user_code" in flow, flow
    pending = at_primary.acquire_token_by_device_flow(dict(flow), exit_condition=lambda _: True)
    assert pending.get("error") == "authorization_pending", pending
    page = on(shared[0], "POST", f"{server.shared}/devicelogin", 0, data={"code": flow["user_code"]})
    assert page.status_code == 200 and "id=password" in page.text, page.text
    with primary_frozen(server):
        done = on(shared[1], "POST", f"{server.shared}/devicelogin", 1,
                  data={"code": flow["user_code"], "username": upn, "password": password})
        assert done.status_code == 200 and "id=done" in done.text, done.text
        signed_in_as(at_secondary.acquire_token_by_device_flow(dict(flow), exit_condition=lambda _: True), upn)
    again = at_primary.acquire_token_by_device_flow(dict(flow), exit_condition=lambda _: True)
    assert again.get("error") == "expired_token", again  # redeemed once, by whichever process


def test_msal_authorization_code_sign_in_whose_steps_land_on_different_workers(server: AcrLocal,
                                                                                person: tuple[str, str]) -> None:
    """msal's authorization code flow with PKCE: the page shown by the secondary (the primary frozen), the
    credentials posted to the primary, which redirects with the code, and the code redeemed by msal at the
    secondary (the primary frozen again); the same code at the primary is refused."""
    upn, password = person
    shared, at_primary, at_secondary = az_cli_apps(server)
    with primary_frozen(server):
        flow = at_secondary.initiate_auth_code_flow([ARM_SCOPE], redirect_uri="http://localhost:8400")
        page = on(shared[1], "GET", flow["auth_uri"], 1)
        assert page.status_code == 200 and "id=password" in page.text, page.text
    answer = on(shared[0], "POST", flow["auth_uri"], 0, data={"username": upn, "password": password},
                allow_redirects=False)
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["Location"])
    assert location.netloc == "localhost:8400"
    response = {k: v[0] for k, v in parse_qs(location.query).items()}
    with primary_frozen(server):
        signed_in_as(at_secondary.acquire_token_by_auth_code_flow(dict(flow), response), upn)
    refused = at_primary.acquire_token_by_auth_code_flow(dict(flow), response)
    assert refused.get("error") == "invalid_grant" and 70008 in refused.get("error_codes", []), refused


def test_a_tenants_first_key_made_by_one_worker_verifies_at_the_other(server: AcrLocal) -> None:
    """The other worker has read the published key ids before the key existed (tests/first_keys.py)."""
    registry = pinned(server, f"https://{server.login_server()}")
    shared = pinned(server, server.shared, "/healthz")
    for maker, verifier in ((0, 1), (1, 0)):
        first_key_verifies_at_the_other(
            server, lambda i, method, url, **kw: on(registry[i], method, url, i, **kw),
            lambda i, method, url, **kw: on(shared[i], method, url, i, **kw), maker, verifier, f"firstkey{maker}")


def test_what_a_worker_committed_and_died_before_announcing_is_read_again_everywhere(tmp_path: Path) -> None:
    """A process that dies between a commit and its announcement (``Generations.bump``) leaves the other processes'
    caches of what it changed stale. The write is done here straight in the database, as the dead worker's commit
    was; the secondary is then killed (SIGKILL) and started again by the primary: a process that starts drops every
    process's caches, so the primary reads the tag moved."""
    with running(tmp_path / "data", "--workers", "2") as fresh:
        first, second, auth, url = tag_moved_in_the_database(fresh, "workers/crash")
        primary = pinned(fresh, f"https://{fresh.login_server()}")[0]
        assert on(primary, "HEAD", url, 0, headers=auth).headers["Docker-Content-Digest"] == first.digest
        move_tag_in_the_database(fresh, "v1", second.digest)  # the dead worker's commit
        assert on(primary, "HEAD", url, 0, headers=auth).headers["Docker-Content-Digest"] == first.digest, \
            "the primary read the tag again on its own: this test shows nothing"
        secondary = int(fresh.status["workers"][1])
        os.kill(secondary, signal.SIGKILL)
        deadline = time.monotonic() + 60  # the primary notices within a second; the new secondary starts in a few
        digest = first.digest
        while time.monotonic() < deadline and digest == first.digest:
            time.sleep(0.2)
            digest = on(primary, "HEAD", url, 0, headers=auth).headers["Docker-Content-Digest"]
        assert digest == second.digest, "the primary still serves the tag as it was before the dead worker's commit"
