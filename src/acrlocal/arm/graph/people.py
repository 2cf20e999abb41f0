"""Graph's ``/users``, ``/me`` and ``/groups`` (with members and owners).

Users: ``POST`` needs ``accountEnabled``, ``displayName``, ``mailNickname``, ``userPrincipalName`` and
``passwordProfile.password`` (Entra's complexity rule); the password is hashed with scrypt off the event loop
and never stored or logged in clear. A user is found by object id or by user principal name (``/users/{upn}``,
``/users('{upn}')``). Only a Global Administrator creates, changes or deletes users; deleting one deletes its
role assignments, group memberships and ownerships. A new password or a disabled account revokes the user's
refresh tokens.

Groups: security groups (``securityEnabled``), nested membership allowed (``checkMemberGroups`` and role
assignments follow it). Any user may create one and becomes its owner; an administrator or an owner changes its
members, owners and properties.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

from aiohttp import web

from acrlocal.arm.graph.core import GUID, GraphCall, denied, not_found, now_text
from acrlocal.arm.graph.errors import GraphError
from acrlocal.arm.graph.objects import reference, render_application, render_group, render_principal, render_user
from acrlocal.errors import AlreadyExists, NotFound
from acrlocal.identity.directory import Group, User
from acrlocal.identity.passwords import WeakPassword, check_complexity, hash_password

_UPN = re.compile(r"^[A-Za-z0-9'._+!#^~-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\Z")
_NICKNAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~.]{1,64}\Z")
_USER_PROPERTIES = ("givenName", "surname", "jobTitle", "mail", "mobilePhone", "officeLocation", "preferredLanguage",
                    "businessPhones", "usageLocation", "department", "companyName", "mailNickname")
_GROUP_PROPERTIES = ("description", "mailNickname", "mailEnabled", "securityEnabled", "groupTypes", "visibility",
                     "isAssignableToRole")
#: scrypt checks and hashes at once, at most (each takes a core for about 50 ms and 16 MiB).
HASHING = asyncio.Semaphore(2)


async def hashed(password: str) -> str:
    async with HASHING:
        return await asyncio.get_running_loop().run_in_executor(None, hash_password, password)


def _password(profile: Any, *, required: bool) -> tuple[str | None, bool | None]:
    if profile is None and not required:
        return None, None
    if not isinstance(profile, dict) or (required and not isinstance(profile.get("password"), str)):
        raise GraphError(400, "Request_BadRequest", "Property 'passwordProfile' with a 'password' is required.")
    password = profile.get("password")
    if password is not None:
        if not isinstance(password, str):
            raise GraphError(400, "Request_BadRequest", "'passwordProfile.password' must be a string.")
        try:
            check_complexity(password)
        except WeakPassword as exc:
            raise GraphError(400, "Request_BadRequest", "The specified password does not comply with password "
                             f"complexity requirements: {exc}. Please provide a different password.") from None
    force = profile.get("forceChangePasswordNextSignIn")
    return password, bool(force) if force is not None else None


def _user_properties(body: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    props = dict(current)
    for key in _USER_PROPERTIES:
        if key in body:
            value = body[key]
            if key == "businessPhones":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise GraphError(400, "Request_BadRequest", "'businessPhones' must be a list of strings.")
            elif value is not None and (not isinstance(value, str) or len(value) > 256):
                raise GraphError(400, "Request_BadRequest", f"Invalid value specified for property '{key}'.")
            props[key] = value
    if "mailNickname" in body and not (isinstance(body["mailNickname"], str) and
                                       _NICKNAME.match(body["mailNickname"])):
        raise GraphError(400, "Request_BadRequest", "Invalid value specified for property 'mailNickname' of resource "
                         "'User'.")
    return props


def _check_user_body(body: dict[str, Any]) -> None:
    allowed = {"accountEnabled", "displayName", "userPrincipalName", "passwordProfile", "@odata.type",
               "passwordPolicies", *_USER_PROPERTIES}
    for key in body:
        if key not in allowed:
            raise GraphError(400, "Request_BadRequest", f"Property '{key[:100]}' does not exist as a declared property "
                             "or extension property of type 'microsoft.graph.user'.")


def _upn(value: Any) -> str:
    if not isinstance(value, str) or not _UPN.match(value) or len(value) > 113:
        raise GraphError(400, "Request_BadRequest", "Property userPrincipalName is invalid: expected "
                         "alias@domain.")
    return value


def _check_domain(call: GraphCall, upn: str) -> None:
    """400 if ``upn``'s domain belongs to another tenant: one whose users use it (as a verified domain belongs to
    one Entra tenant; acrlocal has no other domain model). Checked before the name itself, so that whether another
    tenant has a user of that name is neither confirmed nor denied. Reads the directory: in the ``SqlThread``."""
    if call.directory.domain_tenants(upn.rpartition("@")[2]) - {call.tenant_id}:
        raise GraphError(400, "Request_BadRequest", "The domain portion of the userPrincipalName property is "
                         "invalid. You must use one of the verified domain names in your organization.")


def _check_new_upn(call: GraphCall, upn: str) -> None:
    """400 unless ``upn`` may name a new user of the caller's tenant (:func:`_check_domain`, then no user has it).
    Reads the directory: in the ``SqlThread``."""
    _check_domain(call, upn)
    if call.directory.find_user(upn) is not None:
        raise GraphError(400, "Request_BadRequest", "Another object with the same value for property "
                         "userPrincipalName already exists.")


def find_user(call: GraphCall, id_or_upn: str) -> User:
    """A user of the caller's tenant by object id or user principal name; 404 otherwise."""
    key = id_or_upn
    m = re.fullmatch(r"\('(.+)'\)", key)
    if m:
        key = m.group(1).replace("''", "'")
    user: User | None = None
    if GUID.match(key):
        with contextlib.suppress(NotFound):
            user = call.directory.user(key)
    elif "@" in key:
        user = call.directory.find_user(key)
    if user is None or user.tenant_id != call.tenant_id:
        raise not_found(key)
    return user


