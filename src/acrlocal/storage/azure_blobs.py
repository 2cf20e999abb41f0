"""Blobs and upload sessions in an Azure Blob Storage container: :class:`AzureBlobStore` (``acrlocal up --blob-store``).

Layout in the container: a published blob is the block blob ``<algorithm>/<hex>``; an upload session is the block
blob ``_uploads/<id>``, committed empty when the session opens, its chunks staged on it as uncommitted blocks, and
its state in the blob's metadata. Any replica can continue a session, because everything about it is in storage:

- Each append stages the request body as blocks of up to :data:`BLOCK_SIZE` (Put Block), then records the new
  state with one Set Blob Metadata conditional on the ETag of the state it went on from, so of two replicas
  appending to one session at once exactly one succeeds (the other gets :class:`UploadRaced`, and its blocks are
  never committed). Until that write, nothing of the append is part of the upload: a failed or cut-off chunk needs
  no undoing.
- The state is the size, the last block's id, and the running SHA-256, saved with
  :class:`~acrlocal.storage.sha256state.ResumableSha256` (OpenSSL's state, portable, about 100 bytes), so the
  digest at completion costs nothing more than a finish: no byte is read back. Block ids carry their offset, a
  random nonce and the previous block's nonce, so the blocks of the upload are found by walking back from the
  last one, whatever else a failed or raced chunk staged. The state before the last append is kept too, which is
  what :meth:`truncate` can go back to (a chunk the registry refused after the store took it).
- Completion checks the digest, commits the chain of blocks (Put Block List, conditional on the ETag), copies the
  upload to the digest's name (Copy Blob within the account, on condition that no blob has that name: one that
  has is the digest published before, the same bytes, and is left as it is) and deletes the upload. A digest
  other than sha256, or a libcrypto without the resumable functions, is checked by reading the committed upload
  back.
- A request reads the upload's state once. The state and ETag a call read or wrote (Put Blob and Set Blob
  Metadata answer the new ETag) are what the next call of the same request goes on from, as the registry holds
  the upload's lock for the whole request; they are remembered until the request ends, never longer
  (:func:`_known_states`): the next request may reach another replica, after others wrote.

Requests: opening a session is a Put Blob; :meth:`~AzureBlobStore.upload_size`, the registry's first look at a
session in a request, a Get Blob Properties; an append, a Put Block per block and a Set Blob Metadata; a cut back,
a Set Blob Metadata; completion, a Get Block List (unless the request staged every block of the upload), a Put
Block List, a Copy Blob and a Delete Blob. An append, cut back or completion that finds no state remembered in its
request first reads it (Get Blob Properties). A push as POST, PATCH and PUT ``?digest=`` makes 1 + 3 + 5
requests; as POST and a PUT ``?digest=`` with the blob, 1 + 6; a whole blob in one POST 6.

Reads stream Get Blob ranges in pieces of :data:`READ_PIECE`; :meth:`download_url` makes a read-only SAS for the
blob, valid for :data:`SAS_LIFETIME`: signed with the account key, or with a user delegation key when the store
authenticates with a managed identity (a token cannot sign a SAS; the key, valid :data:`DELEGATION_KEY_LIFETIME`, is
asked for at start and again before it runs out). A SAS credential cannot make another SAS: its GETs stream.

The managed identity is azure-identity's ``ManagedIdentityCredential`` (:func:`managed_identity`): IMDS on an Azure
VM, or the endpoint the environment names (App Service's ``IDENTITY_ENDPOINT``, workload identity's
``AZURE_FEDERATED_TOKEN_FILE``...), for the audience ``https://storage.azure.com``.

Errors: storage that cannot be reached, or that answers 5xx, 408 or 429 once the SDK's retries are spent, raises
:class:`~acrlocal.storage.blobs.StorageUnavailable` (the registry answers 503 with ``Retry-After``); so does a
credential storage refuses, or a managed identity that gives no token (:class:`TokenRefused`), and at start
(:meth:`AzureBlobStore.open`) both are :class:`~acrlocal.errors.ConfigError` saying which. A missing upload or blob
is :class:`~acrlocal.errors.NotFound`. The credential and tokens are never logged: the SDK's request logging is kept
at WARNING, and URLs shown are without their query.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import datetime as dt
import hashlib
import logging
import os
import secrets
import ssl
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from azure.core import MatchConditions
from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import AioHttpTransport
from azure.storage.blob import BlobBlock, BlobSasPermissions, ContentSettings, UserDelegationKey, generate_blob_sas
from azure.storage.blob.aio import BlobClient, BlobServiceClient, ContainerClient, LinearRetry

from acrlocal.blob_location import BlobLocation
from acrlocal.errors import AcrLocalError, ConfigError, NotFound
from acrlocal.imds_guard import imds_is_local
from acrlocal.publiccloud import IMDS_ADDRESS
from acrlocal.storage import sha256state
from acrlocal.storage.blobs import DigestMismatch, StorageUnavailable, UploadRaced, UploadTooLarge
from acrlocal.storage.digest import ALGORITHMS, Digest

log = logging.getLogger(__name__)
# The SDK logs every request and response at INFO; a SAS in a URL is redacted there, but nothing is gained by it.
logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.WARNING)

#: Largest block staged by one Put Block: a request body is cut into blocks of this size (its last one shorter).
#: Two are in memory per upload while one is sent (the next is being received). 50,000 blocks make a blob.
BLOCK_SIZE = 4 * 1024 * 1024
#: Size of the ranged Get Blob requests a streamed read makes; each is held whole in memory while it is sent.
READ_PIECE = 4 * 1024 * 1024
#: How long a redirect's SAS is valid (it must only be valid when the client's request starts).
SAS_LIFETIME = dt.timedelta(minutes=10)
#: Clock skew allowed for between this host and the storage service.
SAS_SKEW = dt.timedelta(minutes=5)
#: How long a user delegation key asked for is valid (Azure allows 7 days); a new one is asked for when the one held
#: has less than :data:`DELEGATION_KEY_RENEW` left.
DELEGATION_KEY_LIFETIME = dt.timedelta(days=1)
DELEGATION_KEY_RENEW = dt.timedelta(hours=1)
UPLOADS = "_uploads/"
OCTET_STREAM = ContentSettings(content_type="application/octet-stream")
_STATE_KEY, _PREVIOUS_KEY = "acrlocalupload", "acrlocalprevious"
_NO_BLOCK = "0" * 16


def _code(exc: HttpResponseError) -> str:
    """Storage's error code (``""`` if it gave none)."""
    code = getattr(exc, "error_code", None) or ""
    return str(getattr(code, "value", code))  # the SDK's StorageErrorCode, or the code as storage sent it


