"""The registry room: the OCI Distribution v1.1 data plane, ACR's token service and its ``/acr/v1`` API.

A request enters at :func:`.http.handle` (routing by :mod:`.paths`), is throttled (:mod:`.throttle`), authorized
through the one seam every handler calls (:mod:`.authz`; the policy is :mod:`.token_auth` over :mod:`.permissions`),
checked against ACR's locks (:mod:`.guards`) and answered by :mod:`.manifest_api`, :mod:`.blob_api` or
:mod:`.acr_api`. Tokens come from :mod:`.token_service` (``/oauth2/exchange``, ``/oauth2/token``), made by
:mod:`.token_codec` with :mod:`.token_keys`. Pure grammar lives in :mod:`.names`, :mod:`.manifests`,
:mod:`.scopes` and :mod:`.scope_maps` (digests in :mod:`acrlocal.storage.digest`); errors are OCI's
(:mod:`.errors`). :mod:`.hosting` says which registries exist and where each answers; :mod:`.audit` keeps ACR's
login and repository event logs. Content is stored through :mod:`acrlocal.storage`.
"""
