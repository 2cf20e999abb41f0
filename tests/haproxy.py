"""A private HAProxy (Debian's ``haproxy``) for tests: TCP mode (TLS passes through to the servers), round robin
over the servers of each frontend, no stickiness, its configuration and nothing else in a temporary directory,
listening on loopback only, stopped by its PID.

Each frontend port spreads connections over its servers' ports; a server whose port refuses connections is
marked down by the health check (three failed checks 500 ms apart) and a connection that fails is sent to another one
(``option redispatch``). A connection whose client has gone before the server took it is dropped, not forwarded
(``option abortonclose``): clients that abort their dials by the thousand otherwise fill a replica's accept queue.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def require() -> str:
    path = shutil.which("haproxy") or ("/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").exists() else None)
    if path is None:
        raise RuntimeError("HAProxy is not installed (Debian: apt-get install haproxy); scripts/test installs it")
    return path


class HAProxy:
    """``frontends`` maps a port HAProxy listens on to the ports of the servers behind it."""

    def __init__(self, frontends: dict[int, list[int]]) -> None:
        self.binary = require()
        self.frontends = frontends
        self.dir = Path(tempfile.mkdtemp(prefix="acrlocal-haproxy-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        # Abnormal sessions and servers going down or up are logged to haproxy.log (see log()).
        lines = ["global", "  maxconn 4000", "  nbthread 1", "  log stdout format raw local0 notice", "defaults",
                 "  log global", "  mode tcp", "  option tcplog", "  option dontlog-normal", "  timeout connect 2s",
                 "  timeout client 300s", "  timeout server 300s", "  retries 3", "  option redispatch",
                 "  option abortonclose", ""]
        for port, servers in self.frontends.items():
            lines += [f"listen port{port}", f"  bind 127.0.0.1:{port}", "  balance roundrobin"]
            lines += [f"  server s{target} 127.0.0.1:{target} check inter 500ms fall 3 rise 2"
                      for target in servers]
            lines.append("")
        return "\n".join(lines)

    def start(self, timeout: float = 20.0) -> None:
        path = self.dir / "haproxy.cfg"
        path.write_text(self.config())
        check = subprocess.run([self.binary, "-c", "-f", str(path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration:\n{check.stdout}\n{check.stderr}")
        log = open(self.dir / "haproxy.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen([self.binary, "-db", "-f", str(path)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.dir, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        for port in self.frontends:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"haproxy exited {self.proc.returncode}:\n{self.log()}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(f"haproxy did not listen on {port}:\n{self.log()}") from None
                    time.sleep(0.05)

    def log(self) -> str:
        try:
            return (self.dir / "haproxy.log").read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)
