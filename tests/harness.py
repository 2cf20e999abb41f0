"""Start, stop and kill a real acrlocal server process for tests."""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests
import sqlalchemy as sa

SRC = Path(__file__).resolve().parents[1] / "src"
#: Registry throttling stays on in tests, with limits far above what any test sends (tests push hundreds of blobs;
#: ACR's Standard SKU allows 500 writes a minute). A later ``--registry-rate-limit`` in ``extra_args`` wins.
TEST_RATE_LIMIT = "1000000/1000000"
#: The metadata backend servers started here use: "sqlite" (each data directory's own file) or "postgresql" (a
#: database of its own per data directory on the session's private PostgreSQL server); pytest's ``--backend``.
BACKEND = os.environ.get("ACRLOCAL_TEST_BACKEND", "sqlite")
# Server processes of each test server (acrlocal up --workers); a test's own --workers argument comes later and wins.
WORKERS = int(os.environ.get("ACRLOCAL_TEST_WORKERS", "1"))
_databases: dict[Path, str] = {}


def database_for(data_dir: Path, backend: str | None = None) -> str | None:
    """The ``--database-url`` of a server on ``data_dir`` (the same every time), or ``None`` for its SQLite file."""
    if (backend or BACKEND) != "postgresql":
        return None
    key = data_dir.resolve()
    if key not in _databases:
        from tests import postgres

        _databases[key] = postgres.shared().create_database("server")
    return _databases[key]

#: Where servers started here keep blobs: "files" (each data directory's own) or "azurite" (a container of their own
#: per data directory on the session's private Azurite, with its account key); pytest's ``--blob-backend``.
BLOB_BACKEND = os.environ.get("ACRLOCAL_TEST_BLOB_BACKEND", "files")
_containers: dict[Path, str] = {}


def blob_store_for(data_dir: Path, backend: str | None = None) -> tuple[str, str, str] | None:
    """``(--blob-store URL, account key, --blob-store-ca)`` of a server on ``data_dir`` (the same every time), or
    ``None`` for files."""
    if (backend or BLOB_BACKEND) != "azurite":
        return None
    from tests import azurite

    server = azurite.shared()
    key = data_dir.resolve()
    if key not in _containers:
        _containers[key] = server.container_url("server")
    return _containers[key], server.key, server.ca


#: Lockout after failed logins stays on too, with limits no test reaches by accident (the whole session's requests
#: come from 127.0.0.1, and forged-credential tests fail on purpose); tests of the lockout pass their own.
TEST_LOGIN_LOCKOUT = "1000000/1000000/60"


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra)
    return env


def acrlocal_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "acrlocal", *args]


class CASession(requests.Session):
    """``requests`` lets ``REQUESTS_CA_BUNDLE`` override ``Session.verify``; this session passes it per request."""

    def __init__(self, ca: str) -> None:
        super().__init__()
        self.ca = ca

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("verify", self.ca)
        return super().request(method, url, *args, **kwargs)


ACR_SCOPE = "https://containerregistry.azure.net/.default"
#: The user name docker-style clients give with an ACR refresh token as the password.
REFRESH_TOKEN_USER = "00000000-0000-0000-0000-000000000000"


def parse_challenge(header: str) -> dict[str, str]:
    """The parameters of a ``Bearer realm=..,service=..[,scope=..]`` challenge."""
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


