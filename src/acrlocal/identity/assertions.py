"""Client assertions at the token endpoint: certificate-signed assertions and federated (workload identity) ones.

Both arrive as ``client_assertion`` with ``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:
jwt-bearer``. An assertion whose ``iss`` is the client id is a *certificate assertion*: it is verified with the
public key of one of the client's registered certificates, chosen by the ``x5t`` / ``x5t#S256`` header (never a
key or certificate carried in the token: ``x5c``, ``jwk``, ``jku`` and ``x5u`` are ignored). Any other assertion is a
*federated assertion*: it must match one of the client's federated identity credentials (issuer, subject and
audience, compared exactly), and its signature is checked with the keys of the acrlocal tenant that issued it,
taken from our own :class:`~acrlocal.identity.keys.KeyRing` (the only issuers acrlocal trusts).

Every refusal raises :class:`~acrlocal.identity.errors.OAuthError` with Entra's AADSTS code; nothing is written
except the replay cache entry of an accepted certificate assertion.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from acrlocal.errors import NotFound
from acrlocal.identity import store
from acrlocal.identity.directory import Certificate, Directory, FederatedCredential, Principal
from acrlocal.identity.errors import OAuthError
from acrlocal.identity.tokens import InvalidToken, TokenIssuer
from acrlocal.storage.sql import racing_insert

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CERT_ALGORITHMS = ("RS256", "PS256")
CLOCK_SKEW_S = 300  # Entra allows five minutes of clock skew on assertions
DOCS = "Review the documentation at https://learn.microsoft.com/entra/identity-platform/certificate-credentials ."


def _b64url_to_hex(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    except (binascii.Error, ValueError):
        return None


def _unverified(assertion: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return jwt.get_unverified_header(assertion), jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OAuthError("invalid_client", "JWT token is invalid or malformed.", 50027, status=401) from None


def is_certificate_assertion(assertion: str, client_id: str) -> bool:
    """True if the assertion claims to be issued by the client itself (``iss`` = client id)."""
    _, claims = _unverified(assertion)
    return str(claims.get("iss", "")).lower() == client_id.lower()


def _time_range_error(claims: dict[str, Any], now: float) -> OAuthError:
    return OAuthError("invalid_client", f"Client assertion is not within its valid time range. Current time: "
                      f"{int(now)}, assertion valid from {claims.get('nbf', claims.get('iat'))}, expiry time of "
                      f"assertion {claims.get('exp')}. {DOCS}", 700024, status=401)


class ReplayCache:
    """``jti`` values of accepted certificate assertions, kept until the assertion expires, in the
    ``assertion_replays`` table (so that every process and replica refuses an assertion any of them accepted).

    An entry is keyed by client, ``jti`` and the resource asked for: msal signs one assertion and reuses it for
    up to nine minutes across resources, so a second resource with the same assertion is allowed, while the
    same assertion replayed for the same resource is refused. A claim is one statement (an insert that updates
    only an expired entry), so two replicas claiming one assertion at once accept it once. Expired entries are
    deleted now and then by the claims themselves.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._claims = 0

    def claim(self, client_id: str, jti: str, resource: str, expires: float, now: float) -> bool:
        """Record the use; False if it was already recorded and has not expired."""
        key = hashlib.sha256(json.dumps([client_id.lower(), jti, resource]).encode("utf-8", "surrogatepass"))
        table = store.assertion_replays
        with self.engine.begin() as conn:
            self._claims += 1
            if self._claims % 1000 == 0:
                conn.execute(sa.delete(table).where(table.c.expires < now))
            insert = racing_insert(conn, table).values(key=key.hexdigest(), expires=expires)
            claimed = conn.execute(insert.on_conflict_do_update(
                index_elements=[table.c.key], set_={"expires": expires}, where=table.c.expires < now,
            ).returning(table.c.key)).first()
            return claimed is not None


def _match_certificate(header: dict[str, Any], certificates: list[Certificate]) -> Certificate | None:
    sha256 = header.get("x5t#S256")
    sha1 = header.get("x5t")
    for cert in certificates:
        if isinstance(sha256, str) and _b64url_to_hex(sha256) == cert.thumbprint_sha256:
            return cert
        if isinstance(sha1, str) and _b64url_to_hex(sha1) == cert.thumbprint_sha1:
            return cert
    return None


