"""One command's view of the world: where the server is, who is signed in, and clients that carry their tokens.

Signing in follows az: get an ARM token (audience ``https://management.core.windows.net/``), read ``tid`` from it,
list ``GET /subscriptions`` with it, and store one account per subscription in the profile (the first one
default). On the host, a profile with no account signs in as the local administrator on first use (the
credential ``acrlocal up`` wrote to ``<data dir>/admin.json``), so ``acrlocal group create ...`` works right after
``acrlocal up``. Nothing is written to the profile until the token and the subscription list were obtained.
"""

from __future__ import annotations

import json
from functools import cached_property
from typing import Any

import jwt

from acrlocal.cli.client import ArmClient, Http, TokenSource
from acrlocal.cli.credentials import ClientSecretCredential, ManagedIdentityCredential, Selector
from acrlocal.cli.endpoints import ARM_RESOURCE, GRAPH_RESOURCE, Endpoints, locate
from acrlocal.cli.errors import AuthenticationFailed, CLIError
from acrlocal.cli.framework import invocation
from acrlocal.cli.profile import Profile
from acrlocal.config import Settings

SUBSCRIPTIONS_API = "2022-12-01"
LOGIN_MESSAGE = "Please run 'acrlocal login' to setup account."
MI_INFO_PREFIX = {"client_id": "MSIClient", "object_id": "MSIObject", "resource_id": "MSIResource"}


