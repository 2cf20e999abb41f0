"""The registry on Azure Blob Storage through acrlocal's own managed identity (``acrlocal up --blob-store-identity``),
on a private Azurite that takes bearer tokens (``--oauth basic``, https), whatever ``--blob-backend`` says.

The identity plane is another acrlocal (the session's server). The server under test gets its tokens as a pod with
workload identity does, through azure-identity's ``ManagedIdentityCredential``: a user-assigned identity trusts a
service principal's token for ``api://AzureADTokenExchange`` (the token file), and the credential trades it at
the identity plane's Entra endpoint, on loopback, for the identity's v1 token for ``https://storage.azure.com``.
Blob GETs are redirected with a user delegation SAS.

No process may reach IMDS (169.254.169.254), where ``ManagedIdentityCredential`` goes when no variable names another
endpoint. The server's environment is checked before it starts (:func:`identity_env` fails closed), its IMDS
override points at a closed loopback port, and its interpreter refuses every connection that is not to loopback
(``tests/loopback_only``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from azure.core.credentials import AccessToken

from acrlocal.blob_location import parse_location
from acrlocal.errors import ConfigError
from acrlocal.identity.directory import Directory
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.tokens import TokenIssuer
from acrlocal.storage.azure_blobs import AzureBlobStore, managed_identity
from tests import azurite
from tests.clients import GUARD
from tests.harness import SRC, AcrLocal, acrlocal_cmd, child_env
from tests.registry.conftest import RegistryClient, error_code

EXCHANGE = "api://AzureADTokenExchange"
STORAGE = "https://storage.azure.com"
#: Variables that would make ManagedIdentityCredential use another source than the one the test gives it.
OTHER_SOURCES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET", "IMDS_ENDPOINT")


def az(server: AcrLocal, *args: str) -> Any:
    proc = server.cli(*args, check=False)
    assert proc.returncode == 0, f"acrlocal {' '.join(args)}: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def _loopback(url: str) -> bool:
    return urllib.parse.urlsplit(url).hostname in ("127.0.0.1", "localhost", "::1")


def identity_env(authority: str, tenant: str, client_id: str, token_file: Path, ca: str) -> dict[str, str]:
    """The environment of a server that uses the identity through workload identity at ``authority``: checked
    before it is returned, so that a mistake fails the test instead of letting the credential fall back to IMDS."""
    env = {
        "AZURE_AUTHORITY_HOST": authority, "AZURE_TENANT_ID": tenant, "AZURE_CLIENT_ID": client_id,
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file),
        # Were workload identity not chosen, IMDS would be asked here (a closed port), not at 169.254.169.254.
        "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9",
        "SSL_CERT_FILE": ca,  # azure-identity's aiohttp session trusts the identity plane's CA
        "PYTHONPATH": f"{GUARD}{os.pathsep}{SRC}",  # no connection but to loopback
    }
    assert all(env[name] for name in ("AZURE_AUTHORITY_HOST", "AZURE_TENANT_ID", "AZURE_CLIENT_ID")), env
    assert token_file.is_file() and _loopback(env["AZURE_AUTHORITY_HOST"]), env
    assert _loopback(env["AZURE_POD_IDENTITY_AUTHORITY_HOST"]), env
    assert not any(os.environ.get(name) for name in OTHER_SOURCES), "the test's environment names an identity source"
    return env


@pytest.fixture(scope="module")
def storage() -> Iterator[azurite.AzuriteServer]:
    with azurite.private(oauth=True) as server:
        yield server


@pytest.fixture(scope="module")
def identity(acrlocal: AcrLocal, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """On the identity plane (the session's server): a user-assigned identity, a service principal whose token for
    the token exchange is in a file, and the identity's federated credential trusting it."""
    group = f"blobmi-{uuid.uuid4().hex[:6]}"
    az(acrlocal, "group", "create", "-n", group, "-l", "westus")
    uami = az(acrlocal, "identity", "create", "-n", "registry-storage", "-g", group)
    sub = az(acrlocal, "account", "show", "--query", "id")
    workload = az(acrlocal, "ad", "sp", "create-for-rbac", "--name", f"{group}-workload", "--role", "reader",
                  "--scopes", f"/subscriptions/{sub}", "--only-show-errors")
    tenant = uami["tenantId"]
    r = acrlocal.session().post(f"{acrlocal.shared}/{tenant}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": workload["appId"], "client_secret": workload["password"],
        "scope": EXCHANGE + "/.default"})
    assert r.status_code == 200, r.text
    assertion = r.json()["access_token"]
    subject = jwt.decode(assertion, options={"verify_signature": False})["sub"]
    az(acrlocal, "identity", "federated-credential", "create", "-n", "registry", "--identity-name", "registry-storage",
       "-g", group, "--issuer", f"{acrlocal.shared}/{tenant}/v2.0", "--subject", subject)
    token_file = tmp_path_factory.mktemp("workload") / "token"
    token_file.write_text(assertion)
    return {"tenant": tenant, "client_id": uami["clientId"], "principal_id": uami["principalId"],
            "assertion": assertion, "token_file": token_file, "group": group}


