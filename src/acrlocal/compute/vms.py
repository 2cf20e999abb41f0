"""A virtual machine as acrlocal runs it, and its sandbox on disk (no HTTP, no SQL).

A VM's sandbox is ``<data dir>/vms/<vmId>/``::

    home/          $HOME of the VM's shell and run-command (``.azure``, ``.docker``, ``.config/containers`` live here)
    env            the VM's environment, ``KEY='value'`` lines a POSIX shell can source: HOME, PATH, the IMDS
                   address (``AZURE_POD_IDENTITY_AUTHORITY_HOST``), ``ACRLOCAL_ENDPOINT``, the CA bundle, per-VM
                   config directories and container storage
    appservice.env the App Service identity endpoint (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``); a shell or
                   run-command gets both files, code that wants only the IMDS door sources ``env`` alone
                   (azure-identity and msal prefer the App Service door when both are set)
    vm.json        name, ARM id, vmId and ports, for people and tools
    bin/           ``az`` (acrlocal's az-shaped CLI, or Microsoft's set up for this server), ``acrlocal``,
                   ``docker-credential-acrlocal`` and ``docker`` (podman, when docker has no daemon here), first
                   on the VM's PATH
    bashrc         the interactive shell's start file (prompt ``<admin>@<vm>``, then ``~/.bashrc``)
    containers/    ``storage.conf`` (vfs, images under ``home/.local/share/containers``) and ``containers.conf``
    hosts          the VM's ``/etc/hosts``: the host's lines and every registry host name on 127.0.0.1
    resolv.conf    the VM's ``/etc/resolv.conf``: 127.0.0.1 only, so no DNS query leaves this machine
    etc/containers the VM's ``/etc/containers``: the host's configuration files and ``certs.d/<login server>/ca.crt``
    etc/docker     the VM's ``/etc/docker`` likewise (only when the host has ``/etc/docker``)

``hosts``, ``resolv.conf`` and the two ``etc`` directories are bind-mounted over the host's paths in the VM's
private mount namespace (:mod:`acrlocal.compute.enter`). They are changed in place (the same inode, the same
directories), so namespaces already open see registries added later. Both env files are mode 0600 in a 0700 directory:
``appservice.env`` holds the VM's identity secret. Containers' run-time state (podman's runroot) lives in
``/tmp/acrlocal-vm-<first 12 hex digits of vmId>`` (0700; made when something first runs in the VM, removed with
the VM and when the server stops, as a reboot clears ``/run``): podman needs that path short.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from acrlocal.compute.network import VMNetwork, hosts_file
from acrlocal.compute.tools import VMTools
from acrlocal.config import LOOPBACK
from acrlocal.errors import ConfigError

STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
HOST_HOSTS = Path("/etc/hosts")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
#: A VM asks no DNS server off this machine: names it does not know fail at once.
VM_RESOLV_CONF = "# acrlocal VM: no DNS server; registry names are in /etc/hosts\nnameserver 127.0.0.1\n" \
                 "options attempts:1 timeout:1\n"
HOST_ETC = Path("/etc")
CERT_DIR_PARENTS = ("containers", "docker")


@dataclass(frozen=True)
class VirtualMachine:
    vm_id: str
    resource_id: str
    name: str
    resource_group: str
    subscription_id: str
    tenant_id: str
    location: str
    system_principal_id: str | None = None
    user_assigned: tuple[str, ...] = ()
    profile: dict[str, Any] = field(default_factory=dict)
    imds_port: int | None = None
    identity_secret: str = field(default="", repr=False)
    created: float = 0.0

    @property
    def imds_url(self) -> str:
        """What ``AZURE_POD_IDENTITY_AUTHORITY_HOST`` is set to inside the VM."""
        return f"http://{LOOPBACK}:{self.imds_port}"

    @property
    def identity_endpoint(self) -> str:
        """What ``IDENTITY_ENDPOINT`` is set to for the App Service door."""
        return f"http://{LOOPBACK}:{self.imds_port}/msi/token"

    def identity_type(self) -> str:
        """ARM's ``identity.type`` for this VM."""
        kinds = (["SystemAssigned"] if self.system_principal_id else []) + (
            ["UserAssigned"] if self.user_assigned else [])
        return ", ".join(kinds) or "None"


