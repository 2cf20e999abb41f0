"""A VM's directory on the host, what is put there when the VM is made, and the plan its boot follows.

``<data dir>/vms/<vmId>/`` (0700, the server's user)::

    disk/        the VM's own root file system: /home, /root, /var, /tmp, /srv, /opt..., and the empty directories
                 the host's programs are mounted on (see :mod:`acrlocal.compute.vminit`)
    etc/upper    the VM's own /etc files, over the host's /etc (an overlay): passwd, group, shadow, sudoers,
                 hostname, hosts, resolv.conf, environment, the CA, the SSH host key, Docker Engine's identity
                 key...
    etc/work     the overlay's work directory
    empty/       what hides the host's /etc files that only root may read
    boot.log     the boot program's standard error

Everything under ``disk/`` and ``etc/upper`` belongs to the VM once it has run: its root may put links there. The
server writes into them only when the VM is made (nothing of the VM runs yet) and, later, only through
:func:`write_file`, which never follows a link.

The VM's accounts: the host's system accounts and groups (ids below 1000, and ``nobody``), then the admin user
(uid and gid 1000, home ``/home/<admin>``, in ``sudo``, ``adm``, ``docker`` and the groups Azure's images give it,
``NOPASSWD`` in ``/etc/sudoers.d/waagent`` as Azure's agent writes it), with no password (``*``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from acrlocal.compute.tools import TOOLS, VM_CA_BUNDLE, VM_PATH, VMTools
from acrlocal.errors import ConfigError
from acrlocal.publiccloud import DNS_STUB, FRONT_DOOR, IMDS_ADDRESS

HOST_ETC = Path("/etc")
ADMIN_UID = 1000
ADMIN_GROUPS = ("adm", "dialout", "cdrom", "floppy", "sudo", "audio", "dip", "video", "plugdev", "netdev", "docker")
#: The VM's user namespace maps these ids to the same host ids (see vminit).
ID_MAP = "0 0 65536"
TOP_LEVEL = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")
DOCKER_SOCKET = "/run/docker.sock"
RUN_COMMAND_DIR = "/var/lib/waagent/run-command/download/0"
#: Where dockerd 20.10 keeps its identity key, relative to ``/etc``
DOCKER_KEY = "docker/key.json"


@dataclass(frozen=True)
class Account:
    """A user of the VM as a process runs: ids, supplementary groups, home and shell."""

    name: str
    uid: int
    gid: int
    home: str
    groups: tuple[int, ...] = ()
    shell: str = "/bin/bash"

    def environment(self, term: str | None = None) -> dict[str, str]:
        """What a process of this user starts with (a login shell adds the profile's)."""
        env = {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": self.shell,
               "PATH": VM_PATH, "LANG": "C.UTF-8", "REQUESTS_CA_BUNDLE": VM_CA_BUNDLE}
        if term:
            env["TERM"] = term
        return env


ROOT = Account("root", 0, 0, "/root")


@dataclass(frozen=True)
class VMDirectory:
    root: Path

    @property
    def disk(self) -> Path:
        return self.root / "disk"

    @property
    def etc_upper(self) -> Path:
        return self.root / "etc" / "upper"

    @property
    def etc_work(self) -> Path:
        return self.root / "etc" / "work"

    @property
    def empty(self) -> Path:
        return self.root / "empty"

    @property
    def boot_log(self) -> Path:
        return self.root / "boot.log"

    def remove(self) -> None:
        """Delete the VM's directory (its disk with it). The overlay's work directory holds a root-only
        directory; everything is removed as this user can."""
        if self.root.exists():
            for top, dirs, _files in os.walk(self.root):
                for name in dirs:
                    path = os.path.join(top, name)
                    if not os.path.islink(path):
                        with contextlib.suppress(OSError):
                            os.chmod(path, 0o700)
            shutil.rmtree(self.root, ignore_errors=True)


# -- accounts ------------------------------------------------------------------------------------------------------

def _entries(path: Path) -> list[list[str]]:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [line.split(":") for line in lines if line and not line.startswith("#") and line.count(":") >= 2]


def _system(entries: list[list[str]], id_field: int) -> list[list[str]]:
    keep = []
    for fields in entries:
        try:
            number = int(fields[id_field])
        except (ValueError, IndexError):
            continue
        if number < 1000 or number == 65534:
            keep.append(fields)
    return keep


@dataclass(frozen=True)
class Accounts:
    """The VM's ``passwd``, ``group``, ``shadow`` and ``gshadow``, and the admin user's :class:`Account`."""

    passwd: str
    group: str
    shadow: str
    gshadow: str
    admin: Account
    tty_gid: int
    docker_gid: int


def make_accounts(admin_name: str, host_etc: Path = HOST_ETC) -> Accounts:
    """The host's system accounts and groups, plus the admin user; :class:`ConfigError` if ``admin_name`` is one
    of the system accounts."""
    users = _system(_entries(host_etc / "passwd"), 2)
    groups = _system(_entries(host_etc / "group"), 2)
    if not any(f[0] == "root" for f in users):
        users.insert(0, ["root", "x", "0", "0", "root", "/root", "/bin/bash"])
    if admin_name in {f[0] for f in users} | {f[0] for f in groups}:
        raise ConfigError(f"the admin user name {admin_name!r} is a system account of the VM's image; choose "
                          "another --admin-username")
    gids = {int(f[2]) for f in groups}
    if not any(f[0] == "docker" for f in groups):
        free = next(g for g in range(999, 100, -1) if g not in gids)
        groups.append(["docker", "x", str(free), ""])
    members = set(ADMIN_GROUPS)
    admin_groups = []
    for fields in groups:
        while len(fields) < 4:
            fields.append("")
        if fields[0] in members:
            fields[3] = ",".join([m for m in fields[3].split(",") if m] + [admin_name])
            admin_groups.append(int(fields[2]))
    users.append([admin_name, "x", str(ADMIN_UID), str(ADMIN_UID), admin_name, f"/home/{admin_name}", "/bin/bash"])
    groups.append([admin_name, "x", str(ADMIN_UID), ""])
    by_name = {f[0]: int(f[2]) for f in groups}

    def text(rows: Iterable[list[str]]) -> str:
        return "".join(":".join(r) + "\n" for r in rows)

    shadow = text([u[0], "*", "19000", "0", "99999", "7", "", "", ""] for u in users)
    gshadow = text([g[0], "!", "", g[3]] for g in groups)
    admin = Account(admin_name, ADMIN_UID, ADMIN_UID, f"/home/{admin_name}", tuple(sorted(admin_groups)))
    return Accounts(text(users), text(groups), shadow, gshadow, admin, by_name.get("tty", 5), by_name["docker"])


# -- files ---------------------------------------------------------------------------------------------------------

def _put(path: Path, text: str | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0) -> None:
    """Write a file of a VM that is not running (made fresh: nothing of the VM can have put a link there)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    data = text.encode() if isinstance(text, str) else text
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def write_file(root: Path, relative: str, data: bytes, *, mode: int, uid: int, gid: int,
               dir_mode: int = 0o700) -> None:
    """Write ``root/relative`` without following any link on the way (the VM may have put links anywhere under
    its disk); missing directories are made with ``dir_mode`` and the same owner. :class:`ConfigError` if a part
    of the path is a link or not a directory."""
    parts = [p for p in relative.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ConfigError(f"{relative!r} is not a plain relative path")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
    fd = os.open(root, flags)
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                os.mkdir(part, dir_mode, dir_fd=fd)
                if os.geteuid() == 0:
                    os.chown(part, uid, gid, dir_fd=fd, follow_symlinks=False)
                next_fd = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                raise ConfigError(f"{relative}: {part} is a link or not a directory ({exc.strerror})") from None
            os.close(fd)
            fd = next_fd
        name = parts[-1]
        tmp = f".{name}.acrlocal-tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=fd)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=fd)
        try:
            os.write(out, data)
            os.fchmod(out, mode)
            if os.geteuid() == 0:
                os.fchown(out, uid, gid)
        finally:
            os.close(out)
        os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    finally:
        os.close(fd)


def _sudoers() -> str:
    return ("# The sudoers file of an acrlocal VM (its own, over the host's)\n"
            "Defaults\tenv_reset\n"
            "Defaults\tmail_badpass\n"
            f"Defaults\tsecure_path=\"{VM_PATH}\"\n"
            "Defaults\tenv_keep += \"REQUESTS_CA_BUNDLE\"\n"
            "Defaults\tuse_pty\n"
            "root\tALL=(ALL:ALL) ALL\n"
            "%sudo\tALL=(ALL:ALL) ALL\n"
            "@includedir /etc/sudoers.d\n")


def _profile() -> str:
    return ("# acrlocal VM: its tools, and the system trust store for Python's requests (certifi otherwise)\n"
            f"case \":$PATH:\" in *:{TOOLS}:*) ;; *) PATH=\"{TOOLS}:$PATH\" ;; esac\n"
            f"export PATH REQUESTS_CA_BUNDLE={VM_CA_BUNDLE}\n")


def _hosts(hostname: str) -> str:
    return (f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n::1 localhost ip6-localhost ip6-loopback\n"
            "ff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n")


def _resolv_conf() -> str:
    return ("# acrlocal VM: the DNS stub answers Azure's names (management.azure.com, login.microsoftonline.com,\n"
            "# graph.microsoft.com, <registry>.azurecr.io) and nothing else: no query leaves this machine.\n"
            f"nameserver {DNS_STUB}\noptions edns0 trust-ad\nsearch .\n")


def _ssh_host_key() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public + b" root@acrlocal-vm\n"


def docker_identity_key() -> tuple[bytes, str]:
    """A new identity key for a VM's Docker Engine and its key id: the JWK of an EC P-256 key as dockerd 20.10
    writes ``/etc/docker/key.json`` with Docker's libtrust (``crv``, ``d``, ``kid``, ``kty``, ``x``, ``y``; the
    coordinates and ``d`` 32 bytes each, base64url without padding). dockerd checks that ``kid`` is libtrust's
    fingerprint of the key (the SHA-256 of its DER SubjectPublicKeyInfo, cut to 30 bytes, in base32 groups of four
    joined by ``:``), and reports it as the engine's ``ID``."""
    key = ec.generate_private_key(ec.SECP256R1())
    numbers = key.private_numbers()

    def b64(value: int) -> str:
        return base64.urlsafe_b64encode(value.to_bytes(32, "big")).rstrip(b"=").decode()

    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).rstrip(b"=").decode()
    kid = ":".join(encoded[i:i + 4] for i in range(0, len(encoded), 4))
    jwk = {"crv": "P-256", "d": b64(numbers.private_value), "kid": kid, "kty": "EC",
           "x": b64(numbers.public_numbers.x), "y": b64(numbers.public_numbers.y)}
    return json.dumps(jwk, separators=(",", ":")).encode(), kid


