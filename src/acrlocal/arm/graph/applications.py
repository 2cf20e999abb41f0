"""Graph's ``/applications`` and ``/servicePrincipals``: create, read, update (``PATCH``), delete; their password
credentials (``addPassword`` / ``removePassword``) and certificates (``keyCredentials`` in a ``PATCH``, as az sends
them, or ``addKey`` / ``removeKey`` with a proof of possession); owners (``/owners``, ``$ref``); an application's
federated identity credentials.

An application and its service principal share the directory principal with the same ``appId``: creating the
application creates that principal (so ``addPassword`` works in any order), ``POST /servicePrincipals`` makes it
visible as a service principal, and deleting the application deletes the principal, its credentials and its role
assignments. Each credential is listed on the object it was added to; either authenticates the application.

Who may write: a Global Administrator of the tenant (the local administrator, the user ``up`` creates), or an
owner of the object. Any user may register an application and becomes its owner (Entra's default "users can
register applications"); a service principal that is no administrator may not.
"""

from __future__ import annotations

import base64
import contextlib
import re
import time
from typing import Any

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acrlocal.arm.graph.core import GRAPH_APP_ID, GUID, GraphCall, denied, not_found, now_text, parse_time
from acrlocal.arm.graph.errors import GraphError
from acrlocal.arm.graph.objects import (
    APPLICATION_DEFAULTS,
    graph_sp_id,
    key_credential,
    password_credential,
    reference,
    render_application,
    render_graph_sp,
    render_principal,
    render_service_principal,
    service_principals,
)
from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.identity.directory import Application, IssuerAndSubjectTaken, NewCertificate, Principal

#: Graph's audience for the proof-of-possession token of addKey/removeKey (the old Azure AD Graph app id).
PROOF_AUDIENCE = "00000002-0000-0000-c000-000000000000"
PROOF_MAX_LIFETIME_S = 10 * 60
MAX_FEDERATED_CREDENTIALS = 20
_FIC_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{2,119}\Z")
_SIGN_IN_AUDIENCES = ("AzureADMyOrg", "AzureADMultipleOrgs", "AzureADandPersonalMicrosoftAccount",
                      "PersonalMicrosoftAccount")

# Writable properties: name -> the JSON types Graph accepts for it.
_APP_PROPERTIES: dict[str, tuple[type, ...]] = {
    "identifierUris": (list,), "signInAudience": (str,), "tags": (list,), "notes": (str, type(None)),
    "description": (str, type(None)), "web": (dict,), "publicClient": (dict,), "spa": (dict,),
    "requiredResourceAccess": (list,), "api": (dict,), "appRoles": (list,), "info": (dict,),
    "isFallbackPublicClient": (bool, type(None)), "optionalClaims": (dict, type(None)),
    "groupMembershipClaims": (str, type(None)), "serviceManagementReference": (str, type(None)),
    "tokenEncryptionKeyId": (str, type(None)), "isDeviceOnlyAuthSupported": (bool, type(None)),
    "parentalControlSettings": (dict,), "addIns": (list,), "defaultRedirectUri": (str, type(None)),
}
_SP_PROPERTIES: dict[str, tuple[type, ...]] = {
    "accountEnabled": (bool,), "appRoleAssignmentRequired": (bool,), "tags": (list,), "notes": (str, type(None)),
    "description": (str, type(None)), "homepage": (str, type(None)), "loginUrl": (str, type(None)),
    "logoutUrl": (str, type(None)), "replyUrls": (list,), "preferredSingleSignOnMode": (str, type(None)),
    "notificationEmailAddresses": (list,), "appRoles": (list,), "oauth2PermissionScopes": (list,),
    "info": (dict, type(None)),
}
_IGNORED = {"@odata.type", "@odata.context", "id", "appId", "createdDateTime", "deletedDateTime", "publisherDomain",
            "appDisplayName", "servicePrincipalType", "servicePrincipalNames", "appOwnerOrganizationId",
            "alternativeNames", "signInAudience"}