def _detail(exc: HttpResponseError) -> str:
    """Storage's error code, and the reason it gives for refusing a credential (its AuthenticationErrorDetail)."""
    code = _code(exc)
    for line in str(exc.message or "").splitlines():
        name, _, value = line.partition(":")
        if name.strip().lower() == "authenticationerrordetail":
            return f"{code}: {value.strip()[:200]}"
    return code


def _refused(where: str, exc: StorageUnavailable, needs: str) -> Exception:
    """At start, a refused credential (saying what it ``needs``) or a managed identity that gave no token as
    :class:`ConfigError`; else ``exc`` (storage cannot be reached)."""
    cause = exc.__cause__
    if isinstance(cause, TokenRefused):
        return ConfigError(f"blob store {where}: acrlocal's managed identity gave no token: {cause.message}")
    if isinstance(cause, HttpResponseError) and cause.status_code in (401, 403):
        return ConfigError(f"blob store {where} refused the credential given ({cause.status_code} "
                           f"{_detail(cause)}); {needs}")
    return exc


class TokenRefused(AcrLocalError, ClientAuthenticationError):
    """The managed identity gave no token: its endpoint refused, or could not be reached. The message is
    azure-identity's (the endpoint's error, never a token)."""


class _ManagedIdentity(AsyncTokenCredential):
    """azure-identity's ``ManagedIdentityCredential``, its failures raised as :class:`TokenRefused`."""

    def __init__(self, client_id: str | None) -> None:
        from azure.identity.aio import ManagedIdentityCredential  # imported only when it is used

        asks_imds = _asks_imds_address(os.environ)
        if asks_imds is not None and not imds_is_local():
            raise ConfigError(
                f"acrlocal's managed identity would ask IMDS at {IMDS_ADDRESS} ({asks_imds}); acrlocal uses that "
                "address only inside its own VMs and sends nothing there from this machine. Name the identity's "
                "endpoint instead: workload identity (AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID, "
                "AZURE_AUTHORITY_HOST, AZURE_CLIENT_ID), IDENTITY_ENDPOINT and IDENTITY_HEADER, or "
                "AZURE_POD_IDENTITY_AUTHORITY_HOST at another address.")
        try:
            self._credential = ManagedIdentityCredential(client_id=client_id)
        except ValueError as exc:  # e.g. workload identity's variables without a client id
            raise ConfigError(f"acrlocal's managed identity cannot be used: {exc}") from exc

    async def get_token(self, *scopes: str, claims: str | None = None, tenant_id: str | None = None,
                        enable_cae: bool = False, **kwargs: Any) -> AccessToken:
        try:
            return await self._credential.get_token(*scopes, claims=claims, tenant_id=tenant_id,
                                                    enable_cae=enable_cae, **kwargs)
        except ClientAuthenticationError as exc:
            raise TokenRefused(str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__) from exc

    async def close(self) -> None:
        await self._credential.close()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


def managed_identity(client_id: str | None = None) -> AsyncTokenCredential:
    """The managed identity of the host acrlocal runs on (``client_id``: a user-assigned one), from the source
    azure-identity chooses by the environment. :class:`ConfigError` where that source is IMDS at 169.254.169.254
    (no variable names another endpoint, or one names that address) outside an acrlocal VM's own network namespace:
    acrlocal sends nothing there (:mod:`acrlocal.imds_guard`)."""
    return _ManagedIdentity(client_id)


