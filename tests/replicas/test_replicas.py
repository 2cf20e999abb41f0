"""Two replicas behind HAProxy over one PostgreSQL database: each test talks to both over connections whose
replica it knows (every response names it, ``X-Acrlocal-Replica``); what one does, the other sees at once."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.first_keys import first_key_verifies_at_the_other
from tests.haproxy import HAProxy
from tests.interop.tools import skopeo_round_trip
from tests.registry.conftest import RegistryClient, registry_token
from tests.replicas.conftest import Replicas, on, pinned

VMS_NEED_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="VMs need root")

MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def test_a_tag_moved_through_one_replica_is_read_moved_through_the_other(replicas: Replicas) -> None:
    server = replicas.front
    base = f"https://{server.login_server()}"
    sessions = pinned(replicas, base)
    client = RegistryClient(server)
    first, second = client.push_image("replicas/app", "v1"), client.push_image("replicas/app", None)
    token = registry_token(server, base, "repository:replicas/app:pull,push", server.registry_credentials())
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{base}/v2/replicas/app/manifests/v1"
    for writer, reader in ((0, 1), (1, 0)):
        before, after = (first, second) if writer == 0 else (second, first)
        assert on(sessions[reader], replicas, reader, "GET", url, headers=auth).content == before.body  # cached
        r = on(sessions[writer], replicas, writer, "PUT", url, data=after.body,
               headers={**auth, "Content-Type": MANIFEST})
        assert r.status_code == 201, r.text
        assert on(sessions[reader], replicas, reader, "GET", url, headers=auth).content == after.body


def test_a_lock_set_through_one_replica_holds_in_the_other(replicas: Replicas) -> None:
    server = replicas.front
    base = f"https://{server.login_server()}"
    sessions = pinned(replicas, base)
    RegistryClient(server).push_image("replicas/locked", "v1")
    token = registry_token(server, base, "repository:replicas/locked:pull,metadata_read,metadata_write",
                           server.registry_credentials())
    auth = {"Authorization": f"Bearer {token}"}
    url = f"{base}/v2/replicas/locked/manifests/v1"
    tag = f"{base}/acr/v1/replicas/locked/_tags/v1"
    assert on(sessions[1], replicas, 1, "GET", url, headers=auth).status_code == 200
    r = on(sessions[0], replicas, 0, "PATCH", tag, json={"readEnabled": False}, headers=auth)
    assert r.status_code == 200, r.text
    assert on(sessions[1], replicas, 1, "GET", url, headers=auth).status_code == 405
    r = on(sessions[1], replicas, 1, "PATCH", tag, json={"readEnabled": True}, headers=auth)
    assert r.status_code == 200, r.text
    assert on(sessions[0], replicas, 0, "GET", url, headers=auth).status_code == 200


def test_a_registry_made_through_one_replica_is_served_by_both_and_its_revocations_hold_in_both(
        replicas: Replicas) -> None:
    server = replicas.front
    shared = pinned(replicas, server.shared, "/healthz")
    token = admin_of(server).token(server)
    path = (f"/subscriptions/{subscription_of(server)}/resourceGroups/acrlocal/providers/"
            "Microsoft.ContainerRegistry/registries/replicasreg")
    r = on(shared[1], replicas, 1, "PUT", server.shared + path, params={"api-version": "2023-07-01"},
           json={"location": "westus", "sku": {"name": "Standard"}, "properties": {"adminUserEnabled": True}},
           headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    replicas.restart_lb()  # HAProxy listens on the new registry's port too
    base = f"https://{r.json()['properties']['loginServer']}"
    sessions = pinned(replicas, base)  # both replicas serve its port
    arm = Arm(server, token)
    creds = arm.call("POST", f"{path}/listCredentials").json()
    access = registry_token(server, base, "repository:app/web:pull",
                            (creds["username"], creds["passwords"][0]["value"]))
    auth = {"Authorization": f"Bearer {access}"}
    for i, session in enumerate(sessions):
        assert on(session, replicas, i, "GET", f"{base}/v2/app/web/tags/list", headers=auth).status_code == 404
    assert arm.call("PATCH", path, {"properties": {"adminUserEnabled": False}}).status_code == 200
    for i, session in enumerate(sessions):
        r = on(session, replicas, i, "GET", f"{base}/v2/app/web/tags/list", headers=auth)
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["WWW-Authenticate"], r.text
    assert arm.call("DELETE", path).status_code == 200


def test_skopeo_pushes_through_the_load_balancer_and_pulls_through_it(replicas: Replicas, tmp_path: Path) -> None:
    skopeo_round_trip(tmp_path, replicas.front, "replicas/skopeo")


AZ_CLI = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
ARM_SCOPE = "https://management.core.windows.net//.default offline_access openid profile"


def test_a_device_code_sign_in_started_on_one_replica_completes_on_the_other(replicas: Replicas) -> None:
    server = replicas.front
    shared = pinned(replicas, server.shared, "/healthz")
    cred = server.admin_credential()
    token_url = f"{server.shared}/organizations/oauth2/v2.0/token"
    start = on(shared[0], replicas, 0, "POST", f"{server.shared}/organizations/oauth2/v2.0/devicecode",
               data={"client_id": AZ_CLI, "scope": ARM_SCOPE}).json()
    poll = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "client_id": AZ_CLI,
            "device_code": start["device_code"]}
    assert on(shared[1], replicas, 1, "POST", token_url, data=poll).json()["error"] == "authorization_pending"
    page = on(shared[1], replicas, 1, "POST", f"{server.shared}/devicelogin", data={"code": start["user_code"]})
    assert "Are you trying to sign in to Microsoft Azure CLI?" in page.text
    done = on(shared[0], replicas, 0, "POST", f"{server.shared}/devicelogin", data={
        "code": start["user_code"], "username": cred["userPrincipalName"], "password": cred["userPassword"]})
    assert "You have signed in" in done.text
    granted = on(shared[1], replicas, 1, "POST", token_url, data=poll)
    assert granted.status_code == 200, granted.text
    assert on(shared[0], replicas, 0, "POST", token_url, data=poll).json()["error"] == "expired_token"  # used once


@VMS_NEED_ROOT
def test_a_vm_runs_on_the_replica_that_made_it_and_the_other_refuses_its_calls_naming_that_replica(
        replicas: Replicas) -> None:
    server = replicas.front
    shared = pinned(replicas, server.shared, "/healthz")
    auth = {"Authorization": f"Bearer {admin_of(server).token(server)}"}
    group = f"{server.shared}/subscriptions/{subscription_of(server)}/resourceGroups/replicasvm"
    r = on(shared[1], replicas, 1, "PUT", group, params={"api-version": "2022-09-01"}, json={"location": "westus"},
           headers=auth)
    assert r.status_code in (200, 201), r.text
    vm = f"{group}/providers/Microsoft.Compute/virtualMachines/hostedvm"
    version = {"api-version": "2024-07-01"}
    r = on(shared[0], replicas, 0, "PUT", vm, params=version, json={"location": "westus"}, headers=auth)
    assert r.status_code in (200, 201), r.text
    host = (replicas.servers[0].data_dir / "replica-id").read_text().strip()
    shown = on(shared[1], replicas, 1, "GET", vm, params=version, headers=auth)
    assert shown.status_code == 200 and shown.json()["name"] == "hostedvm", shown.text  # the resource, from ARM
    for method, url, body in (("GET", vm, None), ("POST", f"{vm}/runCommand", {"commandId": "RunShellScript",
                                                                             "script": ["true"]}),
                              ("POST", f"{vm}/powerOff", None), ("DELETE", vm, None)):
        params = {**version, "$expand": "instanceView"} if method == "GET" else version
        r = on(shared[1], replicas, 1, method, url, params=params, json=body, headers=auth)
        assert r.status_code == 409, (method, url, r.status_code, r.text)
        assert r.json()["error"]["code"] == "OperationNotAllowed" and host in r.json()["error"]["message"]
    r = on(shared[0], replicas, 0, "GET", vm, params={**version, "$expand": "instanceView"}, headers=auth)
    assert r.status_code == 200, r.text
    r = on(shared[0], replicas, 0, "DELETE", group, params={"api-version": "2022-09-01"}, headers=auth)
    assert r.status_code in (200, 202), r.text


@VMS_NEED_ROOT
def test_a_group_delete_refused_for_another_replicas_vm_deletes_nothing(replicas: Replicas) -> None:
    """A resource group holding a VM that the other replica runs is not deleted through this one (409
    ``OperationNotAllowed``), and nothing in it goes: not the resources listed before the VM either."""
    server = replicas.front
    shared = pinned(replicas, server.shared, "/healthz")
    auth = {"Authorization": f"Bearer {admin_of(server).token(server)}"}
    group = f"{server.shared}/subscriptions/{subscription_of(server)}/resourceGroups/replicasvmgroup"
    groups, network, compute = ({"api-version": v} for v in ("2022-09-01", "2024-05-01", "2024-07-01"))
    r = on(shared[1], replicas, 1, "PUT", group, params=groups, json={"location": "westus"}, headers=auth)
    assert r.status_code in (200, 201), r.text
    nsg = f"{group}/providers/Microsoft.Network/networkSecurityGroups/firstnsg"
    r = on(shared[1], replicas, 1, "PUT", nsg, params=network, json={"location": "westus"}, headers=auth)
    assert r.status_code in (200, 201), r.text
    vm = f"{group}/providers/Microsoft.Compute/virtualMachines/groupvm"
    r = on(shared[0], replicas, 0, "PUT", vm, params=compute, json={"location": "westus"}, headers=auth)
    assert r.status_code in (200, 201), r.text

    r = on(shared[1], replicas, 1, "DELETE", group, params=groups, headers=auth)
    assert r.status_code == 409 and r.json()["error"]["code"] == "OperationNotAllowed", r.text
    for url, params in ((group, groups), (nsg, network), (vm, compute)):
        r = on(shared[0], replicas, 0, "GET", url, params=params, headers=auth)
        assert r.status_code == 200, (url, r.text)
    r = on(shared[0], replicas, 0, "DELETE", group, params=groups, headers=auth)
    assert r.status_code in (200, 202), r.text


def test_one_balancer_block_on_the_shared_port_serves_every_registry_by_host_name(replicas: Replicas) -> None:
    """What the README gives users who name registries ``<name>.localhost:<shared port>``: a balancer with only
    the shared port's block reaches every registry on every replica (TLS passes through; the replica picks the
    registry by the host name), with no block per registry port."""
    server = replicas.front
    RegistryClient(server).push_image("replicas/byname", "v1")
    user, password = server.registry_credentials()
    port = replicas.lb_port  # the port the replicas advertise, now with no block for any registry's own port
    replicas.lb.stop()
    replicas.lb = HAProxy({port: [s.status["listeningPort"] for s in replicas.servers]})
    try:
        replicas.lb.start()
        base = f"https://acrlocal.localhost:{port}"
        curl = ["curl", "-sS", "--cacert", str(server.ca), "--max-time", "60"]
        token = subprocess.run(
            [*curl, "-u", f"{user}:{password}", "--get", f"{base}/oauth2/token", "--data-urlencode",
             f"service=acrlocal.localhost:{port}", "--data-urlencode", "scope=repository:replicas/byname:pull"],
            capture_output=True, text=True, check=True).stdout
        auth = f"Authorization: Bearer {json.loads(token)['access_token']}"
        seen = set()
        for _ in range(4):  # round robin: both replicas answer
            head = subprocess.run([*curl, "-I", "-H", auth, f"{base}/v2/replicas/byname/manifests/v1"],
                                  capture_output=True, text=True, check=True).stdout
            assert head.startswith("HTTP/1.1 200"), head
            seen.add(head.lower().split("x-acrlocal-replica:", 1)[1].split()[0])
        assert sorted(seen) == sorted(replicas.names())
    finally:
        replicas.restart_lb()  # the fixture's blocks, for the module's other tests


def test_a_tenants_first_key_made_by_one_replica_verifies_at_the_other(replicas: Replicas) -> None:
    """The other replica has read the published key ids before the key existed; it learns of the key through
    PostgreSQL's notification, applied at the start of its next request (tests/first_keys.py)."""
    server = replicas.front
    registry = pinned(replicas, f"https://{server.login_server()}")
    shared = pinned(replicas, server.shared, "/healthz")
    for maker, verifier in ((0, 1), (1, 0)):
        first_key_verifies_at_the_other(
            server, lambda i, method, url, **kw: on(registry[i], replicas, i, method, url, **kw),
            lambda i, method, url, **kw: on(shared[i], replicas, i, method, url, **kw), maker, verifier,
            f"firstkey{maker}")
