"""Microsoft Graph (``/v1.0`` and ``/beta``) on the shared port, as az and the SDKs call it.

- :mod:`.core`: the one entry point (authentication, routing, Graph's JSON errors for everything, unknown paths
  included), ``$filter`` / ``$select`` / ``$top`` paging, and the caller's tenant, which scopes every read;
- :mod:`.applications`: ``/applications`` and ``/servicePrincipals`` with their credentials, owners and federated
  identity credentials;
- :mod:`.people`: ``/users``, ``/me``, ``/groups`` with members and owners;
- :mod:`.objects`: how each kind of directory object renders, Microsoft Graph's own service principal (in every
  tenant), and ``directoryObjects`` calls.

Tokens are accepted for the Graph audiences (``https://graph.microsoft.com`` with or without ``/``, its app id,
and this server's own URL, which is the ``microsoftGraphResourceId`` that ``/metadata/endpoints`` advertises).
Storage is the directory's (:mod:`acrlocal.identity.directory`); role assignments of a deleted object go through
the control plane's store.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from acrlocal.arm.graph import applications as apps
from acrlocal.arm.graph import objects, people
from acrlocal.arm.graph.core import GRAPH_APP_ID, Router, audiences, make_dispatch
from acrlocal.arm.graph.errors import GraphError
from acrlocal.arm.services import ArmServices
from acrlocal.arm.store import ArmStore

__all__ = ["GRAPH_APP_ID", "GraphError", "audiences", "router", "setup"]


def router() -> Router:
    r = Router()
    r.add("GET", "/applications", apps.list_applications)
    r.add("POST", "/applications", apps.create_application)
    r.add("GET", "/applications{id}", apps.get_application)  # /applications(appId='{appId}')
    r.add("PATCH", "/applications{id}", apps.update_application)
    r.add("GET", "/servicePrincipals{id}", apps.get_service_principal)  # /servicePrincipals(appId='{appId}')
    r.add("GET", "/applications/{id}", apps.get_application)
    r.add("PATCH", "/applications/{id}", apps.update_application)
    r.add("DELETE", "/applications/{id}", apps.delete_application)
    r.add("POST", "/applications/{id}/addPassword", apps.application_add_password)
    r.add("POST", "/applications/{id}/removePassword", apps.application_remove_password)
    r.add("POST", "/applications/{id}/addKey", apps.application_add_key)
    r.add("POST", "/applications/{id}/removeKey", apps.application_remove_key)
    r.add("GET", "/applications/{id}/owners", apps.application_owners)
    r.add("POST", "/applications/{id}/owners/$ref", apps.application_add_owner)
    r.add("DELETE", "/applications/{id}/owners/{owner}/$ref", apps.application_remove_owner)
    r.add("GET", "/applications/{id}/federatedIdentityCredentials", apps.list_fics)
    r.add("POST", "/applications/{id}/federatedIdentityCredentials", apps.create_fic)
    r.add("GET", "/applications/{id}/federatedIdentityCredentials/{fic}", apps.get_fic)
    r.add("PATCH", "/applications/{id}/federatedIdentityCredentials/{fic}", apps.update_fic)
    r.add("DELETE", "/applications/{id}/federatedIdentityCredentials/{fic}", apps.delete_fic)
    r.add("GET", "/servicePrincipals", apps.list_service_principals)
    r.add("POST", "/servicePrincipals", apps.create_service_principal)
    r.add("GET", "/servicePrincipals/{id}", apps.get_service_principal)
    r.add("PATCH", "/servicePrincipals/{id}", apps.update_service_principal)
    r.add("DELETE", "/servicePrincipals/{id}", apps.delete_service_principal)
    r.add("POST", "/servicePrincipals/{id}/addPassword", apps.sp_add_password)
    r.add("POST", "/servicePrincipals/{id}/removePassword", apps.sp_remove_password)
    r.add("POST", "/servicePrincipals/{id}/addKey", apps.sp_add_key)
    r.add("POST", "/servicePrincipals/{id}/removeKey", apps.sp_remove_key)
    r.add("GET", "/servicePrincipals/{id}/owners", apps.sp_owners)
    r.add("POST", "/servicePrincipals/{id}/owners/$ref", apps.sp_add_owner)
    r.add("DELETE", "/servicePrincipals/{id}/owners/{owner}/$ref", apps.sp_remove_owner)
    r.add("GET", "/users", people.list_users)
    r.add("POST", "/users", people.create_user)
    r.add("GET", "/users{id}", people.get_user)  # /users('{upn}')
    r.add("PATCH", "/users{id}", people.update_user)
    r.add("DELETE", "/users{id}", people.delete_user)
    r.add("GET", "/users/{id}", people.get_user)
    r.add("PATCH", "/users/{id}", people.update_user)
    r.add("DELETE", "/users/{id}", people.delete_user)
    r.add("GET", "/users/{id}/memberOf", people.user_member_of)
    r.add("GET", "/users/{id}/transitiveMemberOf", people.user_member_of)
    r.add("POST", "/users/{id}/getMemberGroups", objects.get_member_groups)
    r.add("POST", "/users/{id}/checkMemberGroups", objects.check_member_groups)
    r.add("GET", "/me", people.me)
    r.add("GET", "/me/ownedObjects", people.my_owned_objects)
    r.add("GET", "/groups", people.list_groups)
    r.add("POST", "/groups", people.create_group)
    r.add("GET", "/groups/{id}", people.get_group)
    r.add("PATCH", "/groups/{id}", people.update_group)
    r.add("DELETE", "/groups/{id}", people.delete_group)
    r.add("GET", "/groups/{id}/members", people.group_members)
    r.add("POST", "/groups/{id}/members/$ref", people.add_group_member)
    r.add("DELETE", "/groups/{id}/members/{member}/$ref", people.remove_group_member)
    r.add("GET", "/groups/{id}/owners", people.group_owners)
    r.add("POST", "/groups/{id}/owners/$ref", people.add_group_owner)
    r.add("DELETE", "/groups/{id}/owners/{owner}/$ref", people.remove_group_owner)
    r.add("POST", "/groups/{id}/getMemberGroups", objects.get_member_groups)
    r.add("POST", "/groups/{id}/checkMemberGroups", objects.check_member_groups)
    r.add("POST", "/directoryObjects/getByIds", objects.get_by_ids)
    r.add("GET", "/directoryObjects/{id}", objects.directory_object)
    r.add("POST", "/directoryObjects/{id}/checkMemberGroups", objects.check_member_groups)
    r.add("POST", "/directoryObjects/{id}/getMemberGroups", objects.get_member_groups)
    return r


def setup(app: web.Application, services: ArmServices, store: ArmStore, write_lock: asyncio.Lock) -> None:
    """Serve Graph on ``app``; its writes take ``write_lock``, the control plane's (see :func:`make_dispatch`)."""
    dispatch = make_dispatch(services, store, router(), write_lock)
    app.router.add_route("*", "/{version:v1\\.0|beta}", dispatch)
    app.router.add_route("*", "/{version:v1\\.0|beta}/{tail:(?s:.*)}", dispatch)
