"""``login``, ``logout`` and ``account show|list|set|get-access-token``, shaped as az's.

``login`` alone signs in as the local administrator of the server on this host; ``--service-principal`` with a
client secret; ``--identity`` as a VM's managed identity (through the VM's IMDS or App Service endpoint), with
``--client-id``, ``--object-id``, ``--resource-id``, or the older ``--username <client id or resource id>`` that az
2.91 rejects and acrlocal still accepts. The profile changes only after a login succeeded.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from acrlocal.cli.credentials import Selector
from acrlocal.cli.endpoints import ARM_RESOURCE
from acrlocal.cli.errors import AuthenticationFailed, CLIError, CLIUsageError
from acrlocal.cli.framework import AzChoice, AzCommand, AzGroup, invocation, option
from acrlocal.cli.session import Session, tenant_of

RESOURCE_TYPES = {"arm": ARM_RESOURCE, "aad-graph": "https://graph.windows.net/",
                  "ms-graph": "https://graph.microsoft.com/", "batch": "https://batch.core.windows.net/",
                  "oss-rdbms": "https://ossrdbms-aad.database.windows.net", "data-lake": "https://datalake.azure.net/",
                  "media": "https://rest.media.azure.net", "acr": "https://containerregistry.azure.net"}


def _identity_selector(client_id: str | None, object_id: str | None, resource_id: str | None,
                       username: str | None) -> list[Selector | None]:
    given = [(k, v) for k, v in (("client_id", client_id), ("object_id", object_id), ("resource_id", resource_id))
             if v]
    if len(given) + (1 if username else 0) > 1:
        raise CLIUsageError("Usage error: Provide only one of --client-id, --object-id, --resource-id, or --username.")
    if given:
        kind, value = given[0]
        return [(kind, value)]  # type: ignore[list-item]
    if username:
        if username.startswith("/"):
            return [("resource_id", username)]
        return [("client_id", username), ("object_id", username)]
    return [None]


@click.command("login", cls=AzCommand)
@option("--identity", "-i", is_flag=True, help="Log in using the managed identity of the VM this runs in.")
@option("--client-id", help="Client ID of a user-assigned managed identity (with --identity).")
@option("--object-id", help="Object (principal) ID of a user-assigned managed identity (with --identity).")
@option("--resource-id", help="Resource ID of a user-assigned managed identity (with --identity).")
@option("--username", "-u", help="Service principal client ID; with --identity, an identity's client or resource ID.")
@option("--password", "-p", help="Client secret of the service principal.")
@option("--service-principal", is_flag=True, help="Log in with a service principal.")
@option("--tenant", "-t", help="The tenant of the service principal.")
@option("--allow-no-subscriptions", is_flag=True, help="Log in even when the identity has no subscription.")
def login(identity: bool, client_id: str | None, object_id: str | None, resource_id: str | None,
          username: str | None, password: str | None, service_principal: bool, tenant: str | None,
          allow_no_subscriptions: bool) -> Any:
    """Log in: as the local administrator (no arguments), a service principal, or a VM's managed identity."""
    session = Session()
    if identity:
        if password or service_principal:
            raise CLIUsageError("Usage error: --identity cannot be combined with --password or --service-principal.")
        attempts = _identity_selector(client_id, object_id, resource_id, username)
        for i, selector in enumerate(attempts):
            try:
                return session.login_identity(selector, allow_no_subscriptions)
            except AuthenticationFailed:
                if i == len(attempts) - 1:
                    raise
        raise AssertionError("unreachable")
    if client_id or object_id or resource_id:
        raise CLIUsageError("Usage error: --client-id, --object-id and --resource-id need --identity.")
    if service_principal or username or password:
        if not (username and password and tenant):
            raise CLIUsageError("Usage error: --service-principal needs --username, --password and --tenant.")
        return session.login_service_principal(username, password, tenant, allow_no_subscriptions)
    return session.login_admin()