def give_docker_key(directory: VMDirectory) -> bool:
    """Put a new identity key of the VM's own in its ``/etc/docker/key.json`` (the overlay's upper layer) unless
    the VM has one there, or its root removed or replaced ``/etc/docker`` or the key (dockerd then makes one
    itself). Runs while nothing of the VM runs, before every boot: a VM never reads the host's key, which the
    host's dockerd 20.10 leaves at the same path, root-only, and which the VM sees empty. Returns whether it
    wrote one."""
    upper = directory.etc_upper
    folder, name = DOCKER_KEY.split("/")
    try:
        info = os.lstat(upper / folder)
        if not stat.S_ISDIR(info.st_mode):
            return False
    except FileNotFoundError:
        pass
    if os.path.lexists(upper / folder / name):
        return False
    key, _ = docker_identity_key()
    write_file(upper, DOCKER_KEY, key, mode=0o600, uid=0, gid=0, dir_mode=0o755)
    return True


def authorized_keys(keys: Iterable[str]) -> bytes:
    """``authorized_keys`` from ``osProfile.linuxConfiguration.ssh.publicKeys[].keyData`` values."""
    lines = []
    for key in keys:
        line = " ".join(str(key).split())
        if line:
            lines.append(line)
    return "".join(f"{line}\n" for line in lines).encode()