#: Array properties whose items must be text, and those whose items must be objects.
_TEXT_ITEMS = frozenset({"tags", "replyUrls", "notificationEmailAddresses"})
_OBJECT_ITEMS = frozenset({"requiredResourceAccess", "appRoles", "addIns", "oauth2PermissionScopes"})
#: The nested objects whose ``redirectUris`` decide where a person's sign-in may return (and whether a public
#: client may be signed in to at all), with Graph's name of their type.
_REDIRECTS = {"web": "webApplication", "publicClient": "publicClientApplication", "spa": "spaApplication"}


def _invalid_value(name: str, kind: str) -> GraphError:
    return GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{name}' of resource "
                      f"'{kind}'.")


def _unknown_property(name: str, kind: str) -> GraphError:
    return GraphError(400, "Request_BadRequest", f"Property '{name[:100]}' does not exist as a declared property or "
                      f"extension property of type 'microsoft.graph.{kind}'.")


def _check(body: dict[str, Any], allowed: dict[str, tuple[type, ...]], kind: str, *, skip: set[str]) -> dict[str, Any]:
    """The writable properties of a request body, type-checked; 400 for a property that does not exist."""
    changes: dict[str, Any] = {}
    for name, value in body.items():
        if name in skip or (name in _IGNORED and name not in allowed):
            continue
        types = allowed.get(name)
        if types is None:
            raise _unknown_property(name, kind)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise _invalid_value(name, kind)
        if isinstance(value, list) and ((name in _TEXT_ITEMS and not all(isinstance(v, str) for v in value)) or
                                        (name in _OBJECT_ITEMS and not all(isinstance(v, dict) for v in value))):
            raise _invalid_value(name, kind)
        changes[name] = value
    return changes


def _display_name(value: Any, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise GraphError(400, "Request_BadRequest", "Property 'displayName' is required and must be a string of 1 to "
                         "256 characters.")
    return value


# -- applications -------------------------------------------------------------------------------------------


def _application(call: GraphCall, object_id: str) -> Application:
    """An application of the caller's tenant by object id; also ``applications(appId='...')``. 404 otherwise."""
    key = object_id
    m = re.fullmatch(r"\(appId='([^']+)'\)", object_id, re.IGNORECASE)  # the id comes lower-cased
    app: Application | None = None
    if m:
        key = m.group(1)
        app = call.directory.find_application(app_id=key) if GUID.match(key) else None
    elif GUID.match(object_id):
        with contextlib.suppress(NotFound):
            app = call.directory.application(object_id)
    if app is None or app.tenant_id != call.tenant_id:
        raise not_found(key)
    return app


def _identifier_uris(call: GraphCall, uris: list[Any], app_id: str | None) -> list[str]:
    """Absolute URIs, unique in the tenant (across applications); 400 otherwise."""
    clean: list[str] = []
    for uri in uris:
        if not isinstance(uri, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s*]+", uri) or len(uri) > 512:
            raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property 'identifierUris' of "
                             f"resource 'Application': {str(uri)[:100]!r} is not an absolute URI.")
        if uri.lower() not in [c.lower() for c in clean]:
            clean.append(uri)
    taken = {u.lower() for a in call.directory.applications(call.tenant_id) if a.app_id != app_id
             for u in a.properties.get("identifierUris", [])}
    for uri in clean:
        if uri.lower() in taken:
            raise GraphError(400, "Request_BadRequest", "Another object with the same value for property "
                             "identifierUris already exists.")
    return clean


def _app_changes(call: GraphCall, body: dict[str, Any], app: Application | None) -> dict[str, Any]:
    changes = _check(body, _APP_PROPERTIES, "application", skip={"displayName", "keyCredentials",
                                                                   "passwordCredentials"})
    if "identifierUris" in changes:
        changes["identifierUris"] = _identifier_uris(call, changes["identifierUris"], app.app_id if app else None)
    if "signInAudience" in changes and changes["signInAudience"] not in _SIGN_IN_AUDIENCES:
        raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property 'signInAudience': "
                         f"{changes['signInAudience'][:60]!r}.")
    if body.get("passwordCredentials"):
        raise GraphError(400, "Request_BadRequest", "Password credentials cannot be set with this request; use "
                         "addPassword.")
    for key, kind in _REDIRECTS.items():
        uris = changes.get(key, {}).get("redirectUris", [])
        if not isinstance(uris, list) or not all(isinstance(u, str) for u in uris):
            raise _invalid_value("redirectUris", kind)
    if not isinstance(changes.get("web", {}).get("implicitGrantSettings", {}), dict):
        raise _invalid_value("implicitGrantSettings", "webApplication")
    for key in ("web", "publicClient", "spa"):  # nested objects merge over the defaults
        if key in changes:
            base = (app.properties.get(key) if app else None) or APPLICATION_DEFAULTS[key]
            changes[key] = {**base, **changes[key]}
    return changes


