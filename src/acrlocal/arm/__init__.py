"""The control plane: an ARM-shaped REST API on the shared https port.

The framework (:mod:`.routes`, :mod:`.paths`, :mod:`.auth`, :mod:`.providers`, :mod:`.store`) parses ARM paths,
authenticates the bearer token, authorizes the call by RBAC on the target scope, and hands the call to the
resource provider registered for the type. Providers live in their own modules (:mod:`.groups`,
:mod:`.registries`, :mod:`.authorization`, ...) and register themselves with :func:`.providers.register`.
"""
