"""The user's CLI profile, like az's ``AZURE_CONFIG_DIR``: accounts, how each signed in, and cached tokens.

The directory is ``$ACRLOCAL_CONFIG_DIR``, else ``~/.acrlocal``; it is made 0700 and every file in it 0600, and
each file is replaced whole (write to a temporary file, then rename), so a failed command never leaves a torn
profile. Files:

- ``azureProfile.json``: ``{"subscriptions": [<account>]}``, each account exactly as ``az account list`` shows it;
- ``logins.json``: for each signed-in user, how to get tokens again (the local administrator's data directory, a
  service principal's secret, or the managed identity selector);
- ``tokens.json``: access tokens by (authority, tenant, user, resource), dropped five minutes before they expire.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

ENV_CONFIG_DIR = "ACRLOCAL_CONFIG_DIR"
EXPIRY_MARGIN_S = 300


def config_dir() -> Path:
    if env := os.environ.get(ENV_CONFIG_DIR):
        return Path(env).expanduser()
    return Path.home() / ".acrlocal"


class Profile:
    def __init__(self, directory: Path | None = None) -> None:
        self.dir = directory or config_dir()

    # -- files -----------------------------------------------------------------------------------------

    def _read(self, name: str, default: Any) -> Any:
        try:
            return json.loads((self.dir / name).read_text())
        except FileNotFoundError:
            return default
        except ValueError:
            return default

    def _write(self, name: str, value: Any) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        path = self.dir / name
        tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(value, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)

    # -- accounts --------------------------------------------------------------------------------------

    def accounts(self) -> list[dict[str, Any]]:
        data = self._read("azureProfile.json", {})
        subs = data.get("subscriptions", []) if isinstance(data, dict) else []
        return [s for s in subs if isinstance(s, dict)]

    def save_accounts(self, accounts: list[dict[str, Any]]) -> None:
        self._write("azureProfile.json", {"subscriptions": accounts})

    def login(self, user: str) -> dict[str, Any] | None:
        logins = self._read("logins.json", {})
        value = logins.get(user) if isinstance(logins, dict) else None
        return value if isinstance(value, dict) else None

    def save_login(self, user: str, login: dict[str, Any]) -> None:
        logins = self._read("logins.json", {})
        logins = logins if isinstance(logins, dict) else {}
        logins[user] = login
        self._write("logins.json", logins)

    def forget(self, user: str) -> None:
        """Remove ``user``'s accounts, login and tokens (``logout``)."""
        accounts = [a for a in self.accounts() if a.get("user", {}).get("name", "").lower() != user.lower()]
        if accounts and not any(a.get("isDefault") for a in accounts):
            accounts[0]["isDefault"] = True
        self.save_accounts(accounts)
        logins = self._read("logins.json", {})
        if isinstance(logins, dict):
            logins = {k: v for k, v in logins.items() if k.lower() != user.lower()}
            self._write("logins.json", logins)
        tokens = self._read("tokens.json", {})
        if isinstance(tokens, dict):
            tokens = {k: v for k, v in tokens.items() if f"|{user.lower()}|" not in k.lower()}
            self._write("tokens.json", tokens)

    # -- tokens ----------------------------------------------------------------------------------------

    @staticmethod
    def token_key(authority: str, tenant: str, user: str, resource: str) -> str:
        return f"{authority}|{tenant}|{user}|{resource}"

    def cached_token(self, key: str) -> tuple[str, int] | None:
        tokens = self._read("tokens.json", {})
        entry = tokens.get(key) if isinstance(tokens, dict) else None
        if not isinstance(entry, dict):
            return None
        token, expires_on = entry.get("accessToken"), entry.get("expiresOn")
        if not isinstance(token, str) or not isinstance(expires_on, int):
            return None
        if expires_on - EXPIRY_MARGIN_S <= time.time():
            return None
        return token, expires_on

    def cache_token(self, key: str, token: str, expires_on: int) -> None:
        tokens = self._read("tokens.json", {})
        tokens = tokens if isinstance(tokens, dict) else {}
        now = time.time()
        tokens = {k: v for k, v in tokens.items() if isinstance(v, dict) and v.get("expiresOn", 0) > now}
        tokens[key] = {"accessToken": token, "expiresOn": expires_on}
        self._write("tokens.json", tokens)
