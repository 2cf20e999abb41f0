"""The identity room: an Entra-ID-shaped directory (tenants, subscriptions, principals, managed identities),
signing keys, Entra-shaped access tokens, the Entra endpoints and IMDS.

:mod:`.directory` (over the tables of :mod:`.store`) keeps who exists; :mod:`.keys` the per-tenant RS256 keys and
JWKS; :mod:`.tokens` issues and verifies tokens. Over HTTP, :mod:`.oauth` serves discovery, JWKS and the token
endpoints (client authentication in :mod:`.assertions`; errors in Entra's shape, :mod:`.errors`), and :mod:`.imds`
serves each VM's IMDS and App Service identity endpoint. :mod:`.bootstrap` makes the default tenant, subscription
and local administrator on first start. The endpoints receive what they use (:class:`.services.EntraServices`; IMDS
its VMs as :class:`.imds.VirtualMachines`) from ``server.py``; the room imports nothing above it.
"""
