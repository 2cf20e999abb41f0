"""Microsoft's az CLI (azure-cli from PyPI) against a real acrlocal server.

az pins its own azure-core and msal, so it lives in a virtualenv of its own, ``.venv-az``, which ``scripts/test``
creates next to ``.venv``. The tests look for it in this order: ``$ACRLOCAL_TEST_AZ`` (the ``az`` executable),
``.venv-az`` beside the virtualenv running pytest, ``.venv-az`` at the repository root. An az that cannot be found
FAILS these tests; a developer who cannot install it may opt out with ``ACRLOCAL_SKIP_AZ=1`` (ignored when ``CI``
is set).

Every az on the host (and every ``acrlocal az-setup`` that runs az) is a child process with:

- a minimal environment: a private ``HOME`` and ``AZURE_CONFIG_DIR``, ``REQUESTS_CA_BUNDLE`` = the server's CA,
  ``AZURE_CORE_COLLECT_TELEMETRY=false``, the loopback-only guard first on ``PYTHONPATH`` (a Python connection to
  anything but loopback fails);
- a mount namespace of its own (``unshare``) in which ``/etc/hosts`` names ``localhost`` and the test's
  registries (``<name>.localhost``, the login server az builds from the cloud's ACR suffix when the caller cannot
  read the registry through ARM, as an OS with nss-myhostname resolves it) and ``/etc/resolv.conf`` names only
  ``127.0.0.1``: no DNS query leaves loopback either (az's first run in a new config directory checks for a newer
  version, and an unknown registry name is looked up). Nothing on the host's ``/etc`` changes.

az in a VM (:class:`VmAz`) runs in the VM itself, with nothing set: the VM's namespace holds only loopback, and
its DNS stub answers Azure's names and nothing else.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clients import GUARD
from tests.harness import SRC, AcrLocal, acrlocal_cmd, running
from tests.vmexec import Result, vm_exec

REPO = Path(__file__).resolve().parents[2]
AZ_TIMEOUT_S = 300


def find_az() -> Path | None:
    candidates = [os.environ.get("ACRLOCAL_TEST_AZ", ""), str(Path(sys.prefix).parent / ".venv-az" / "bin" / "az"),
                  str(REPO / ".venv-az" / "bin" / "az")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def az_exe() -> Path:
    found = find_az()
    if found is not None:
        return found
    message = ("Microsoft's az CLI was not found: run ./scripts/test (it installs azure-cli into .venv-az), or set "
               "ACRLOCAL_TEST_AZ to an az executable")
    if os.environ.get("ACRLOCAL_SKIP_AZ") == "1" and not os.environ.get("CI"):
        pytest.skip(message + " (skipped: ACRLOCAL_SKIP_AZ=1)")
    pytest.fail(message + ". A developer without az may set ACRLOCAL_SKIP_AZ=1.", pytrace=False)


CONTAIN = ('mount --bind "$1" /etc/hosts && { [ ! -e /etc/resolv.conf ] || mount --bind "$2" /etc/resolv.conf; } '
           '&& shift 2 && exec "$@"')


class Contained:
    """Runs commands in a mount namespace whose ``/etc/hosts`` holds ``localhost`` and ``names`` (all 127.0.0.1)
    and whose ``/etc/resolv.conf`` names only 127.0.0.1."""

    def __init__(self, root: Path, netns_pid: int | None = None) -> None:
        self.root = root
        self.names: set[str] = set()
        #: Run in the network namespace of this process (a server in a private namespace), if given.
        self.netns_pid = netns_pid
        root.mkdir(parents=True, exist_ok=True)
        (root / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:1\n")

    def argv(self, command: list[str]) -> list[str]:
        hosts = self.root / "hosts"
        hosts.write_text("127.0.0.1 localhost " + " ".join(sorted(self.names)) + "\n::1 localhost\n")
        unshare = ["unshare", "--mount"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
        netns = ["nsenter", f"--net=/proc/{self.netns_pid}/ns/net"] if self.netns_pid else []
        return [*netns, *unshare, "sh", "-c", CONTAIN, "contain", str(hosts), str(self.root / "resolv.conf"),
                *command]


class Az:
    """One az configuration (``AZURE_CONFIG_DIR``) on one machine: the host, or a VM whose environment is given.

    ``az(...)`` returns the parsed JSON output (``None`` when there is none) and fails the test on a non-zero exit;
    ``az.fail(...)`` expects a non-zero exit and returns the completed process (stderr holds az's ``ERROR:``)."""

    def __init__(self, az_exe: Path, server: AcrLocal, home: Path, contained: Contained,
                 env: dict[str, str] | None = None) -> None:
        self.exe = az_exe
        self.server = server
        self.contained = contained
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": f"{az_exe.parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(GUARD),
            "NO_PROXY": "127.0.0.1,localhost,.localhost",
            "no_proxy": "127.0.0.1,localhost,.localhost",
            "AZURE_CONFIG_DIR": str(home / ".azure"),
            "REQUESTS_CA_BUNDLE": server.ca,
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "AZURE_CORE_NO_COLOR": "1",
        }
        self.env.update(env or {})

    @property
    def config_dir(self) -> Path:
        return Path(self.env["AZURE_CONFIG_DIR"])

    def run(self, *args: str, output: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(self.exe), *args, *(["--output", "json"] if output else [])]
        return subprocess.run(self.contained.argv(argv), env=self.env, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=AZ_TIMEOUT_S)

    def __call__(self, *args: str) -> Any:
        proc = self.run(*args)
        if proc.returncode != 0:
            raise AssertionError(f"az {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout) if proc.stdout.strip() else None

    def fail(self, *args: str) -> subprocess.CompletedProcess[str]:
        proc = self.run(*args)
        assert proc.returncode != 0, f"az {' '.join(args)} succeeded:\n{proc.stdout[-2000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr[-4000:]
        return proc

    def acrlocal(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``acrlocal ARGS`` with this az's environment (in the same namespace), the server found through its data
        dir on the host or ``ACRLOCAL_ENDPOINT`` in a VM."""
        return self._run_child(acrlocal_cmd(*args), env)

    def shell(self, script: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``bash -euc SCRIPT`` in the same environment, where ``acrlocal`` and ``az`` are on ``PATH``."""
        return self._run_child(["bash", "-euc", f'acrlocal() {{ {shlex.join(acrlocal_cmd())} "$@"; }}\n{script}'],
                               env)

    def _run_child(self, argv: list[str], env: dict[str, str] | None) -> subprocess.CompletedProcess[str]:
        child = {**self.env, "PYTHONPATH": f"{SRC}{os.pathsep}{GUARD}", "ACRLOCAL_AZ": str(self.exe)}
        child.update(env or {})
        return subprocess.run(self.contained.argv(argv), env=child, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=AZ_TIMEOUT_S)

    def setup(self) -> None:
        """``acrlocal az-setup --apply`` into this configuration."""
        proc = self.acrlocal("az-setup", "--apply")
        assert proc.returncode == 0, proc.stderr

    def login_admin(self) -> list[dict[str, Any]]:
        admin = self.server.admin_credential()
        accounts: list[dict[str, Any]] = self("login", "--service-principal", "--username", admin["clientId"],
                                              "--password", admin["clientSecret"], "--tenant", admin["tenantId"])
        return accounts


@pytest.fixture(scope="module")
def az_server(az_exe: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AcrLocal]:
    """A server of the module's own: these tests create groups, registries, identities and VMs. Its VMs' ``az``
    is this az (``ACRLOCAL_VM_AZ``), as a host with Microsoft's az installed gives them."""
    with running(tmp_path_factory.mktemp("az") / "data", vm_az=az_exe) as server:
        yield server


@pytest.fixture(scope="module")
def contained(tmp_path_factory: pytest.TempPathFactory) -> Contained:
    return Contained(tmp_path_factory.mktemp("contained"))


@pytest.fixture(scope="module")
def host_az(az_exe: Path, az_server: AcrLocal, contained: Contained,
            tmp_path_factory: pytest.TempPathFactory) -> Az:
    """az on the host, set up with ``acrlocal az-setup --apply`` and signed in as the local administrator."""
    az = Az(az_exe, az_server, tmp_path_factory.mktemp("host-home"), contained,
            {"ACRLOCAL_DATA_DIR": str(az_server.data_dir)})
    az.setup()
    az.login_admin()
    return az


def unique(prefix: str) -> str:
    """A name for a resource of one test (registries: letters and digits only)."""
    return prefix + uuid.uuid4().hex[:8]


class VmAz:
    """Microsoft's az inside a VM, as its admin user types it there (each call a command in the VM's shell, through
    the console): Azure's names, IMDS at 169.254.169.254, no setting at all. ``config_dir`` gives the calls an
    ``AZURE_CONFIG_DIR`` of their own (a fresh profile); ``env`` more variables, as a user exports them."""

    def __init__(self, server: AcrLocal, vm_id: str, config_dir: str | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.server = server
        self.vm_id = vm_id
        self.env = dict(env or {})
        if config_dir:
            self.env["AZURE_CONFIG_DIR"] = config_dir

    def run(self, *args: str, output: bool = True) -> Result:
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in self.env.items())
        argv = ["az", *args, *(["--output", "json"] if output else [])]
        return vm_exec(self.server, self.vm_id, exports + shlex.join(argv), timeout=AZ_TIMEOUT_S)

    def __call__(self, *args: str) -> Any:
        result = self.run(*args)
        if result.code != 0:
            raise AssertionError(f"az {' '.join(args)} exited {result.code}:\n{result.stderr[-4000:]}")
        return json.loads(result.stdout) if result.stdout.strip() else None

    def fail(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.code != 0, f"az {' '.join(args)} succeeded:\n{result.stdout[-2000:]}"
        assert "Traceback" not in result.stderr, result.stderr[-4000:]
        return result

    def vm_shell(self, script: str) -> Result:
        """Another command in the same VM, with the same variables."""
        exports = "".join(f"export {k}={shlex.quote(v)}; " for k, v in self.env.items())
        return vm_exec(self.server, self.vm_id, exports + script, timeout=AZ_TIMEOUT_S)
