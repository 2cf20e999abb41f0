"""Certificate-signed and federated client assertions at the Entra token endpoint, driven by azure-identity
(CertificateCredential, WorkloadIdentityCredential) and msal, with hand-made bad assertions for the refusals."""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from acrlocal.identity.directory import Directory, Principal
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.tokens import TokenIssuer
from tests.clients import client_env, run_client, verify_with_jwks
from tests.harness import AcrLocal

ARM = "https://management.azure.com"
EXCHANGE = "api://AzureADTokenExchange"


def admin(server: AcrLocal) -> dict[str, str]:
    return dict(json.loads((server.data_dir / "admin.json").read_text()))


@pytest.fixture
def directory(acrlocal: AcrLocal) -> Iterator[Directory]:
    """The running server's directory, opened on its database (how tests register certificates and federated
    credentials, for which acrlocal has no Graph API)."""
    engine = acrlocal.database()
    try:
        yield Directory(engine)
    finally:
        engine.dispose()


def make_cert(name: str = "client", days: int = 30, not_before: dt.datetime | None = None
              ) -> tuple[rsa.RSAPrivateKey, x509.Certificate, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = not_before or dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=days)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM)
    return key, cert, pem


def b64_thumb(cert: x509.Certificate, algorithm: hashes.HashAlgorithm) -> str:
    import base64

    return base64.urlsafe_b64encode(cert.fingerprint(algorithm)).rstrip(b"=").decode()


@pytest.fixture
def app_with_cert(acrlocal: AcrLocal, directory: Directory, tmp_path: Path
                  ) -> tuple[Principal, rsa.RSAPrivateKey, x509.Certificate, Path]:
    tenant = admin(acrlocal)["tenantId"]
    app = directory.create_service_principal(tenant, f"cert-app-{uuid.uuid4().hex[:6]}")
    key, cert, pem = make_cert()
    directory.add_certificate(app.object_id, cert.public_bytes(serialization.Encoding.PEM).decode())
    path = tmp_path / "client.pem"
    path.write_bytes(pem)
    return app, key, cert, path


def token_url(server: AcrLocal, tenant: str) -> str:
    return f"{server.shared}/{tenant}/oauth2/v2.0/token"


