"""Assembles the rooms into one process for ``acrlocal up``; nothing else lives here.

Three aiohttp applications share one event loop:

- the *control* app on the shared https port: ARM, the Entra endpoints, and registries addressed by host name
  (a middleware hands a request whose ``Host`` is a registry's host name to the registry app);
- the *registry* app on each registry's own https port (the registry is found from the local port);
- the *imds* app, served inside each running VM on ``169.254.169.254:80`` (see :mod:`acrlocal.compute.runtime`),
  where the control app also answers on Azure's public names (the VMs' front door, TLS for Azure's names).

Running VMs also answer ssh at their public IP addresses (:mod:`acrlocal.arm.vm_ssh`).

Shutdown (SIGINT, SIGTERM, or :meth:`Server.stop`) closes the listeners, lets requests in flight finish, and
removes ``server.json``; everything else is already on disk, so a restart picks up all state.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from sqlalchemy.engine import Engine

from acrlocal import __version__, inbound, publiccloud, timeouts, workers
from acrlocal.arm import routes as arm_routes
from acrlocal.arm.access import ArmAccess
from acrlocal.arm.runners import DeploymentRunners
from acrlocal.arm.services import ArmServices
from acrlocal.arm.store import ArmStore
from acrlocal.arm.tokens import RepositoryTokens
from acrlocal.arm.vm_ssh import VmSshDoors
from acrlocal.compute import console
from acrlocal.compute.runtime import ComputeRuntime, Doors
from acrlocal.compute.store import VMTable
from acrlocal.config import Settings
from acrlocal.errors import AlreadyExists, ConfigError
from acrlocal.generations import Generations
from acrlocal.identity import imds, oauth
from acrlocal.identity.bootstrap import AdminCredential, admin_file, bootstrap
from acrlocal.identity.directory import Directory
from acrlocal.identity.keys import KeyRing
from acrlocal.identity.lookups import DirectoryLookups
from acrlocal.identity.services import EntraServices
from acrlocal.identity.tokens import TokenIssuer
from acrlocal.listeners import Listeners, Load
from acrlocal.lockout import Lockout, parse_lockout
from acrlocal.registry import http as registry_http
from acrlocal.registry import locks as registry_locks
from acrlocal.registry.audit import AuditLog
from acrlocal.registry.auth_events import AuthServices
from acrlocal.registry.authz import Authorizer, OpenAuthorizer
from acrlocal.registry.hosting import RegistryHosting
from acrlocal.registry.revocation import Revocations
from acrlocal.registry.services import RegistryServices
from acrlocal.registry.throttle import Throttle, parse_policy
from acrlocal.registry.token_auth import TokenAuthorizer
from acrlocal.registry.token_codec import RegistryTokens
from acrlocal.registry.token_keys import TokenKeys
from acrlocal.registry.token_service import TokenService
from acrlocal.storage.artifacts import SqlArtifacts
from acrlocal.storage.blobs import BlobStore, FileBlobStore
from acrlocal.storage.registries import RegistryTable
from acrlocal.storage.sql import DataVersion, SqlThread, open_engine, request_version, serving_version
from acrlocal.storage.sql_metadata import SqlRegistryMetadata
from acrlocal.tls import LocalCA

if TYPE_CHECKING:
    from acrlocal.storage.shared import AdvisoryLocks, DatabaseGenerations

log = logging.getLogger("acrlocal.server")
#: How many registries ``server.json`` (and ``acrlocal status``) lists; ``registryCount`` says how many there are.
STATUS_REGISTRIES = 100
#: Where msal looks for user realm discovery, whatever the authority's port (see _open_login_port).
LOGIN_PORT = 443
#: Names the replica that answered, on PostgreSQL (replicas behind a load balancer): see replica_name.
REPLICA_HEADER = "X-Acrlocal-Replica"
#: PostgreSQL advisory lock namespaces ("ACR" and a number) of the upload locks, the digest locks and ARM's writes.
ADVISORY_NAMESPACES = (0x41435201, 0x41435202, 0x41435203)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
#: Paths of the registry protocols; on a registry's host name that no registry has, they answer OCI's 404.
REGISTRY_PATHS = ("/v2/", "/oauth2/", "/acr/")


class _ClientErrorsAsInfo(logging.Filter):
    """aiohttp logs a request it cannot parse (a malformed or duplicate header, a bad request line) at ERROR with
    a traceback, after answering it 400 itself, and so it does for a handler that finds its connection gone (a
    client that disconnected, or was closed for being too slow, while its response was being written). Those are
    the client's doing, not the server's: they are logged here at INFO in one line, so that ERROR and tracebacks
    in the log stay the server's own faults."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if (isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 0) < 500) or \
                isinstance(exc, ConnectionResetError):
            detail = f"{exc.code} {exc.message}" if isinstance(exc, HttpProcessingError) else str(exc)
            record.msg, record.args = f"{record.getMessage()}: {detail}", ()  # detail may hold a %
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True


