"""Who is calling, and may they: bearer-token authentication and RBAC authorization for ARM calls.

Authentication accepts only our own RS256 tokens for the ARM audiences (``TokenIssuer.verify`` pins the algorithm and
the keys); a missing or invalid token is a 401 with ARM's error codes and a ``WWW-Authenticate: Bearer``
challenge naming our authority. A principal that no longer exists in the directory is refused like a bad token.

Authorization asks :func:`acrlocal.rbac.may` with the caller's role assignments that apply at the target scope
(fetched once a request, with the principal, through the server's ``SqlThread``); a refusal is ARM's 403
``AuthorizationFailed`` naming the client, the action and the scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from acrlocal import inbound
from acrlocal.arm.errors import ArmError, authorization_failed, linked_authorization_failed
from acrlocal.arm.store import ArmStore, RoleDefinitionStore, StoredAssignment
from acrlocal.identity.directory import Directory, Principal
from acrlocal.identity.tokens import InvalidToken, TokenIssuer
from acrlocal.inbound import MalformedRequest
from acrlocal.publiccloud import ARM_AUDIENCES
from acrlocal.rbac.errors import InvalidScope
from acrlocal.rbac.evaluate import may
from acrlocal.rbac.roles import RoleDefinition
from acrlocal.storage.sql import SqlThread


def challenge(authority: str, description: str | None = None) -> dict[str, str]:
    value = f'Bearer authorization_uri="{authority}/", error="invalid_token"'
    if description:
        value += f', error_description="{description}"'
    return {"WWW-Authenticate": value}


@dataclass
class Caller:
    """The authenticated principal of one request, with its role assignments and the role definitions of its
    tenant, read when it was authenticated (:func:`authenticate`) so that the checks below need no SQL."""

    principal: Principal
    claims: dict[str, Any]
    store: ArmStore
    #: The groups the principal belongs to, directly or through nested groups: their role assignments apply too.
    groups: list[str] = field(default_factory=list)
    assignments: list[StoredAssignment] = field(default_factory=list, repr=False)
    #: Built-in roles and the custom roles of the caller's tenant.
    definitions: dict[str, RoleDefinition] = field(default_factory=dict, repr=False)

    @property
    def object_id(self) -> str:
        return self.principal.object_id

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    @property
    def client(self) -> str:
        """How ARM names the caller in messages: a user's user principal name, an application's app id."""
        if self.principal.kind == "User":
            return str(self.claims.get("upn") or self.object_id)
        return str(self.claims.get("appid") or self.principal.app_id or self.object_id)

    @property
    def principal_ids(self) -> list[str]:
        return [self.object_id, *self.groups]

    def reload_assignments(self) -> None:
        """Read the assignments and role definitions again (after the caller changed them). Blocks on SQL: run it
        through the server's ``SqlThread`` (``call.run``), or inside a callable that already runs there."""
        self.assignments = self.store.assignments(principal_ids=self.principal_ids)
        self.definitions = RoleDefinitionStore(self.store.engine).definitions(self.tenant_id)

    def may(self, action: str, scope: str) -> bool:
        try:
            return may((a.rbac for a in self.assignments), self.principal_ids, action, scope,
                       definitions=self.definitions)
        except InvalidScope as exc:
            raise ArmError(400, "InvalidScope", str(exc)) from None

    def may_data(self, data_action: str, scope: str) -> bool:
        """Whether the caller's roles grant the data action ``data_action`` at ``scope``."""
        try:
            return may((a.rbac for a in self.assignments), self.principal_ids, data_action, scope, data_action=True,
                       definitions=self.definitions)
        except InvalidScope as exc:
            raise ArmError(400, "InvalidScope", str(exc)) from None

    def require(self, action: str, scope: str) -> None:
        """Raise ARM's 403 unless the caller may perform ``action`` at ``scope``."""
        if not self.may(action, scope):
            raise authorization_failed(self.client, self.object_id, action, scope)

    def require_linked(self, action: str, scope: str, linked_action: str, linked_scope: str) -> None:
        """Raise ARM's 403 ``LinkedAuthorizationFailed`` unless the caller may perform ``linked_action`` at
        ``linked_scope``, a resource that its write (``action`` at ``scope``) names in its body. Called before the
        linked resource is looked up, so the answer is the same whether it exists; a linked id that is no scope is
        refused the same way."""
        self.require_all_linked(action, scope, [(linked_action, linked_scope)])

    def require_all_linked(self, action: str, scope: str, links: Iterable[tuple[str, str]]) -> None:
        """:meth:`require_linked` for several ``(linked action, linked scope)`` at once: the 403 names every one the
        caller may not do, in order, as Azure's does."""
        refused = [(linked_action, linked_scope) for linked_action, linked_scope in links
                   if not self._may_link(linked_action, linked_scope)]
        if refused:
            raise linked_authorization_failed(self.client, self.object_id, action, scope, refused)

    def _may_link(self, linked_action: str, linked_scope: str) -> bool:
        try:
            return may((a.rbac for a in self.assignments), self.principal_ids, linked_action, linked_scope,
                       definitions=self.definitions)
        except InvalidScope:
            return False

    def has_any_role_under(self, scope: str) -> bool:
        """True if the caller holds any assignment at, above or below ``scope`` (what lists need to be seen)."""
        key = scope.lower().rstrip("/") + "/"
        for a in self.assignments:
            own = a.scope.lower().rstrip("/") + "/"
            if own.startswith(key) or key.startswith(own):
                return True
        return False


