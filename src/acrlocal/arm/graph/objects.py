"""Directory objects as Graph renders them (users, groups, service principals, applications), Microsoft Graph's own
service principal, and the calls that take any kind of object: ``directoryObjects/getByIds``,
``checkMemberGroups`` / ``getMemberGroups``, and ``$ref`` bodies.

Renderings hold Graph's default properties; keys starting with ``_`` are properties Graph returns only when
asked with ``$select`` (``accountEnabled`` of a user), which ``$filter`` may still use.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from aiohttp import web

from acrlocal.arm.graph.core import GRAPH_APP_ID, GUID, GraphCall, not_found, utc
from acrlocal.arm.graph.errors import GraphError
from acrlocal.identity.directory import Application, Certificate, Group, PasswordCredential, Principal, User

MICROSOFT_SERVICES_TENANT = "f8cdef31-a31e-4b4a-93e4-5f571e91255a"
_PERMISSION_SCOPES = [  # (id, value, description) of a few of Microsoft Graph's delegated permissions
    ("e1fe6dd8-ba31-4d61-89e7-88639da4683d", "User.Read", "Sign in and read user profile"),
    ("06da0dbc-49e2-44d2-8312-53f166ab848a", "Directory.Read.All", "Read directory data"),
    ("0e263e50-5827-48a4-b97c-d940288653c7", "Directory.AccessAsUser.All", "Access directory as the signed in user"),
]
_APP_ROLES = [  # (id, value, description) of a few of Microsoft Graph's application permissions
    ("1bfefb4e-e0b5-418b-a88f-73c46d2cc8e9", "Application.ReadWrite.All", "Read and write all applications"),
    ("7ab1d382-f21e-4acd-a863-ba3e13f7da61", "Directory.Read.All", "Read directory data"),
    ("df021288-bdef-4463-88db-98f22de89214", "User.Read.All", "Read all users' full profiles"),
]


def graph_sp_id(tenant_id: str) -> str:
    """The object id of Microsoft Graph's service principal in a tenant (fixed per tenant)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"acrlocal:microsoft-graph:{tenant_id}"))


def render_graph_sp(tenant_id: str) -> dict[str, Any]:
    """Microsoft Graph's own service principal, which every Entra tenant has (read-only here)."""
    return {
        "@odata.type": "#microsoft.graph.servicePrincipal", "id": graph_sp_id(tenant_id), "appId": GRAPH_APP_ID,
        "displayName": "Microsoft Graph", "appDisplayName": "Microsoft Graph", "servicePrincipalType": "Application",
        "appOwnerOrganizationId": MICROSOFT_SERVICES_TENANT, "accountEnabled": True, "alternativeNames": [],
        "servicePrincipalNames": [GRAPH_APP_ID, "https://graph.microsoft.com", "https://graph.microsoft.com/",
                                  f"{GRAPH_APP_ID}/ags.windows.net", "https://ags.windows.net"],
        "appRoleAssignmentRequired": False, "tags": [], "notes": None, "description": None, "homepage": None,
        "replyUrls": [], "signInAudience": "AzureADMultipleOrgs", "keyCredentials": [], "passwordCredentials": [],
        "appRoles": [{"id": i, "value": v, "displayName": d, "description": d, "isEnabled": True, "origin":
                      "Application", "allowedMemberTypes": ["Application"]} for i, v, d in _APP_ROLES],
        "oauth2PermissionScopes": [{"id": i, "value": v, "adminConsentDisplayName": d, "adminConsentDescription": d,
                                    "userConsentDisplayName": d, "userConsentDescription": d, "isEnabled": True,
                                    "type": "User"} for i, v, d in _PERMISSION_SCOPES],
        "info": None, "preferredSingleSignOnMode": None, "servicePrincipalNamesWithProtocols": [],
    }


def password_credential(c: PasswordCredential) -> dict[str, Any]:
    return {"customKeyIdentifier": None, "displayName": c.display_name or None, "endDateTime": utc(c.expires),
            "hint": c.hint, "keyId": c.key_id, "secretText": None, "startDateTime": utc(c.created)}


def key_credential(c: Certificate) -> dict[str, Any]:
    starts = c.starts if c.starts is not None else c.certificate.not_valid_before_utc.timestamp()
    expires = c.expires if c.expires is not None else c.certificate.not_valid_after_utc.timestamp()
    return {"customKeyIdentifier": c.thumbprint_sha1.upper(), "displayName": c.display_name or None,
            "endDateTime": utc(expires), "key": None, "keyId": c.key_id, "startDateTime": utc(starts),
            "type": "AsymmetricX509Cert", "usage": "Verify"}