#: The variables that name where azure-identity's ``ManagedIdentityCredential`` asks for tokens, in the order it
#: looks at them: App Service, Service Fabric or Azure Arc; Cloud Shell or Azure ML; workload identity (all of
#: these three); else IMDS, at ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` or its real address.
_IDENTITY_ENDPOINTS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT")
_WORKLOAD_IDENTITY = ("AZURE_AUTHORITY_HOST", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE")


def _asks_imds_address(environ: Mapping[str, str]) -> str | None:
    """Why the credential would send to IMDS's real address under ``environ`` (the variable that names it, or the
    default IMDS endpoint chosen for want of any other), or ``None`` if it would not."""
    for name in (*_IDENTITY_ENDPOINTS, "IMDS_ENDPOINT", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_AUTHORITY_HOST"):
        if IMDS_ADDRESS in environ.get(name, ""):
            return f"{name} names it"
    if any(environ.get(name) for name in _IDENTITY_ENDPOINTS) or all(environ.get(n) for n in _WORKLOAD_IDENTITY):
        return None
    if environ.get("AZURE_POD_IDENTITY_AUTHORITY_HOST"):
        return None
    return "no variable names another identity endpoint"


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """The SDK's connection failures and 5xx/408/429 answers, a credential refused (401, 403: also a role that does
    not allow the operation) and a managed identity that gives no token as :class:`StorageUnavailable`, naming
    ``what``."""
    try:
        yield
    except (ServiceRequestError, ServiceResponseError, OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError):
            raise
        raise StorageUnavailable(f"blob storage could not be reached while {what}: {type(exc).__name__}") from exc
    except TokenRefused as exc:
        log.error("acrlocal's managed identity gave no token for blob storage while %s: %s", what, exc)
        raise StorageUnavailable(f"acrlocal's managed identity gave no token for blob storage while {what}") from exc
    except HttpResponseError as exc:
        if isinstance(exc, ClientAuthenticationError) or exc.status_code in (401, 403):
            log.error("blob storage refused acrlocal's credential while %s: %s %s", what, exc.status_code,
                      _detail(exc))
            raise StorageUnavailable(f"blob storage refused the registry's credential while {what}") from exc
        if exc.status_code is not None and (exc.status_code >= 500 or exc.status_code in (408, 429)):
            raise StorageUnavailable(f"blob storage answered {exc.status_code} while {what}") from exc
        raise


@dataclass(frozen=True)
class _Step:
    """The state of an upload after an append: its size, the nonce of its last block (``_NO_BLOCK`` when empty),
    how many blocks it has, and the saved SHA-256 (``None`` where states cannot be saved)."""

    size: int
    head: str
    blocks: int
    sha256: bytes | None

    def encode(self) -> str:
        state = base64.urlsafe_b64encode(self.sha256).decode() if self.sha256 is not None else "-"
        return f"{self.size}.{self.head}.{self.blocks}.{state}"

    @classmethod
    def decode(cls, text: str) -> _Step:
        try:
            size, head, blocks, state = text.split(".")
            return cls(int(size), head, int(blocks), None if state == "-" else base64.urlsafe_b64decode(state))
        except ValueError as exc:
            raise NotFound(f"upload state {text[:60]!r} is not one acrlocal wrote") from exc

    @classmethod
    def empty(cls, resumable: bool) -> _Step:
        return cls(0, _NO_BLOCK, 0, sha256state.ResumableSha256().save() if resumable else None)


def _block_id(offset: int, nonce: str, previous: str) -> str:
    # 48 characters for every block of every upload (a blob's block ids must all have one length).
    return f"{offset:016x}{nonce}{previous}"


@dataclass(frozen=True)
class _Known:
    """An upload's state as this request last read or wrote it: the step, the one before it, the ETag of the
    upload blob with that state in its metadata, and the ids of the step's blocks in order if the request staged
    them all (else ``None``; see :meth:`chain`)."""

    step: _Step
    previous: _Step | None
    etag: str
    ids: tuple[str, ...] | None = None

    def chain(self) -> tuple[str, ...] | None:
        """The ids of all the upload's blocks in order, when the request knows them without listing them: the
        upload has none, or the request saw it with none and staged every block since. Checked as :meth:`_chain
        <AzureBlobStore._chain>` checks a listing, but for the last block's size (not in its id): one block per
        step, each naming the one before, from offset 0 up to the step's last block."""
        if self.step.blocks == 0:
            return ()
        if self.ids is None or len(self.ids) != self.step.blocks:
            return None
        nonce, end = _NO_BLOCK, -1
        for block_id in self.ids:
            offset = int(block_id[:16], 16)
            if block_id[32:] != nonce or offset <= end or (nonce == _NO_BLOCK and offset != 0):
                return None
            nonce, end = block_id[16:32], offset
        return self.ids if nonce == self.step.head and end < self.step.size else None


#: The upload states the current request read or wrote: the task that owns the dict, and the dict by (container,
#: upload id). See :func:`_known_states`.
_KNOWN: contextvars.ContextVar[tuple[weakref.ref[asyncio.Task[Any]], dict[tuple[str, str], _Known]] | None] = (
    contextvars.ContextVar("acrlocal_upload_states", default=None))


def _known_states() -> dict[tuple[str, str], _Known]:
    """The upload states the current task (one request: aiohttp runs each in a task of its own) read or wrote, so
    that its next call on the same upload need not read them again.

    Never shared between requests: the dict is made on first use and set in the task's own context, along with a
    weak reference to that task. A task made later copies the context of the one that made it, and with it the
    reference to the dict; but it finds another owner there and sets a fresh dict of its own. A call outside any
    task gets a dict that nothing keeps. Nothing is kept across requests, which is what makes reusing a state
    right: the registry holds the upload's lock for the whole request, so no other request (on this replica or
    another) changes the upload between the read and the reuse, while a state from an earlier request may be
    stale (the next chunk of a session often reaches another replica)."""
    task = asyncio.current_task()
    held = _KNOWN.get()
    if held is not None and task is not None and held[0]() is task:
        return held[1]
    states: dict[tuple[str, str], _Known] = {}
    if task is not None:
        _KNOWN.set((weakref.ref(task), states))
    return states


class AzureBlobStore:
    """:class:`~acrlocal.storage.blobs.BlobStore` on one container. Make it with :meth:`open` (inside the event
    loop), and :meth:`close` it. The credential is one of: ``key``, the account key; ``sas``, a SAS for the
    container (or account) with read, add, create, write, delete and list permissions (or the SAS in the location's
    URL); ``token``, a token credential (:func:`managed_identity`) whose identity holds a role with those data
    actions, such as Storage Blob Data Contributor. The store closes ``token`` when it is closed. With ``token`` and
    ``redirects``, blob GETs are redirected with user delegation SAS (the role must allow
    ``generateUserDelegationKey``, as Storage Blob Data Contributor does); without ``redirects`` they stream. ``ca``
    is a CA bundle file to check the storage endpoint's certificate against instead of the system's (an
    emulator's)."""

    def __init__(self, location: BlobLocation, *, key: str | None = None, sas: str | None = None,
                 token: AsyncTokenCredential | None = None, redirects: bool = True, ca: str | None = None) -> None:
        """Call inside the event loop (the HTTP session belongs to it)."""
        self.location = location
        self._key = key
        if token is not None and (key is not None or sas is not None):
            raise ConfigError(f"blob store {location.url}: give the managed identity or an account key or SAS, "
                              "not both")
        sas = sas or location.sas
        if key is None and sas is None and token is None:
            raise ConfigError(f"blob store {location.url} needs a credential: an account key "
                              "(--blob-store-key, ACRLOCAL_BLOB_STORE_KEY), a SAS (--blob-store-sas, "
                              "ACRLOCAL_BLOB_STORE_SAS, or the URL's query) or the managed identity "
                              "(--blob-store-identity)")
        self._sas = sas.lstrip("?") if sas is not None and key is None and token is None else None
        self._token = token
        credential: Any = ({"account_name": location.account, "account_key": key} if key is not None
                           else token if token is not None else self._sas)
        transport: dict[str, Any] = {}
        if ca is not None:
            # One TLS context for every request. Given a CA file, azure-core makes a new SSLContext per request,
            # which aiohttp keys its connection pool by: no connection was ever reused, and each kept its buffers
            # (measured: 125 MiB more RSS after a 100 MiB upload, 30 connections; with this, 1).
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=ca)),
                                            trust_env=True, auto_decompress=False,
                                            cookie_jar=aiohttp.DummyCookieJar())
            transport["transport"] = AioHttpTransport(session=session, session_owner=True)
        retry: dict[str, Any] = {"retry_policy": LinearRetry(backoff=1, retry_total=2, random_jitter_range=1),
                 "connection_timeout": 10, "read_timeout": 60}
        self._container = ContainerClient(
            location.account_url, location.container, credential=credential, **retry, **transport,
            max_single_get_size=READ_PIECE, max_chunk_get_size=READ_PIECE, max_block_size=BLOCK_SIZE,
        )
        # Get User Delegation Key is an account-level call: a client of its own, used about once a day.
        self._service = (BlobServiceClient(location.account_url, credential=token, connection_verify=ca or True,
                                           **retry) if token is not None and redirects else None)
        self._delegation: tuple[UserDelegationKey, dt.datetime] | None = None
        self._delegation_lock = asyncio.Lock()
        self._resumable = sha256state.available()

    @classmethod
    async def open(cls, location: BlobLocation, *, key: str | None = None, sas: str | None = None,
                   token: AsyncTokenCredential | None = None, redirects: bool = True,
                   ca: str | None = None) -> AzureBlobStore:
        """A store on the container, which is created if it does not exist and the credential is the account key or
        a token. :class:`ConfigError` if storage refuses the credential, the managed identity gives no token, the
        container is missing and cannot be made, or (with a token and ``redirects``) no user delegation key is
        given; :class:`StorageUnavailable` if storage cannot be reached."""
        store = cls(location, key=key, sas=sas, token=token, redirects=redirects, ca=ca)
        try:
            await store._check()
        except BaseException:
            await store.close()
            raise
        if not store._resumable:
            log.warning("this libcrypto cannot save SHA-256 states: uploads are hashed by reading them back when "
                        "they complete")
        return store

    async def _check(self) -> None:
        where = self.location.url
        try:
            with _storage_errors(f"opening {where}"):
                try:
                    async for _ in self._container.list_blobs(name_starts_with=UPLOADS, results_per_page=1):
                        break
                except ResourceNotFoundError:
                    if self._sas is not None:
                        raise ConfigError(f"blob store container {where} does not exist (with a SAS acrlocal "
                                          "cannot create it)") from None
                    with contextlib.suppress(ResourceExistsError):
                        await self._container.create_container()
                    log.info("created blob store container %s", where)
        except StorageUnavailable as exc:
            needs = "the identity needs Storage Blob Data Contributor" if self._token is not None else \
                "it needs read, add, create, write, delete and list"
            raise _refused(where, exc, needs) from exc
        except HttpResponseError as exc:
            raise ConfigError(f"blob store {where} answered {exc.status_code} {_detail(exc)} when listed") from exc
        if self._service is None:
            return
        try:
            with _storage_errors(f"asking {where} for a user delegation key"):
                await self._delegation_key()
        except StorageUnavailable as exc:
            raise _refused(where, exc, "redirects need a user delegation key: a role that may make one (Storage "
                                       "Blob Data Contributor may), or give --blob-downloads stream") from exc
        except HttpResponseError as exc:
            raise ConfigError(f"blob store {where} answered {exc.status_code} {_detail(exc)} when asked for a user "
                              "delegation key") from exc

    async def close(self) -> None:
        await self._container.close()
        if self._service is not None:
            await self._service.close()
        if self._token is not None:
            await self._token.close()

    # -- names -------------------------------------------------------------------------------------

    def _blob(self, digest: Digest) -> BlobClient:
        return self._container.get_blob_client(f"{digest.algorithm}/{digest.encoded}")

    def _upload(self, upload_id: str) -> BlobClient:
        if not upload_id or "/" in upload_id or upload_id.startswith("."):
            raise NotFound(f"upload {upload_id!r} does not exist")
        return self._container.get_blob_client(UPLOADS + upload_id)

    def local_path(self, digest: Digest) -> Path | None:
        return None

    def check_room(self, nbytes: int) -> None:
        """Storage accounts hold petabytes; the limits that matter (blob size, sessions) are the registry's."""

    # -- reading -----------------------------------------------------------------------------------

    async def size(self, digest: Digest) -> int | None:
        with _storage_errors(f"reading the properties of blob {digest}"):
            try:
                props = await self._blob(digest).get_blob_properties()
            except ResourceNotFoundError:
                return None
        return int(props.size)

    async def read(
        self, digest: Digest, offset: int = 0, length: int | None = None
    ) -> AsyncIterator[bytes | bytearray]:
        """Ranged Get Blob requests of :data:`READ_PIECE`, each piece yielded as it arrives whole."""
        if length == 0:
            return
        with _storage_errors(f"reading blob {digest}"):
            try:
                # No range for a whole blob: Get Blob refuses any range of an empty one.
                blob = self._blob(digest)
                if offset or length is not None:
                    downloader = await blob.download_blob(offset=offset, length=length, max_concurrency=1)
                else:
                    downloader = await blob.download_blob(max_concurrency=1)
            except ResourceNotFoundError as exc:
                raise NotFound(f"blob {digest} is not stored") from exc
            async for piece in downloader.chunks():
                yield piece

    @property
    def redirects(self) -> bool:
        """Whether :meth:`download_url` gives URLs (it needs the account key, or a token and ``redirects``)."""
        return self._key is not None or self._service is not None

    async def _delegation_key(self) -> UserDelegationKey:
        """A user delegation key valid for :data:`DELEGATION_KEY_RENEW` more at least; asked for again when the one
        held is not (one request at a time)."""
        assert self._service is not None
        held = self._delegation
        if held is None or held[1] - dt.datetime.now(dt.UTC) < DELEGATION_KEY_RENEW:
            async with self._delegation_lock:
                held = self._delegation
                now = dt.datetime.now(dt.UTC)
                if held is None or held[1] - now < DELEGATION_KEY_RENEW:
                    expiry = now + DELEGATION_KEY_LIFETIME
                    held = await self._service.get_user_delegation_key(now - SAS_SKEW, expiry), expiry
                    self._delegation = held
        return held[0]

    async def download_url(self, digest: Digest) -> str | None:
        """A URL that reads the blob for :data:`SAS_LIFETIME` (a read-only SAS for it alone), or ``None`` when the
        store has no key to sign it with."""
        if not self.redirects:
            return None
        now = dt.datetime.now(dt.UTC)
        name = f"{digest.algorithm}/{digest.encoded}"
        signer: dict[str, Any] = {"account_key": self._key}
        if self._key is None:
            with _storage_errors(f"asking for a user delegation key for blob {digest}"):
                signer = {"user_delegation_key": await self._delegation_key()}
        sas = generate_blob_sas(
            self.location.account, self.location.container, name, **signer,
            permission=BlobSasPermissions(read=True), start=now - SAS_SKEW, expiry=now + SAS_LIFETIME,
            protocol="https" if self.location.secure else "https,http",
        )
        return f"{self.location.url}/{name}?{sas}"

    # -- uploads -----------------------------------------------------------------------------------

    def _remember(self, upload_id: str, known: _Known) -> None:
        _known_states()[(self.location.url, upload_id)] = known

    def _forget(self, upload_id: str) -> _Known | None:
        """Forget the upload's state this request remembers, and return it (``None`` if it remembers none)."""
        return _known_states().pop((self.location.url, upload_id), None)

    async def start_upload(self, upload_id: str) -> None:
        """Put Blob, if there is no such blob; its empty state and ETag are remembered for the request."""
        with _storage_errors(f"starting upload {upload_id}"):
            empty = _Step.empty(self._resumable)
            put = await self._upload(upload_id).upload_blob(
                b"", overwrite=False, content_settings=OCTET_STREAM, metadata={_STATE_KEY: empty.encode()})
            self._remember(upload_id, _Known(empty, None, str(put["etag"])))

    async def _state(self, blob: BlobClient, upload_id: str) -> _Known:
        """The upload's state as storage has it (one Get Blob Properties); :class:`NotFound` if there is no upload
        or it has no state."""
        try:
            props = await blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            raise NotFound(f"upload {upload_id!r} does not exist") from exc
        metadata = props.metadata or {}
        if _STATE_KEY not in metadata:
            raise NotFound(f"upload {upload_id!r} has no state (completed, or not made by acrlocal)")
        previous = metadata.get(_PREVIOUS_KEY)
        return _Known(_Step.decode(metadata[_STATE_KEY]), _Step.decode(previous) if previous else None,
                      str(props.etag))

    async def _current(self, blob: BlobClient, upload_id: str) -> _Known:
        """The state this request last read or wrote, taken out of what it remembers; else read from storage. The
        caller remembers the state it leaves only once it succeeded, so a failure (a refused write, a timeout that
        leaves unknown whether the write was done, a cancellation) makes the next call read again."""
        known = self._forget(upload_id)
        return known if known is not None else await self._state(blob, upload_id)

    async def upload_size(self, upload_id: str) -> int | None:
        """Always read from storage (Get Blob Properties): the registry's first look at the session in a request.
        The state read is remembered for the request's next call."""
        with _storage_errors(f"reading upload {upload_id}"):
            self._forget(upload_id)
            try:
                known = await self._state(self._upload(upload_id), upload_id)
            except NotFound:
                return None
            self._remember(upload_id, known)
        return known.step.size

    async def append(self, upload_id: str, chunks: AsyncIterator[bytes], *, limit: int | None = None) -> int:
        """Put Block for each :data:`BLOCK_SIZE` of ``chunks``, then Set Blob Metadata conditional on the ETag
        (:class:`UploadRaced` if another request changed the upload meanwhile), after a Get Blob Properties unless
        this request read or wrote the state already. The new state, with the ETag Set Blob Metadata answers, is
        remembered for the request's next call."""
        blob = self._upload(upload_id)
        loop = asyncio.get_running_loop()
        with _storage_errors(f"appending to upload {upload_id}"):
            known = await self._current(blob, upload_id)
            step = known.step
            hasher = sha256state.ResumableSha256.load(step.sha256) if step.sha256 is not None else None
            offset, head, blocks = step.size, step.head, step.blocks
            chain = known.chain()
            ids = list(chain) if chain is not None else None  # the blocks' ids, if the request knows them all

            async def stage(buf: bytes, at: int, previous: str, nonce: str) -> None:
                if hasher is not None:
                    await loop.run_in_executor(None, hasher.update, buf)  # in order: one stage runs at a time
                await blob.stage_block(_block_id(at, nonce, previous), buf, length=len(buf))

            taken = 0
            pending: list[bytes] = []
            pending_size = 0
            in_flight: asyncio.Task[None] | None = None

            def send(buf: bytes) -> asyncio.Task[None]:
                nonlocal offset, head, blocks
                nonce = secrets.token_hex(8)
                task = loop.create_task(stage(buf, offset, head, nonce))
                if ids is not None:
                    ids.append(_block_id(offset, nonce, head))
                offset, head, blocks = offset + len(buf), nonce, blocks + 1
                return task

            try:
                async for chunk in chunks:
                    taken += len(chunk)
                    if limit is not None and taken > limit:
                        raise UploadTooLarge(f"upload {upload_id} went past {limit} bytes")
                    pending.append(chunk)
                    pending_size += len(chunk)
                    while pending_size >= BLOCK_SIZE:
                        data = b"".join(pending)
                        buf, rest = data[:BLOCK_SIZE], data[BLOCK_SIZE:]
                        pending, pending_size = ([rest] if rest else []), len(rest)
                        if in_flight is not None:
                            await in_flight
                        in_flight = send(buf)
                if in_flight is not None:
                    await in_flight
                    in_flight = None
                if pending:
                    in_flight = send(b"".join(pending))
                    await in_flight
                    in_flight = None
            finally:
                if in_flight is not None:  # an error while a block was being staged: wait for it, then re-raise
                    with contextlib.suppress(Exception):
                        await in_flight
            if taken == 0:
                self._remember(upload_id, known)
                return step.size
            new = _Step(offset, head, blocks, hasher.save() if hasher is not None else None)
            try:
                written = await blob.set_blob_metadata({_STATE_KEY: new.encode(), _PREVIOUS_KEY: step.encode()},
                                                       etag=known.etag, match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError as exc:
                raise UploadRaced(f"upload {upload_id} was appended to by another request at the same time; this "
                                  "chunk was not kept") from exc
            except ResourceNotFoundError as exc:
                raise NotFound(f"upload {upload_id!r} does not exist") from exc
            self._remember(upload_id, _Known(new, step, str(written["etag"]), tuple(ids) if ids is not None else None))
        return new.size

    async def truncate(self, upload_id: str, size: int) -> None:
        """Go back to ``size``: nothing to do if the upload has that size, one append back if it had it before
        the last append (Set Blob Metadata conditional on the ETag, after a Get Blob Properties unless this request
        read or wrote the state already); any other size cannot be gone back to (:class:`NotFound`: the upload is
        lost)."""
        blob = self._upload(upload_id)
        with _storage_errors(f"cutting back upload {upload_id}"):
            known = await self._current(blob, upload_id)
            step, previous = known.step, known.previous
            if step.size == size:
                self._remember(upload_id, known)
                return
            if previous is None or previous.size != size:
                raise NotFound(f"upload {upload_id} has {step.size} bytes and cannot go back to {size}")
            try:
                written = await blob.set_blob_metadata({_STATE_KEY: previous.encode()}, etag=known.etag,
                                                       match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError as exc:
                raise UploadRaced(f"upload {upload_id} changed while it was being cut back") from exc
            chain = known.chain()
            kept = chain[:previous.blocks] if chain is not None else None  # blocks are only ever added at the end
            self._remember(upload_id, _Known(previous, None, str(written["etag"]), kept))

    async def _chain(self, blob: BlobClient, upload_id: str, step: _Step) -> list[BlobBlock]:
        """The upload's blocks in order, found by walking back from the last one."""
        _, uncommitted = await blob.get_block_list("uncommitted")
        by_nonce: dict[str, tuple[int, str, BlobBlock]] = {}
        for block in uncommitted:
            block_id = str(block.id)
            if len(block_id) == 48:
                by_nonce[block_id[16:32]] = (int(block_id[:16], 16), block_id[32:], block)
        chain: list[BlobBlock] = []
        nonce, end = step.head, step.size
        while nonce != _NO_BLOCK:
            found = by_nonce.get(nonce)
            if found is None or found[0] + int(found[2].size) != end:
                raise NotFound(f"upload {upload_id} lost a block ending at byte {end}")
            chain.append(found[2])
            end, nonce = found[0], found[1]
        if end != 0 or len(chain) != step.blocks:
            raise NotFound(f"upload {upload_id}'s blocks do not start at byte 0")
        chain.reverse()
        return chain

    async def _hash_committed(self, blob: BlobClient, algorithm: str) -> str:
        loop = asyncio.get_running_loop()
        hasher = hashlib.new(algorithm)
        downloader = await blob.download_blob(max_concurrency=1)
        async for piece in downloader.chunks():
            await loop.run_in_executor(None, hasher.update, piece)
        return hasher.hexdigest()

    async def commit(self, upload_id: str, digest: Digest) -> int:
        """Get Block List, Put Block List (conditional on the ETag), Copy Blob (on condition that the blob is not
        there: :meth:`_copy`), Delete Blob; first a Get Blob Properties unless this request read or wrote the state
        already. What the request remembers of the upload is forgotten whatever happens: once its blocks are
        committed the upload has no state any more.

        Get Block List is left out when the request staged every block of the upload itself (it opened the upload,
        or found it with no block): their ids are what the listing would give. They are safe to commit without it:
        a block a Put Block staged stays on the blob until the blob is committed or deleted (or a week passes
        without a commit), and a commit or a deletion changes or removes the ETag the Put Block List is conditional
        on (:class:`UploadRaced`, :class:`NotFound`); a block missing all the same would make storage refuse the
        whole list (InvalidBlockList: :class:`NotFound`, as when the listing lacks one), never commit a blob with a
        hole. The ids are checked to be the state's chain first (:meth:`_Known.chain`), else listed."""
        blob = self._upload(upload_id)
        with _storage_errors(f"completing upload {upload_id}"):
            known = await self._current(blob, upload_id)
            step, etag = known.step, known.etag
            verified = False
            if digest.algorithm == "sha256" and step.sha256 is not None:
                actual = Digest("sha256", sha256state.ResumableSha256.load(step.sha256).hexdigest())
                if actual != digest:
                    await self.abort(upload_id)
                    raise DigestMismatch(digest, actual)
                verified = True
            ids = known.chain()
            chain = [BlobBlock(i) for i in ids] if ids is not None else await self._chain(blob, upload_id, step)
            try:
                await blob.commit_block_list(chain, content_settings=OCTET_STREAM, etag=etag,
                                             match_condition=MatchConditions.IfNotModified)
            except ResourceModifiedError as exc:
                raise UploadRaced(f"upload {upload_id} was appended to while it was being completed") from exc
            except HttpResponseError as exc:
                if exc.status_code == 400 and _code(exc) == "InvalidBlockList":  # as _chain finding one missing
                    raise NotFound(f"upload {upload_id} lost a block") from exc
                raise
            if not verified:
                actual = Digest(digest.algorithm, await self._hash_committed(blob, digest.algorithm))
                if actual != digest:
                    await self.abort(upload_id)
                    raise DigestMismatch(digest, actual)
            await self._copy(blob, self._blob(digest), digest)
            await self.abort(upload_id)
        return step.size

    async def _copy(self, source: BlobClient, target: BlobClient, digest: Digest) -> None:
        """Copy Blob within the account, on condition that the target does not exist (If-None-Match: ``*``); usually
        done at once, else polled until it is. A target that exists is the blob published already (by an earlier
        push of the digest): names are content addresses, so it holds the same bytes, and the copy is not needed.
        The condition is checked by storage as it copies, so no Get Blob Properties is needed first, and nothing is
        ever copied over a published blob."""
        source_url = source.url if self._sas is None or "?" in source.url else f"{source.url}?{self._sas}"
        try:
            copy = await target.start_copy_from_url(source_url, match_condition=MatchConditions.IfMissing)
        except HttpResponseError as exc:
            # Azurite answers 409 BlobAlreadyExists; Azure's reference says 412 for a destination condition not met
            # (the only condition this request has).
            if exc.status_code == 412 or (exc.status_code == 409 and _code(exc) == "BlobAlreadyExists"):
                return
            raise
        status = copy.get("copy_status")
        while status == "pending":
            await asyncio.sleep(0.2)
            props = await target.get_blob_properties()
            status = props.copy.status
        if status != "success":
            with contextlib.suppress(ResourceNotFoundError):
                await target.delete_blob()
            raise StorageUnavailable(f"copying the upload to blob {digest} ended {status}")

    async def abort(self, upload_id: str) -> None:
        self._forget(upload_id)
        with _storage_errors(f"discarding upload {upload_id}"), contextlib.suppress(ResourceNotFoundError, NotFound):
            await self._upload(upload_id).delete_blob()

    async def delete(self, digest: Digest) -> None:
        with _storage_errors(f"deleting blob {digest}"), contextlib.suppress(ResourceNotFoundError):
            await self._blob(digest).delete_blob()

    # -- housekeeping ------------------------------------------------------------------------------

    async def stored(self) -> AsyncIterator[tuple[Digest, float]]:
        """Blobs named ``<algorithm>/<hex>`` and when they were written; any other name is left alone."""
        with _storage_errors("listing blobs"):
            for algorithm in sorted(ALGORITHMS):
                async for item in self._container.list_blobs(name_starts_with=f"{algorithm}/"):
                    try:
                        digest = Digest.parse(str(item.name).replace("/", ":", 1))
                    except ValueError:
                        continue
                    yield digest, item.last_modified.timestamp()

    async def exists(self, digest: Digest) -> bool:
        with _storage_errors(f"looking for blob {digest}"):
            return bool(await self._blob(digest).exists())

    async def sweep(self, keep: set[str], older_than_s: float = 0.0) -> int:
        """Delete upload blobs whose id is not in ``keep`` and that were not written for ``older_than_s``."""
        cutoff = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=older_than_s)
        removed = 0
        with _storage_errors("sweeping uploads"):
            async for item in self._container.list_blobs(name_starts_with=UPLOADS):
                upload_id = str(item.name)[len(UPLOADS):]
                if upload_id in keep or item.last_modified > cutoff:
                    continue
                with contextlib.suppress(ResourceNotFoundError):
                    await self._container.delete_blob(item.name)
                    removed += 1
        return removed