def provision(directory: VMDirectory, *, hostname: str, accounts: Accounts, ssh_keys: Iterable[str], ca_pem: bytes,
              ca_hash: str | None, vm_id: str) -> None:
    """Make a new VM's directory: its disk and its own ``/etc`` files. Runs before anything of the VM does."""
    root = directory.root
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    disk, upper = directory.disk, directory.etc_upper
    for path, mode in ((disk, 0o755), (upper, 0o755), (directory.etc_work, 0o700), (directory.empty, 0o755)):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    (directory.empty / "dir").mkdir(exist_ok=True)
    os.chmod(directory.empty / "dir", 0o555)
    _put(directory.empty / "file", b"", 0o444)
    for name, mode in (("usr", 0o755), ("etc", 0o755), ("opt", 0o755), ("home", 0o755), ("var", 0o755),
                       ("tmp", 0o1777), ("run", 0o755), ("dev", 0o755), ("proc", 0o555), ("sys", 0o555),
                       ("srv", 0o755), ("mnt", 0o755), ("media", 0o755), ("boot", 0o755)):
        (disk / name).mkdir(exist_ok=True)
        os.chmod(disk / name, mode)
    for name in TOP_LEVEL:
        host = Path("/") / name
        if host.is_symlink() and not (disk / name).is_symlink():
            os.symlink(os.readlink(host), disk / name)
        elif host.is_dir() and not host.is_symlink():
            (disk / name).mkdir(exist_ok=True)
    var = disk / "var"
    for name, mode in (("lib", 0o755), ("log", 0o755), ("cache", 0o755), ("tmp", 0o1777), ("spool", 0o755),
                       ("mail", 0o2775), ("opt", 0o755), ("local", 0o755), ("backups", 0o755)):
        (var / name).mkdir(exist_ok=True)
        os.chmod(var / name, mode)
    for name, target in (("run", "/run"), ("lock", "/run/lock")):
        if not (var / name).is_symlink():
            os.symlink(target, var / name)
    (disk / RUN_COMMAND_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
    os.chmod(var / "lib" / "waagent", 0o700)
    admin = accounts.admin
    _home(disk / "root", ROOT, 0o700)
    _home(disk / admin.home.lstrip("/"), admin, 0o750)
    keys = authorized_keys(ssh_keys)
    if keys:
        write_file(disk, f"{admin.home.lstrip('/')}/.ssh/authorized_keys", keys, mode=0o600, uid=admin.uid,
                   gid=admin.gid)
    shadow_gid = next((int(f[2]) for f in (line.split(":") for line in accounts.group.splitlines())
                       if f[0] == "shadow"), 0)
    _put(upper / "passwd", accounts.passwd)
    _put(upper / "group", accounts.group)
    _put(upper / "shadow", accounts.shadow, 0o640, 0, shadow_gid)
    _put(upper / "gshadow", accounts.gshadow, 0o640, 0, shadow_gid)
    _put(upper / "sudoers", _sudoers(), 0o440)
    _put(upper / "sudoers.d" / "waagent", f"{admin.name} ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    _put(upper / "sudoers.d" / "README", "# Files here are read by sudo (see /etc/sudoers).\n", 0o440)
    _put(upper / "hostname", hostname + "\n")
    _put(upper / "hosts", _hosts(hostname))
    _put(upper / "resolv.conf", _resolv_conf())
    _put(upper / "environment", f'PATH="{VM_PATH}"\nREQUESTS_CA_BUNDLE="{VM_CA_BUNDLE}"\n')
    _put(upper / "profile.d" / "acrlocal-vm.sh", _profile())
    _put(upper / "machine-id", vm_id.replace("-", "") + "\n", 0o444)
    _put(upper / "ssl" / "certs" / "acrlocal-ca.pem", ca_pem)
    if ca_hash:
        link = upper / "ssl" / "certs" / f"{ca_hash}.0"
        if not link.is_symlink():
            os.symlink("acrlocal-ca.pem", link)
    private, public = _ssh_host_key()
    _put(upper / "ssh" / "ssh_host_ed25519_key", private, 0o600)
    _put(upper / "ssh" / "ssh_host_ed25519_key.pub", public, 0o644)
    _put(upper / "ssh" / "sshd_config.d" / "acrlocal.conf",
         "# acrlocal VM: its own host key (the host's are not visible here)\n"
         "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n")


def _home(path: Path, account: Account, mode: int) -> None:
    if path.exists():
        return
    skel = HOST_ETC / "skel"
    if skel.is_dir():
        shutil.copytree(skel, path, symlinks=True)
    else:
        path.mkdir(parents=True)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        for top, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(os.path.join(top, name), account.uid, account.gid, follow_symlinks=False)
        os.chown(path, account.uid, account.gid)


# -- the boot plan -------------------------------------------------------------------------------------------------

def boot_plan(directory: VMDirectory, *, hostname: str, tools: VMTools, shared: Path, cgroup: str,
              tty_gid: int, docker_gid: int) -> dict[str, Any]:
    """What :mod:`acrlocal.compute.vminit` does for this VM (JSON-ready)."""
    binds: list[tuple[str, str]] = [("/usr", "/usr")]
    for name in TOP_LEVEL:
        host = Path("/") / name
        if host.is_dir() and not host.is_symlink():
            binds.append((str(host), f"/{name}"))
    binds += tools.binds(shared)
    doors: list[dict[str, Any]] = [
        {"kind": "tcp", "address": IMDS_ADDRESS, "port": 80, "name": "imds"},
        {"kind": "tcp", "address": FRONT_DOOR, "port": 443, "name": "front"},
        {"kind": "udp", "address": DNS_STUB, "port": 53, "name": "dns"},
    ]
    if tools.docker == "engine":
        doors.append({"kind": "unix", "path": DOCKER_SOCKET, "gid": docker_gid, "mode": 0o660, "name": "docker"})
    return {
        "disk": str(directory.disk), "etc_upper": str(directory.etc_upper), "etc_work": str(directory.etc_work),
        "host_etc": str(HOST_ETC), "empty_dir": str(directory.empty / "dir"),
        "empty_file": str(directory.empty / "file"), "tty_gid": tty_gid,
        "ro_binds": binds, "etc_binds": [(str(shared / "ca-certificates.crt"), VM_CA_BUNDLE)],
        "hostname": hostname, "uid_map": ID_MAP, "gid_map": ID_MAP, "cgroup": cgroup, "doors": doors,
        "addresses": [IMDS_ADDRESS, FRONT_DOOR],
    }


def read_accounts(directory: VMDirectory) -> tuple[Account, int, int]:
    """The admin :class:`Account`, the tty gid and the docker gid of a VM made before, from ``vm.json``."""
    info = json.loads((directory.root / "vm.json").read_text())
    admin = info["admin"]
    return (Account(admin["name"], admin["uid"], admin["gid"], admin["home"], tuple(admin["groups"])),
            int(info["ttyGid"]), int(info["dockerGid"]))


def write_info(directory: VMDirectory, *, name: str, resource_id: str, vm_id: str, accounts: Accounts) -> None:
    admin = accounts.admin
    _put(directory.root / "vm.json", json.dumps({
        "name": name, "resourceId": resource_id, "vmId": vm_id,
        "admin": {"name": admin.name, "uid": admin.uid, "gid": admin.gid, "home": admin.home,
                  "groups": list(admin.groups)},
        "ttyGid": accounts.tty_gid, "dockerGid": accounts.docker_gid}, indent=2) + "\n", 0o600, os.geteuid(),
        os.getegid())


def is_inside(path: Path, parents: Iterable[str]) -> bool:
    resolved = path.resolve()
    for parent in parents:
        try:
            resolved.relative_to(Path(parent).resolve())
            return True
        except ValueError:
            continue
    return False


def check_data_dir_hidden(data_dir: Path, tools: VMTools, shared: Path) -> None:
    """:class:`ConfigError` if the data directory would be visible in a VM (under a path VMs see read-only)."""
    seen = ["/usr", str(HOST_ETC)] + [host for host, _ in tools.binds(shared) if not host.startswith(str(shared))]
    for name in TOP_LEVEL:
        host = Path("/") / name
        if host.is_dir() and not host.is_symlink():
            seen.append(str(host))
    if is_inside(data_dir, seen):
        raise ConfigError(f"the data directory {data_dir} is under a path every VM sees ({', '.join(seen)}); VMs "
                          "would read it. Choose another --data-dir to run VMs.")