def verify_certificate_assertion(directory: Directory, principal: Principal, assertion: str,
                                 audiences: Iterable[str], resource: str, replay: ReplayCache,
                                 now: float | None = None) -> dict[str, Any]:
    """The claims of a valid certificate assertion by ``principal``; :class:`OAuthError` otherwise.

    ``audiences`` are the token endpoint URLs the assertion may name as ``aud``.
    """
    now = time.time() if now is None else now
    header, unverified = _unverified(assertion)
    alg = header.get("alg")
    if alg not in CERT_ALGORITHMS:
        raise OAuthError("invalid_client", f"Client assertion algorithm {alg!r} is not supported; expected one of "
                         f"{', '.join(CERT_ALGORITHMS)}.", 700027, status=401)
    thumb = header.get("x5t#S256") or header.get("x5t")
    if not thumb:
        raise OAuthError("invalid_client", "Client assertion header must name the certificate with 'x5t' or "
                         f"'x5t#S256'. {DOCS}", 700027, status=401)
    cert = _match_certificate(header, directory.certificates(principal.object_id))
    if cert is None:
        raise OAuthError("invalid_client", f"The certificate with identifier used to sign the client assertion is not "
                         f"registered on application. [Reason - The key was not found., Thumbprint of key used by "
                         f"client: '{thumb}', Please visit the Azure Portal, Graph Explorer or directly use MS Graph "
                         f"to see configured keys for app Id '{principal.app_id}'.]", 700027, status=401)
    if not cert.valid_at(now):
        raise OAuthError("invalid_client", f"Client assertion contains an invalid signature. [Reason - The key used is "
                         f"expired., Thumbprint of key used by client: '{thumb}']", 700027, status=401)
    if str(unverified.get("iss", "")).lower() != principal.app_id or \
            str(unverified.get("sub", "")).lower() != principal.app_id:
        raise OAuthError("invalid_client", f"Client assertion application identifier doesn't match 'client_id' "
                         f"parameter. {DOCS}", 700021, status=401)
    try:
        claims: dict[str, Any] = jwt.decode(
            assertion, cert.certificate.public_key(), algorithms=[str(alg)],  # type: ignore[arg-type]
            options={"require": ["exp", "aud", "iss", "sub", "jti"], "verify_aud": False, "verify_exp": False,
                     "verify_nbf": False, "verify_iat": False})
    except jwt.MissingRequiredClaimError as exc:
        raise OAuthError("invalid_client", f"Client assertion is missing the required claim '{exc.claim}'. {DOCS}",
                         50027, status=401) from None
    except jwt.InvalidSignatureError:
        raise OAuthError("invalid_client", f"Client assertion contains an invalid signature. [Reason - The provided "
                         f"signature value did not match the expected signature value., Thumbprint of key used by "
                         f"client: '{thumb}']", 700027, status=401) from None
    except jwt.PyJWTError:
        raise OAuthError("invalid_client", "JWT token is invalid or malformed.", 50027, status=401) from None
    _check_time(claims, now)
    allowed = {a.lower() for a in audiences}
    aud = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    if not any(isinstance(a, str) and a.lower() in allowed for a in aud):
        raise OAuthError("invalid_client", f"Client assertion audience claim does not match Realm issuer. The "
                         f"audience {claims['aud']!r} is not the token endpoint. {DOCS}", 700023, status=401)
    if not replay.claim(principal.app_id, str(claims["jti"]), resource, float(claims["exp"]) + CLOCK_SKEW_S, now):
        raise OAuthError("invalid_client", f"The client assertion with jti '{claims['jti']}' has already been used. "
                         f"Sign a new assertion for each request. {DOCS}", 50027, status=401)
    return claims


def _check_time(claims: dict[str, Any], now: float) -> None:
    try:
        exp = float(claims["exp"])
        nbf = float(claims.get("nbf", claims.get("iat", 0)) or 0)
    except (TypeError, ValueError):
        raise OAuthError("invalid_client", "JWT token is invalid or malformed.", 50027, status=401) from None
    if exp + CLOCK_SKEW_S < now or nbf - CLOCK_SKEW_S > now:
        raise _time_range_error(claims, now)


def _tenant_exists(directory: Directory, tenant_id: str) -> bool:
    try:
        directory.tenant(tenant_id)
    except NotFound:
        return False
    return True


@dataclass(frozen=True)
class FederatedMatch:
    credential: FederatedCredential
    claims: dict[str, Any]


def verify_federated_assertion(directory: Directory, issuer: TokenIssuer, principal: Principal, assertion: str,
                               now: float | None = None) -> FederatedMatch:
    """The federated credential of ``principal`` the assertion matches, after checking its signature with the
    issuing acrlocal tenant's keys. :class:`OAuthError` (AADSTS70021 and friends) otherwise."""
    now = time.time() if now is None else now
    header, unverified = _unverified(assertion)
    iss, sub, aud = unverified.get("iss"), unverified.get("sub"), unverified.get("aud")
    audiences = aud if isinstance(aud, list) else [aud]
    credentials = directory.federated_credentials(principal.object_id)
    by_issuer = [c for c in credentials if c.issuer == iss]
    if not by_issuer:
        raise OAuthError("invalid_request", f"No matching federated identity record found for presented assertion "
                         f"issuer '{iss}'. Please check your federated identity credential Subject, Audience and "
                         f"Issuer against the presented assertion.", 700211)
    by_subject = [c for c in by_issuer if c.subject == sub]
    matches = [c for c in by_subject if any(a in c.audiences for a in audiences)]
    if not matches:
        raise OAuthError("invalid_request", f"No matching federated identity record found for presented assertion. "
                         f"Assertion Issuer: '{iss}'. Assertion Subject: '{sub}'. Assertion Audience: "
                         f"'{','.join(str(a) for a in audiences)}'.", 70021)
    credential = matches[0]
    if header.get("alg") != "RS256":
        raise OAuthError("invalid_client", f"Client assertion algorithm {header.get('alg')!r} is not accepted from "
                         f"issuer '{iss}' (expected RS256).", 700027, status=401)
    tid = unverified.get("tid")
    if not isinstance(tid, str) or iss != issuer.issuer(tid.lower()) or not _tenant_exists(directory, tid):
        raise OAuthError("invalid_request", f"The issuer '{iss}' is not an acrlocal tenant; acrlocal only trusts "
                         "assertions from its own tenants.", 50166)
    try:
        claims = issuer.verify(assertion, list(credential.audiences), tenant_id=tid)
    except InvalidToken as exc:
        if "expired" in str(exc).lower() or "not yet valid" in str(exc).lower():
            raise _time_range_error(unverified, now) from None
        raise OAuthError("invalid_client", f"Client assertion failed signature validation. [Reason - {exc}]",
                         700027, status=401) from None
    return FederatedMatch(credential, claims)
