"""The data plane's authorization seam: one call per request, before anything else is done.

Every request to ``/v2/`` goes through :meth:`Authorizer.authorize` with the registry, the repository (``None``
for ``/v2/`` itself and for the catalog) and the actions the request needs. It returns the :class:`Caller` or
raises :class:`~acrlocal.registry.errors.RegistryError` with a ``WWW-Authenticate`` challenge in ``headers``:
UNAUTHORIZED (401) when the caller must authenticate or, as in ACR, holds a token that does not allow the request;
DENIED (403) only when asking for a token with the challenged scope would succeed (see the token authorizer).

Actions are plain strings, as in the Docker token scope grammar (``repository:<name>:<actions>``):

- ``pull``, ``push``, ``delete`` on a repository;
- ``overwrite``, added to ``push`` when a manifest PUT moves a tag that already exists (derived from server
  state, never from the request's shape, so a create-only policy cannot be bypassed by re-pushing a tag);
- ``metadata_read`` and ``metadata_write`` on a repository for ACR's ``/acr/v1`` API (reading repository, tag and
  manifest properties; changing their attributes), as ACR's token scopes name them;
- ``registry:catalog:*`` with ``repository=None`` for ``GET /v2/_catalog`` and ``GET /acr/v1/_catalog``;
- no actions at all with ``repository=None`` for ``GET /v2/`` (only "who is calling").

:meth:`Authorizer.permits` answers the same question without raising, for checks on a second repository within
one request (the *source* of a cross-repository mount); a ``False`` there makes the mount fall back to an
ordinary upload instead of failing.

:class:`OpenAuthorizer` allows everything to an anonymous caller; it is used only when the server is started with
the explicit ``--insecure-open-registry`` switch (benchmarks of the data plane without authentication). The
policy of a normal server is :class:`acrlocal.registry.token_auth.TokenAuthorizer`: ACR's bearer tokens, issued
by the token service (:mod:`acrlocal.registry.token_service`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

from acrlocal.storage.registries import RegistryRecord

PULL = "pull"
PUSH = "push"
DELETE = "delete"
OVERWRITE = "overwrite"
METADATA_READ = "metadata_read"
METADATA_WRITE = "metadata_write"
CATALOG = "registry:catalog:*"


@dataclass(frozen=True, slots=True)
class Caller:
    """Who made a request: a principal id (``None`` when anonymous) and the peer address.

    ``principal`` is an Entra object id, ``admin/<registry>`` for the admin user or ``token/<name>`` for a
    repository-scoped token; ``kind`` is ``principal``, ``admin``, ``token`` or ``anonymous``."""

    principal: str | None
    address: str | None
    kind: str = "anonymous"

    @property
    def anonymous(self) -> bool:
        return self.principal is None


class Authorizer(Protocol):
    async def authorize(
        self, request: web.Request, registry: RegistryRecord, repository: str | None, actions: Sequence[str]
    ) -> Caller:
        """The caller, if it may do ``actions`` on ``repository``; raises UNAUTHORIZED or DENIED otherwise."""
        ...

    async def permits(
        self,
        request: web.Request,
        caller: Caller,
        registry: RegistryRecord,
        repository: str,
        actions: Sequence[str],
    ) -> bool:
        """Whether ``caller`` (already authorized for this request) may also do ``actions`` on ``repository``."""
        ...


class OpenAuthorizer:
    """Everything is allowed to everyone; the caller is anonymous. A server keeps it only when started with
    ``--insecure-open-registry`` (see the module docstring); otherwise it installs the token service's policy."""

    async def authorize(
        self, request: web.Request, registry: RegistryRecord, repository: str | None, actions: Sequence[str]
    ) -> Caller:
        return Caller(None, request.remote)

    async def permits(
        self,
        request: web.Request,
        caller: Caller,
        registry: RegistryRecord,
        repository: str,
        actions: Sequence[str],
    ) -> bool:
        return True
