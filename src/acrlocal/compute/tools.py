"""What a VM gets from this host, found once when the server starts, and the shared tools directory made from it.

Every VM sees the host's programs read-only (``/usr`` and the merged ``/bin``, ``/lib``...). Besides them:

- **Microsoft's Azure CLI** when one is installed (``$ACRLOCAL_VM_AZ`` names it, else ``az`` on PATH; the value
  ``acrlocal`` chooses acrlocal's CLI even then): its Python environment is bound read-only at ``/opt/az`` (where
  Microsoft's own package puts it) and ``az`` runs ``/opt/az/bin/python3 -Im azure.cli``, as Microsoft's launcher
  does. With no Azure CLI here, a VM's ``az`` is acrlocal's az-shaped CLI.
- **Docker Engine** when Debian's ``docker.io`` is installed (``dockerd`` on PATH): each VM gets its own daemon,
  started on first use of ``/run/docker.sock`` (see :mod:`acrlocal.compute.runtime`). Without it, ``docker`` is
  podman (``$ACRLOCAL_VM_DOCKER=podman`` chooses that even with ``docker.io``), and says so once.
- the Python that runs acrlocal, at its own path (the virtualenvs above link to it), acrlocal's package at
  ``/opt/acrlocal/python`` and its virtualenv at ``/opt/acrlocal/venv`` (so the VM has acrlocal's CLI, the
  credential helper, and the Azure SDKs the server's environment holds).
- the host's package database (``/var/lib/dpkg``), so ``dpkg -l`` in a VM lists what it runs; ``apt`` and
  ``apt-get`` say that packages come from the host.

:func:`write_shared` writes the directory every VM binds read-only at ``/opt/acrlocal/bin``: the ``az``,
``acrlocal``, ``docker-credential-acrlocal`` and (podman) ``docker`` launchers, the ``apt`` stand-in, the Docker
Engine starter, and the VMs' CA bundle (the host's bundle plus acrlocal's CA), once per server start, not per VM.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import acrlocal

ENV_VM_AZ = "ACRLOCAL_VM_AZ"
ENV_VM_DOCKER = "ACRLOCAL_VM_DOCKER"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
VM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
TOOLS = "/opt/acrlocal/bin"
AZ_PREFIX = "/opt/az"
PACKAGE = "/opt/acrlocal/python"
VENV = "/opt/acrlocal/venv"
PYBASE = "/opt/acrlocal/pybase"
DOCKERD_STARTER = ".dockerd"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
VM_PATH = f"{TOOLS}:{SYSTEM_PATH}"


@dataclass(frozen=True)
class Python:
    """A Python environment a VM runs: ``base`` is the interpreter's installation (bound read-only at ``mount``
    in the VM unless it is under ``/usr``), ``executable`` its interpreter relative to ``base``, ``site`` the
    environment's site-packages directory as the VM sees it (``None``: the interpreter's own)."""

    base: str
    mount: str
    executable: str
    site: str | None = None

    @property
    def vm_executable(self) -> str:
        return f"{self.mount}/{self.executable}"

    def command(self, code: str) -> str:
        """A ``/bin/sh`` line running ``code`` (isolated from the caller's ``PYTHON*`` variables) with this
        environment's packages; the launcher's arguments follow."""
        prelude = f"import site; site.addsitedir({self.site!r}); " if self.site else ""
        libraries = ""
        if self.mount != self.base and any(Path(self.base, "lib").glob("libpython3*.so*")):
            # an interpreter built with a shared libpython finds it through its absolute run path, which is
            # the host's path: point the loader at the VM's
            libraries = f'LD_LIBRARY_PATH="{self.mount}/lib${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" '
        return f"{libraries}exec {shlex.quote(self.vm_executable)} -I -c {shlex.quote(prelude + code)} \"$@\"\n"


def _python_of(prefix: Path, mount_base: str, vm_prefix: str) -> Python | None:
    """The :class:`Python` of the environment at ``prefix`` (a virtualenv, or an installation), seen in a VM
    with ``prefix`` at ``vm_prefix`` and its base interpreter at ``mount_base``."""
    cfg = prefix / "pyvenv.cfg"
    sites = sorted(prefix.glob("lib/python3*/site-packages"))
    if cfg.exists():
        home = ""
        for line in cfg.read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home":
                home = value.strip()
        if not home or not sites:
            return None
        base = Path(home).resolve().parent
        version = sites[-1].parent.name  # python3.X
        executable = next((f"bin/{n}" for n in (version, "python3") if os.path.exists(base / "bin" / n)), None)
        if executable is None:
            return None
        site = f"{vm_prefix}/{sites[-1].relative_to(prefix)}"
        return Python(str(base), str(base) if str(base).startswith("/usr/") else mount_base, executable, site)
    python = prefix / "bin" / "python3"
    if python.exists():
        return Python(str(prefix), vm_prefix, "bin/python3")
    return None


@dataclass(frozen=True)
class VMTools:
    """What VMs get from this host: ``python`` runs acrlocal's launchers (its packages and acrlocal's package
    root bound at ``/opt/acrlocal``), ``az`` Microsoft's Azure CLI (its environment at ``/opt/az``), ``docker``
    ``"engine"``, ``"podman"`` or ``None``."""

    python: Python
    package_root: str
    venv: str | None = None
    az_prefix: str | None = None
    az: Python | None = None
    docker: str | None = None
    podman: str | None = None

    @classmethod
    def detect(cls, path: str | None = None) -> VMTools:
        search = path or os.environ.get("PATH", "")
        chosen = os.environ.get(ENV_VM_AZ, "")
        az_exe = None if chosen == "acrlocal" else shutil.which(chosen or "az", path=None if chosen else search)
        az_prefix = _az_prefix(az_exe) if az_exe else None
        az = _python_of(Path(az_prefix), "/opt/acrlocal/azbase", AZ_PREFIX) if az_prefix else None
        dockerd = shutil.which("dockerd", path=search + os.pathsep + "/usr/sbin:/usr/bin")
        podman = shutil.which("podman", path=search)
        docker = "engine" if dockerd and os.environ.get(ENV_VM_DOCKER) != "podman" else (
            "podman" if podman else None)
        venv = sys.prefix if sys.prefix != sys.base_prefix else None
        python = _python_of(Path(sys.prefix), PYBASE, VENV) if venv else None
        if python is None:
            base = Path(sys.base_prefix).resolve()
            executable = Path(sys.executable).resolve()
            python = Python(str(base), str(base) if str(base).startswith("/usr/") else PYBASE,
                            str(executable.relative_to(base)) if executable.is_relative_to(base) else "bin/python3")
        if az is not None and az.base == python.base:
            az = Python(az.base, python.mount, az.executable, az.site)
        return cls(python=python, package_root=str(Path(acrlocal.__file__).resolve().parent.parent),
                   venv=str(Path(venv).resolve()) if venv else None, az_prefix=az_prefix if az else None, az=az,
                   docker=docker, podman=podman)

    def binds(self, shared: Path) -> list[tuple[str, str]]:
        """``(host path, VM path)`` read-only binds besides ``/usr`` and the top-level directories."""
        pairs = [(str(shared / "bin"), TOOLS), (self.package_root, PACKAGE)]
        for python in (self.python, self.az):
            if python is not None and python.mount != python.base and (python.base, python.mount) not in pairs:
                pairs.append((python.base, python.mount))
        if self.venv:
            pairs.append((self.venv, VENV))
        if self.az_prefix:
            pairs.append((self.az_prefix, AZ_PREFIX))
        if Path("/var/lib/dpkg").is_dir():
            pairs.append(("/var/lib/dpkg", "/var/lib/dpkg"))
        for name in ("apt", "apt-get"):
            if Path("/usr/bin", name).exists():
                pairs.append((str(shared / "bin" / "apt"), f"/usr/bin/{name}"))
        return pairs


def _az_prefix(az: str) -> str | None:
    """The Python environment that runs the ``az`` at ``az``: a pip-installed script's ``#!`` interpreter's
    environment, or Microsoft's package's ``/opt/az``."""
    try:
        with open(az, "rb") as f:
            head = f.read(4096).decode(errors="replace")
    except OSError:
        return None
    first = head.splitlines()[0] if head else ""
    if first.startswith("#!") and "python" in first:
        prefix = Path(first[2:].strip().split()[0]).parent.parent
        if (prefix / "pyvenv.cfg").exists() or (prefix / "lib").is_dir():
            return str(prefix.resolve())
    if "/opt/az/bin/python3" in head and Path("/opt/az/bin").is_dir():
        return "/opt/az"
    return None


def _write(path: Path, text: str, mode: int = 0o755) -> None:
    """Write ``path`` if its text differs (a running VM reads these files; they change only with the server)."""
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _python_launcher(tools: VMTools, entry: str, comment: str) -> str:
    module, function = entry.split(":")
    code = f"import sys; sys.path.insert(0, {PACKAGE!r}); from {module} import {function}; sys.exit({function}())"
    return (f"#!/bin/sh\n# {comment}\n"
            'export ACRLOCAL_ENDPOINT="${ACRLOCAL_ENDPOINT:-https://management.azure.com}"\n'
            f'export REQUESTS_CA_BUNDLE="${{REQUESTS_CA_BUNDLE:-{VM_CA_BUNDLE}}}"\n'
            + tools.python.command(code))


APT = """#!/bin/sh
# apt in an acrlocal VM. A VM runs this host's programs, read-only: packages come from the host.
note() { echo "acrlocal: this VM runs the host's programs (read-only /usr); packages come from the host." >&2; }
command=""
for arg in "$@"; do
  case "$arg" in -*) ;; *) command="$arg"; break ;; esac