async def create_user(call: GraphCall) -> web.StreamResponse:
    """A coroutine, not run in the ``SqlThread``: the password is hashed on the loop's executor between the
    administrator check and the write, which run through ``call.run``."""
    await call.run(call.require_admin)
    body = call.body()
    _check_user_body(body)
    missing = [k for k in ("accountEnabled", "displayName", "mailNickname", "userPrincipalName", "passwordProfile")
               if body.get(k) is None]
    if missing:
        raise GraphError(400, "Request_BadRequest", f"Property '{missing[0]}' is required.")
    name, enabled = body["displayName"], body["accountEnabled"]
    if not isinstance(name, str) or not name.strip() or len(name) > 256 or not isinstance(enabled, bool):
        raise GraphError(400, "Request_BadRequest", "'displayName' must be 1 to 256 characters and "
                         "'accountEnabled' a boolean.")
    upn = _upn(body["userPrincipalName"])
    password, force = _password(body["passwordProfile"], required=True)
    assert password is not None
    props = _user_properties(body, {})
    await call.run(_check_new_upn, call, upn)
    password_hash = await hashed(password)
    return await call.run(_create_user, call, upn, name, password_hash, enabled, bool(force), props)


def _create_user(call: GraphCall, upn: str, name: str, password_hash: str, enabled: bool, force: bool,
                 props: dict[str, Any]) -> web.StreamResponse:
    """The user's row (the directory's unique name refuses one made meanwhile: 400) and its rendering, in the
    ``SqlThread``."""
    try:
        user = call.directory.create_user(call.tenant_id, upn, name, password_hash, account_enabled=enabled,
                                          force_change=force, properties=props)
    except AlreadyExists:
        raise GraphError(400, "Request_BadRequest", "Another object with the same value for property "
                         "userPrincipalName already exists.") from None
    return call.one("users/$entity", render_user(call, user), status=201)


def list_users(call: GraphCall) -> web.StreamResponse:
    return call.page("users", [render_user(call, u) for u in call.directory.users(call.tenant_id)])


def get_user(call: GraphCall) -> web.StreamResponse:
    return call.one("users/$entity", render_user(call, find_user(call, call.params["id"])))


