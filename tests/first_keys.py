"""A tenant's first signing key, made by one process of a server when it signs the tenant's first token, and that
token verified at another process whose published key ids were read before the key existed: ``acrlocal up --workers
2`` (tests/test_workers.py) and replicas over PostgreSQL (tests/replicas/test_replicas.py).

A process keeps the ids of every published key and refuses a token naming another from memory; the process that
makes a key announces it (a generation bump: the shared file, and PostgreSQL's notifications for other replicas)
before the token it signs leaves, so the other's next request reads the ids again and accepts the token.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.harness import ACR_SCOPE, AcrLocal

ACR_AUDIENCE = "https://containerregistry.azure.net"


class Through(Protocol):
    """A request on a kept-alive connection that process ``index`` accepted (checked from the answer's header)."""

    def __call__(self, index: int, method: str, url: str, **kw: Any) -> requests.Response: ...


def forged_entra_token(tenant: str, kid: str, audience: str = ACR_AUDIENCE) -> str:
    """A token in the shape of an Entra token of ``tenant``, signed with a key of its own and naming ``kid``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    return jwt.encode({"aud": audience, "iss": f"https://login.microsoftonline.com/{tenant}/v2.0", "iat": now,
                       "nbf": now, "exp": now + 3600, "tid": tenant, "oid": str(uuid.uuid4()),
                       "sub": str(uuid.uuid4())}, key, algorithm="RS256", headers={"kid": kid})


def first_key_verifies_at_the_other(server: AcrLocal, registry: Through, shared: Through, maker: int,
                                    verifier: int, name: str) -> None:
    """Tenant ``name`` made (no key yet); ``verifier`` refuses a forged token of it (its key ids are read then);
    ``maker`` signs the tenant's first token (making its first key); ``verifier`` verifies that token, at
    ``/oauth2/exchange`` of the default registry (served by the process that accepted the connection, which
    verifies the token before anything else). The registry belongs to the server's default tenant, so the exchange
    is refused all the same, but for that reason, naming the tenant the verified token came from."""
    made = json.loads(server.cli("admin", "tenant", "create", "--name", name).stdout)
    tenant = made["tenantId"]
    login_server = server.login_server()
    exchange = f"https://{login_server}/oauth2/exchange"

    def exchanged(token: str) -> str:
        r = registry(verifier, "POST", exchange, data={"grant_type": "access_token", "service": login_server,
                                                       "access_token": token})
        assert r.status_code == 401, r.text
        return str(r.json()["errors"][0]["message"])

    refused = exchanged(forged_entra_token(tenant, uuid.uuid4().hex))
    assert "was not accepted" in refused and "is not a key of tenant" in refused, refused
    r = shared(maker, "POST", f"{server.shared}/{tenant}/oauth2/v2.0/token", data={
        "grant_type": "client_credentials", "client_id": made["clientId"], "client_secret": made["clientSecret"],
        "scope": ACR_SCOPE})
    assert r.status_code == 200, r.text
    verified = exchanged(r.json()["access_token"])
    assert f"not to the token's tenant {tenant}" in verified, verified