done
case "$command" in
  install|reinstall)
    note
    missing=""
    first=1
    for arg in "$@"; do
      case "$arg" in -*) continue ;; esac
      if [ -n "$first" ]; then first=""; continue; fi
      pkg=${arg%%=*}
      version=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null)
      status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null)
      if [ "$status" = installed ]; then
        echo "$pkg is already the newest version ($version)."
      else
        missing="$missing $pkg"
      fi
    done
    if [ -n "$missing" ]; then
      echo "E: not installed on the host:$missing. Install them there (sudo apt-get install$missing) and every" \\
           "VM has them." >&2
      exit 100
    fi
    echo "0 upgraded, 0 newly installed, 0 to remove and 0 not upgraded."
    ;;
  update|upgrade|full-upgrade|dist-upgrade|autoremove|autoclean|clean)
    note
    echo "Nothing to do in the VM: update the host's packages on the host."
    ;;
  remove|purge)
    note
    echo "E: the host's packages cannot be removed from a VM." >&2
    exit 100
    ;;
  list)
    dpkg-query -W -f='${binary:Package}/now ${Version} ${Architecture} [installed]\\n'
    ;;
  show|policy|search|depends|rdepends|showpkg|madison)
    exec apt-cache "$@"
    ;;
  *)
    note
    echo "usage: apt install|show|list ... (packages come from the host)" >&2
    [ -z "$command" ] && exit 0
    exit 100
    ;;
