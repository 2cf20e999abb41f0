"""Run real Azure clients (azure-identity, msal) in child processes with an environment the test controls.

The clients read their environment overrides (``AZURE_POD_IDENTITY_AUTHORITY_HOST``, ``IDENTITY_ENDPOINT``...) when
they are constructed, so each runs in a fresh interpreter whose environment holds only what the test gives it, plus
a guard (``tests/loopback_only``) that refuses every non-loopback connection. A client script prints one JSON
document on its last line of stdout; :func:`run_client` returns it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import jwt
import requests

TESTS = Path(__file__).resolve().parent
GUARD = TESTS / "loopback_only"

# Printed by client scripts: the outcome of get_token, or the exception it raised.
PRELUDE = textwrap.dedent("""
    import json, sys
    def report(**kw):
        print(json.dumps(kw))
    def attempt(fn):
        try:
            tok = fn()
        except Exception as exc:
            report(ok=False, error=type(exc).__name__, message=str(exc))
        else:
            token = getattr(tok, "token", None) or (tok.get("access_token") if isinstance(tok, dict) else None)
            expires = getattr(tok, "expires_on", None)
            report(ok=bool(token), token=token, expires_on=expires, raw=tok if isinstance(tok, dict) else None)
""")


def client_env(home: Path, **overrides: str) -> dict[str, str]:
    """A minimal environment: PATH, a private HOME, the loopback guard, and the given variables only."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PYTHONPATH": str(GUARD),
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "AZURE_CORE_COLLECT_TELEMETRY": "false",
        "LANG": "C.UTF-8",
    }
    env.update(overrides)
    return env


def run_client(code: str, env: dict[str, str], timeout: float = 120) -> dict[str, Any]:
    """Run ``code`` (after :data:`PRELUDE`) in a child interpreter; the JSON it printed last."""
    proc = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(code)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(f"client exited {proc.returncode}:\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def verify_with_jwks(token: str, authority: str, ca: str, audience: str) -> dict[str, Any]:
    """Verify ``token`` with PyJWT the way a resource server would: the tenant's discovery document, its JWKS,
    RS256 only, issuer, audience and expiry checked."""
    tid = jwt.decode(token, options={"verify_signature": False})["tid"]
    config = requests.get(f"{authority}/{tid}/v2.0/.well-known/openid-configuration", verify=ca, timeout=30).json()
    client = jwt.PyJWKClient(config["jwks_uri"], ssl_context=_ssl(ca))
    key = client.get_signing_key_from_jwt(token).key
    claims: dict[str, Any] = jwt.decode(token, key, algorithms=["RS256"], audience=audience,
                                        issuer=config["issuer"], options={"require": ["exp", "iat", "nbf"]})
    return claims


def _ssl(ca: str) -> Any:
    import ssl

    return ssl.create_default_context(cafile=ca)