def post_assertion(server: AcrLocal, tenant: str, client_id: str, assertion: str,
                   scope: str = ARM + "/.default") -> Any:
    return server.session().post(token_url(server, tenant), data={
        "grant_type": "client_credentials", "client_id": client_id, "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion})


def assertion_for(app: Principal, key: rsa.RSAPrivateKey, cert: x509.Certificate, aud: str, *,
                  lifetime: int = 600, now: float | None = None, alg: str = "RS256", **changes: Any) -> str:
    now = time.time() if now is None else now
    claims = {"aud": aud, "iss": app.app_id, "sub": app.app_id, "jti": str(uuid.uuid4()), "iat": int(now),
              "nbf": int(now), "exp": int(now) + lifetime} | changes
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg, headers={"x5t": b64_thumb(cert, hashes.SHA1())})


# -- certificate assertions ------------------------------------------------------------------------


def test_certificate_credential_gets_tokens_for_two_resources(acrlocal: AcrLocal, app_with_cert: Any,
                                                              tmp_path: Path) -> None:
    app, _, _, pem_path = app_with_cert
    tenant = admin(acrlocal)["tenantId"]
    # msal reuses one signed assertion (same jti) across resources for several minutes: both must work.
    result = run_client(f"""
        from azure.identity import CertificateCredential
        c = CertificateCredential({tenant!r}, {app.app_id!r}, {str(pem_path)!r}, authority={acrlocal.shared!r},
                                  disable_instance_discovery=True)
        c.get_token("{ARM}/.default")
        attempt(lambda: c.get_token("https://containerregistry.azure.net/.default"))
    """, client_env(tmp_path, REQUESTS_CA_BUNDLE=acrlocal.ca))
    assert result["ok"], result
    claims = verify_with_jwks(result["token"], acrlocal.shared, acrlocal.ca, "https://containerregistry.azure.net")
    assert claims["appid"] == app.app_id and claims["oid"] == app.object_id and claims["appidacr"] == "2"


def test_msal_with_public_certificate_signs_ps256_with_sha256_thumbprint(acrlocal: AcrLocal, app_with_cert: Any,
                                                                         tmp_path: Path) -> None:
    app, _, _, pem_path = app_with_cert
    tenant = admin(acrlocal)["tenantId"]
    pem = pem_path.read_text()
    result = run_client(f"""
        import msal, requests
        s = requests.Session()
        s.verify = {acrlocal.ca!r}
        pem = {pem!r}
        key = pem[:pem.index("-----BEGIN CERTIFICATE-----")]
        cert = pem[pem.index("-----BEGIN CERTIFICATE-----"):]
        app = msal.ConfidentialClientApplication({app.app_id!r}, authority={acrlocal.shared + '/' + tenant!r},
            client_credential={{"private_key": key, "public_certificate": cert}}, http_client=s,
            instance_discovery=False)
        attempt(lambda: app.acquire_token_for_client(["{ARM}/.default"]))
    """, client_env(tmp_path))
    assert result["ok"], result
    claims = verify_with_jwks(result["token"], acrlocal.shared, acrlocal.ca, ARM)
    assert claims["appid"] == app.app_id


def test_bad_certificate_assertions_are_refused(acrlocal: AcrLocal, app_with_cert: Any) -> None:
    app, key, cert, _ = app_with_cert
    tenant = admin(acrlocal)["tenantId"]
    aud = token_url(acrlocal, tenant)
    other_key, _, _ = make_cert("forger")
    now = time.time()
    cases = {
        "forged signature": (jwt.encode({"aud": aud, "iss": app.app_id, "sub": app.app_id, "jti": "j1",
                                         "iat": int(now), "nbf": int(now), "exp": int(now) + 600}, other_key,
                                        algorithm="RS256", headers={"x5t": b64_thumb(cert, hashes.SHA1())}),
                             401, "invalid_client", 700027),
        "expired": (assertion_for(app, key, cert, aud, now=now - 7200), 401, "invalid_client", 700024),
        "wrong audience": (assertion_for(app, key, cert, "https://example.com/token"), 401, "invalid_client",
                           700023),
        "other subject": (assertion_for(app, key, cert, aud, sub=str(uuid.uuid4())), 401, "invalid_client",
                          700021),
        "no jti": (assertion_for(app, key, cert, aud, jti=None), 401, "invalid_client", 50027),
        "unregistered certificate": (jwt.encode({"aud": aud, "iss": app.app_id, "sub": app.app_id, "jti": "j2",
                                                 "exp": int(now) + 600}, other_key, algorithm="RS256",
                                                headers={"x5t": b64_thumb(make_cert()[1], hashes.SHA1())}),
                                     401, "invalid_client", 700027),
        "hmac algorithm": (jwt.encode({"aud": aud, "iss": app.app_id, "sub": app.app_id, "jti": "j3",
                                       "exp": int(now) + 600}, "secret-key-of-32-bytes-or-more!!", algorithm="HS256",
                                      headers={"x5t": b64_thumb(cert, hashes.SHA1())}), 401, "invalid_client", 700027),
        "not a jwt": ("not.a.jwt", 401, "invalid_client", 50027),
    }
    for name, (assertion, status, error, code) in cases.items():
        r = post_assertion(acrlocal, tenant, app.app_id, assertion)
        assert r.status_code == status, (name, r.text)
        body = r.json()
        assert body["error"] == error and body["error_codes"] == [code], (name, body)
        assert "access_token" not in body


def test_replayed_assertion_is_refused_for_the_same_resource(acrlocal: AcrLocal, app_with_cert: Any) -> None:
    app, key, cert, _ = app_with_cert
    tenant = admin(acrlocal)["tenantId"]
    assertion = assertion_for(app, key, cert, token_url(acrlocal, tenant), alg="PS256")
    assert post_assertion(acrlocal, tenant, app.app_id, assertion).status_code == 200
    replay = post_assertion(acrlocal, tenant, app.app_id, assertion)
    assert replay.status_code == 401 and replay.json()["error_codes"] == [50027]
    # The v1 endpoint is an accepted audience too.
    v1 = assertion_for(app, key, cert, f"{acrlocal.shared}/{tenant}/oauth2/token")
    assert post_assertion(acrlocal, tenant, app.app_id, v1).status_code == 200


def test_certificate_outside_its_validity_is_refused(acrlocal: AcrLocal, directory: Directory) -> None:
    tenant = admin(acrlocal)["tenantId"]
    app = directory.create_service_principal(tenant, "stale-cert-app")
    key, cert, _ = make_cert(not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=10), days=2)
    directory.add_certificate(app.object_id, cert.public_bytes(serialization.Encoding.PEM).decode())
    r = post_assertion(acrlocal, tenant, app.app_id, assertion_for(app, key, cert, token_url(acrlocal, tenant)))
    assert r.status_code == 401 and r.json()["error_codes"] == [700027]


