"""A service principal logs in to the registry with its app id and a client secret, as ACR allows
(``docker login myregistry.azurecr.io -u <appId> -p <secret>``), and is held to its role assignments exactly as
behind a refresh token:

- made as ``az ad sp create-for-rbac --role acrpush|acrpull --scopes <registry id>`` does (acrlocal's CLI, through
  the Graph surface), then ``podman login -u <appId> -p <secret>`` and skopeo push and pull with that auth file;
- the docker CLI's ``docker login`` (client only) into a temp ``DOCKER_CONFIG``, then oras-py push (AcrPush) and
  pull (AcrPull), and the AcrPull principal's push refused;
- refused as ACR refuses (401, OCI error body, ACR's message): a wrong secret (podman, docker, GET and POST), a
  secret that expired or was removed through Graph's ``removePassword``, a deleted application, a managed
  identity's client id, an unknown GUID, a principal of another tenant; a principal with no role logs in but gets
  nothing; every refusal is in the audit log with the app id and without the secret.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.client
import pytest
import requests

from acrlocal.identity.directory import Directory
from tests.arm.conftest import Arm, admin_of, subscription_of
from tests.dockerd import require
from tests.harness import REFRESH_TOKEN_USER, AcrLocal
from tests.interop.tools import Containers, ToolError
from tests.ocitools import config_blob, image, tar_layer, write_layout
from tests.registry.conftest import RegistryClient
from tests.tokens.conftest import TokenClient, claims, other_tenant_principal, registry_id

APP_NOT_REGISTERED = "Application not registered with AAD."
INVALID_SECRET = "Invalid clientid or client secret."
GRAPH = "https://graph.microsoft.com"


@dataclass
class ServicePrincipal:
    app_id: str
    password: str
    tenant: str


def create_for_rbac(server: AcrLocal, role: str | None) -> ServicePrincipal:
    """``ad sp create-for-rbac [--role ROLE --scopes <the registry's id>]`` with acrlocal's CLI."""
    args = ["ad", "sp", "create-for-rbac", "--name", f"sp-login-{uuid.uuid4().hex[:8]}", "--only-show-errors"]
    if role:
        args += ["--role", role, "--scopes", registry_id(server)]
    made = json.loads(server.cli(*args, "--output", "json").stdout)
    return ServicePrincipal(made["appId"], made["password"], made["tenant"])


def graph(server: AcrLocal) -> Arm:
    """Microsoft Graph as the local administrator."""
    return Arm(server, admin_of(server).token(server, GRAPH + "/.default"))


def application(server: AcrLocal, app_id: str) -> dict[str, Any]:
    r = graph(server).call("GET", f"/v1.0/applications?$filter=appId eq '{app_id}'", api_version=None)
    assert r.status_code == 200, r.text
    (app,) = r.json()["value"]
    return dict(app)


def login_events(server: AcrLocal) -> list[dict[str, Any]]:
    path = (f"/subscriptions/{subscription_of(server)}/resourceGroups/acrlocal/providers/"
            "Microsoft.ContainerRegistry/registries/acrlocal/listAuditEvents")
    arm = Arm(server, admin_of(server).token(server))
    r = arm.call("POST", path, {"table": "ContainerRegistryLoginEvents", "top": 10_000})
    assert r.status_code == 200, r.text
    return list(r.json()["value"])


def refused(response: requests.Response, message: str) -> None:
    """ACR's refusal: 401 with an OCI error body whose message starts with ACR's text."""
    assert response.status_code == 401, response.text
    (error,) = response.json()["errors"]
    assert error["code"] == "UNAUTHORIZED" and error["message"].startswith(message), error


@pytest.fixture(scope="module")
def pusher(server: AcrLocal) -> ServicePrincipal:
    return create_for_rbac(server, "acrpush")


@pytest.fixture(scope="module")
def puller(server: AcrLocal) -> ServicePrincipal:
    return create_for_rbac(server, "acrpull")


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "layout"
    layer = tar_layer({"hello": f"pushed with a client secret {uuid.uuid4()}\n".encode()})
    config = config_blob(diff_ids=[layer.digest])
    manifest = image(config, [layer])
    write_layout(root, {"v1": manifest}, [config, layer])
    yield root, manifest.digest


def podman_login(tools: Containers, user: str, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["podman", "login", "--cert-dir", str(tools.cert_dir), "-u", user, "-p", password,
                           tools.login_server], capture_output=True, text=True, env=tools.env(), timeout=120,
                          stdin=subprocess.DEVNULL)


def test_podman_login_with_app_id_and_secret_then_skopeo_push_and_pull(
        server: AcrLocal, pusher: ServicePrincipal, layout: tuple[Path, str], tmp_path: Path) -> None:
    root, digest = layout
    with Containers(tmp_path / "tools", server, anonymous=True) as tools:
        ref = tools.ref("splogin/podman")
        login = podman_login(tools, pusher.app_id, pusher.password)
        assert login.returncode == 0, login.stderr
        assert "Login Succeeded" in login.stdout
        auth = json.loads((tools.home / "auth.json").read_text())["auths"][server.login_server()]["auth"]
        assert base64.b64decode(auth).decode() == f"{pusher.app_id}:{pusher.password}"

        tools.skopeo("copy", "--preserve-digests", "--dest-cert-dir", str(tools.cert_dir), f"oci:{root}:v1",
                     f"docker://{ref}:v1")
        pulled = tmp_path / "pulled"
        tools.skopeo("copy", "--src-cert-dir", str(tools.cert_dir), "--dest-oci-accept-uncompressed-layers",
                     f"docker://{ref}:v1", f"oci:{pulled}:v1")
        assert json.loads((pulled / "index.json").read_text())["manifests"][0]["digest"] == digest
        # AcrPush does not delete.
        with pytest.raises(ToolError, match=r"(?i)unauthorized|denied"):
            tools.skopeo("delete", "--cert-dir", str(tools.cert_dir), f"docker://{ref}:v1")
    assert RegistryClient(server).get("/v2/splogin/podman/manifests/v1").headers["Docker-Content-Digest"] == digest


def docker_login(tmp_path: Path, server: AcrLocal, user: str, password: str) -> tuple[Path, str]:
    """``docker login -u USER --password-stdin`` without an engine; returns (its HOME, its stderr)."""
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    config = home / ".docker"
    config.mkdir(parents=True)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home), "DOCKER_CONFIG": str(config),
           "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}"}
    out = subprocess.run(["docker", "login", "--username", user, "--password-stdin", server.login_server()],
                         input=password, capture_output=True, text=True, env=env, timeout=120)
    if out.returncode == 0:
        assert "Login Succeeded" in out.stdout
    return home, out.stderr if out.returncode else ""


def test_docker_login_with_app_id_and_secret_then_oras_push_and_pull(
        server: AcrLocal, pusher: ServicePrincipal, puller: ServicePrincipal, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    require("docker")
    target = f"{server.login_server()}/splogin/oras:v1"
    artifact = tmp_path / "artifact.txt"
    artifact.write_text(f"pushed by oras-py after docker login as a service principal {uuid.uuid4()}\n")

    push_home, err = docker_login(tmp_path, server, pusher.app_id, pusher.password)
    assert not err
    written = json.loads((push_home / ".docker" / "config.json").read_text())["auths"][server.login_server()]
    assert base64.b64decode(written["auth"]).decode() == f"{pusher.app_id}:{pusher.password}"
    assert "identitytoken" not in written
    monkeypatch.setenv("HOME", str(push_home))  # oras-py reads only ~/.docker/config.json
    monkeypatch.setenv("DOCKER_CONFIG", str(push_home / ".docker"))
    client = oras.client.OrasClient(hostname=server.login_server(), tls_verify=server.ca)
    assert client.push(target=target, files=[str(artifact)], disable_path_validation=True,
                       quiet=True).status_code == 201

    pull_home, err = docker_login(tmp_path, server, puller.app_id, puller.password)
    assert not err
    monkeypatch.setenv("HOME", str(pull_home))
    monkeypatch.setenv("DOCKER_CONFIG", str(pull_home / ".docker"))
    client = oras.client.OrasClient(hostname=server.login_server(), tls_verify=server.ca)
    files = client.pull(target=target, outdir=str(tmp_path / "out"))
    assert Path(files[0]).read_text() == artifact.read_text()
    # AcrPull may not push: the push is refused and nothing is tagged.
    other = tmp_path / "other.txt"
    other.write_text("not to be pushed\n")
    with pytest.raises(Exception):  # noqa: B017 - oras-py raises its own errors or ValueError
        client.push(target=f"{server.login_server()}/splogin/oras:by-puller", files=[str(other)],
                    disable_path_validation=True, quiet=True)
    assert RegistryClient(server).get("/v2/splogin/oras/manifests/by-puller").status_code == 404

    # A wrong secret: docker login fails with ACR's message and writes nothing.
    bad_home, err = docker_login(tmp_path, server, puller.app_id, "not-the-secret")
    assert INVALID_SECRET in err, err
    assert not (bad_home / ".docker" / "config.json").exists() or server.login_server() not in (
        bad_home / ".docker" / "config.json").read_text()


def test_the_token_grants_what_the_role_assignments_allow(
        server: AcrLocal, tokens: TokenClient, pusher: ServicePrincipal, puller: ServicePrincipal) -> None:
    scope = "repository:splogin/grants:pull,push,delete"
    for sp, actions in ((pusher, ["pull", "push"]), (puller, ["pull"])):
        # The same subject as behind a refresh token: the service principal's object id.
        object_id = graph(server).call("GET", f"/v1.0/servicePrincipals?$filter=appId eq '{sp.app_id}'",
                                       api_version=None).json()["value"][0]["id"]
        for r in (tokens.basic_token(sp.app_id, sp.password, scope),
                  tokens.basic_token(sp.app_id.upper(), sp.password, scope),
                  tokens.http().post(tokens.base + "/oauth2/token", data={
                      "grant_type": "password", "username": sp.app_id, "password": sp.password,
                      "service": tokens.login_server, "scope": scope})):
            assert r.status_code == 200, r.text
            granted = claims(r.json()["access_token"])
            assert sorted(granted["access"][0]["actions"]) == actions
            assert granted["kind"] == "principal" and granted["tenant"] == sp.tenant
            assert granted["sub"] == object_id

    # The local administrator is a service principal too (Owner of the subscription): its credential logs in.
    admin = admin_of(server)
    r = tokens.basic_token(admin.client_id, admin.secret, scope)
    assert r.status_code == 200 and sorted(claims(r.json()["access_token"])["access"][0]["actions"]) == [
        "delete", "pull", "push"]

    # No role: the login succeeds (as in ACR), and the token grants nothing.
    idle = create_for_rbac(server, None)
    r = tokens.basic_token(idle.app_id, idle.password, scope)
    assert r.status_code == 200 and claims(r.json()["access_token"])["access"] == []
    # The all-zero user is still the refresh-token path, and a refresh token is no client secret.
    refused(tokens.basic_token(REFRESH_TOKEN_USER, pusher.password), "the refresh token was not accepted")


def test_a_principal_with_no_role_logs_in_and_pulls_nothing(server: AcrLocal, tmp_path: Path) -> None:
    RegistryClient(server).push_image("splogin/norole", "v1")
    idle = create_for_rbac(server, None)
    with Containers(tmp_path, server, anonymous=True) as tools:
        login = podman_login(tools, idle.app_id, idle.password)
        assert login.returncode == 0, login.stderr
        with pytest.raises(ToolError, match=r"(?i)unauthorized|denied|authentication required"):
            tools.skopeo("inspect", "--cert-dir", str(tools.cert_dir), f"docker://{tools.ref('splogin/norole')}:v1")


def test_refusals_are_acr_s_and_audited_without_the_secret(
        server: AcrLocal, tokens: TokenClient, puller: ServicePrincipal, tmp_path: Path) -> None:
    scope = "repository:splogin/refused:pull"
    secrets = [puller.password]

    # A wrong secret, by podman, GET and POST.
    with Containers(tmp_path, server, anonymous=True) as tools:
        login = podman_login(tools, puller.app_id, "wrong-secret")
        # podman words a 401 at login itself
        assert login.returncode != 0 and "invalid username/password" in login.stderr, login.stderr
        assert not json.loads((tools.home / "auth.json").read_text())["auths"]
    refused(tokens.basic_token(puller.app_id, "wrong-secret", scope), INVALID_SECRET)
    refused(tokens.basic_token(puller.app_id, "", scope), INVALID_SECRET)
    refused(tokens.http().post(tokens.base + "/oauth2/token", data={
        "grant_type": "password", "username": puller.app_id, "password": "wrong-secret",
        "service": tokens.login_server, "scope": scope}), INVALID_SECRET)

    # Unknown GUIDs, a managed identity's client id, a principal of another tenant (with its own good secret).
    refused(tokens.basic_token(str(uuid.uuid4()), puller.password, scope), APP_NOT_REGISTERED)
    identity = json.loads(server.cli("identity", "create", "-g", "acrlocal", "-n", f"splogin-{uuid.uuid4().hex[:6]}",
                                     "--output", "json").stdout)
    refused(tokens.basic_token(identity["clientId"], "any-secret", scope), APP_NOT_REGISTERED)
    stranger = other_tenant_principal(server, "stranger")
    secrets.append(stranger.secret)
    refused(tokens.basic_token(stranger.client_id, stranger.secret, scope), APP_NOT_REGISTERED)

    # An expired secret (made in the directory with a lifetime already over).
    engine = server.database()
    try:
        directory = Directory(engine)
        principal = directory.find_principal(app_id=puller.app_id)
        assert principal is not None
        _, expired = directory.add_secret(principal.object_id, "expired", lifetime_s=1e-6)
    finally:
        engine.dispose()
    secrets.append(expired)
    refused(tokens.basic_token(puller.app_id, expired, scope), INVALID_SECRET)

    # A secret removed through Graph stops at once; the principal's other secret still works.
    sp = create_for_rbac(server, "acrpull")
    app = application(server, sp.app_id)
    g = graph(server)
    second = g.call("POST", f"/v1.0/applications/{app['id']}/addPassword",
                    {"passwordCredential": {"displayName": "second"}}, api_version=None)
    assert second.status_code == 200, second.text
    secrets += [sp.password, second.json()["secretText"]]
    assert tokens.basic_token(sp.app_id, sp.password, scope).status_code == 200
    (first_key,) = [c["keyId"] for c in app["passwordCredentials"]]
    removed = g.call("POST", f"/v1.0/applications/{app['id']}/removePassword", {"keyId": first_key},
                     api_version=None)
    assert removed.status_code == 204, removed.text
    assert [c["keyId"] for c in application(server, sp.app_id)["passwordCredentials"]] == [second.json()["keyId"]]
    refused(tokens.basic_token(sp.app_id, sp.password, scope), INVALID_SECRET)
    assert tokens.basic_token(sp.app_id, second.json()["secretText"], scope).status_code == 200
    again = g.call("POST", f"/v1.0/applications/{app['id']}/removePassword", {"keyId": first_key},
                   api_version=None)
    assert again.status_code == 400 and again.json()["error"]["code"] == "Request_BadRequest"

    # A deleted application: its principal is gone, and so is the login.
    assert g.call("DELETE", f"/v1.0/applications/{app['id']}", api_version=None).status_code == 204
    refused(tokens.basic_token(sp.app_id, second.json()["secretText"], scope), APP_NOT_REGISTERED)

    # Every refusal is a failed login naming the app id; no secret is anywhere in the audit log or the server log.
    failures = [e for e in login_events(server) if e["ResultType"] == "Failure"]
    for app_id, count in ((puller.app_id, 5), (identity["clientId"], 1), (stranger.client_id, 1), (sp.app_id, 2)):
        mine = [e for e in failures if app_id.lower() in str(e["ResultDescription"])]
        assert len(mine) >= count, (app_id, failures)
    text = json.dumps(login_events(server)) + server.log()
    assert not [s for s in secrets if s in text]


def test_a_scoped_token_cannot_be_named_like_a_guid(server: AcrLocal) -> None:
    """A GUID user name logs in as an app id, so a scoped token by that name could never log in."""
    arm = Arm(server, admin_of(server).token(server))
    rid = registry_id(server)
    r = arm.call("PUT", f"{rid}/tokens/{uuid.uuid4()}",
                 {"properties": {"scopeMapId": f"{rid}/scopeMaps/_repositories_pull"}})
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidResourceName", r.text
    assert "GUID" in r.json()["error"]["message"]


def test_a_disabled_service_principal_logs_in_no_more(server: AcrLocal, tokens: TokenClient) -> None:
    """A service principal disabled through Graph (``accountEnabled`` false) after its secret last worked: ACR checks
    a client secret with Entra, which refuses a disabled application (AADSTS7000112), so the login is refused, with
    the secret that worked a moment before; enabled again, it logs in again."""
    scope = "repository:splogin/disabled:pull"
    sp = create_for_rbac(server, "acrpull")
    assert tokens.basic_token(sp.app_id, sp.password, scope).status_code == 200
    g = graph(server)
    (principal,) = g.call("GET", f"/v1.0/servicePrincipals?$filter=appId eq '{sp.app_id}'",
                          api_version=None).json()["value"]
    for enabled in (False, True):
        r = g.call("PATCH", f"/v1.0/servicePrincipals/{principal['id']}", {"accountEnabled": enabled},
                   api_version=None)
        assert r.status_code == 204, r.text
        answer = tokens.basic_token(sp.app_id, sp.password, scope)
        if enabled:
            assert answer.status_code == 200, answer.text
        else:
            refused(answer, f"Application '{sp.app_id}' is disabled")
            refused(tokens.http().post(tokens.base + "/oauth2/token", data={
                "grant_type": "password", "username": sp.app_id, "password": sp.password,
                "service": tokens.login_server, "scope": scope}), f"Application '{sp.app_id}' is disabled")


def test_an_application_without_its_service_principal_logs_in_no_more(server: AcrLocal, tokens: TokenClient) -> None:
    """ACR checks a client secret with Entra, which gives an application no token without its service principal
    in the tenant (AADSTS7000229): once the service principal is deleted through Graph, the application's own
    secret is refused as ACR refuses an application it does not know."""
    scope = "repository:splogin/no-sp:pull"
    sp = create_for_rbac(server, "acrpull")
    assert tokens.basic_token(sp.app_id, sp.password, scope).status_code == 200
    g = graph(server)
    (principal,) = g.call("GET", f"/v1.0/servicePrincipals?$filter=appId eq '{sp.app_id}'",
                          api_version=None).json()["value"]
    assert g.call("DELETE", f"/v1.0/servicePrincipals/{principal['id']}", api_version=None).status_code == 204
    refused(tokens.basic_token(sp.app_id, sp.password, scope), APP_NOT_REGISTERED)