esac
"""

DOCKERD = """#!/bin/sh
# Docker Engine of an acrlocal VM, started by the server on first use of /run/docker.sock (handed over as fd 3):
# in a mount namespace of its own (where it may mount), with the VM's cgroups, its data and socket in the VM.
set -e
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
unified=""
while IFS=: read -r id controllers path; do
  if [ -z "$controllers" ]; then
    unified=1
  elif [ "${controllers#name=}" != "$controllers" ]; then
    dir=${controllers#name=}
    mkdir -p "/sys/fs/cgroup/$dir"
    mount -t cgroup -o "none,$controllers" cgroup "/sys/fs/cgroup/$dir"
  else
    mkdir -p "/sys/fs/cgroup/$controllers"
    mount -t cgroup -o "$controllers" cgroup "/sys/fs/cgroup/$controllers"
    case "$controllers" in *,*)
      for one in $(echo "$controllers" | tr , ' '); do ln -s "$controllers" "/sys/fs/cgroup/$one"; done ;;
    esac
  fi
done < /proc/self/cgroup
if [ -n "$unified" ]; then
  if [ "$(grep -c . /proc/self/cgroup)" = 1 ]; then
    umount /sys/fs/cgroup
    mount -t cgroup2 cgroup2 /sys/fs/cgroup
  else
    mkdir -p /sys/fs/cgroup/unified
    mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified
  fi