def tenant_of(token: str) -> str:
    """``tid`` of an access token, read without checking it (az does the same; the server checks it)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False}, algorithms=["RS256"])
    except jwt.PyJWTError as exc:
        raise AuthenticationFailed(f"the token endpoint returned a token that is not a JWT: {exc}") from None
    return str(claims.get("tid", ""))


class Session:
    def __init__(self, settings: Settings | None = None, profile: Profile | None = None) -> None:
        self.settings = settings or Settings()
        self.profile = profile or Profile()

    @cached_property
    def endpoints(self) -> Endpoints:
        return locate(self.settings)

    @cached_property
    def http(self) -> Http:
        return Http(self.endpoints.verify)

    # -- accounts --------------------------------------------------------------------------------------

    def account(self, subscription: str | None = None) -> dict[str, Any]:
        """The account of ``subscription`` (id or name; ``--subscription``), else the default one."""
        subscription = subscription or invocation().subscription
        accounts = self.accounts()
        if not accounts:
            accounts = self.auto_login()
        if subscription:
            wanted = subscription.lower()
            found = [a for a in accounts if wanted in (str(a.get("id", "")).lower(), str(a.get("name", "")).lower())]
            if not found:
                raise CLIError(f"Subscription '{subscription}' not found. Check the spelling and casing and try "
                               "again.")
            if len(found) > 1:
                raise CLIError(f"Multiple subscriptions with the name '{subscription}' found. Specify the "
                               "subscription ID.")
            return found[0]
        default = [a for a in accounts if a.get("isDefault")]
        if not default:
            raise CLIError("No subscription found. Run 'acrlocal account set' to select a subscription.")
        return default[0]

    def accounts(self) -> list[dict[str, Any]]:
        """The profile's accounts that belong to the server this command talks to.

        Accounts signed in on another server (another data directory, or this one deleted and made again, on the
        same endpoint or not) are forgotten: their tenant, subscriptions and credentials do not exist here. When
        that drops the default account (the local administrator of the server that was) and this host runs the
        server, the local administrator signs in again, so the profile follows the server. Logins from before
        servers were recorded count as this server's, except the local administrator's, which is checked anew.
        With no server to ask, the profile is taken as it is."""
        accounts = self.profile.accounts()
        if not accounts:
            return accounts
        try:
            endpoints = self.endpoints
        except CLIError:
            return accounts
        stale = set()
        for account in accounts:
            user = str(account.get("user", {}).get("name", ""))
            login = self.profile.login(user) or {}
            recorded = login.get("server")
            if (recorded is not None or login.get("kind") == "admin") and not endpoints.is_same_server(recorded):
                stale.add(user.lower())
        if not stale:
            return accounts
        default_dropped = any(a.get("isDefault") and str(a.get("user", {}).get("name", "")).lower() in stale
                              for a in accounts)
        for user in stale:
            self.profile.forget(user)
        if (default_dropped or not self.profile.accounts()) and self.admin_file() is not None:
            self.login_admin()
        return self.profile.accounts()

    @property
    def subscription_id(self) -> str:
        return str(self.account()["id"])

    def auto_login(self) -> list[dict[str, Any]]:
        """Sign in as the local administrator when this host runs the server; else az's login message."""
        self.endpoints  # noqa: B018 - raises ServerNotRunning when there is no server to sign in to
        if self.admin_file() is None:
            raise CLIError(LOGIN_MESSAGE)
        return self.login_admin()

    def admin_file(self) -> Any:
        try:
            data_dir = self.endpoints.data_dir
        except CLIError:
            data_dir = None
        if data_dir is None:
            return None
        path = data_dir / "admin.json"
        return path if path.exists() else None

    # -- credentials -----------------------------------------------------------------------------------

    def credential(self, account: dict[str, Any] | None = None) -> TokenSource:
        account = account or self.account()
        user = account["user"]["name"]
        login = self.profile.login(user)
        if login is None:
            raise CLIError(LOGIN_MESSAGE)
        kind = login.get("kind")
        tenant = str(account.get("tenantId") or login.get("tenant"))
        if kind == "admin":
            admin = self._read_admin(login.get("adminFile"))
            return ClientSecretCredential(self.http, self.endpoints.authority, admin["tenantId"], admin["clientId"],
                                          admin["clientSecret"], self.profile)
        if kind == "servicePrincipal":
            return ClientSecretCredential(self.http, self.endpoints.authority, tenant, user,
                                          str(login["clientSecret"]), self.profile)
        if kind == "managedIdentity":
            selector = login.get("selector")
            sel: Selector | None = (selector[0], selector[1]) if selector else None
            return ManagedIdentityCredential(self.http, sel)
        raise CLIError(LOGIN_MESSAGE)

    def _read_admin(self, path: Any) -> dict[str, str]:
        candidates = [path] if path else []
        admin_path = self.admin_file()
        if admin_path is not None:
            candidates.insert(0, str(admin_path))
        for candidate in candidates:
            try:
                data: dict[str, str] = json.loads(open(candidate).read())  # noqa: SIM115
                return data
            except (OSError, ValueError):
                continue
        raise CLIError("The local administrator's credential (admin.json) is not readable; is acrlocal running on "
                       "this data directory? Run 'acrlocal login' again.")

    @cached_property
    def arm(self) -> ArmClient:
        account = self.account()
        return ArmClient(self.http, self.endpoints.resource_manager, self.credential(account), ARM_RESOURCE)

    @cached_property
    def graph(self) -> ArmClient:
        account = self.account()
        return ArmClient(self.http, self.endpoints.graph, self.credential(account), GRAPH_RESOURCE)

    # -- signing in ------------------------------------------------------------------------------------

    def _sign_in(self, credential: TokenSource, user: dict[str, Any], login: dict[str, Any],
                 allow_no_subscriptions: bool = False) -> list[dict[str, Any]]:
        token = credential.get_token(ARM_RESOURCE, fresh=True)
        tenant = tenant_of(token.token)
        arm = ArmClient(self.http, self.endpoints.resource_manager, credential, ARM_RESOURCE)
        subs = arm.list("subscriptions", SUBSCRIPTIONS_API)
        accounts = [{
            "environmentName": self.endpoints.environment_name,
            "homeTenantId": s.get("tenantId", tenant),
            "id": s.get("subscriptionId") or str(s.get("id", "")).rpartition("/")[2],
            "isDefault": False,
            "managedByTenants": [{"tenantId": t.get("tenantId")} for t in s.get("managedByTenants") or []],
            "name": s.get("displayName", ""),
            "state": s.get("state", "Enabled"),
            "tenantId": s.get("tenantId", tenant),
            "user": dict(user),
        } for s in subs]
        if not accounts:
            if not allow_no_subscriptions and login.get("kind") == "managedIdentity":
                raise CLIError("No access was configured for the managed identity, hence no subscriptions were "
                               "found. If this is expected, use '--allow-no-subscriptions' to have tenant level "
                               "access.")
            if not allow_no_subscriptions:
                raise CLIError(f"No subscriptions found for {user['name']}.")
            accounts = [{"environmentName": self.endpoints.environment_name, "homeTenantId": tenant, "id": tenant,
                         "isDefault": False, "managedByTenants": [], "name": "N/A(tenant level account)",
                         "state": "Enabled", "tenantId": tenant, "user": dict(user)}]
        new_ids = {a["id"] for a in accounts}
        kept = [a for a in self.profile.accounts() if a.get("id") not in new_ids]
        for a in kept:
            a["isDefault"] = False
        enabled = [a for a in accounts if a["state"] == "Enabled"] or accounts
        enabled[0]["isDefault"] = True
        self.profile.save_login(user["name"], {**login, "tenant": tenant, "server": self.endpoints.identity})
        self.profile.save_accounts(kept + accounts)
        return accounts

    def login_admin(self) -> list[dict[str, Any]]:
        path = self.admin_file()
        if path is None:
            raise CLIError(f"No local administrator credential here: acrlocal is not running on "
                           f"{self.settings.data_dir} (start it with `acrlocal up`), or use "
                           "`acrlocal login --service-principal` / `acrlocal login --identity`.")
        admin = self._read_admin(str(path))
        cred = ClientSecretCredential(self.http, self.endpoints.authority, admin["tenantId"], admin["clientId"],
                                      admin["clientSecret"], self.profile)
        return self._sign_in(cred, {"name": admin["clientId"], "type": "servicePrincipal"},
                             {"kind": "admin", "adminFile": str(path)})

    def login_service_principal(self, client_id: str, secret: str, tenant: str,
                                allow_no_subscriptions: bool = False) -> list[dict[str, Any]]:
        cred = ClientSecretCredential(self.http, self.endpoints.authority, tenant, client_id, secret, self.profile)
        return self._sign_in(cred, {"name": client_id, "type": "servicePrincipal"},
                             {"kind": "servicePrincipal", "clientSecret": secret}, allow_no_subscriptions)

    def login_identity(self, selector: Selector | None, allow_no_subscriptions: bool = False) -> list[dict[str, Any]]:
        cred = ManagedIdentityCredential(self.http, selector)
        if selector:
            user = {"assignedIdentityInfo": f"{MI_INFO_PREFIX[selector[0]]}-{selector[1]}",
                    "name": "userAssignedIdentity", "type": "servicePrincipal"}
        else:
            user = {"assignedIdentityInfo": "MSI", "name": "systemAssignedIdentity", "type": "servicePrincipal"}
        return self._sign_in(cred, user, {"kind": "managedIdentity", "selector": list(selector) if selector else None},
                             allow_no_subscriptions)
