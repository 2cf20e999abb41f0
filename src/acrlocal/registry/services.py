"""What the registry's data plane uses, made once by ``server.py`` and handed to
:func:`acrlocal.registry.http.handle` with every request; the handlers read nothing else of the server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from acrlocal.config import Limits
from acrlocal.registry.audit import AuditLog
from acrlocal.registry.authz import Authorizer
from acrlocal.registry.throttle import Throttle
from acrlocal.registry.token_service import TokenService
from acrlocal.storage.artifacts import ArtifactCatalog
from acrlocal.storage.blobs import BlobStore
from acrlocal.storage.metadata import RegistryMetadata
from acrlocal.storage.sql import SqlThread


@dataclass
class RegistryServices:
    """The content (``meta``, ACR's view of it ``artifacts``, the bytes ``blobs``, and ``sql``, where the store calls
    run: inline on SQLite, off the event loop on PostgreSQL), the one authorization call every request makes
    (``authorizer``: the token service's, or the open policy of ``--insecure-open-registry``), the per-registry rate
    limits (``throttle``), the audit log (``audit``), the token endpoints (``token_service``) and the limits."""

    limits: Limits
    meta: RegistryMetadata
    artifacts: ArtifactCatalog
    blobs: BlobStore
    sql: SqlThread
    authorizer: Authorizer
    throttle: Throttle
    audit: AuditLog
    token_service: TokenService
    # Blob GETs on a store with URLs of its own: a 307 there (True, ACR's way) or streamed (up --blob-downloads).
    blob_redirect: bool = True
    # The sweeper's task, from on_startup to on_shutdown (acrlocal.registry.http).
    sweeper: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
