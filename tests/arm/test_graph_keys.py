"""Certificate credentials through Microsoft Graph (issue 8, item 17: they used to need a database write):
``keyCredentials`` in a PATCH, then ``addKey`` / ``removeKey`` with a proof of possession signed by a current
certificate; the certificate then signs the application in with azure-identity's CertificateCredential."""

from __future__ import annotations

import base64
import datetime as dt
import time
from pathlib import Path
from typing import Any

import jwt
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CertificateCredential
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.arm.conftest import Arm, admin_of
from tests.harness import AcrLocal

PROOF_AUDIENCE = "00000002-0000-0000-c000-000000000000"


def make_cert(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start)
            .not_valid_after(start + dt.timedelta(days=30)).sign(key, hashes.SHA256()))
    return key, cert


def key_value(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def proof(key: rsa.RSAPrivateKey, issuer: str, audience: str = PROOF_AUDIENCE, lifetime: int = 600) -> str:
    now = int(time.time())
    return jwt.encode({"aud": audience, "iss": issuer, "nbf": now, "exp": now + lifetime}, key, algorithm="RS256")


def pem_file(tmp: Path, key: rsa.RSAPrivateKey, cert: x509.Certificate) -> str:
    path = tmp / f"{cert.serial_number}.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()) + cert.public_bytes(serialization.Encoding.PEM))
    return str(path)


def can_sign_in(server: AcrLocal, tenant: str, app_id: str, pem: str) -> bool:
    credential = CertificateCredential(tenant, app_id, pem, authority=server.shared, connection_verify=server.ca,
                                       disable_instance_discovery=True)
    try:
        return bool(credential.get_token("https://management.azure.com/.default").token)
    except ClientAuthenticationError:
        return False


def call(g: Arm, method: str, path: str, body: Any = None) -> Any:
    return g.call(method, path, body, api_version=None)


def test_certificates_through_graph(arm_server: AcrLocal, tmp_path: Path) -> None:
    admin = admin_of(arm_server)
    g = Arm(arm_server, admin.token(arm_server, "https://graph.microsoft.com/.default"))
    app = call(g, "POST", "/v1.0/applications", {"displayName": "cert-robot"}).json()
    sp = call(g, "POST", "/v1.0/servicePrincipals", {"appId": app["appId"]}).json()
    k1, c1 = make_cert("one")
    k2, c2 = make_cert("two")
    k3, c3 = make_cert("three")

    # addKey needs a certificate to prove possession of: none yet.
    first = {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(c1), "displayName": "one"}
    r = call(g, "POST", f"/v1.0/applications/{app['id']}/addKey", {"keyCredential": first,
                                                                    "proof": proof(k1, app["id"])})
    assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest"
    # az's way: the whole keyCredentials set in a PATCH.
    assert call(g, "PATCH", f"/v1.0/applications/{app['id']}", {"keyCredentials": [first]}).status_code == 204
    listed = call(g, "GET", f"/v1.0/applications/{app['id']}").json()["keyCredentials"]
    assert [(k["displayName"], k["customKeyIdentifier"]) for k in listed] == \
        [("one", c1.fingerprint(hashes.SHA1()).hex().upper())]
    assert call(g, "GET", f"/v1.0/servicePrincipals/{sp['id']}").json()["keyCredentials"] == []
    assert can_sign_in(arm_server, admin.tenant_id, app["appId"], pem_file(tmp_path, k1, c1))

    second = {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(c2), "displayName": "two"}
    for bad in (proof(k1, app["id"], audience="https://graph.microsoft.com"), proof(k1, sp["id"]),
                proof(k3, app["id"]), proof(k1, app["id"], lifetime=3600), "not-a-jwt"):
        r = call(g, "POST", f"/v1.0/applications/{app['id']}/addKey", {"keyCredential": second, "proof": bad})
        assert r.status_code == 400 and "roof" in r.json()["error"]["message"], r.text
    added = call(g, "POST", f"/v1.0/applications/{app['id']}/addKey", {"keyCredential": second,
                                                                        "proof": proof(k1, app["id"])})
    assert added.status_code == 200, added.text
    assert added.json()["displayName"] == "two" and added.json()["key"] is None
    old_id = listed[0]["keyId"]
    removed = call(g, "POST", f"/v1.0/applications/{app['id']}/removeKey", {"keyId": old_id,
                                                                             "proof": proof(k2, app["id"])})
    assert removed.status_code == 204, removed.text
    assert [k["displayName"] for k in call(g, "GET", f"/v1.0/applications/{app['id']}").json()["keyCredentials"]] \
        == ["two"]
    assert not can_sign_in(arm_server, admin.tenant_id, app["appId"], pem_file(tmp_path, k1, c1))
    assert can_sign_in(arm_server, admin.tenant_id, app["appId"], pem_file(tmp_path, k2, c2))

    # The service principal's own key credentials, with its own proof.
    on_sp = {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(c3), "displayName": "three"}
    assert call(g, "PATCH", f"/v1.0/servicePrincipals/{sp['id']}", {"keyCredentials": [on_sp]}).status_code == 204
    listed_sp = call(g, "GET", f"/v1.0/servicePrincipals/{sp['id']}").json()["keyCredentials"]
    assert [k["displayName"] for k in listed_sp] == ["three"]
    assert call(g, "POST", f"/v1.0/servicePrincipals/{sp['id']}/removeKey",
                {"keyId": listed_sp[0]["keyId"], "proof": proof(k3, sp["id"])}).status_code == 204
    assert not can_sign_in(arm_server, admin.tenant_id, app["appId"], pem_file(tmp_path, k3, c3))
    assert call(g, "GET", f"/v1.0/servicePrincipals/{sp['id']}").json()["keyCredentials"] == []
    assert call(g, "DELETE", f"/v1.0/applications/{app['id']}").status_code == 204


def test_bad_key_credentials_change_nothing(arm_server: AcrLocal) -> None:
    """An application created with a key credential that is refused (400) is not created, and a PATCH whose last
    key credential is refused leaves the application's keys as they were: Graph checks the whole request first."""
    admin = admin_of(arm_server)
    g = Arm(arm_server, admin.token(arm_server, "https://graph.microsoft.com/.default"))
    _, good = make_cert("good")
    _, other = make_cert("other")
    valid = {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(good), "displayName": "good"}
    refused = [
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": base64.b64encode(b"not a certificate").decode()},
        {"type": "Symmetric", "usage": "Verify", "key": key_value(other)},
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(other), "keyId": "not-a-guid"},
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(other),
         "startDateTime": "2030-01-02T00:00:00Z", "endDateTime": "2030-01-01T00:00:00Z"},
        "not an object",
    ]
    for n, bad in enumerate(refused):
        name = f"half-made-{n}"
        r = call(g, "POST", "/v1.0/applications", {"displayName": name, "keyCredentials": [valid, bad]})
        assert r.status_code == 400 and r.json()["error"]["code"] == "Request_BadRequest", r.text
        listed = call(g, "GET", f"/v1.0/applications?$filter=displayName eq '{name}'").json()["value"]
        assert listed == [], f"refused, yet created: {listed}"
    app = call(g, "POST", "/v1.0/applications", {"displayName": "whole", "keyCredentials": [valid]}).json()
    before = call(g, "GET", f"/v1.0/applications/{app['id']}").json()["keyCredentials"]
    assert [k["displayName"] for k in before] == ["good"]
    kept = {"keyId": before[0]["keyId"]}
    for bad in refused:
        r = call(g, "PATCH", f"/v1.0/applications/{app['id']}", {"keyCredentials": [
            {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(other), "displayName": "new"}, bad]})
        assert r.status_code == 400, r.text
        assert call(g, "GET", f"/v1.0/applications/{app['id']}").json()["keyCredentials"] == before
    # a new key whose id another application's key has: refused at its insert, after the removal of the old one
    elsewhere = call(g, "POST", "/v1.0/applications", {"displayName": "elsewhere", "keyCredentials": [
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(other)}]}).json()
    taken = call(g, "GET", f"/v1.0/applications/{elsewhere['id']}").json()["keyCredentials"][0]["keyId"]
    r = call(g, "PATCH", f"/v1.0/applications/{app['id']}", {"keyCredentials": [
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(other), "keyId": taken}]})
    assert r.status_code == 400, r.text
    assert call(g, "GET", f"/v1.0/applications/{app['id']}").json()["keyCredentials"] == before
    r = call(g, "POST", "/v1.0/applications", {"displayName": "taken-key", "keyCredentials": [
        {"type": "AsymmetricX509Cert", "usage": "Verify", "key": key_value(good), "keyId": taken}]})
    assert r.status_code == 400, r.text
    assert call(g, "GET", "/v1.0/applications?$filter=displayName eq 'taken-key'").json()["value"] == []
    assert call(g, "DELETE", f"/v1.0/applications/{elsewhere['id']}").status_code == 204
    assert call(g, "PATCH", f"/v1.0/applications/{app['id']}", {"keyCredentials": [kept]}).status_code == 204
    assert call(g, "DELETE", f"/v1.0/applications/{app['id']}").status_code == 204
    # the administrator's own service principal has no application: its name cannot change, and the rest of such
    # a PATCH is not kept either
    own = call(g, "GET", f"/v1.0/servicePrincipals/{admin.object_id}").json()
    assert call(g, "GET", f"/v1.0/servicePrincipals(appId='{admin.client_id}')").json() == own
    r = call(g, "PATCH", f"/v1.0/servicePrincipals/{own['id']}", {"displayName": "renamed", "notes": "kept?",
                                                                  "keyCredentials": [valid]})
    assert r.status_code == 400, r.text
    after = call(g, "GET", f"/v1.0/servicePrincipals/{own['id']}").json()
    assert (after["notes"], after["keyCredentials"]) == (own["notes"], own["keyCredentials"])