async def _bearer_claims(request: web.Request, tokens: TokenIssuer, sql: SqlThread) -> dict[str, Any]:
    """The claims of ``request``'s bearer token for ARM; :class:`ArmError` 401 if it is missing or not valid for
    ARM. Checked on the event loop with the key from memory; a key that must be read (the tenant's first token in
    this process, a rotation by another, a tenant nobody knows) is read through ``sql``."""
    authority = tokens.authority
    try:
        found = inbound.authorization(request)
    except MalformedRequest:
        found = ("", "")  # not ASCII: answered as a header in an invalid format
    if found is None:
        raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing.",
                       headers=challenge(authority, "The authentication failed because of missing 'Authorization' "
                                                    "header."))
    scheme, token = found
    if scheme != "bearer" or not token:
        raise ArmError(401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is provided "
                       "in an invalid format.", headers=challenge(authority, "The authentication failed because of "
                                                                             "invalid 'Authorization' header."))
    try:
        claims = await tokens.verify_async(sql, token, None)
    except InvalidToken as exc:
        if "expired" in str(exc).lower():
            raise ArmError(401, "ExpiredAuthenticationToken",
                           "The access token expiry UTC time is earlier than current UTC time.",
                           headers=challenge(authority, "The access token expired.")) from None
        raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.",
                       headers=challenge(authority, "The access token is invalid.")) from None
    audience = claims.get("aud")
    if audience not in ARM_AUDIENCES:
        allowed = ",".join(f"'{a}'" for a in ARM_AUDIENCES)
        raise ArmError(401, "InvalidAuthenticationTokenAudience",
                       f"The access token has been obtained for wrong audience or resource '{audience}'. It should "
                       f"exactly match with one of the allowed audiences {allowed}.",
                       headers=challenge(authority, "The access token has been obtained for wrong audience."))
    return claims


def _caller(claims: dict[str, Any], authority: str, directory: Directory, store: ArmStore) -> Caller:
    """The principal the claims name with its groups, role assignments and role definitions (SQL: runs through
    the ``SqlThread``); 401 if it no longer exists or is a group."""
    principal = directory.find_principal(object_id=str(claims["oid"]))
    if principal is None or principal.tenant_id != str(claims["tid"]).lower():
        raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid: its principal does not "
                       "exist in the directory.", headers=challenge(authority, "The access token is invalid."))
    if principal.kind == "Group":
        raise ArmError(401, "InvalidAuthenticationToken", "The access token is invalid.",
                       headers=challenge(authority, "The access token is invalid."))
    caller = Caller(principal, claims, store, directory.member_of(principal.object_id))
    caller.reload_assignments()
    return caller


async def authenticate(request: web.Request, tokens: TokenIssuer, directory: Directory, store: ArmStore,
                       sql: SqlThread) -> Caller:
    """The caller of ``request``; :class:`ArmError` 401 if the bearer token is missing or not valid for ARM. The
    token is checked on the event loop (its key read through ``sql`` if this process does not hold it); the
    principal, its groups and its role assignments are read in one call through ``sql`` (off the loop on
    PostgreSQL; a database that cannot be reached raises as any statement)."""
    claims = await _bearer_claims(request, tokens, sql)
    return await sql.run(_caller, claims, tokens.authority, directory, store)