def _server(data_dir: Path, storage: azurite.AzuriteServer, acrlocal: AcrLocal, identity: dict[str, Any],
            *args: str) -> AcrLocal:
    """A server on a new container of ``storage`` with the identity (not started)."""
    env = identity_env(acrlocal.shared, identity["tenant"], identity["client_id"], identity["token_file"],
                       str(acrlocal.status["caPath"]))
    return AcrLocal(data_dir, "--blob-store", storage.container_url(), "--blob-store-ca", storage.ca,
                    "--blob-store-identity-client-id", identity["client_id"], *args, blob_backend="files", env=env)


def test_the_managed_identity_pushes_and_blob_gets_redirect_with_a_user_delegation_sas(
        acrlocal: AcrLocal, storage: azurite.AzuriteServer, identity: dict[str, Any], tmp_path: Path) -> None:
    server = _server(tmp_path / "data", storage, acrlocal, identity)
    server.start()
    try:
        registry = RegistryClient(server)
        registry.follow_storage_redirects = False
        data = os.urandom(300_000)
        digest = registry.push_blob("identity/app", data)
        r = registry.get(f"/v2/identity/app/blobs/{digest}")
        assert r.status_code == 307, r.text
        location = r.headers["Location"]
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
        # Signed with the user delegation key Azurite gave the identity's token (its oid and tid), valid a day; no
        # account key is anywhere in this server. Azurite 3.35 cannot check the signature: the SDK signs SAS version
        # 2026-10-06, whose string to sign has two fields (srh, srq) Azurite's newest layout (2025-07-05) lacks.
        assert query["skoid"] == [identity["principal_id"]] and query["sktid"] == [identity["tenant"]]
        assert query["sks"] == ["b"] and query["skv"] and query["sig"]
        key_expiry = dt.datetime.fromisoformat(query["ske"][0].replace("Z", "+00:00"))
        assert dt.timedelta(hours=23) < key_expiry - dt.datetime.now(dt.UTC) <= dt.timedelta(days=1)
        assert query["sp"] == ["r"] and query["sr"] == ["b"] and query["spr"] == ["https"]
        expiry = dt.datetime.fromisoformat(query["se"][0].replace("Z", "+00:00"))
        assert dt.timedelta(minutes=5) < expiry - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=10, seconds=5)
        assert urllib.parse.urlsplit(location).path == \
            f"{urllib.parse.urlsplit(server.status['blobStore']).path}/sha256/{digest.removeprefix('sha256:')}"
        log = server.log_path.read_text()
        assert "acrlocal's managed identity" in log and "eyJ" not in log  # no token (JWTs start so) is logged

        # Storage that stops taking the identity's tokens: 503 with Retry-After, and served again once it does.
        storage.stop_service()
        storage.oauth = False
        storage.start_service()
        try:
            r = registry.post("/v2/identity/app/blobs/uploads/")
            assert r.status_code == 503, r.text
            assert error_code(r) == "UNAVAILABLE" and int(r.headers["Retry-After"]) > 0
            # What needs no storage still works: metadata, and redirects (the delegation key is held for a day).
            assert registry.head(f"/v2/identity/app/blobs/{digest}").status_code == 200
            assert registry.get(f"/v2/identity/app/blobs/{digest}").status_code == 307
        finally:
            storage.stop_service()
            storage.oauth = True
            storage.start_service()
        assert registry.post("/v2/identity/app/blobs/uploads/").status_code == 202
        assert registry.get(f"/v2/identity/app/blobs/{digest}").status_code == 307
        log = server.log_path.read_text()
        assert "refused acrlocal's credential" in log and "eyJ" not in log and "Traceback" not in log
    finally:
        server.stop()