fi
mkdir -p /var/log /var/lib/docker
exec dockerd -H fd:// --data-root /var/lib/docker --exec-root /run/docker --pidfile /run/docker.pid \\
  --bridge=none --iptables=false --ip6tables=false --ip-masq=false --userland-proxy=false \\
  >>/var/log/docker.log 2>&1
"""


def _podman_docker(podman: str) -> str:
    return f"""#!/bin/sh
# docker in an acrlocal VM whose host has no Docker Engine (docker.io): podman answers, as podman-docker does.
marker="${{XDG_STATE_HOME:-$HOME/.local/state}}/acrlocal/docker-is-podman"
if [ ! -e "$marker" ]; then
  echo "Emulate Docker CLI using podman: this host has no Docker Engine (apt-get install docker.io on the host)." >&2
  mkdir -p "$(dirname "$marker")" 2>/dev/null && : > "$marker" 2>/dev/null
fi
if [ "$(id -u)" != 0 ]; then
  export _CONTAINERS_USERNS_CONFIGURED=done _CONTAINERS_ROOTLESS_UID="$(id -u)"
  export XDG_RUNTIME_DIR="${{XDG_RUNTIME_DIR:-/run/user/$(id -u)}}"
  [ -d "$XDG_RUNTIME_DIR" ] || XDG_RUNTIME_DIR="/tmp/podman-run-$(id -u)"
  mkdir -p "$XDG_RUNTIME_DIR" 2>/dev/null
  set -- --storage-driver vfs --root "$HOME/.local/share/containers/storage" \\
    --runroot "$XDG_RUNTIME_DIR/containers" --cgroup-manager cgroupfs --events-backend file "$@"
fi
exec {shlex.quote(podman)} "$@"
"""


def ca_bundle(ca_pem: bytes, host_bundle: Path = HOST_CA_BUNDLE) -> bytes:
    """The VMs' ``/etc/ssl/certs/ca-certificates.crt``: the host's bundle, then acrlocal's CA."""
    try:
        base = host_bundle.read_bytes()
    except OSError:
        base = b""
    if base and not base.endswith(b"\n"):
        base += b"\n"
    return base + b"# acrlocal local CA\n" + ca_pem


def write_shared(shared: Path, tools: VMTools, ca_pem: bytes) -> None:
    """The directory every VM binds read-only at ``/opt/acrlocal/bin`` (and its CA bundle), brought up to date."""
    bin_dir = shared / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(shared, 0o755)
    _write(bin_dir / "acrlocal", _python_launcher(tools, "acrlocal.cli.main:main", "acrlocal's CLI, shaped like az"))
    _write(bin_dir / "docker-credential-acrlocal", _python_launcher(
        tools, "acrlocal.cli.credhelper:main", "Docker credential helper: registry tokens from this VM's identity"))
    if tools.az is not None:
        _write(bin_dir / "az", f"#!/bin/sh\n# Microsoft's Azure CLI (this host's, at {AZ_PREFIX})\n"
               + tools.az.command("import runpy; runpy.run_module('azure.cli', run_name='__main__', alter_sys=True)"))
    else:
        _write(bin_dir / "az", _python_launcher(tools, "acrlocal.cli.main:main",
                                                "az in an acrlocal VM: acrlocal's az-shaped CLI"))
    _write(bin_dir / "acrlocal-python", "#!/bin/sh\n# Python with the packages of acrlocal's environment (the Azure "
           "SDKs, when it has them)\n" + tools.python.command(
               "import runpy, sys; sys.argv[:] = sys.argv[1:] or ['-']; "
               "runpy.run_path(sys.argv[0], run_name='__main__') if sys.argv[0] not in ('-', '-c', '-m') else "
               "exec(sys.argv.pop(1)) if sys.argv[0] == '-c' else runpy.run_module(sys.argv.pop(1), "
               "run_name='__main__', alter_sys=True) if sys.argv[0] == '-m' else exec(sys.stdin.read())"))
    _write(bin_dir / "apt", APT)
    _write(bin_dir / DOCKERD_STARTER, DOCKERD)
    docker = bin_dir / "docker"
    if tools.docker == "podman" and tools.podman:
        _write(docker, _podman_docker(tools.podman))
    elif docker.exists():
        docker.unlink()
    _write(shared / "ca-certificates.crt", ca_bundle(ca_pem).decode(), 0o644)