# -- federated assertions --------------------------------------------------------------------------


def exchange_token(server: AcrLocal, tenant: str, client_id: str, secret: str) -> str:
    """What a workload of acrlocal presents: its own token for the token-exchange audience."""
    r = server.session().post(token_url(server, tenant), data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        "scope": EXCHANGE + "/.default"})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.fixture
def federation(acrlocal: AcrLocal, directory: Directory) -> dict[str, Any]:
    """A workload SP with a secret (the token issuer's subject), and a user-assigned identity that trusts it."""
    tenant = admin(acrlocal)["tenantId"]
    sub = directory.subscriptions(tenant)[0].id
    workload = directory.create_service_principal(tenant, "workload")
    _, secret = directory.add_secret(workload.object_id)
    name = f"fed-{uuid.uuid4().hex[:6]}"
    uami = directory.create_managed_identity(
        tenant, f"/subscriptions/{sub}/resourceGroups/rg/providers/Microsoft.ManagedIdentity/"
        f"userAssignedIdentities/{name}", name, "user")
    issuer = f"{acrlocal.shared}/{tenant}/v2.0"
    directory.add_federated_credential(uami.object_id, "from-workload", issuer, workload.object_id, [EXCHANGE])
    return {"tenant": tenant, "workload": workload, "secret": secret, "uami": uami, "issuer": issuer}


def workload_identity(server: AcrLocal, tmp_path: Path, tenant: str, client_id: str, assertion: str,
                      scope: str = ARM + "/.default") -> dict[str, Any]:
    token_file = tmp_path / f"token-{uuid.uuid4().hex[:6]}"
    token_file.write_text(assertion)
    return run_client(f"""
        from azure.identity import WorkloadIdentityCredential
        c = WorkloadIdentityCredential(tenant_id={tenant!r}, client_id={client_id!r},
                                       token_file_path={str(token_file)!r}, authority={server.shared!r})
        attempt(lambda: c.get_token({scope!r}))
    """, client_env(tmp_path, REQUESTS_CA_BUNDLE=server.ca))


def test_workload_identity_credential_gets_a_managed_identity_token(acrlocal: AcrLocal, federation: dict[str, Any],
                                                                   tmp_path: Path) -> None:
    f = federation
    assertion = exchange_token(acrlocal, f["tenant"], f["workload"].app_id, f["secret"])
    result = workload_identity(acrlocal, tmp_path, f["tenant"], f["uami"].app_id, assertion)
    assert result["ok"], result
    claims = verify_with_jwks(result["token"], acrlocal.shared, acrlocal.ca, ARM)
    assert claims["oid"] == f["uami"].object_id and claims["appid"] == f["uami"].app_id
    assert claims["xms_mirid"] == f["uami"].resource_id
    # The token file is read again for a second resource: federated assertions are meant to be reused.
    again = workload_identity(acrlocal, tmp_path, f["tenant"], f["uami"].app_id, assertion,
                              "https://containerregistry.azure.net/.default")
    assert again["ok"], again