def quiet_client_errors() -> None:
    """Install :class:`_ClientErrorsAsInfo` on aiohttp's server logger (once)."""
    server_logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _ClientErrorsAsInfo) for f in server_logger.filters):
        server_logger.addFilter(_ClientErrorsAsInfo())


def _local_port(request: web.Request) -> int:
    transport = request.transport
    sockname = transport.get_extra_info("sockname") if transport is not None else None
    return int(sockname[1]) if sockname else 0


@dataclass
class Assembly:
    """What :meth:`Server.start` made, which the server keeps to build its apps, report its status and stop. No room
    reads it: each was handed what it uses (``entra``, ``data_plane``, ``arm`` and its ``arm_store``, ``compute``)."""

    settings: Settings
    ca: LocalCA
    engine: Engine
    listeners: Listeners
    registries: RegistryHosting
    admin: AdminCredential
    entra: EntraServices
    data_plane: RegistryServices
    arm: ArmServices
    arm_store: ArmStore
    compute: ComputeRuntime | None  # None in a secondary process (acrlocal.workers)


async def open_blob_store(settings: Settings) -> BlobStore:
    """The blob store ``settings`` name: an Azure container (``blob_store``) or files under the data directory."""
    location = settings.blob_location
    if location is None:
        return FileBlobStore(settings.blob_dir, min_free_bytes=settings.limits.min_free_bytes)
    # The Azure SDK is imported only when it is used.
    from acrlocal.storage.azure_blobs import AzureBlobStore, managed_identity

    token = managed_identity(settings.blob_store_identity_client_id) if settings.blob_store_identity else None
    store = await AzureBlobStore.open(location, key=settings.blob_store_key, sas=settings.blob_store_sas, token=token,
                                      redirects=settings.blob_redirect, ca=settings.blob_store_ca)
    if settings.blob_redirect and not store.redirects:
        log.info("blob GETs stream through the server: a SAS credential cannot make the short-lived SAS a "
                 "redirect needs (give the account key for redirects)")
    log.info("blobs are in %s%s", location.url, " (acrlocal's managed identity)" if token is not None else "")
    return store


def replica_name(data_dir: Path) -> str:
    """This server's name among replicas over one database (the machine's name and a random suffix, kept in
    ``<data dir>/replica-id``): the VMs it makes carry it, and the others refuse their calls naming it."""
    path = data_dir / "replica-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        name = f"{socket.gethostname()}-{secrets.token_hex(4)}"
        path.write_text(name + "\n")
        return name


