"""Microsoft's az against our Microsoft Graph, signed in as a service principal (the local administrator):
applications (identifier URIs kept at creation, PATCH, look-up by identifier URI), owners, federated identity
credentials, password credentials newest first, certificates (``credential reset --create-cert``) on
applications and service principals, and the certificate signing in; Microsoft Graph's own service principal."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.az.conftest import Az, Contained, unique
from tests.harness import AcrLocal

GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"


def test_applications_as_az_manages_them(host_az: Az) -> None:
    az = host_az
    name, uri = unique("app-"), f"api://{unique('app-')}"
    app = az("ad", "app", "create", "--display-name", name, "--identifier-uris", uri)
    assert app["identifierUris"] == [uri] and app["displayName"] == name
    assert az("ad", "app", "show", "--id", uri)["appId"] == app["appId"]
    assert az("ad", "app", "show", "--id", app["appId"])["id"] == app["id"]
    az("ad", "app", "update", "--id", app["id"], "--identifier-uris", uri, f"{uri}/two",
       "--sign-in-audience", "AzureADMyOrg")
    assert az("ad", "app", "show", "--id", app["id"], "--query", "identifierUris") == [uri, f"{uri}/two"]
    clash = az.fail("ad", "app", "create", "--display-name", unique("app-"), "--identifier-uris", uri)
    assert "identifierUris already exists" in clash.stderr
    assert [a["appId"] for a in az("ad", "app", "list", "--display-name", name)] == [app["appId"]]

    # Owners: the creator, and one added and removed by $ref.
    owners = az("ad", "app", "owner", "list", "--id", app["id"], "--query", "[].id")
    admin_sp = az("ad", "sp", "show", "--id", host_az.server.admin_credential()["clientId"])
    assert owners == [admin_sp["id"]]

    # Passwords, newest first; removing one.
    first = az("ad", "app", "credential", "reset", "--id", app["id"], "--append", "--display-name", "one")
    time.sleep(1.1)
    second = az("ad", "app", "credential", "reset", "--id", app["id"], "--append", "--display-name", "two")
    assert first["password"] != second["password"]
    listed = az("ad", "app", "credential", "list", "--id", app["id"])
    assert [c["displayName"] for c in listed] == ["two", "one"] and all(c["hint"] for c in listed)
    az("ad", "app", "credential", "delete", "--id", app["id"], "--key-id", listed[1]["keyId"])
    assert [c["displayName"] for c in az("ad", "app", "credential", "list", "--id", app["id"])] == ["two"]

    # Federated identity credentials.
    fic = {"name": "github", "issuer": "https://token.actions.githubusercontent.com",
           "subject": "repo:octo/app:ref:refs/heads/main", "audiences": ["api://AzureADTokenExchange"],
           "description": "main branch"}
    created = az("ad", "app", "federated-credential", "create", "--id", app["id"], "--parameters", json.dumps(fic))
    assert (created["name"], created["subject"]) == ("github", fic["subject"])
    az("ad", "app", "federated-credential", "update", "--id", app["id"], "--federated-credential-id", "github",
       "--parameters", json.dumps({**fic, "subject": "repo:octo/app:environment:prod"}))
    shown = az("ad", "app", "federated-credential", "show", "--id", app["id"], "--federated-credential-id", "github")
    assert shown["subject"] == "repo:octo/app:environment:prod"
    assert [f["name"] for f in az("ad", "app", "federated-credential", "list", "--id", app["id"])] == ["github"]
    az("ad", "app", "federated-credential", "delete", "--id", app["id"], "--federated-credential-id", "github")
    assert az("ad", "app", "federated-credential", "list", "--id", app["id"]) == []

    az("ad", "app", "delete", "--id", app["id"])
    assert az.run("ad", "app", "show", "--id", app["id"]).returncode != 0


def test_service_principal_certificate_reset_and_sign_in(host_az: Az, az_exe: Path, az_server: AcrLocal,
                                                         contained: Contained, tmp_path: Path) -> None:
    az = host_az
    app = az("ad", "app", "create", "--display-name", unique("cert-"))
    sp = az("ad", "sp", "create", "--id", app["appId"])
    assert sp["appDisplayName"] == app["displayName"] and sp["appId"] == app["appId"]
    reset = az("ad", "sp", "credential", "reset", "--id", sp["id"], "--create-cert")
    cert_file = Path(reset["fileWithCertAndPrivateKey"])
    assert reset["appId"] == app["appId"] and cert_file.read_text().count("BEGIN") == 2
    keys = az("ad", "sp", "credential", "list", "--id", sp["id"], "--cert")
    assert len(keys) == 1 and keys[0]["type"] == "AsymmetricX509Cert" and keys[0]["usage"] == "Verify"
    # The application lists none of the service principal's credentials.
    assert az("ad", "app", "credential", "list", "--id", app["id"], "--cert") == []

    # The certificate signs the service principal in (a client assertion), as az does it.
    robot = Az(az_exe, az_server, tmp_path / "robot", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    robot.setup()
    tenant = az_server.admin_credential()["tenantId"]
    accounts = robot("login", "--service-principal", "-u", app["appId"], "--certificate", str(cert_file),
                     "--tenant", tenant, "--allow-no-subscriptions")
    assert accounts[0]["user"] == {"name": app["appId"], "type": "servicePrincipal"}

    # Deleting the key credential ends that: a new sign-in is refused.
    az("ad", "sp", "credential", "delete", "--id", sp["id"], "--key-id", keys[0]["keyId"], "--cert")
    assert az("ad", "sp", "credential", "list", "--id", sp["id"], "--cert") == []
    again = Az(az_exe, az_server, tmp_path / "again", contained, {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    again.setup()
    refused = again.fail("login", "--service-principal", "-u", app["appId"], "--certificate", str(cert_file),
                         "--tenant", tenant, "--allow-no-subscriptions")
    assert "AADSTS700027" in refused.stderr
    az("ad", "sp", "delete", "--id", sp["id"])
    az("ad", "app", "delete", "--id", app["id"])


def test_microsoft_graphs_own_service_principal(host_az: Az) -> None:
    graph = host_az("ad", "sp", "show", "--id", GRAPH_APP_ID)
    assert graph["displayName"] == "Microsoft Graph" and graph["appDisplayName"] == "Microsoft Graph"
    assert "User.Read" in [s["value"] for s in graph["oauth2PermissionScopes"]]
    assert host_az("ad", "sp", "list", "--filter", f"appId eq '{GRAPH_APP_ID}'", "--query", "[].id") == [graph["id"]]