def test_federated_assertion_with_another_subject_is_refused(acrlocal: AcrLocal, directory: Directory,
                                                             federation: dict[str, Any], tmp_path: Path) -> None:
    f = federation
    stranger = directory.create_service_principal(f["tenant"], "stranger")
    _, secret = directory.add_secret(stranger.object_id)
    assertion = exchange_token(acrlocal, f["tenant"], stranger.app_id, secret)
    result = workload_identity(acrlocal, tmp_path, f["tenant"], f["uami"].app_id, assertion)
    assert not result["ok"] and result["error"] == "ClientAuthenticationError"
    assert "AADSTS70021" in result["message"] and stranger.object_id in result["message"]
    r = post_assertion(acrlocal, f["tenant"], f["uami"].app_id, assertion)
    assert r.status_code == 400 and r.json()["error_codes"] == [70021]


def test_bad_federated_assertions_are_refused(acrlocal: AcrLocal, directory: Directory,
                                              federation: dict[str, Any]) -> None:
    f = federation
    good = exchange_token(acrlocal, f["tenant"], f["workload"].app_id, f["secret"])
    claims = jwt.decode(good, options={"verify_signature": False})
    header = jwt.get_unverified_header(good)
    forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    forged = jwt.encode(claims, forger, algorithm="RS256", headers={"kid": header["kid"]})
    # Signed with the tenant's real key (read from the server's database), but two hours old.
    issuer = TokenIssuer(KeyRing(directory.engine), acrlocal.shared)
    expired = issuer.issue(f["workload"], EXCHANGE, 3600, now=now - 7200).token
    other_issuer = jwt.encode(claims | {"iss": "https://token.actions.githubusercontent.com"}, forger,
                              algorithm="RS256")
    cases = [(forged, 401, 700027), (expired, 401, 700024), (other_issuer, 400, 700211)]
    for assertion, status, code in cases:
        r = post_assertion(acrlocal, f["tenant"], f["uami"].app_id, assertion)
        assert r.status_code == status and r.json()["error_codes"] == [code], r.text
    # A token for another audience (ARM) does not match the credential's audience.
    r = acrlocal.session().post(token_url(acrlocal, f["tenant"]), data={
        "grant_type": "client_credentials", "client_id": f["workload"].app_id, "client_secret": f["secret"],
        "scope": ARM + "/.default"})
    assert post_assertion(acrlocal, f["tenant"], f["uami"].app_id, r.json()["access_token"]).json()[
        "error_codes"] == [70021]


def test_managed_identity_cannot_use_a_secret_or_certificate(acrlocal: AcrLocal, federation: dict[str, Any]
                                                             ) -> None:
    f = federation
    r = acrlocal.session().post(token_url(acrlocal, f["tenant"]), data={
        "grant_type": "client_credentials", "client_id": f["uami"].app_id, "client_secret": "anything",
        "scope": ARM + "/.default"})
    assert r.status_code == 400 and r.json()["error_codes"] == [700016]


def test_a_certificate_or_federated_credential_removed_is_refused_at_the_next_request(
        acrlocal: AcrLocal, directory: Directory, app_with_cert: Any, federation: dict[str, Any]) -> None:
    """Nothing about a client's certificates or federated credentials is kept between requests: one removed after
    it worked is refused at once (AADSTS700027: the key is no longer registered; AADSTS700211: no credential
    names the issuer), with an assertion that was good a moment before (a federated one is meant to be reused)."""
    app, key, cert, _ = app_with_cert
    tenant = admin(acrlocal)["tenantId"]
    first = post_assertion(acrlocal, tenant, app.app_id, assertion_for(app, key, cert, token_url(acrlocal, tenant)))
    assert first.status_code == 200, first.text
    (registered,) = directory.certificates(app.object_id)
    directory.remove_certificate(app.object_id, registered.key_id)
    r = post_assertion(acrlocal, tenant, app.app_id, assertion_for(app, key, cert, token_url(acrlocal, tenant)))
    assert r.status_code == 401 and r.json()["error_codes"] == [700027], r.text

    f = federation
    assertion = exchange_token(acrlocal, f["tenant"], f["workload"].app_id, f["secret"])
    assert post_assertion(acrlocal, f["tenant"], f["uami"].app_id, assertion).status_code == 200
    directory.delete_federated_credential(f["uami"].object_id, "from-workload")
    r = post_assertion(acrlocal, f["tenant"], f["uami"].app_id, assertion)
    assert r.status_code == 400 and r.json()["error_codes"] == [700211], r.text