async def update_user(call: GraphCall) -> web.StreamResponse:
    """A coroutine, not run in the ``SqlThread``: a new password is hashed on the loop's executor between the
    checks and the write, which run through ``call.run``; the write finds the user again (404 if it went
    meanwhile) and merges the properties into what it holds then."""
    await call.run(_admin_and_user, call)
    body = call.body()
    _check_user_body(body)
    name = body.get("displayName")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 256):
        raise GraphError(400, "Request_BadRequest", "'displayName' must be 1 to 256 characters.")
    enabled = body.get("accountEnabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise GraphError(400, "Request_BadRequest", "'accountEnabled' must be a boolean.")
    upn = _upn(body["userPrincipalName"]) if "userPrincipalName" in body else None
    password, force = _password(body.get("passwordProfile"), required=False)
    _user_properties(body, {})  # refused before anything is hashed or written
    password_hash = await hashed(password) if password else None
    return await call.run(_update_user, call, body, name, enabled, upn, force, password_hash)


def _admin_and_user(call: GraphCall) -> User:
    user = find_user(call, call.params["id"])
    call.require_admin()
    return user


def _update_user(call: GraphCall, body: dict[str, Any], name: str | None, enabled: bool | None, upn: str | None,
                 force: bool | None, password_hash: str | None) -> web.StreamResponse:
    """The update, in the ``SqlThread``; a new user principal name must be in a domain of the caller's tenant
    (:func:`_check_domain`)."""
    user = find_user(call, call.params["id"])
    if upn is not None and upn.lower() != user.user_principal_name.lower():
        _check_domain(call, upn)
    try:
        call.directory.update_user(user.object_id, display_name=name, user_principal_name=upn,
                                   account_enabled=enabled, force_change=force,
                                   properties=_user_properties(body, user.properties), password_hash=password_hash)
    except AlreadyExists:
        raise GraphError(400, "Request_BadRequest", "Another object with the same value for property "
                         "userPrincipalName already exists.") from None
    return web.Response(status=204)


def delete_user(call: GraphCall) -> web.StreamResponse:
    user = find_user(call, call.params["id"])
    call.require_admin()
    if user.object_id == call.caller.object_id:
        raise GraphError(400, "Request_BadRequest", "You cannot delete your own account.")
    call.store.delete_assignments_of(user.object_id)
    call.directory.delete_principal(user.object_id)
    return web.Response(status=204)


def _me(call: GraphCall) -> User:
    if call.caller.kind != "User":
        raise GraphError(400, "BadRequest", "/me request is only valid with delegated authentication flow.")
    return call.directory.user(call.caller.object_id)


def me(call: GraphCall) -> web.StreamResponse:
    return call.one("users/$entity", render_user(call, _me(call)))


def my_owned_objects(call: GraphCall) -> web.StreamResponse:
    _me(call)
    return _owned(call, call.caller.object_id)


def _owned(call: GraphCall, owner_id: str) -> web.StreamResponse:
    items = []
    for object_id in call.directory.owned_objects(owner_id):
        with contextlib.suppress(NotFound):
            app = call.directory.application(object_id)
            if app.tenant_id == call.tenant_id:
                items.append(render_application(call, app))
            continue
        p = call.directory.find_principal(object_id=object_id)
        if p is not None and p.tenant_id == call.tenant_id:
            items.append(render_principal(call, p))
    return call.page("directoryObjects", items)


def user_member_of(call: GraphCall) -> web.StreamResponse:
    user = find_user(call, call.params["id"])
    groups = [call.directory.group(g) for g in call.directory.member_of(user.object_id)]
    return call.page("directoryObjects", [render_group(call, g) for g in groups])


# -- groups ---------------------------------------------------------------------------------------------------


def find_group(call: GraphCall, object_id: str) -> Group:
    group: Group | None = None
    if GUID.match(object_id):
        with contextlib.suppress(NotFound):
            group = call.directory.group(object_id)
    if group is None or group.tenant_id != call.tenant_id:
        raise not_found(object_id)
    return group


def _group_properties(body: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    allowed = {"displayName", "@odata.type", "owners@odata.bind", "members@odata.bind", *_GROUP_PROPERTIES}
    for key in body:
        if key not in allowed:
            raise GraphError(400, "Request_BadRequest", f"Property '{key[:100]}' does not exist as a declared property "
                             "or extension property of type 'microsoft.graph.group'.")
    props = dict(current)
    for key in _GROUP_PROPERTIES:
        if key in body:
            props[key] = body[key]
    if not isinstance(props.get("mailNickname"), str) or not _NICKNAME.match(props["mailNickname"]):
        raise GraphError(400, "Request_BadRequest", "Property 'mailNickname' is required: 1 to 64 characters without "
                         "spaces.")
    if props.get("mailEnabled"):
        raise GraphError(400, "Request_BadRequest", "Only security groups (mailEnabled false) can be created here.")
    for key in ("securityEnabled", "mailEnabled", "isAssignableToRole"):
        if key in props and props[key] is not None and not isinstance(props[key], bool):
            raise GraphError(400, "Request_BadRequest", f"'{key}' must be a boolean.")
    if props.get("description") is not None and not isinstance(props["description"], str):
        raise GraphError(400, "Request_BadRequest", "'description' must be a string.")
    return props


def create_group(call: GraphCall) -> web.StreamResponse:
    if not call.is_admin() and call.caller.kind != "User":
        raise denied()
    body = call.body()
    name = body.get("displayName")
    if not isinstance(name, str) or not name.strip() or len(name) > 256:
        raise GraphError(400, "Request_BadRequest", "Property 'displayName' is required (1 to 256 characters).")
    props = _group_properties(body, {"securityEnabled": True, "mailEnabled": False, "groupTypes": [],
                                     "createdDateTime": now_text()})
    group = call.directory.create_group(call.tenant_id, name, props, owner_id=call.caller.object_id)
    return call.one("groups/$entity", render_group(call, group), status=201)


def list_groups(call: GraphCall) -> web.StreamResponse:
    return call.page("groups", [render_group(call, g) for g in call.directory.groups(call.tenant_id)])


def get_group(call: GraphCall) -> web.StreamResponse:
    return call.one("groups/$entity", render_group(call, find_group(call, call.params["id"])))


def update_group(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    call.require_admin_or_owner(group.object_id)
    body = call.body()
    name = body.get("displayName")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > 256):
        raise GraphError(400, "Request_BadRequest", "'displayName' must be 1 to 256 characters.")
    call.directory.update_group(group.object_id, display_name=name,
                                properties=_group_properties(body, group.properties))
    return web.Response(status=204)


def delete_group(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    call.require_admin_or_owner(group.object_id)
    call.store.delete_assignments_of(group.object_id)
    call.directory.delete_principal(group.object_id)
    return web.Response(status=204)


def group_members(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    return call.page("directoryObjects", [render_principal(call, p)
                                          for p in call.directory.members(group.object_id)])


def add_group_member(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    call.require_admin_or_owner(group.object_id)
    member = call.principal(reference(call.body()))
    if member.object_id == group.object_id or group.object_id in call.directory.member_of(member.object_id):
        raise GraphError(400, "Request_BadRequest", "A group cannot be a member of itself, directly or through "
                         "another group.")
    if not call.directory.add_member(group.object_id, member.object_id):
        raise GraphError(400, "Request_BadRequest", "One or more added object references already exist for the "
                         "following modified properties: 'members'.")
    return web.Response(status=204)


def remove_group_member(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    call.require_admin_or_owner(group.object_id)
    try:
        call.directory.remove_member(group.object_id, call.params["member"])
    except NotFound:
        raise not_found(call.params["member"]) from None
    return web.Response(status=204)


def group_owners(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    return call.page("directoryObjects", [render_principal(call, p)
                                          for p in call.directory.owners(group.object_id)])


def add_group_owner(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    call.require_admin_or_owner(group.object_id)
    owner = call.principal(reference(call.body()))
    if owner.kind == "Group":
        raise GraphError(400, "Request_BadRequest", "A group cannot own a group.")
    if not call.directory.add_owner(group.object_id, owner.object_id):
        raise GraphError(400, "Request_BadRequest", "One or more added object references already exist for the "
                         "following modified properties: 'owners'.")
    return web.Response(status=204)


def remove_group_owner(call: GraphCall) -> web.StreamResponse:
    group = find_group(call, call.params["id"])
    call.require_admin_or_owner(group.object_id)
    try:
        call.directory.remove_owner(group.object_id, call.params["owner"])
    except NotFound:
        raise not_found(call.params["owner"]) from None
    return web.Response(status=204)