def _env_lines(values: dict[str, str]) -> str:
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in values.items())


def _write_private(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _write_in_place(path: Path, text: str) -> None:
    """Rewrite ``path`` keeping its inode (a bind mount of it sees the new text); unchanged text is not written."""
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.truncate()


def _write_executable(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _python_shim(tools: VMTools, entry: str, comment: str) -> str:
    """A ``/bin/sh`` script that runs ``entry`` (``module:function``) of this acrlocal with the server's Python,
    isolated from the VM's ``PYTHON*`` variables."""
    module, function = entry.split(":")
    code = (f"import sys; sys.path.insert(0, sys.argv.pop(1)); from {module} import {function}; "
            f"sys.exit({function}())")
    return (f"#!/bin/sh\n# {comment}\n"
            f"exec {shlex.quote(tools.python)} -I -c {shlex.quote(code)} {shlex.quote(tools.package_root)} \"$@\"\n")


def _azure_cli_shim(acrlocal: Path, az: str) -> str:
    """``az`` in a VM when Microsoft's Azure CLI is installed: on first use (and whenever ``ACRLOCAL_ENDPOINT``
    changed) ``acrlocal az-setup --apply`` registers this server as az's cloud in the VM's config directory."""
    return f"""#!/bin/sh
# az in an acrlocal VM: Microsoft's Azure CLI, its cloud set to this acrlocal on first use
marker="${{AZURE_CONFIG_DIR:-$HOME/.azure}}/.acrlocal-endpoint"
if [ "$(cat "$marker" 2>/dev/null)" != "$ACRLOCAL_ENDPOINT" ]; then
  {shlex.quote(str(acrlocal))} az-setup --apply --az {shlex.quote(az)} --output none || exit $?
  printf '%s' "$ACRLOCAL_ENDPOINT" > "$marker"
fi
exec {shlex.quote(az)} "$@"
"""


@dataclass(frozen=True)
class Sandbox:
    """The directory of one VM. ``ca_path`` is the acrlocal CA the VM's clients trust."""

    root: Path
    ca_path: Path
    vm_id: str = ""

    @classmethod
    def of(cls, vms_dir: Path, vm: VirtualMachine, ca_path: Path) -> Sandbox:
        return cls(vms_dir / vm.vm_id, ca_path, vm.vm_id)

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def env_file(self) -> Path:
        return self.root / "env"

    @property
    def appservice_env_file(self) -> Path:
        return self.root / "appservice.env"

    @property
    def bin_dir(self) -> Path:
        return self.root / "bin"

    @property
    def hosts(self) -> Path:
        return self.root / "hosts"

    @property
    def bashrc(self) -> Path:
        return self.root / "bashrc"

    @property
    def run_command_dir(self) -> Path:
        return self.root / "run-command"

    def etc(self, name: str) -> Path:
        """The VM's ``/etc/<name>`` (``containers`` or ``docker``)."""
        return self.root / "etc" / name

    @property
    def runroot(self) -> Path:
        return Path(f"/tmp/acrlocal-vm-{self.vm_id.replace('-', '')[:12]}")

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    def mounts(self) -> list[tuple[str, str]]:
        """``(source, target)`` bind mounts of the VM's private mount namespace, for targets that exist here."""
        pairs = [(str(self.hosts), str(HOST_HOSTS))]
        if HOST_RESOLV_CONF.exists():
            pairs.append((str(self.resolv_conf), str(HOST_RESOLV_CONF)))
        for name in CERT_DIR_PARENTS:
            if (HOST_ETC / name).is_dir() and self.etc(name).is_dir():
                pairs.append((str(self.etc(name)), str(HOST_ETC / name)))
        return pairs

    def environment(self, vm: VirtualMachine, network: VMNetwork | None = None,
                    tools: VMTools | None = None) -> dict[str, str]:
        """The VM's environment (what ``env`` holds)."""
        home = str(self.home)
        env = {
            "HOME": home,
            "PATH": f"{self.bin_dir}:{STANDARD_PATH}",
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            "AZURE_POD_IDENTITY_AUTHORITY_HOST": vm.imds_url,
            "REQUESTS_CA_BUNDLE": str(self.ca_path),
            "ACRLOCAL_CA_BUNDLE": str(self.ca_path),
            "AZURE_CONFIG_DIR": f"{home}/.azure",
            "AZURE_CORE_COLLECT_TELEMETRY": "false",
            "DOCKER_CONFIG": f"{home}/.docker",
            "REGISTRY_AUTH_FILE": f"{home}/.config/containers/auth.json",
            "CONTAINERS_STORAGE_CONF": str(self.root / "containers" / "storage.conf"),
            "CONTAINERS_CONF": str(self.root / "containers" / "containers.conf"),
            "XDG_RUNTIME_DIR": str(self.runroot),
            # podman, skopeo and buildah keep their caches and state under HOME and XDG_RUNTIME_DIR (as for a
            # user already in its user namespace), not in the host's /var/lib/containers and /run/containers.
            "_CONTAINERS_USERNS_CONFIGURED": "done",
            "_CONTAINERS_ROOTLESS_UID": str(os.getuid()),
            "NO_PROXY": "127.0.0.1,localhost,.localhost",
            "no_proxy": "127.0.0.1,localhost,.localhost",
            "ACRLOCAL_VM_NAME": vm.name,
            "ACRLOCAL_VM_ID": vm.vm_id,
            "ACRLOCAL_VM_RESOURCE_ID": vm.resource_id,
        }
        if network is not None:
            env["ACRLOCAL_ENDPOINT"] = network.endpoint
        return env

    def appservice_environment(self, vm: VirtualMachine) -> dict[str, str]:
        return {"IDENTITY_ENDPOINT": vm.identity_endpoint, "IDENTITY_HEADER": vm.identity_secret}

    def shell_environment(self, vm: VirtualMachine, network: VMNetwork | None = None,
                          tools: VMTools | None = None) -> dict[str, str]:
        """What a shell or a run-command script in the VM starts with: ``env`` and ``appservice.env``."""
        return {**self.environment(vm, network, tools), **self.appservice_environment(vm)}

    def write(self, vm: VirtualMachine, network: VMNetwork | None = None, tools: VMTools | None = None) -> None:
        """Create the directories (kept if they exist) and rewrite the env files, ``vm.json``, the tools, the
        container configuration and, given the network, the VM's hosts file and certificate directories."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self.home.mkdir(exist_ok=True)
        auth = self.home / ".config" / "containers" / "auth.json"
        if not auth.exists():  # podman and skopeo refuse a REGISTRY_AUTH_FILE that does not exist
            auth.parent.mkdir(parents=True, exist_ok=True)
            _write_private(auth, "{}\n")
        _write_private(self.env_file, _env_lines(self.environment(vm, network, tools)))
        _write_private(self.appservice_env_file, _env_lines(self.appservice_environment(vm)))
        _write_private(self.root / "vm.json", json.dumps({
            "name": vm.name, "resourceId": vm.resource_id, "vmId": vm.vm_id, "imdsEndpoint": vm.imds_url,
            "identityEndpoint": vm.identity_endpoint, "home": str(self.home)}, indent=2) + "\n")
        admin = str(vm.profile.get("adminUsername") or "azureuser")
        _write_private(self.bashrc, "# The interactive shell of an acrlocal VM.\n"
                       f"PS1={shlex.quote(admin + '@' + vm.name + ':' + chr(92) + 'w' + chr(92) + '$ ')}\n"
                       '[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n')
        if tools is not None:
            self._write_tools(tools)
        self._write_containers_conf()
        if network is not None:
            self.write_network(network)

    def ensure_runroot(self) -> None:
        """Create the VM's short run-time directory (before anything runs in the VM); :class:`ConfigError` if the
        path is taken by something that is not this user's directory."""
        runroot = self.runroot
        try:
            runroot.mkdir(mode=0o700)
        except FileExistsError:
            info = runroot.lstat()
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                raise ConfigError(f"{runroot} exists but is not a directory of this user; remove it so that the "
                                  "VM's container run-time state can live there") from None

    def _write_tools(self, tools: VMTools) -> None:
        self.bin_dir.mkdir(exist_ok=True)
        shims = {"acrlocal": ("acrlocal.cli.main:main", "acrlocal's CLI, shaped like az"),
                 "docker-credential-acrlocal": ("acrlocal.cli.credhelper:main",
                                                "Docker credential helper: registry tokens from this VM's identity")}
        if not tools.real_az:
            shims["az"] = ("acrlocal.cli.main:main", "az in an acrlocal VM: acrlocal's az-shaped CLI")
        for name, (entry, comment) in shims.items():
            _write_executable(self.bin_dir / name, _python_shim(tools, entry, comment))
        if tools.real_az:
            _write_executable(self.bin_dir / "az", _azure_cli_shim(self.bin_dir / "acrlocal", tools.real_az))
        docker = self.bin_dir / "docker"
        if tools.podman_as_docker:
            _write_executable(docker, "#!/bin/sh\n# docker in an acrlocal VM: this host's docker has no daemon, so "
                              f"podman answers (as podman-docker does)\nexec {shlex.quote(tools.podman_as_docker)} "
                              '"$@"\n')
        elif docker.exists():
            docker.unlink()

    def _write_containers_conf(self) -> None:
        conf = self.root / "containers"
        conf.mkdir(exist_ok=True)
        graphroot = self.home / ".local" / "share" / "containers" / "storage"
        runroot = self.runroot
        _write_private(conf / "storage.conf", "[storage]\ndriver = \"vfs\"\n"
                       f"runroot = {json.dumps(str(runroot / 'storage'))}\n"
                       f"graphroot = {json.dumps(str(graphroot))}\n")
        _write_private(conf / "containers.conf", "[engine]\n"
                       f"tmp_dir = {json.dumps(str(runroot / 'libpod'))}\n"
                       "events_logger = \"file\"\n"
                       f"events_logfile_path = {json.dumps(str(runroot / 'events.log'))}\n"
                       "cgroup_manager = \"cgroupfs\"\n")

    def write_network(self, network: VMNetwork) -> None:
        """The VM's ``/etc/hosts`` and certificate directories for ``network``, changed in place."""
        try:
            base = HOST_HOSTS.read_text()
        except OSError:
            base = f"{LOOPBACK} localhost\n"
        _write_in_place(self.hosts, hosts_file(base, network))
        _write_in_place(self.resolv_conf, VM_RESOLV_CONF)
        ca = self.ca_path.read_bytes() if self.ca_path.exists() else b""
        for name in CERT_DIR_PARENTS:
            host_dir = HOST_ETC / name
            if not host_dir.is_dir():
                continue
            vm_dir = self.etc(name)
            vm_dir.mkdir(parents=True, exist_ok=True)
            _copy_config(host_dir, vm_dir)
            certs = vm_dir / "certs.d"
            certs.mkdir(exist_ok=True)
            wanted = set(network.login_servers)
            for entry in certs.iterdir():
                if entry.name not in wanted:
                    shutil.rmtree(entry, ignore_errors=True)
            for server in wanted:
                (certs / server).mkdir(exist_ok=True)
                target = certs / server / "ca.crt"
                if not target.exists() or target.read_bytes() != ca:
                    target.write_bytes(ca)
        home_certs = self.home / ".config" / "containers" / "certs.d"
        home_certs.mkdir(parents=True, exist_ok=True)
        for server in network.login_servers:
            (home_certs / server).mkdir(exist_ok=True)
            (home_certs / server / "ca.crt").write_bytes(ca)

    def clear_runroot(self) -> None:
        """Remove the VM's run-time directory (made again when something next runs in the VM)."""
        if self.vm_id:
            shutil.rmtree(self.runroot, ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        self.clear_runroot()


def _copy_config(source: Path, target: Path) -> None:
    """Copy the host's configuration files (not ``certs.d``) into the VM's copy of the directory, in place."""
    for entry in source.iterdir():
        if entry.name == "certs.d":
            continue
        dest = target / entry.name
        try:
            if entry.is_dir():
                shutil.copytree(entry, dest, dirs_exist_ok=True, symlinks=True)
            elif entry.is_file():
                shutil.copyfile(entry, dest)
        except OSError:
            continue  # an unreadable host file stays out of the VM