def _app_principal(call: GraphCall, app: Application) -> Principal:
    principal = call.directory.find_principal(app_id=app.app_id)
    if principal is None:  # pragma: no cover - created together, deleted together
        raise not_found(app.id)
    return principal


def create_application(call: GraphCall) -> web.StreamResponse:
    if not call.is_admin() and call.caller.kind != "User":
        raise denied()
    body = call.body()
    name = _display_name(body.get("displayName"), required=True)
    assert name is not None
    changes = _app_changes(call, body, None)
    certificates = [_new_key_credential(spec) for spec in _new_key_credentials(body.get("keyCredentials") or [])]
    try:
        app = call.directory.create_application(call.tenant_id, name, changes, now_text(),
                                                owner_id=call.caller.object_id, certificates=certificates)
    except AlreadyExists as exc:
        raise GraphError(400, "Request_BadRequest", str(exc)) from None
    return call.one("applications/$entity", render_application(call, app), status=201)


def list_applications(call: GraphCall) -> web.StreamResponse:
    apps = call.directory.applications(call.tenant_id)
    return call.page("applications", [render_application(call, a) for a in apps])


def get_application(call: GraphCall) -> web.StreamResponse:
    return call.one("applications/$entity", render_application(call, _application(call, call.params["id"])))


def update_application(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    call.require_admin_or_owner(app.id)
    body = call.body()
    name = _display_name(body.get("displayName"), required=False)
    changes = _app_changes(call, body, app)
    if "keyCredentials" in body:
        _replace_key_credentials(call, _app_principal(call, app), body["keyCredentials"], "application")
    call.directory.update_application(app.id, display_name=name, properties={**app.properties, **changes})
    return web.Response(status=204)


def delete_application(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    call.require_admin_or_owner(app.id)
    principal = call.directory.find_principal(app_id=app.app_id)
    if principal is not None:
        call.store.delete_assignments_of(principal.object_id)
    call.directory.delete_application(app.id)
    return web.Response(status=204)


# -- credentials ------------------------------------------------------------------------------------------


def _add_password(call: GraphCall, principal: Principal, listed_on: str) -> web.StreamResponse:
    body = call.body()
    spec = body.get("passwordCredential") or {}
    if not isinstance(spec, dict):
        raise GraphError(400, "Request_BadRequest", "'passwordCredential' must be an object.")
    display = spec.get("displayName")
    if display is not None and (not isinstance(display, str) or len(display) > 256):
        raise GraphError(400, "Request_BadRequest", "'displayName' must be a string of at most 256 characters.")
    start = time.time()
    if spec.get("startDateTime") is not None:
        start = max(start, parse_time(spec["startDateTime"], "startDateTime"))
    end = parse_time(spec["endDateTime"], "endDateTime") if spec.get("endDateTime") is not None else \
        start + 2 * 365 * 24 * 3600
    if end <= time.time() or end <= start:
        raise GraphError(400, "Request_BadRequest", "'endDateTime' must be later than 'startDateTime' and now.")
    key_id, secret = call.directory.add_secret(principal.object_id, display or "", end - time.time(),
                                               listed_on=listed_on)
    created = next(c for c in call.directory.secrets(principal.object_id) if c.key_id == key_id)
    return web.json_response({"@odata.context": call.context_url("microsoft.graph.passwordCredential"),
                              **password_credential(created), "secretText": secret})


def _remove_password(call: GraphCall, principal: Principal, listed_on: set[str], owner_id: str
                           ) -> web.StreamResponse:
    body = call.body()
    key_id = body.get("keyId")
    if not isinstance(key_id, str) or not GUID.match(key_id):
        raise GraphError(400, "Request_BadRequest", "Property 'keyId' is required and must be a GUID.")
    listed = [c for c in call.directory.secrets(principal.object_id) if c.key_id == key_id.lower()]
    if not listed or listed[0].listed_on not in listed_on:
        raise GraphError(400, "Request_BadRequest", f"No password credential with keyId '{key_id}' exists on "
                         f"'{owner_id}'.")
    call.directory.remove_secret(principal.object_id, key_id)
    return web.Response(status=204)


def _certificate_pem(value: Any) -> tuple[str, x509.Certificate]:
    """A keyCredential's ``key``: base64 of the certificate (DER, or PEM text as az sometimes sends)."""
    if not isinstance(value, str) or not value:
        raise GraphError(400, "Request_BadRequest", "A new key credential needs 'key': the base64 of an X.509 "
                         "certificate.")
    try:
        raw = base64.b64decode(value, validate=False)
        cert = x509.load_pem_x509_certificate(raw) if raw.lstrip().startswith(b"-----BEGIN") else \
            x509.load_der_x509_certificate(raw)
    except ValueError:
        raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'key' of resource "
                         "'KeyCredential': not an X.509 certificate.") from None
    return cert.public_bytes(serialization.Encoding.PEM).decode(), cert


def _new_key_credential(spec: Any) -> NewCertificate:
    """A keyCredential of a request, checked (Graph's 400 ``Request_BadRequest`` for anything wrong); nothing is
    written."""
    if not isinstance(spec, dict):
        raise GraphError(400, "Request_BadRequest", "A key credential must be an object.")
    if spec.get("type", "AsymmetricX509Cert") != "AsymmetricX509Cert" or spec.get("usage", "Verify") != "Verify":
        raise GraphError(400, "Request_BadRequest", "Only key credentials of type 'AsymmetricX509Cert' with usage "
                         "'Verify' are supported.")
    pem, cert = _certificate_pem(spec.get("key"))
    key_id = spec.get("keyId") or None
    if key_id is not None and (not isinstance(key_id, str) or not GUID.match(key_id)):
        raise GraphError(400, "Request_BadRequest", "'keyId' must be a GUID.")
    starts = parse_time(spec["startDateTime"], "startDateTime") if spec.get("startDateTime") else None
    expires = parse_time(spec["endDateTime"], "endDateTime") if spec.get("endDateTime") else None
    slack = 24 * 3600
    if expires is not None and expires > cert.not_valid_after_utc.timestamp() + slack:
        raise GraphError(400, "Request_BadRequest", "Key credential end date is invalid: it is later than the "
                         "certificate's own expiry.")
    if starts is not None and expires is not None and expires <= starts:
        raise GraphError(400, "Request_BadRequest", "Key credential end date is invalid: it is not after its start.")
    display = spec.get("displayName")
    return NewCertificate(pem, key_id, display if isinstance(display, str) else "", starts, expires)


def _add_key_credential(call: GraphCall, principal: Principal, spec: Any, listed_on: str) -> str:
    new = _new_key_credential(spec)
    try:
        entry = call.directory.add_certificate(principal.object_id, new.certificate_pem, key_id=new.key_id,
                                               display_name=new.display_name, starts=new.starts,
                                               expires=new.expires, listed_on=listed_on)
    except AlreadyExists as exc:
        raise GraphError(400, "Request_BadRequest", str(exc)) from None
    return entry.key_id


def _new_key_credentials(specs: Any) -> list[Any]:
    """``keyCredentials`` of a request: a list of at most 50 (400 otherwise)."""
    if not isinstance(specs, list) or len(specs) > 50:
        raise GraphError(400, "Request_BadRequest", "'keyCredentials' must be a list of at most 50 key credentials.")
    return specs


def _replace_key_credentials(call: GraphCall, principal: Principal, specs: Any, listed_on: str) -> None:
    """``keyCredentials`` in a PATCH replace the object's set: entries naming an existing ``keyId`` keep it, new
    ones need ``key``; existing ones left out are removed. Everything is checked before anything changes, and the
    change is one transaction."""
    current = {c.key_id for c in call.directory.certificates(principal.object_id) if c.listed_on == listed_on}
    keep: set[str] = set()
    new: list[NewCertificate] = []
    for spec in _new_key_credentials(specs):
        key_id = str(spec.get("keyId") or "").lower() if isinstance(spec, dict) else ""
        if key_id in current and not spec.get("key"):
            keep.add(key_id)
        else:
            new.append(_new_key_credential(spec))
    try:
        call.directory.replace_certificates(principal.object_id, listed_on, keep, new)
    except AlreadyExists as exc:
        raise GraphError(400, "Request_BadRequest", str(exc)) from None


def _verify_proof(call: GraphCall, principal: Principal, object_id: str, proof: Any) -> None:
    """addKey/removeKey's proof of possession: a JWT signed (RS256) with the private key of one of the object's
    current certificates, ``aud`` Graph's proof audience, ``iss`` the object's id, at most 10 minutes long."""
    if not isinstance(proof, str) or not proof:
        raise GraphError(400, "Request_BadRequest", "Property 'proof' is required: a JWT signed with an existing "
                         "certificate's key.")
    now = time.time()
    certs = [c for c in call.directory.certificates(principal.object_id) if c.valid_at(now)]
    if not certs:
        raise GraphError(400, "Request_BadRequest", "The object has no valid certificate to prove possession of; "
                         "use the update operation (keyCredentials) instead.")
    for cert in certs:
        try:
            claims = jwt.decode(proof, cert.certificate.public_key(), algorithms=["RS256", "PS256"],  # type: ignore[arg-type]
                                audience=PROOF_AUDIENCE, options={"require": ["aud", "iss", "nbf", "exp"]})
        except jwt.PyJWTError:
            continue
        if str(claims["iss"]).lower() != object_id.lower():
            break
        if float(claims["exp"]) - float(claims["nbf"]) > PROOF_MAX_LIFETIME_S + 60:
            break
        return
    raise GraphError(400, "Request_BadRequest", "Proof of possession is invalid: it must be a current JWT for "
                     f"audience '{PROOF_AUDIENCE}', issued by '{object_id}', lasting at most 10 minutes, signed "
                     "with the key of one of its current certificates.")


def _may_roll_keys(call: GraphCall, principal: Principal, object_id: str) -> None:
    """addKey/removeKey: the application itself (with its proof), an administrator or an owner."""
    if call.caller.object_id != principal.object_id:
        call.require_admin_or_owner(object_id)


def _add_key(call: GraphCall, principal: Principal, listed_on: str, object_id: str) -> web.StreamResponse:
    _may_roll_keys(call, principal, object_id)
    body = call.body()
    _verify_proof(call, principal, object_id, body.get("proof"))
    if body.get("passwordCredential"):
        raise GraphError(400, "Request_BadRequest", "Only certificates can be added with addKey.")
    key_id = _add_key_credential(call, principal, body.get("keyCredential"), listed_on)
    added = next(c for c in call.directory.certificates(principal.object_id) if c.key_id == key_id)
    return web.json_response({"@odata.context": call.context_url("microsoft.graph.keyCredential"),
                              **key_credential(added)})


def _remove_key(call: GraphCall, principal: Principal, listed_on: str, object_id: str) -> web.StreamResponse:
    _may_roll_keys(call, principal, object_id)
    body = call.body()
    key_id = body.get("keyId")
    if not isinstance(key_id, str) or not GUID.match(key_id):
        raise GraphError(400, "Request_BadRequest", "Property 'keyId' is required and must be a GUID.")
    _verify_proof(call, principal, object_id, body.get("proof"))
    if not [c for c in call.directory.certificates(principal.object_id) if c.key_id == key_id.lower()]:
        raise GraphError(404, "Request_ResourceNotFound", f"No key credential with keyId '{key_id}' exists on "
                         f"'{object_id}'.")
    call.directory.remove_certificate(principal.object_id, key_id)
    return web.Response(status=204)


def application_add_password(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    call.require_admin_or_owner(app.id)
    return _add_password(call, _app_principal(call, app), "application")


def application_remove_password(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    call.require_admin_or_owner(app.id)
    return _remove_password(call, _app_principal(call, app), {"application"}, app.id)


def application_add_key(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    return _add_key(call, _app_principal(call, app), "application", app.id)


def application_remove_key(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    return _remove_key(call, _app_principal(call, app), "application", app.id)


# -- owners -------------------------------------------------------------------------------------------------


def _render_owners(call: GraphCall, object_id: str) -> web.StreamResponse:
    return call.page("directoryObjects", [render_principal(call, p) for p in call.directory.owners(object_id)])


def _add_owner(call: GraphCall, object_id: str) -> web.StreamResponse:
    call.require_admin_or_owner(object_id)
    owner = call.principal(reference(call.body()))
    if owner.kind == "Group":
        raise GraphError(400, "Request_BadRequest", "A group cannot own a directory object.")
    if not call.directory.add_owner(object_id, owner.object_id):
        raise GraphError(400, "Request_BadRequest", "One or more added object references already exist for the "
                         "following modified properties: 'owners'.")
    return web.Response(status=204)


def _remove_owner(call: GraphCall, object_id: str) -> web.StreamResponse:
    call.require_admin_or_owner(object_id)
    try:
        call.directory.remove_owner(object_id, call.params["owner"])
    except NotFound:
        raise not_found(call.params["owner"]) from None
    return web.Response(status=204)


def application_owners(call: GraphCall) -> web.StreamResponse:
    return _render_owners(call, _application(call, call.params["id"]).id)


def application_add_owner(call: GraphCall) -> web.StreamResponse:
    return _add_owner(call, _application(call, call.params["id"]).id)


def application_remove_owner(call: GraphCall) -> web.StreamResponse:
    return _remove_owner(call, _application(call, call.params["id"]).id)


# -- federated identity credentials ----------------------------------------------------------------------


def _render_fic(fc: Any) -> dict[str, Any]:
    return {"id": fc.id, "name": fc.name, "issuer": fc.issuer, "subject": fc.subject,
            "audiences": list(fc.audiences), "description": None}


def _fic_fields(body: dict[str, Any], current: Any | None) -> tuple[str, str, str, list[str]]:
    name = body.get("name", current.name if current else None)
    issuer = body.get("issuer", current.issuer if current else None)
    subject = body.get("subject", current.subject if current else None)
    audiences = body.get("audiences", list(current.audiences) if current else ["api://AzureADTokenExchange"])
    if not isinstance(name, str) or not _FIC_NAME.match(name):
        raise GraphError(400, "Request_BadRequest", "Property 'name' must be 3 to 120 letters, digits, '-' or '_', "
                         "starting with a letter or digit.")
    for label, value in (("issuer", issuer), ("subject", subject)):
        if not isinstance(value, str) or not value or len(value) > 600:
            raise GraphError(400, "Request_BadRequest", f"Property '{label}' is required (1 to 600 characters).")
    if not isinstance(audiences, list) or len(audiences) != 1 or not isinstance(audiences[0], str):
        raise GraphError(400, "Request_BadRequest", "Property 'audiences' must hold exactly one audience.")
    assert isinstance(issuer, str) and isinstance(subject, str)
    return name, issuer, subject, audiences


def _fic(call: GraphCall, principal: Principal, id_or_name: str) -> Any:
    for fc in call.directory.federated_credentials(principal.object_id):
        if fc.id == id_or_name.lower() or fc.name == id_or_name:
            return fc
    raise not_found(id_or_name)


def list_fics(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    items = [_render_fic(fc) for fc in call.directory.federated_credentials(_app_principal(call, app).object_id)]
    return call.page(f"applications('{app.id}')/federatedIdentityCredentials", items)


def create_fic(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    call.require_admin_or_owner(app.id)
    principal = _app_principal(call, app)
    name, issuer, subject, audiences = _fic_fields(call.body(), None)
    existing = call.directory.federated_credentials(principal.object_id)
    if len(existing) >= MAX_FEDERATED_CREDENTIALS:
        raise GraphError(400, "Request_BadRequest", f"An application has at most {MAX_FEDERATED_CREDENTIALS} "
                         "federated identity credentials.")
    try:
        fc = call.directory.add_federated_credential(principal.object_id, name, issuer, subject, audiences)
    except IssuerAndSubjectTaken as exc:
        raise _issuer_taken(exc) from None
    except AlreadyExists:
        raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", f"FederatedIdentityCredential with name "
                         f"{name} already exists.") from None
    return call.one(f"applications('{app.id}')/federatedIdentityCredentials/$entity", _render_fic(fc), status=201)


def _issuer_taken(exc: IssuerAndSubjectTaken) -> GraphError:
    """Graph's refusal of an issuer and subject another credential of the application has (400, as Entra's)."""
    return GraphError(400, "InvalidFederatedIdentityCredentialValue", "The combination of issuer and subject must "
                      f"be unique for the application. Issuer {exc.issuer} and Subject: {exc.subject} already exist. "
                      f"paramName: FederatedIdentityCredential.Subject, paramValue: {exc.subject}")


def get_fic(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    fc = _fic(call, _app_principal(call, app), call.params["fic"])
    return call.one(f"applications('{app.id}')/federatedIdentityCredentials/$entity", _render_fic(fc))


def update_fic(call: GraphCall) -> web.StreamResponse:
    """PATCH of a federated identity credential: the whole body is checked first (400 for a bad field, a new name,
    or the issuer and subject of another credential of the application, as a create does), then the credential
    changes in place and keeps its id."""
    app = _application(call, call.params["id"])
    call.require_admin_or_owner(app.id)
    principal = _app_principal(call, app)
    fc = _fic(call, principal, call.params["fic"])
    body = call.body()
    if "name" in body and body["name"] != fc.name:
        raise GraphError(400, "Request_BadRequest", "The name of a federated identity credential cannot change.")
    _, issuer, subject, audiences = _fic_fields(body, fc)
    try:
        call.directory.update_federated_credential(principal.object_id, fc.id, issuer, subject, audiences)
    except NotFound:
        raise not_found(call.params["fic"]) from None
    except IssuerAndSubjectTaken as exc:
        raise _issuer_taken(exc) from None
    return web.Response(status=204)


def delete_fic(call: GraphCall) -> web.StreamResponse:
    app = _application(call, call.params["id"])
    call.require_admin_or_owner(app.id)
    principal = _app_principal(call, app)
    fc = _fic(call, principal, call.params["fic"])
    call.directory.delete_federated_credential(principal.object_id, fc.name)
    return web.Response(status=204)


# -- service principals ---------------------------------------------------------------------------------------


def _service_principal(call: GraphCall, object_id: str) -> Principal:
    m = re.fullmatch(r"\(appId='([^']+)'\)", object_id, re.IGNORECASE)  # the id comes lower-cased
    wanted = (m.group(1) if m else object_id).lower()
    for p in service_principals(call):
        if (p.app_id if m else p.object_id) == wanted:
            return p
    raise not_found(wanted)


def _writable_sp(call: GraphCall, p: Principal) -> Application | None:
    """The service principal's application, after checking the caller may change the service principal (an
    administrator, or an owner of it or of its application)."""
    app = call.directory.find_application(app_id=p.app_id)
    if call.is_admin() or call.directory.is_owner(p.object_id, call.caller.object_id):
        return app
    if app is not None and call.directory.is_owner(app.id, call.caller.object_id):
        return app
    raise denied()


def create_service_principal(call: GraphCall) -> web.StreamResponse:
    body = call.body()
    app_id = body.get("appId")
    if not isinstance(app_id, str) or not GUID.match(app_id):
        raise GraphError(400, "Request_BadRequest", "Property 'appId' is required and must be a GUID.")
    app = call.directory.find_application(app_id=app_id)
    if app is None or app.tenant_id != call.tenant_id:
        raise GraphError(400, "Request_BadRequest", f"The appId '{app_id}' of the service principal does not "
                         "reference a valid application object.")
    call.require_admin_or_owner(app.id)
    if app.service_principal:
        raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", "The service principal for this application "
                         "already exists.")
    changes = _check(body, _SP_PROPERTIES, "servicePrincipal", skip={"appId", "displayName"})
    try:
        principal = call.directory.add_service_principal(app.id, changes, owner_id=call.caller.object_id)
    except AlreadyExists:
        raise GraphError(409, "Request_MultipleObjectsWithSameKeyValue", "The service principal for this "
                         "application already exists.") from None
    app = call.directory.application(app.id)
    return call.one("servicePrincipals/$entity", render_service_principal(call, principal, app), status=201)


def list_service_principals(call: GraphCall) -> web.StreamResponse:
    items = [render_graph_sp(call.tenant_id)] + [render_service_principal(call, p) for p in service_principals(call)]
    return call.page("servicePrincipals", items)


def get_service_principal(call: GraphCall) -> web.StreamResponse:
    wanted = call.params["id"].lower()
    if wanted in (graph_sp_id(call.tenant_id), f"(appid='{GRAPH_APP_ID}')"):
        return call.one("servicePrincipals/$entity", render_graph_sp(call.tenant_id))
    return call.one("servicePrincipals/$entity", render_service_principal(call, _service_principal(call, wanted)))


def update_service_principal(call: GraphCall) -> web.StreamResponse:
    p = _service_principal(call, call.params["id"])
    app = _writable_sp(call, p)
    body = call.body()
    name = _display_name(body.get("displayName"), required=False)
    changes = _check(body, _SP_PROPERTIES, "servicePrincipal", skip={"displayName", "keyCredentials",
                                                                      "passwordCredentials"})
    if name is not None and app is None:  # refused before anything is written
        raise GraphError(400, "Request_BadRequest", "The display name of this service principal cannot change.")
    if "keyCredentials" in body:
        _replace_key_credentials(call, p, body["keyCredentials"], "servicePrincipal")
    if changes:
        current = call.directory.service_principal_properties(p.object_id)
        call.directory.set_service_principal_properties(p.object_id, {**current, **changes})
    return web.Response(status=204)


def delete_service_principal(call: GraphCall) -> web.StreamResponse:
    p = _service_principal(call, call.params["id"])
    app = _writable_sp(call, p)
    if app is None:
        raise GraphError(400, "Request_BadRequest", "This service principal has no application of its own (a managed "
                         "identity, or the local administrator) and cannot be deleted through Graph.")
    call.store.delete_assignments_of(p.object_id)
    for secret in call.directory.secrets(p.object_id):
        if secret.listed_on == "servicePrincipal":
            call.directory.remove_secret(p.object_id, secret.key_id)
    for cert in call.directory.certificates(p.object_id):
        if cert.listed_on == "servicePrincipal":
            call.directory.remove_certificate(p.object_id, cert.key_id)
    for owner in call.directory.owners(p.object_id):
        call.directory.remove_owner(p.object_id, owner.object_id)
    call.directory.set_service_principal_properties(p.object_id, {})
    call.directory.update_application(app.id, service_principal=False)
    return web.Response(status=204)


def sp_add_password(call: GraphCall) -> web.StreamResponse:
    p = _service_principal(call, call.params["id"])
    _writable_sp(call, p)
    if p.kind == "ManagedIdentity":
        raise GraphError(400, "Request_BadRequest", "A managed identity cannot have credentials.")
    return _add_password(call, p, "servicePrincipal")


def sp_remove_password(call: GraphCall) -> web.StreamResponse:
    p = _service_principal(call, call.params["id"])
    app = _writable_sp(call, p)
    listed_on = {"servicePrincipal"} if app is not None else {"servicePrincipal", "application"}
    return _remove_password(call, p, listed_on, p.object_id)


def sp_add_key(call: GraphCall) -> web.StreamResponse:
    p = _service_principal(call, call.params["id"])
    return _add_key(call, p, "servicePrincipal", p.object_id)


def sp_remove_key(call: GraphCall) -> web.StreamResponse:
    p = _service_principal(call, call.params["id"])
    return _remove_key(call, p, "servicePrincipal", p.object_id)


def sp_owners(call: GraphCall) -> web.StreamResponse:
    return _render_owners(call, _service_principal(call, call.params["id"]).object_id)


def sp_add_owner(call: GraphCall) -> web.StreamResponse:
    return _add_owner(call, _service_principal(call, call.params["id"]).object_id)


def sp_remove_owner(call: GraphCall) -> web.StreamResponse:
    return _remove_owner(call, _service_principal(call, call.params["id"]).object_id)

