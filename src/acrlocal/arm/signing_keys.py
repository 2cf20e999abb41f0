"""``POST /subscriptions/{sub}/providers/Microsoft.AcrLocal/rotateSigningKeys``: a new signing key for the Entra
tokens of the subscription's tenant (and, for the server's own default tenant, for the registries' token service),
what ``acrlocal admin rotate-signing-keys`` calls. Azure has no such operation (Microsoft rotates Entra's keys
itself), so the namespace is acrlocal's own; the permission is ``Microsoft.AcrLocal/rotateSigningKeys/action`` at
the subscription (Owner and Contributor have it).

The previous key stops signing at once and stays published (JWKS, verification) until every token it signed has
expired (:mod:`acrlocal.identity.keys`, :mod:`acrlocal.registry.token_keys`), so tokens already issued keep
working. Keys are made, and the published ones read back, in the default executor (RSA key generation takes tens
of milliseconds; the database is never waited for on the event loop).
"""

from __future__ import annotations

import asyncio

from acrlocal.arm.paths import ArmPath
from acrlocal.arm.providers import Call, JsonObject, NamespaceAction, register_action
from acrlocal.identity.keys import KeyRing
from acrlocal.registry.token_keys import TokenKeys

NS = "Microsoft.AcrLocal"
API_VERSION = "2025-01-01"


def _rotate(keys: KeyRing, tenant: str) -> JsonObject:
    active = keys.rotate(tenant)
    return {"tenantId": tenant, "activeKeyId": active.kid, "publishedKeyIds": [k.kid for k in keys.keys(tenant)]}


def _rotate_registry_keys(keys: TokenKeys) -> JsonObject:
    active = keys.rotate()
    published = [k.kid for k in keys.keys() if keys.find(k.kid) is not None]  # noqa: SIM118
    return {"activeKeyId": active.kid, "publishedKeyIds": published}


async def rotate_signing_keys(call: Call, path: ArmPath) -> JsonObject:
    services = call.services
    tenant = call.caller.principal.tenant_id  # the subscription's: the router refuses another tenant's
    loop = asyncio.get_running_loop()
    result = await loop.run_in_executor(None, _rotate, services.keys, tenant)
    if tenant == services.admin.tenantId.lower():
        signer = services.data_plane.token_service.signer
        result["registryTokens"] = await loop.run_in_executor(None, _rotate_registry_keys, signer.keys)
    return result


register_action(NamespaceAction(NS, "rotateSigningKeys", f"{NS}/rotateSigningKeys/action", rotate_signing_keys))