class ChallengeAuth(requests.auth.AuthBase):
    """What a docker-style client does: on a 401 with a Bearer challenge, ask the realm for a token with Basic
    credentials (``username``/``password``, or none for an anonymous token) and the challenged scope, then send
    the request again with it. Tokens are remembered per scope."""

    def __init__(self, username: str | None, password: str | None, ca: str) -> None:
        self.username, self.password, self.ca = username, password, ca
        self.tokens: dict[str, str] = {}

    def token(self, challenge: dict[str, str]) -> str:
        scope = challenge.get("scope", "")
        if scope not in self.tokens:
            params = {"service": challenge["service"]}
            if scope:
                params["scope"] = scope
            auth: Any = (self.username, self.password) if self.username is not None else None
            r = requests.get(challenge["realm"], params=params, auth=auth, verify=self.ca, timeout=30)
            r.raise_for_status()
            self.tokens[scope] = r.json()["access_token"]
        return self.tokens[scope]

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.register_hook("response", self._on_response)
        return request

    def _on_response(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        header = response.headers.get("WWW-Authenticate", "")
        if response.status_code not in (401, 403) or not header.startswith("Bearer ") or \
                response.request.headers.get("X-Retried-With-Token"):
            return response
        challenge = parse_challenge(header)
        if response.status_code == 403:
            self.tokens.pop(challenge.get("scope", ""), None)
        token = self.token(challenge)
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        retry.headers["X-Retried-With-Token"] = "1"
        if hasattr(retry.body, "seek"):
            retry.body.seek(0)  # type: ignore[union-attr]
        response.content  # noqa: B018 - release the connection before reusing it
        response.raw.release_conn()
        new = response.connection.send(retry, **kwargs)
        new.history.append(response)
        return new


@contextmanager
def running(data_dir: Path, *extra_args: str, wrapper: Sequence[str] = (),
            vm_az: Path | None = None, blob_store: tuple[str, str, str] | None = None) -> Iterator[AcrLocal]:
    """A started server on ``data_dir``, stopped when the block ends, however it ends. ``vm_az`` is the az its VMs'
    ``az`` runs (``ACRLOCAL_VM_AZ``), as a host with Microsoft's az installed gives them."""
    server = AcrLocal(data_dir, *extra_args, wrapper=wrapper, blob_store=blob_store)
    before = os.environ.get("ACRLOCAL_VM_AZ")
    if vm_az is not None:
        os.environ["ACRLOCAL_VM_AZ"] = str(vm_az)
    try:
        server.start()
    finally:
        if vm_az is not None:
            if before is None:
                os.environ.pop("ACRLOCAL_VM_AZ", None)
            else:
                os.environ["ACRLOCAL_VM_AZ"] = before
    try:
        yield server
    finally:
        server.stop()


class AcrLocal:
    """A server process on ``data_dir``. ``status`` is what ``acrlocal status`` prints. ``wrapper`` is a command
    the server runs under that ends by exec'ing it (e.g. one that enters a private network namespace), so the
    process is still the server's. ``backend`` overrides the session's ``BACKEND``, ``blob_backend`` its
    ``BLOB_BACKEND``, and ``blob_store`` (a container's URL, its account's key and the CA of its certificate)
    both. ``env`` is added to the environment the server starts with."""

    def __init__(self, data_dir: Path, *extra_args: str, wrapper: Sequence[str] = (),
                 backend: str | None = None, blob_backend: str | None = None,
                 blob_store: tuple[str, str, str] | None = None, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.env = env or {}
        self.wrapper = list(wrapper)
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] = {}
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        # Registries' ports come from below the kernel's ephemeral range (32768-60999): a port from that range may be
        # taken by any outgoing connection while the server is stopped, and a restart then finds its registry's
        # port in use. A random base keeps servers of parallel runs apart.
        self.registry_port_base = random.randrange(10000, 30000)
        self._database_url = database_for(data_dir, backend)
        self.blob_store = blob_store or blob_store_for(data_dir, blob_backend)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> dict[str, Any]:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        state = self.data_dir / "server.json"
        state.unlink(missing_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            self.wrapper + acrlocal_cmd(
                "up", "--data-dir", str(self.data_dir), "--port", "0",
                "--registry-port-base", str(self.registry_port_base),
                "--log-level", "info", "--registry-rate-limit", TEST_RATE_LIMIT,
                "--workers", str(WORKERS),
                "--login-lockout", TEST_LOGIN_LOCKOUT,
                *(["--database-url", self._database_url] if self._database_url else []),
                *(["--blob-store", self.blob_store[0], "--blob-store-ca", self.blob_store[2]] if self.blob_store
                  else []), *self.extra_args,
            ),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            env=child_env(**({"ACRLOCAL_BLOB_STORE_KEY": self.blob_store[1]} if self.blob_store else {}), **self.env),
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"acrlocal exited with {self.proc.returncode}:\n{self.log()}")
            if state.exists():
                try:
                    self.status = json.loads(state.read_text())
                    break
                except json.JSONDecodeError:
                    pass
            time.sleep(0.05)
        else:
            self.stop()
            raise RuntimeError(f"acrlocal did not start in {timeout}s:\n{self.log()}")
        return self.status

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM and wait; returns the exit code (``None`` if it was not running)."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> dict[str, Any]:
        self.stop()
        return self.start()

    @property
    def profile_dir(self) -> Path:
        """The CLI profile (``ACRLOCAL_CONFIG_DIR``) ``cli`` uses for this server."""
        return self.data_dir.parent / f"{self.data_dir.name}-cli-profile"

    @property
    def database_url(self) -> str:
        """The server's database (SQLAlchemy URL)."""
        return self._database_url or f"sqlite:///{self.data_dir / 'acrlocal.db'}"

    def database(self) -> sa.Engine:
        """An engine on the server's database, for tests that look at or change rows directly (dispose it)."""
        return sa.create_engine(self.database_url, poolclass=sa.NullPool)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except FileNotFoundError:
            return ""

    # -- where things are --------------------------------------------------------------------------

    @property
    def ca(self) -> str:
        """The server's CA; with blobs on Azurite, a bundle of it and Azurite's CA (clients follow blob GETs there)."""
        if self.blob_store is None:
            return str(self.status["caPath"])
        bundle = self.data_dir.parent / f"{self.data_dir.name}-ca-bundle.pem"
        content = Path(self.status["caPath"]).read_bytes() + Path(self.blob_store[2]).read_bytes()
        if not bundle.exists() or bundle.read_bytes() != content:
            # Written aside and renamed: a client in another thread never reads it half-written.
            partial = bundle.with_name(f"{bundle.name}.{os.getpid()}.{threading.get_ident()}")
            partial.write_bytes(content)
            os.replace(partial, bundle)
        return str(bundle)

    @property
    def shared(self) -> str:
        return str(self.status["endpoints"]["shared"])

    def registry(self, name: str = "acrlocal") -> dict[str, Any]:
        for reg in self.status["registries"]:
            if reg["name"] == name:
                return dict(reg)
        raise KeyError(name)

    def login_server(self, name: str = "acrlocal") -> str:
        return str(self.registry(name)["loginServer"])

    def url(self, path: str, registry: str = "acrlocal") -> str:
        return f"https://{self.login_server(registry)}{path}"

    def session(self) -> requests.Session:
        """A requests session that trusts this server's CA (whatever ``REQUESTS_CA_BUNDLE`` says)."""
        return CASession(self.ca)

    # -- credentials -------------------------------------------------------------------------------

    def admin_credential(self) -> dict[str, str]:
        """The local administrator (Owner of the default subscription): tenantId, clientId, clientSecret..."""
        cred: dict[str, str] = json.loads((self.data_dir / "admin.json").read_text())
        return cred

    def entra_token(self, tenant: str, client_id: str, secret: str, scope: str = ACR_SCOPE) -> str:
        """An Entra access token by client credentials at this server's v2 token endpoint."""
        r = self.session().post(f"{self.shared}/{tenant}/oauth2/v2.0/token", data={
            "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": scope})
        assert r.status_code == 200, r.text
        return str(r.json()["access_token"])

    def admin_token(self, scope: str = ACR_SCOPE) -> str:
        cred = self.admin_credential()
        return self.entra_token(cred["tenantId"], cred["clientId"], cred["clientSecret"], scope)

    def exchange(self, aad_token: str, registry: str = "acrlocal", login_server: str | None = None) -> str:
        """An ACR refresh token for ``aad_token`` from the registry's ``/oauth2/exchange``."""
        server = login_server or self.login_server(registry)
        r = self.session().post(f"https://{server}/oauth2/exchange", data={
            "grant_type": "access_token", "service": server, "access_token": aad_token})
        assert r.status_code == 200, r.text
        return str(r.json()["refresh_token"])

    def registry_credentials(self, registry: str = "acrlocal") -> tuple[str, str]:
        """``(user, password)`` a docker-style client logs in with as the local administrator: the all-zero user
        and an ACR refresh token (what ``az acr login --expose-token`` prints)."""
        return REFRESH_TOKEN_USER, self.exchange(self.admin_token(), registry)

    def docker_auth(self, registry: str = "acrlocal") -> dict[str, Any]:
        """A docker/containers ``auth.json`` document holding :meth:`registry_credentials`."""
        user, password = self.registry_credentials(registry)
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"auths": {self.login_server(registry): {"auth": auth}}}

    def cli(self, *args: str, check: bool = True, env: dict[str, str] | None = None,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``acrlocal ARGS`` against this server: its data dir, and a CLI profile of its own (never ``~``)."""
        proc = subprocess.run(
            acrlocal_cmd(*args), capture_output=True, text=True, input=input,
            env=child_env(**{"ACRLOCAL_DATA_DIR": str(self.data_dir), "ACRLOCAL_CONFIG_DIR": str(self.profile_dir),
                             **({"ACRLOCAL_DATABASE_URL": self._database_url} if self._database_url else {}),
                             **(env or {})}),
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"acrlocal {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
        return proc