def test_streamed_gets_read_what_the_identity_pushed(acrlocal: AcrLocal, storage: azurite.AzuriteServer,
                                                     identity: dict[str, Any], tmp_path: Path) -> None:
    server = _server(tmp_path / "data", storage, acrlocal, identity, "--blob-downloads", "stream")
    server.start()
    try:
        registry = RegistryClient(server)
        data = os.urandom(5_000_000)  # more than one 4 MiB block and read
        digest = registry.push_blob("identity/streamed", data)
        r = registry.get(f"/v2/identity/streamed/blobs/{digest}")
        assert r.status_code == 200 and r.content == data and not r.history
        r = registry.get(f"/v2/identity/streamed/blobs/{digest}", headers={"Range": "bytes=4194300-4194309"})
        assert r.status_code == 206 and r.content == data[4194300:4194310]
    finally:
        server.stop()
    # The server stopped, its blobs come back into the data directory with the same identity.
    env = identity_env(acrlocal.shared, identity["tenant"], identity["client_id"], identity["token_file"],
                       str(acrlocal.status["caPath"]))
    proc = subprocess.run(acrlocal_cmd("migrate", "--data-dir", str(server.data_dir), "--blobs-from",
                                       server.status["blobStore"], "--blob-store-ca", storage.ca,
                                       "--blob-store-identity-client-id", identity["client_id"]),
                          env=child_env(**env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (server.data_dir / "blobs" / "sha256" / digest[7:9] / digest[7:]).read_bytes() == data


def test_an_identity_without_a_token_stops_up_with_a_clear_message(
        acrlocal: AcrLocal, storage: azurite.AzuriteServer, identity: dict[str, Any], tmp_path: Path) -> None:
    # An identity that does not trust the token file's subject: Entra refuses the exchange (AADSTS70021).
    other = az(acrlocal, "identity", "create", "-n", "untrusting", "-g", identity["group"])
    env = identity_env(acrlocal.shared, identity["tenant"], other["clientId"], identity["token_file"],
                       str(acrlocal.status["caPath"]))
    proc = subprocess.run(acrlocal_cmd("up", "--data-dir", str(tmp_path / "data"), "--port", "0",
                                       "--registry-port-base", "0", "--blob-store", storage.container_url(),
                                       "--blob-store-ca", storage.ca, "--blob-store-identity-client-id",
                                       other["clientId"]),
                          env=child_env(**env), capture_output=True, text=True, timeout=120)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    assert "acrlocal's managed identity gave no token" in output and "AADSTS70021" in output, output
    assert identity["assertion"] not in output and "eyJ" not in output


def test_storage_tokens_are_v1_tokens_as_entras(acrlocal: AcrLocal, identity: dict[str, Any]) -> None:
    """Storage takes v1 tokens only, and Entra issues v1 tokens for it: issuer ``https://sts.windows.net/<tenant>/``,
    signed with the tenant's key from its JWKS like every other token."""
    r = acrlocal.session().post(f"{acrlocal.shared}/{identity['tenant']}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": identity["client_id"], "scope": STORAGE + "/.default",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": identity["assertion"]})
    assert r.status_code == 200, r.text
    token = r.json()["access_token"]
    config = acrlocal.session().get(f"{acrlocal.shared}/{identity['tenant']}/v2.0/.well-known/openid-configuration")
    keys = acrlocal.session().get(config.json()["jwks_uri"]).json()
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWK(next(k for k in keys["keys"] if k["kid"] == kid)).key
    claims = jwt.decode(token, key, algorithms=["RS256"], audience=STORAGE,
                        issuer=f"https://sts.windows.net/{identity['tenant']}/")
    assert claims["ver"] == "1.0" and claims["oid"] == identity["principal_id"] and claims["appidacr"] == "2"
    assert "azp" not in claims and claims["idp"] == claims["iss"] and claims["xms_mirid"].endswith("/registry-storage")


class _Fixed:
    """A token credential that hands out one token whatever it is asked (to present what a credential would not)."""

    def __init__(self, token: str, expires_on: int) -> None:
        self.token = AccessToken(token, expires_on)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self.token

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> _Fixed:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        pass


def test_storage_refuses_a_token_for_another_audience_or_expired_and_open_says_so(
        acrlocal: AcrLocal, storage: azurite.AzuriteServer, identity: dict[str, Any]) -> None:
    def token_for(resource: str) -> str:
        """The identity's real token for ``resource``, from the identity plane."""
        r = acrlocal.session().post(f"{acrlocal.shared}/{identity['tenant']}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": identity["client_id"], "scope": resource + "/.default",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": identity["assertion"]})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    other_account = token_for("https://someoneelse.blob.core.windows.net")
    arm = token_for("https://management.azure.com")
    # And one for storage signed with the tenant's real key, but two hours old.
    engine = acrlocal.database()
    try:
        uami = Directory(engine).principal(identity["principal_id"])
        expired = TokenIssuer(KeyRing(engine), acrlocal.shared).issue(uami, STORAGE, 3600, now=time.time() - 7200)
    finally:
        engine.dispose()
    location = parse_location(storage.container_url())

    async def refusal(token: str, expires_on: int) -> str:
        with pytest.raises(ConfigError) as caught:
            await AzureBlobStore.open(location, token=_Fixed(token, expires_on), ca=storage.ca)
        return str(caught.value)

    in_an_hour = int(time.time()) + 3600
    wrong_account = asyncio.run(refusal(other_account, in_an_hour))
    assert "refused the credential given (403 AuthenticationFailed: Invalid token audience.)" in wrong_account
    # A v2 token of acrlocal's issuer, as for every audience but Storage's.
    not_storage = asyncio.run(refusal(arm, in_an_hour))
    assert "refused the credential given (403 AuthenticationFailed: Invalid token issuer.)" in not_storage
    too_old = asyncio.run(refusal(expired.token, expired.expires_on))
    assert "refused the credential given (403 AuthenticationFailed: Lifetime validation failed. The token is " \
           "expired.)" in too_old
    for message in (wrong_account, not_storage, too_old):
        assert "eyJ" not in message


@pytest.mark.parametrize("env", [
    {},  # no variable names a source: ManagedIdentityCredential would ask IMDS at its real address
    {"IDENTITY_ENDPOINT": "http://169.254.169.254/msi/token", "IDENTITY_HEADER": "x"},
    {"AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://169.254.169.254"},
], ids=["default-imds", "identity-endpoint", "pod-identity-host"])
def test_a_managed_identity_that_would_ask_imds_at_its_real_address_is_refused_on_the_host(
        env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside an acrlocal VM's network namespace nothing may go to 169.254.169.254: the credential is refused
    before it could send anything (fail closed), with a message that says what to name instead."""
    for name in (*OTHER_SOURCES, "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_AUTHORITY_HOST", "AZURE_TENANT_ID", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"would ask IMDS at 169\.254\.169\.254.*sends nothing there"):
        managed_identity()


def test_a_managed_identity_whose_source_is_named_elsewhere_is_taken(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTHER_SOURCES:
        monkeypatch.delenv(name, raising=False)
    token_file = tmp_path / "token"
    token_file.write_text("x")
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", "https://127.0.0.1:9")
    monkeypatch.setenv("AZURE_TENANT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_CLIENT_ID", str(uuid.uuid4()))
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", "http://127.0.0.1:9")
    asyncio.run(managed_identity().close())  # workload identity: made, nothing sent
