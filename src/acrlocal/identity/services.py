"""What the Entra endpoints (:mod:`.oauth`, :mod:`.signin`) use, handed in by ``server.py`` when it assembles the
server; they read nothing else of the server."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from acrlocal.identity.directory import Directory
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.lookups import DirectoryLookups
from acrlocal.identity.tokens import TokenIssuer
from acrlocal.lockout import Lockout
from acrlocal.storage.sql import SqlThread


@dataclass(frozen=True)
class EntraServices:
    """Who exists (``directory``, and ``lookups``: its tenants and clients kept while the database is unchanged),
    the tenants' signing keys and JWKS (``keys``), the token issuer (``tokens``), the failed sign-in counter
    (``lockout``, shared with the registries' token services), and where the directory's and the sign-ins' SQL
    runs (``sql``, the server's :class:`~acrlocal.storage.sql.SqlThread`: inline on SQLite, off the event loop on
    PostgreSQL; the handlers call every store method through it)."""

    directory: Directory
    keys: KeyRing
    tokens: TokenIssuer
    lockout: Lockout
    lookups: DirectoryLookups
    sql: SqlThread


#: Where :func:`acrlocal.identity.oauth.setup` keeps them on the application.
ENTRA = web.AppKey("identity.entra", EntraServices)