@click.command("logout", cls=AzCommand)
@option("--username", help="Account user; the current one if not given.")
def logout(username: str | None) -> Any:
    """Log out: forget the account's subscriptions, credential and cached tokens."""
    session = Session()
    accounts = session.profile.accounts()
    if not accounts:
        raise CLIError("There are no active accounts.")
    if username is None:
        default = [a for a in accounts if a.get("isDefault")] or accounts
        username = str(default[0]["user"]["name"])
    session.profile.forget(username)
    return None


@click.group("account", cls=AzGroup)
def account() -> None:
    """Manage the signed-in accounts and subscriptions."""


@account.command("show", show=True)
@option("--name", "-n", help="Name or ID of subscription.")
def account_show(name: str | None) -> Any:
    """Get the details of a subscription (the default one unless --subscription or --name)."""
    return Session().account(name)


@account.command("list")
@option("--all", "all_", is_flag=True, help="List all subscriptions, in every cloud.")
@option("--refresh", is_flag=True, help="Accepted for compatibility; the profile is always current.")
def account_list(all_: bool, refresh: bool) -> Any:
    """Get a list of subscriptions for the signed-in accounts."""
    session = Session()
    accounts = session.accounts()
    if not accounts:
        try:
            accounts = session.auto_login()
        except CLIError:
            from acrlocal.cli.framework import warn
            warn("Please run \"acrlocal login\" to access your accounts.")
            return []
    return accounts


@account.command("set")
@option("--name", "-n", "-s", "name", help="Name or ID of subscription.")
def account_set(name: str | None) -> Any:
    """Set a subscription to be the current active subscription."""
    wanted = name or invocation().subscription
    if not wanted:
        raise CLIUsageError("the following arguments are required: --subscription/-s/--name/-n")
    session = Session()
    accounts = session.accounts() or session.auto_login()
    found = [a for a in accounts if wanted.lower() in (str(a["id"]).lower(), str(a["name"]).lower())]
    if len(found) != 1:
        state = "doesn't exist" if not found else "has more than one match"
        raise CLIError(f"The subscription of '{wanted.lower()}' {state} in cloud "
                       f"'{session.endpoints.environment_name}'.")
    for a in accounts:
        a["isDefault"] = a is found[0]
    session.profile.save_accounts(accounts)
    return None


@account.command("get-access-token")
@option("--resource", help="Azure resource endpoints (the resource manager's by default).")
@option("--scope", "scopes", nargs_star=True, help="Space-separated AAD scopes (v2 form: <resource>/.default).")
@option("--resource-type", type=AzChoice(sorted(RESOURCE_TYPES)), help="Type of the resource.")
@option("--tenant", "-t", help="Tenant ID for which to get the token.")
def get_access_token(resource: str | None, scopes: tuple[str, ...], resource_type: str | None,
                     tenant: str | None) -> Any:
    """Get a token for utilities to access Azure (here: the acrlocal endpoints)."""
    if resource and scopes:
        raise CLIUsageError("usage error: --resource/--resource-type/--scope: only one of them can be given")
    if resource_type and not resource:
        resource = RESOURCE_TYPES[resource_type]
    if scopes:
        if len(scopes) != 1 or not scopes[0].endswith("/.default"):
            raise CLIError(f"Scopes {list(scopes)!r}: acrlocal issues tokens for one '<resource>/.default' scope.")
        resource = scopes[0][: -len("/.default")]
    session = Session()
    acct = session.account()
    token = session.credential(acct).get_token(resource or ARM_RESOURCE)
    result: dict[str, Any] = {
        "accessToken": token.token,
        "expiresOn": dt.datetime.fromtimestamp(token.expires_on).strftime("%Y-%m-%d %H:%M:%S.%f"),
        "expires_on": token.expires_on,
        "tenant": tenant or tenant_of(token.token) or acct["tenantId"],
        "tokenType": "Bearer",
    }
    if not tenant:
        result["subscription"] = acct["id"]
    return result