class Server:
    """One acrlocal server. ``await start()``, then ``await stop()``; or ``await run()`` in the foreground."""

    def __init__(self, settings: Settings, worker: int = 0, primary_socket: str | None = None,
                 login_port: bool = False) -> None:
        """``worker`` 0 is the server (the primary, which starts ``settings.workers - 1`` others); a secondary
        (``worker`` > 0) serves the same ports beside it and forwards to ``primary_socket`` what it does not serve
        (see :mod:`acrlocal.workers`)."""
        self.settings = settings
        self.worker = worker
        self.primary = worker == 0
        self._up = False  # server.json is written from the end of start on: it says every process serves
        self.primary_socket = primary_socket
        self.login_port = login_port
        self._forwarder: workers.Forwarder | None = None
        self._secondaries: workers.Secondaries | None = None
        self._broker: workers.SocketBroker | None = None
        self._socket_dir: str | None = None
        self._background: list[asyncio.Task[None]] = []
        self.ctx: Assembly | None = None
        self._runners: list[web.AppRunner] = []
        self._stopping = asyncio.Event()
        self._stalled: timeouts.StalledWriters | None = None
        self._state_lock = asyncio.Lock()
        self.shared_port = settings.port
        self._vm_ssh: VmSshDoors | None = None
        # Replicas over PostgreSQL: the channel their caches and locks share (see acrlocal.storage.shared).
        self._generations: DatabaseGenerations | None = None
        self._advisory: list[AdvisoryLocks] = []
        # The control plane's write lock: the primary's own, or over PostgreSQL one every replica shares.
        self._arm_lock: asyncio.Lock = asyncio.Lock()
        self._replica = ""

    # -- assembly ----------------------------------------------------------------------------------

    def _fresh_middlewares(self) -> list[Any]:
        """On PostgreSQL: every request first applies what other replicas changed before it arrived."""
        generations = self._generations
        if generations is None:
            return []

        @web.middleware
        async def fresh(request: web.Request, handler: Handler) -> web.StreamResponse:
            # That round trip also reads the request's data version: its caches need no round trip of their own.
            given = serving_version(await generations.sync())
            try:
                return await handler(request)
            finally:
                request_version.reset(given)

        return [fresh]

    def _build_registry_app(self, ctx: Assembly) -> web.Application:
        app = web.Application(middlewares=self._fresh_middlewares(),
                              client_max_size=ctx.settings.limits.manifest_max_bytes)
        plane = ctx.data_plane

        async def by_port(request: web.Request) -> web.StreamResponse:
            await ctx.registries.fresh()
            rec = ctx.registries.by_port(_local_port(request))
            if rec is None:
                raise web.HTTPNotFound()
            return await registry_http.handle(request, plane, rec)

        registry_http.route_every_request(app, by_port)
        return app

    def _build_control_app(self, ctx: Assembly) -> web.Application:
        @web.middleware
        async def registry_by_host(request: web.Request, handler: Handler) -> web.StreamResponse:
            name = ctx.registries.named_in(request.host)
            if name is None:  # ARM, Entra...: no registry's host name, nothing to look up
                return await handler(request)
            await ctx.registries.fresh()
            rec = ctx.registries.by_host(request.host)
            if rec is not None:
                return await registry_http.handle(request, ctx.data_plane, rec)
            if request.path == "/v2" or request.path.startswith(REGISTRY_PATHS):
                return registry_http.unknown_registry(name)  # a registry deleted (or never made): OCI's 404
            return await handler(request)

        middlewares: list[Any] = [*self._fresh_middlewares(), registry_by_host]
        if self.primary:
            middlewares.insert(0, workers.trust_forwarded)
        else:
            assert self.primary_socket is not None
            self._forwarder = workers.Forwarder(self.primary_socket)
            middlewares.append(self._forwarder.middleware())
        app = web.Application(middlewares=[*middlewares, oauth.unavailable_middleware],
                              client_max_size=ctx.settings.limits.manifest_max_bytes)
        app.router.add_get("/healthz", self._healthz)
        oauth.setup(app, ctx.entra)
        arm_routes.setup(app, ctx.arm, ctx.arm_store, self._arm_lock)
        if ctx.compute is not None:
            console.setup(app, ctx.compute, ctx.compute.consoles)
        return app

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "version": __version__, "worker": self.worker})

    async def _name_worker(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[workers.WORKER_HEADER] = str(self.worker)

    async def _name_replica(self, request: web.Request, response: web.StreamResponse) -> None:
        response.headers[REPLICA_HEADER] = self._replica


    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> Assembly:
        self._started_at = time.time()
        quiet_client_errors()
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(settings.data_dir, 0o700)
        ca = LocalCA(settings.tls_dir)
        ca.ensure()
        engine = open_engine(settings.db_url)
        blobs = await open_blob_store(settings)
        several = settings.workers > 1
        load = Load(settings.data_dir / "workers.load", settings.workers, self.worker) if several else None
        fetch = None if self.primary or self.primary_socket is None else workers.SocketFetcher(self.primary_socket)
        listeners = Listeners(settings.host, load=load, fetch=fetch)
        generations: Generations
        if engine.dialect.name == "postgresql":  # replicas on several machines: through the database
            # Imported here, with psycopg (9 MiB of resident memory), only when the database is PostgreSQL.
            from acrlocal.storage.shared import AdvisoryLocks, DatabaseGenerations, DatabaseLock

            self._replica = replica_name(settings.data_dir)
            generations = self._generations = DatabaseGenerations(engine, settings.data_dir / "generations")
            generations.start()
            uploads, digests, arm_writes = self._advisory = [AdvisoryLocks(engine, n) for n in ADVISORY_NAMESPACES]
            registry_locks.uploads.share_database(uploads)
            registry_locks.digests.share_database(digests)
            self._arm_lock = DatabaseLock(arm_writes, 0, generations)
        else:
            generations = Generations(settings.data_dir / "generations")  # shared by the server's processes
            registry_locks.uploads.share(settings.data_dir / "uploads.lock")
            registry_locks.digests.share(settings.data_dir / "digests.lock")
        # What a process that died between a commit and its announcement changed is read again everywhere.
        generations.bump_all()
        registry_meta = SqlRegistryMetadata(engine, generations)
        sql = SqlThread(engine)  # where the data plane's, Entra's and ARM's SQL runs (off the loop on PostgreSQL)
        hosting = RegistryHosting(
            settings, RegistryTable(engine), listeners, ca, on_change=self._registries_changed, content=registry_meta,
            generations=generations, sql=sql,
        )
        try:
            shared_sock = await listeners.claim(settings.port)
        except OSError as exc:
            raise ConfigError(
                f"port {settings.port} on {settings.host} is in use ({exc.strerror}); is acrlocal already "
                "running? Choose another with --port"
            ) from exc
        self.shared_port = shared_sock.getsockname()[1]
        hosting.shared_port = settings.advertised_port or self.shared_port
        directory = Directory(engine, generations)
        admin = bootstrap(directory, settings.data_dir, settings.hostname_suffix)
        keys = KeyRing(engine, generations)
        tokens = TokenIssuer(keys, self.authority)
        keys.active(admin.tenantId)  # the default tenant's JWKS has its key before anyone signs in
        signer = RegistryTokens(TokenKeys(engine, generations))
        signer.keys.active()  # load (or make) the signing key before the first request
        version = DataVersion(engine)  # read on the event loop only
        lockout = Lockout(parse_lockout(settings.login_lockout), settings.workers)  # each process its share
        audit = AuditLog(engine)
        scoped_tokens = RepositoryTokens(engine)  # the control plane's scoped tokens and scope maps
        # What the token service and the authorizer ask: the control plane through ArmAccess, the directory.
        auth = AuthServices(hosting, directory, ArmAccess(engine), scoped_tokens, audit, sql)
        registry_auth: Authorizer
        if settings.insecure_open_registry:
            log.warning("the registry data plane is OPEN: every request is allowed without authentication")
            registry_auth = OpenAuthorizer()
        else:
            registry_auth = TokenAuthorizer(signer, auth, Revocations(hosting.table, scoped_tokens, sql, version))
        data_plane = RegistryServices(
            settings.limits, registry_meta, SqlArtifacts(registry_meta), blobs, sql, registry_auth,
            Throttle(parse_policy(settings.registry_rate_limit), settings.workers), audit,
            TokenService(signer, auth, tokens, lockout, version), blob_redirect=settings.blob_redirect)
        compute: ComputeRuntime | None = None  # the VMs: the primary process runs them
        if self.primary:
            ca_hash = await asyncio.to_thread(ca.subject_hash)
            vms = VMTable(engine, replica_name(settings.data_dir))  # this replica's VMs
            compute = ComputeRuntime(settings, vms, directory, ca.ca_pem, ca_hash, sql=sql)
        runners = DeploymentRunners(engine)
        if self.primary:  # which runs the ARM calls: its lock held before a deployment can be accepted
            runners.start()
        arm = ArmServices(settings, directory, keys, tokens, admin, hosting, data_plane, compute, sql, runners)
        arm_store = ArmStore(engine)
        entra = EntraServices(directory, keys, tokens, lockout, DirectoryLookups(directory, version, sql), sql)
        ctx = Assembly(settings, ca, engine, listeners, hosting, admin, entra, data_plane, arm, arm_store, compute)
        self.ctx = ctx
        if compute is None:
            return await self._start_secondary(ctx, shared_sock)
        limits = settings.limits
        options = timeouts.runner_options(limits.idle_timeout_s, limits.read_timeout_s)
        apps = (self._build_registry_app(ctx), self._build_control_app(ctx), imds.build_app(
            compute, tokens, cache_tokens=settings.imds_token_cache, rate_limit=settings.imds_rate_limit))
        for app in apps:
            app[inbound.READ_TIMEOUT] = limits.read_timeout_s
            if several:
                app.on_response_prepare.append(self._name_worker)
            if self._generations is not None:
                app.on_response_prepare.append(self._name_replica)
        registry_runner, control_runner, imds_runner = (
            web.AppRunner(app, access_log=None, handle_signals=False, **options) for app in apps)
        for runner in (registry_runner, control_runner, imds_runner):
            await runner.setup()
            self._runners.append(runner)
        self._stalled = timeouts.StalledWriters(self._runners, limits.read_timeout_s)
        self._stalled.start()
        await registry_http.on_startup(data_plane)
        await listeners.open("shared", control_runner, shared_sock, ca.server_context())
        login = await self._open_login_port(control_runner, ca)
        await hosting.start(registry_runner)
        front_tls = await asyncio.to_thread(ca.azure_context, publiccloud.CERTIFICATE_NAMES)
        await compute.start(Doors(imds=imds_runner, front=control_runner, front_tls=front_tls,
                                  registry_exists=hosting.exists))
        if settings.default_registry:
            with contextlib.suppress(AlreadyExists):
                await hosting.create(settings.default_registry, {"sku": "Standard"})
        # Under the control plane's write lock: providers reconcile what they find (a hosted registry without its ARM
        # resource, an identity's principal without its identity) while other replicas serve ARM and Graph writes,
        # which make the one before the other; a write half done is not a leftover to reconcile.
        async with self._arm_lock:
            await arm_routes.on_server_started(arm, arm_store)
        self._vm_ssh = VmSshDoors(arm_store, compute, lambda: [s.id for s in directory.subscriptions()],
                                  settings.vm_ssh_port)
        await self._vm_ssh.start()
        if self._generations is not None:  # registries other replicas make and delete: open and close their ports
            loop = asyncio.get_running_loop()
            hosting.resync = lambda: self._background.append(loop.create_task(hosting.sync_listeners()))
            self._background.append(loop.create_task(self._follow_registries()))
        if several:
            await self._start_secondaries(control_runner, login)
        self._up = True
        await self.write_state()
        return ctx

    async def _start_secondaries(self, control_runner: web.AppRunner, login_port: bool) -> None:
        """Serve the control app on a Unix socket of this user's for the secondaries' forwarded requests, then
        start them on this process's ports (the shared port as bound, whatever ``--port`` said)."""
        self._socket_dir = tempfile.mkdtemp(prefix="acrlocal-")  # short: a socket path has at most 107 bytes
        path = os.path.join(self._socket_dir, "primary.sock")
        site = web.UnixSite(control_runner, path)
        await site.start()
        os.chmod(path, 0o600)
        assert self.ctx is not None
        self._broker = workers.SocketBroker(workers.broker_path(path), self.ctx.listeners.held)
        await self._broker.start()
        settings = replace(self.settings, port=self.shared_port)
        self._secondaries = workers.Secondaries(settings, path, login_port)
        await self._secondaries.start()

    async def _start_secondary(self, ctx: Assembly, shared_sock: socket.socket) -> Assembly:
        """A secondary: the registries, Entra's endpoints and sign-in pages, and forwarding the control plane (no
        VMs, no housekeeping, no server.json: the primary's)."""
        settings = self.settings
        limits = settings.limits
        options = timeouts.runner_options(limits.idle_timeout_s, limits.read_timeout_s)
        apps = (self._build_registry_app(ctx), self._build_control_app(ctx))
        for app in apps:
            app[inbound.READ_TIMEOUT] = limits.read_timeout_s
            app.on_response_prepare.append(self._name_worker)
            if self._generations is not None:
                app.on_response_prepare.append(self._name_replica)
        registry_runner, control_runner = (
            web.AppRunner(app, access_log=None, handle_signals=False, **options) for app in apps)
        for runner in (registry_runner, control_runner):
            await runner.setup()
            self._runners.append(runner)
        self._stalled = timeouts.StalledWriters(self._runners, limits.read_timeout_s)
        self._stalled.start()
        registry_http.start_audit(ctx.data_plane)
        await ctx.listeners.open("shared", control_runner, shared_sock, ctx.ca.server_context())
        if self.login_port:
            with contextlib.suppress(OSError):
                sock = await ctx.listeners.claim(LOGIN_PORT)
                await ctx.listeners.open("login", control_runner, sock, ctx.ca.server_context())
        hosting = ctx.registries
        await hosting.start(registry_runner)
        loop = asyncio.get_running_loop()
        hosting.resync = lambda: self._background.append(loop.create_task(hosting.sync_listeners()))
        self._background.append(loop.create_task(self._follow_registries()))
        (settings.data_dir / f"worker-{self.worker}.ready").write_text(f"{os.getpid()}\n")
        return ctx

    async def _follow_registries(self) -> None:
        """Open the ports of registries the primary makes (and close those it deletes) within a fraction of a
        second, even while no request comes here to notice."""
        assert self.ctx is not None
        while True:
            await asyncio.sleep(0.2)
            if self._generations is not None:
                await self._generations.sync()
            self._background = [t for t in self._background if not t.done()]
            await self.ctx.registries.fresh()  # reads the registries again if another process changed them

    async def _open_login_port(self, runner: web.AppRunner, ca: LocalCA) -> bool:
        """Also serve the shared endpoint on port 443 when the process may bind it (root, or a low
        ``net.ipv4.ip_unprivileged_port_start``) and the shared port was chosen by the user: msal asks
        ``https://<authority host>/common/userrealm/...`` without the port before ``az login -u -p``. Best effort:
        a refusal is logged once; a server whose port the system chose (tests) never tries."""
        if self.settings.port in (0, LOGIN_PORT) or self.ctx is None:
            return False
        try:
            sock = await self.ctx.listeners.claim(LOGIN_PORT)
        except OSError as exc:
            log.info("port %d is not available (%s): `az login -u -p` needs it (msal drops the authority's port); "
                     "device code and browser sign-ins work without it", LOGIN_PORT, exc.strerror)
            return False
        await self.ctx.listeners.open("login", runner, sock, ca.server_context())
        return True

    @property
    def authority(self) -> str:
        """The Entra authority and ARM endpoint: the shared port, by the name the certificate covers."""
        return f"https://localhost:{self.settings.advertised_port or self.shared_port}"

    def status(self) -> dict[str, Any]:
        """The facts ``acrlocal status`` prints; also written to ``server.json`` while running."""
        assert self.ctx is not None
        ctx = self.ctx
        base = self.authority
        return {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "startedAt": self._started_at,
            "dataDir": str(self.settings.data_dir),
            "caPath": str(self.settings.ca_path),
            "endpoints": {
                "shared": base,
                "resourceManager": base + "/",
                "activeDirectory": base,
            },
            # The first registries made (the default one first), so that a registry's creation costs the same
            # with ten or ten thousand of them; `az acr list` lists them all.
            "registries": [ctx.registries.describe(r) for r in ctx.registries.first(STATUS_REGISTRIES)],
            "registryCount": ctx.registries.count(),
            "workers": [os.getpid(), *(self._secondaries.pids() if self._secondaries else [])],
            "listeningPort": self.shared_port,  # the shared port bound here (a load balancer's backend)
            "registryAuthentication": "open" if self.settings.insecure_open_registry else "token",
            "blobStore": location.url if (location := self.settings.blob_location) else str(self.settings.blob_dir),
            "tenantId": ctx.admin.tenantId,
            "subscriptionId": ctx.admin.subscriptionId,
            "adminCredentialPath": str(admin_file(self.settings.data_dir)),
        }

    async def _registries_changed(self) -> None:
        if self._up and self.primary:  # (server.json is the primary's, and written once all serve)
            await self.write_state()

    async def write_state(self) -> None:
        """Write ``server.json`` (its encoding and the write in a thread: it lists every registry)."""
        status = self.status()
        async with self._state_lock:
            try:
                await asyncio.to_thread(self._write_state, status)
            except OSError as exc:  # what is running stays running; scripts read a stale file until the next write
                log.warning("could not write %s: %s", self.settings.state_file, exc)

    def _write_state(self, status: dict[str, Any]) -> None:
        path = self.settings.state_file
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(status, indent=2) + "\n")
        os.replace(tmp, path)

    async def stop(self) -> None:
        if self._secondaries is not None:
            await self._secondaries.stop()
            self._secondaries = None
        if self._broker is not None:
            await self._broker.close()
            self._broker = None
        for task in self._background:
            task.cancel()
        self._background.clear()
        if self._forwarder is not None:
            await self._forwarder.close()
        if self._vm_ssh is not None:
            await self._vm_ssh.close()
            self._vm_ssh = None
        if self.ctx is not None:
            if self.ctx.compute is not None:
                await self.ctx.compute.stop()
            await self.ctx.listeners.close_all()
            if self.ctx.listeners.load is not None:
                self.ctx.listeners.load.close()
        if self._stalled is not None:
            await self._stalled.stop()
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.ctx is not None:
            await registry_http.on_shutdown(self.ctx.data_plane)
            with contextlib.suppress(Exception):  # (a database gone: the lock went with the connection)
                self.ctx.arm.runners.close()
            await self.ctx.data_plane.blobs.close()
            self.ctx.data_plane.sql.close()
            for locks in self._advisory:
                locks.close()
            if self._generations is not None:
                self._generations.close()
            self.ctx.engine.dispose()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
        if self.primary:
            with contextlib.suppress(FileNotFoundError):
                self.settings.state_file.unlink()
        else:
            (self.settings.data_dir / f"worker-{self.worker}.ready").unlink(missing_ok=True)

    async def run(self, on_ready: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Start, call ``on_ready`` with :meth:`status`, serve until SIGINT/SIGTERM, then stop cleanly."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stopping.set)
        await self.start()
        try:
            if on_ready:
                on_ready(self.status())
            await self._stopping.wait()
        finally:
            await self.stop()


M_ARENA_MAX = -8  # glibc's mallopt parameter numbers
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: Fixed malloc thresholds (see :func:`tune_malloc`): blocks from 4 MiB get an mmap of their own, and free memory
#: at the top of the heap past 8 MiB goes back to the system.
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 8 << 20


def tune_malloc(arenas: int = 1) -> bool:
    """Cap glibc's malloc arenas and fix its thresholds for this process (call before any thread starts);
    ``True`` if applied.

    glibc gives every thread that allocates an arena of its own and keeps freed memory in it, so each executor
    thread that reads blob chunks for TLS responses or hashes uploads holds several MiB it no longer uses. Python
    allocates under the GIL, so one arena costs no contention. Measured with 4 parallel skopeo pulls of a
    4 x 128 MiB image over TLS: server peak RSS 117-122 MiB with glibc's default, 103-111 MiB with 2 arenas,
    97-106 MiB with 1, server CPU the same.

    glibc also raises its mmap threshold to the size of the largest mmapped block freed so far, and keeps twice
    that free at the top of the heap: one scrypt (16 MiB, a password hashed when the directory is set up or a
    user signs in) left it keeping up to 32 MiB it no longer used. Fixed thresholds (which also end that
    adjustment) took a new ``acrlocal up`` from 108.6 to 94.5 MiB idle, and from 108.8 to 100.4 MiB at the peak
    of 4 parallel skopeo pulls (``benchmarks.registry --quick``), server CPU the same; blob pieces (128 KiB) and
    the stores' 1 MiB pieces stay under them, so streaming allocates as before. ``MALLOC_ARENA_MAX`` in the
    environment wins (then nothing is changed); not glibc: no-op.
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all([libc.mallopt(M_ARENA_MAX, arenas), libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                    libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)])
    except (OSError, AttributeError):
        return False


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft limit of open files to its hard limit; ``(before, after)``.

    Every registry holds a listening socket and every connection and running VM some descriptors: with the usual
    soft limit of 1,024 the server would refuse new ones well before the machine runs out. The hard limit (what an
    unprivileged process may raise itself to) is left to the administrator (``ulimit -Hn``, ``LimitNOFILE=``);
    past it, making a registry fails with a :class:`~acrlocal.errors.LimitReached` that says so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft >= hard:
        return soft, soft
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft, soft
    return soft, target


def run(settings: Settings, on_ready: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Run a server in the foreground until a signal stops it (uvloop when available)."""
    _run(Server(settings).run(on_ready))


def run_worker(env: str) -> None:
    """Run a secondary (``acrlocal up --workers``) from what its primary put in ``$ACRLOCAL_WORKER``."""
    settings, worker, primary_socket, login_port = workers.decode(env)
    _run(Server(settings, worker, primary_socket, login_port).run())


def _run(main: Awaitable[None]) -> None:
    tune_malloc()
    before, after = raise_open_file_limit()
    if after != before:
        log.info("open-file limit raised from %d to %d", before, after)
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        runner = asyncio.run
    runner(main)
