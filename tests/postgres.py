"""A private PostgreSQL server for tests: Debian's ``postgresql`` binaries, a cluster made by ``initdb`` in a
temporary directory, listening on 127.0.0.1 at a free port below the ephemeral range (:mod:`tests.ports`; its unix
socket in that directory), stopped and removed by :meth:`PostgresServer.stop`.

PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres`` system user that Debian's package
creates, and its commands run through ``runuser``. The cluster sorts text as ICU's ``en-US`` (what a production
server typically has), so code that needs byte order must ask for it. Durability is off (``fsync``): a test server
loses nothing it needs on a crash of its own.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import sqlalchemy as sa

from tests.ports import free_port
from tests.session_service import SessionService

USER = "acrlocal"


def binaries() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has ``initdb``; ``None`` if PostgreSQL is absent."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


class PostgresServer:
    """One cluster; :meth:`create_database` gives each user of it a database of its own."""

    def __init__(self) -> None:
        bin_dir = binaries()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql); scripts/test "
                               "installs it")
        self.bin = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="acrlocal-pg-"))
        self.data = self.dir / "data"
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self._as: list[str] = []
        self._lock = threading.Lock()
        self._count = 0
        self._admin: sa.Engine | None = None
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.dir, "postgres", "postgres")
        os.chmod(self.dir, 0o700)

    def _run(self, *args: str) -> None:
        proc = subprocess.run([*self._as, *args], capture_output=True, text=True, cwd=self.dir)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}\n"
                               f"{self.log()}")

    def log(self) -> str:
        try:
            return (self.dir / "server.log").read_text(errors="replace")[-3000:]
        except (FileNotFoundError, PermissionError):
            return ""

    def start(self) -> None:
        pwfile = self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                  "--auth=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--locale-provider=icu",
                  "--icu-locale=en-US", "--no-sync")
        pwfile.unlink()
        for attempt in range(5):
            self.port = free_port()
            try:
                self.start_server()
                return
            except RuntimeError:
                if attempt == 4 or "could not bind" not in self.log():
                    raise

    def start_server(self) -> None:
        """Start the cluster's server on :attr:`port` (again, after :meth:`stop_server`)."""
        options = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    def stop_server(self) -> None:
        """Stop the server, keeping the cluster (``pg_ctl stop -m fast``: open connections are cut)."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def create_database(self, prefix: str = "test") -> str:
        """A new empty database; returns its URL."""
        with self._lock:
            self._count += 1
            name = f"{prefix}_{self._count}"
            if self._admin is None:
                self._admin = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
        with self._admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.dispose()
        if (self.data / "postmaster.pid").exists():
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop"],
                           capture_output=True, cwd=self.dir)
        shutil.rmtree(self.dir, ignore_errors=True)


_session = SessionService(PostgresServer)
shared = _session.get  # the test session's server, started on first use
stop_shared = _session.stop  # called at the session's end