def credentials_of(call: GraphCall, principal: Principal | None, listed_on: str, *, has_application: bool = True
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(passwordCredentials, keyCredentials)`` of an application or service principal, newest first. A principal
    with no application object (the local administrator) lists every credential on its service principal."""
    if principal is None:
        return [], []
    wanted = {listed_on} if has_application else {"application", "servicePrincipal"}
    passwords = [password_credential(c) for c in call.directory.secrets(principal.object_id)
                 if c.listed_on in wanted]
    keys = [key_credential(c) for c in call.directory.certificates(principal.object_id) if c.listed_on in wanted]
    return passwords, keys


APPLICATION_DEFAULTS: dict[str, Any] = {
    "identifierUris": [], "signInAudience": "AzureADMyOrg", "tags": [], "notes": None, "description": None,
    "web": {"homePageUrl": None, "logoutUrl": None, "redirectUris": [], "redirectUriSettings": [],
            "implicitGrantSettings": {"enableAccessTokenIssuance": False, "enableIdTokenIssuance": False}},
    "publicClient": {"redirectUris": []}, "spa": {"redirectUris": []}, "requiredResourceAccess": [],
    "api": {"acceptMappedClaims": None, "knownClientApplications": [], "oauth2PermissionScopes": [],
            "preAuthorizedApplications": [], "requestedAccessTokenVersion": None},
    "appRoles": [], "info": {"logoUrl": None, "marketingUrl": None, "privacyStatementUrl": None,
                             "supportUrl": None, "termsOfServiceUrl": None},
    "isFallbackPublicClient": None, "optionalClaims": None, "groupMembershipClaims": None,
    "serviceManagementReference": None, "tokenEncryptionKeyId": None, "addIns": [], "defaultRedirectUri": None,
    "isDeviceOnlyAuthSupported": None, "parentalControlSettings": {"countriesBlockedForMinors": [],
                                                                     "legalAgeGroupRule": "Allow"},
}


def render_application(call: GraphCall, app: Application) -> dict[str, Any]:
    principal = call.directory.find_principal(app_id=app.app_id)
    passwords, keys = credentials_of(call, principal, "application")
    return {"@odata.type": "#microsoft.graph.application", "id": app.id, "appId": app.app_id,
            "displayName": app.display_name, "createdDateTime": app.created, "deletedDateTime": None,
            "publisherDomain": _domain(call), **APPLICATION_DEFAULTS, **app.properties,
            "passwordCredentials": passwords, "keyCredentials": keys}


SERVICE_PRINCIPAL_DEFAULTS: dict[str, Any] = {
    "accountEnabled": True, "appRoleAssignmentRequired": False, "tags": [], "notes": None, "description": None,
    "homepage": None, "loginUrl": None, "logoutUrl": None, "replyUrls": [], "preferredSingleSignOnMode": None,
    "notificationEmailAddresses": [], "appRoles": [], "oauth2PermissionScopes": [], "info": None,
}


def render_service_principal(call: GraphCall, p: Principal, app: Application | None = None) -> dict[str, Any]:
    managed = p.kind == "ManagedIdentity"
    app = app if app is not None else (None if managed else call.directory.find_application(app_id=p.app_id))
    names = [p.app_id]
    if p.resource_id:
        names.append(p.resource_id)
    if app is not None:
        names += [u for u in app.properties.get("identifierUris", []) if u not in names]
    passwords, keys = credentials_of(call, p, "servicePrincipal", has_application=app is not None)
    return {"@odata.type": "#microsoft.graph.servicePrincipal", "id": p.object_id, "appId": p.app_id,
            "displayName": p.display_name, "appDisplayName": app.display_name if app else None,
            "servicePrincipalType": "ManagedIdentity" if managed else "Application",
            "servicePrincipalNames": names, "appOwnerOrganizationId": p.tenant_id,
            "alternativeNames": [p.resource_id] if p.resource_id else [],
            "signInAudience": app.properties.get("signInAudience", "AzureADMyOrg") if app else None,
            **SERVICE_PRINCIPAL_DEFAULTS, **call.directory.service_principal_properties(p.object_id),
            "passwordCredentials": passwords, "keyCredentials": keys}


def render_user(call: GraphCall, u: User) -> dict[str, Any]:
    props = u.properties
    return {"@odata.type": "#microsoft.graph.user", "id": u.object_id, "businessPhones": props.get(
            "businessPhones", []), "displayName": u.display_name, "givenName": props.get("givenName"),
            "jobTitle": props.get("jobTitle"), "mail": props.get("mail"), "mobilePhone": props.get("mobilePhone"),
            "officeLocation": props.get("officeLocation"), "preferredLanguage": props.get("preferredLanguage"),
            "surname": props.get("surname"), "userPrincipalName": u.user_principal_name,
            "_accountEnabled": u.account_enabled, "_mailNickname": props.get("mailNickname"),
            "_userType": "Member", "_usageLocation": props.get("usageLocation"),
            "_department": props.get("department"), "_companyName": props.get("companyName")}


def render_group(call: GraphCall, g: Group) -> dict[str, Any]:
    props = g.properties
    return {"@odata.type": "#microsoft.graph.group", "id": g.object_id, "displayName": g.display_name,
            "description": props.get("description"), "mailNickname": props.get("mailNickname"),
            "mailEnabled": bool(props.get("mailEnabled", False)),
            "securityEnabled": bool(props.get("securityEnabled", True)), "groupTypes": props.get("groupTypes", []),
            "mail": None, "visibility": props.get("visibility"), "createdDateTime": props.get("createdDateTime"),
            "isAssignableToRole": props.get("isAssignableToRole"), "deletedDateTime": None,
            "securityIdentifier": None, "proxyAddresses": [], "onPremisesSyncEnabled": None}


def _domain(call: GraphCall) -> str:
    tenant = call.directory.tenant(call.tenant_id)
    return f"{tenant.display_name.lower()}.{call.services.settings.hostname_suffix}"


def render_principal(call: GraphCall, p: Principal) -> dict[str, Any]:
    """Any principal as the directory object it is."""
    if p.kind == "User":
        return render_user(call, call.directory.user(p.object_id))
    if p.kind == "Group":
        return render_group(call, call.directory.group(p.object_id))
    return render_service_principal(call, p)


def service_principals(call: GraphCall) -> list[Principal]:
    """The caller tenant's service principals (applications whose service principal was created, managed
    identities, the local administrator), oldest first."""
    directory = call.directory
    hidden = {a.app_id for a in directory.applications(call.tenant_id) if not a.service_principal}
    return [p for p in directory.principals(call.tenant_id)
            if p.kind in ("ServicePrincipal", "ManagedIdentity") and p.app_id not in hidden]


_REF = re.compile(r"/(?:directoryObjects|users|groups|servicePrincipals)/([0-9a-fA-F-]{36})/?$", re.IGNORECASE)


def reference(body: dict[str, Any]) -> str:
    """The object id an ``{"@odata.id": ".../directoryObjects/{id}"}`` body names."""
    ref = body.get("@odata.id")
    m = _REF.search(ref) if isinstance(ref, str) else None
    if m is None or not GUID.match(m.group(1)):
        raise GraphError(400, "Request_BadRequest", "Invalid object identifier in '@odata.id': expected "
                         "'https://graph.microsoft.com/v1.0/directoryObjects/{id}'.")
    return m.group(1).lower()


# -- calls on any directory object ---------------------------------------------------------------------------


def get_by_ids(call: GraphCall) -> web.StreamResponse:
    body = call.body()
    ids = body.get("ids")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
        raise GraphError(400, "Request_BadRequest", "'ids' must be a list of at most 1000 strings.")
    types = body.get("types")
    kinds = {str(k).lower() for k in types} if isinstance(types, list) else None
    found: list[dict[str, Any]] = []
    graph_sp = graph_sp_id(call.tenant_id)
    visible = {p.object_id for p in service_principals(call)}
    for object_id in dict.fromkeys(i.lower() for i in ids):
        if object_id == graph_sp:
            obj = render_graph_sp(call.tenant_id)
        else:
            p = call.directory.find_principal(object_id=object_id) if GUID.match(object_id) else None
            if p is None or p.tenant_id != call.tenant_id or (p.kind not in ("User", "Group")
                                                               and p.object_id not in visible):
                continue
            obj = render_principal(call, p)
        if kinds is None or obj["@odata.type"].rsplit(".", 1)[-1].lower() in kinds:
            found.append(obj)
    return call.page("directoryObjects", found)


def _transitive_groups(call: GraphCall, object_id: str) -> list[str]:
    return call.directory.member_of(object_id)


def check_member_groups(call: GraphCall) -> web.StreamResponse:
    member = call.principal(call.params["id"])
    body = call.body()
    ids = body.get("groupIds")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 20:
        raise GraphError(400, "Request_BadRequest", "'groupIds' must be a list of at most 20 group ids.")
    groups = set(_transitive_groups(call, member.object_id))
    return web.json_response({"@odata.context": call.context_url("Collection(Edm.String)"),
                              "value": [g for g in ids if g.lower() in groups]})


def get_member_groups(call: GraphCall) -> web.StreamResponse:
    member = call.principal(call.params["id"])
    body = call.body()
    security_only = body.get("securityEnabledOnly")
    ids = _transitive_groups(call, member.object_id)
    if security_only:
        ids = [i for i in ids if call.directory.group(i).properties.get("securityEnabled", True)]
    return web.json_response({"@odata.context": call.context_url("Collection(Edm.String)"), "value": ids})


def directory_object(call: GraphCall) -> web.StreamResponse:
    object_id = call.params["id"].lower()
    if object_id == graph_sp_id(call.tenant_id):
        return call.one("directoryObjects/$entity", render_graph_sp(call.tenant_id))
    p = call.principal(object_id)
    if p.kind not in ("User", "Group") and p.object_id not in {s.object_id for s in service_principals(call)}:
        raise not_found(object_id)
    return call.one("directoryObjects/$entity", render_principal(call, p))
