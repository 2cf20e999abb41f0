"""``POST /subscriptions/{sub}/providers/Microsoft.AcrLocal/rotateSigningKeys``: a new signing key for the Entra
tokens of the subscription's tenant (and, for the server's own default tenant, for the registries' token service),
what ``acrlocal admin rotate-signing-keys`` calls. Azure has no such operation (Microsoft rotates Entra's keys
itself), so the namespace is acrlocal's own; the permission is ``Microsoft.AcrLocal/rotateSigningKeys/action`` at
the subscription (Owner and Contributor have it).

The previous key stops signing at once and stays published (JWKS, verification) until every token it signed has
expired (:mod:`acrlocal.identity.keys`, :mod:`acrlocal.registry.token_keys`), so tokens already issued keep
working. Keys are made in the default executor (RSA key generation takes tens of milliseconds).
"""

from __future__ import annotations

import asyncio

from acrlocal.arm.paths import ArmPath
from acrlocal.arm.providers import Call, JsonObject, NamespaceAction, register_action

NS = "Microsoft.AcrLocal"
API_VERSION = "2025-01-01"


async def rotate_signing_keys(call: Call, path: ArmPath) -> JsonObject:
    services = call.services
    tenant = call.caller.principal.tenant_id  # the subscription's: the router refuses another tenant's
    loop = asyncio.get_running_loop()
    active = await loop.run_in_executor(None, services.keys.rotate, tenant)
    result: JsonObject = {"tenantId": tenant, "activeKeyId": active.kid,
                          "publishedKeyIds": [k.kid for k in services.keys.keys(tenant)]}
    if tenant == services.admin.tenantId.lower():
        signer = services.data_plane.token_service.signer
        registry_key = await loop.run_in_executor(None, signer.keys.rotate)
        published = [k.kid for k in signer.keys.keys() if signer.keys.find(k.kid) is not None]  # noqa: SIM118
        result["registryTokens"] = {"activeKeyId": registry_key.kid, "publishedKeyIds": published}
    return result


register_action(NamespaceAction(NS, "rotateSigningKeys", f"{NS}/rotateSigningKeys/action", rotate_signing_keys))
