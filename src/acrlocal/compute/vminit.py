"""The program that boots a VM and then runs as its PID 1: standard library only, run by the server as
``python -I -S vminit.py <fd>`` with the boot plan (JSON) on standard input and the agent socket on ``<fd>``.

Two processes come out of it, both of the server's Python (everything is imported before the VM's root replaces
the host's, so nothing is looked up on the VM's file system afterwards):

**The monitor** (the process the server started, host root, in the host's user, network and PID namespaces):

1. makes a mount namespace of its own (owned by the host's user namespace, so nothing in the VM can mount or
   unmount anything in it) and builds the VM's root there: the VM's disk (``<vm dir>/disk``, read-write), the host's
   programs bound read-only (``/usr``, the Python that runs acrlocal and az, the acrlocal tools), ``/etc`` as an
   overlay of the host's ``/etc`` with the VM's own files on top, and every host ``/etc`` file or directory that
   only root may read hidden under an empty one; ``/run``, ``/dev`` (a few device nodes and a private ``devpts``)
   and ``/dev/shm`` are the VM's own;
2. moves itself into a cgroup of its own per hierarchy (``acrlocal-vm-<id>``), so that the VM's cgroup namespace
   shows nothing above it;
3. forks a child that makes the VM's user (uid and gid ``0-65535`` mapped to the same host ids: host programs keep
   their owners, so ``sudo`` works, but the VM's root has capabilities only inside its own namespaces), network,
   UTS, IPC, cgroup and PID namespaces, and forks the VM's PID 1;
4. mounts ``/proc`` (of the VM's PID namespace) and ``/sys`` (of its network namespace) from a helper inside them,
   pivots the mount namespace to the VM's root and detaches the host's;
5. then waits for PID 1 and, when it ends, removes the VM's cgroups and exits with its status.

**PID 1** (root of the VM's user namespace): sets the host name, brings ``lo`` up with ``169.254.169.254/32`` and
the front door's address on it, checks that ``lo`` is the only interface and that no route leads anywhere but
loopback, makes the listening sockets the server answers on inside the VM (IMDS on ``169.254.169.254:80``, Azure's
public names on ``FRONT_DOOR:443``, DNS on ``127.0.0.53:53``, and ``/run/docker.sock`` when Docker Engine is
offered) and hands them to the server over the agent socket. Then it is the VM's init: it reaps every orphan, and
runs what the server asks (:data:`SPAWN`) as the user asked, with the file descriptors the server passed, optionally
on a new pseudo-terminal of the VM, and reports each process's exit. When the server closes the agent socket (it
stopped, or was killed), or asks to power off, PID 1 sends SIGTERM to every process of the VM, waits a few seconds,
and exits, which ends everything left in the VM.

Messages are JSON objects, one per SOCK_SEQPACKET datagram, with file descriptors attached (SCM_RIGHTS). Errors
during boot are reported as ``{"op": "error", "message": ...}`` before the process exits non-zero; they name what
is missing.
"""

import array
import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import Sequence
from typing import Any

# -- constants shared with acrlocal.compute.machine --------------------------------------------------------------

AGENT_FD = 3
MAX_MESSAGE = 1 << 20
MAX_FDS = 16
IMDS_ADDRESS = "169.254.169.254"
SPAWN = "spawn"

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155  # x86_64 and aarch64 differ; see _pivot_root
PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
IFF_UP, IFF_RUNNING = 0x1, 0x40
RTM_NEWADDR, NLM_F_REQUEST, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL = 20, 1, 4, 0x400, 0x200
IFA_ADDRESS, IFA_LOCAL, NLMSG_ERROR = 1, 2, 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_libc.ptsname.restype = ctypes.c_char_p
_libc.ptsname.argtypes = [ctypes.c_int]


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise RuntimeError(f"{what}: {os.strerror(err)}")


def _enc(value: str | bytes | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_enc(source), _enc(target), _enc(fstype), flags, _enc(data)),
           f"mount {fstype or 'bind'} {source or ''} on {target}")


def bind(source: str, target: str, *, readonly: bool, recursive: bool = False) -> None:
    mount(source, target, None, MS_BIND | (MS_REC if recursive else 0))
    if readonly:
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)


def _pivot_root(new_root: str, put_old: str) -> None:
    number = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}.get(os.uname().machine,
                                                                                           SYS_PIVOT_ROOT)
    _check(_libc.syscall(number, _enc(new_root), _enc(put_old)), "pivot_root")


# -- messages ------------------------------------------------------------------------------------------------------

def send(sock: socket.socket, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
    data = json.dumps(message).encode()
    if fds:
        sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        sock.send(data)


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and its file descriptors; ``(None, [])`` at end of stream."""
    fds = array.array("i")
    data, ancdata, _flags, _addr = sock.recvmsg(MAX_MESSAGE, socket.CMSG_SPACE(MAX_FDS * fds.itemsize))
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - (len(payload) % fds.itemsize)])
    if not data:
        for fd in fds:
            os.close(fd)
        return None, []
    return json.loads(data), list(fds)


# -- the monitor: build the VM's root, make its namespaces, start PID 1 ---------------------------------------------

def _mkdirs(path: str, mode: int = 0o755) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)


def safe_dir(root: str, relative: str, mode: int = 0o755) -> str:
    """``root/relative`` as a real directory: every part that is missing is made, and every part that is a link
    or not a directory (the VM's disk is the VM's to change) is replaced, so no mount lands outside the VM's root.
    Runs while nothing of the VM runs."""
    path = root
    for part in [p for p in relative.split("/") if p]:
        path = os.path.join(path, part)
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            os.mkdir(path, mode)
            continue
        if (info.st_mode & 0o170000) != 0o040000:
            os.unlink(path)
            os.mkdir(path, mode)
    return path


def _no_link_on_the_way(root: str, relative: str) -> bool:
    path = root
    for part in [p for p in relative.split("/") if p]:
        path = os.path.join(path, part)
        if os.path.islink(path):
            return False
    return os.path.lexists(path)


def build_root(plan: dict[str, Any]) -> None:
    """The VM's root file system under ``plan["disk"]``, in this process's (new) mount namespace."""
    root = plan["disk"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount(root, root, None, MS_BIND)
    for source, target in plan["ro_binds"]:
        if os.path.isdir(source):
            where = safe_dir(root, target)
        else:
            where = root + target
            if not _no_link_on_the_way(root, target):
                continue
        bind(source, where, readonly=True)
    etc = safe_dir(root, "/etc")
    mount("overlay", etc, "overlay", 0,
          f"lowerdir={plan['host_etc']},upperdir={plan['etc_upper']},workdir={plan['etc_work']}")
    for relative in hidden_host_etc(plan["host_etc"], plan["etc_upper"]):
        if not _no_link_on_the_way(etc, relative):
            continue
        merged = os.path.join(etc, relative)
        if os.path.isdir(merged):
            bind(plan["empty_dir"], merged, readonly=True)
        else:
            bind(plan["empty_file"], merged, readonly=True)
    for source, target in plan["etc_binds"]:
        if _no_link_on_the_way(root, target) and os.path.isfile(root + target):
            bind(source, root + target, readonly=True)
    run = safe_dir(root, "/run")
    mount("tmpfs", run, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=256m")
    for sub, mode in (("lock", 0o1777), ("user", 0o755), ("sudo", 0o711), ("sshd", 0o755)):
        _mkdirs(os.path.join(run, sub), mode)
        os.chmod(os.path.join(run, sub), mode)
    dev = safe_dir(root, "/dev")
    mount("tmpfs", dev, "tmpfs", MS_NOSUID, "mode=755,size=1m")
    for name in ("null", "zero", "full", "random", "urandom", "tty"):
        open(os.path.join(dev, name), "w").close()
        mount(f"/dev/{name}", os.path.join(dev, name), None, MS_BIND)
    for name in ("pts", "shm", "mqueue"):
        _mkdirs(os.path.join(dev, name))
    mount("devpts", dev + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
          f"newinstance,ptmxmode=0666,mode=0620,gid={plan['tty_gid']}")
    os.symlink("pts/ptmx", dev + "/ptmx")
    mount("tmpfs", dev + "/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=256m")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    safe_dir(root, "/proc")
    safe_dir(root, "/sys")
    tmp = safe_dir(root, "/tmp")
    _clear(tmp)
    os.chmod(tmp, 0o1777)


def _clear(directory: str) -> None:
    """Empty a directory of the VM's disk (``/tmp`` at boot) without following any link it holds."""
    _mkdirs(directory)
    for entry in os.scandir(directory):
        path = entry.path
        try:
            if entry.is_dir(follow_symlinks=False):
                for top, dirs, files in os.walk(path, topdown=False):
                    for name in files:
                        os.unlink(os.path.join(top, name))
                    for name in dirs:
                        full = os.path.join(top, name)
                        if os.path.islink(full):
                            os.unlink(full)
                        else:
                            os.rmdir(full)
                os.rmdir(path)
            else:
                os.unlink(path)
        except OSError:
            continue


def hidden_host_etc(host_etc: str, upper: str) -> list[str]:
    """Paths (relative to ``/etc``) of the host's files that only root may read, and of directories others may
    not enter: the VM's root must not read them, so each is covered by an empty one. A file the VM has of its own
    (a regular file or link in the overlay's upper layer) is the VM's and stays; a directory is covered whatever
    the VM put in it, since the overlay would merge the host's files into it."""
    hidden = []
    for top, dirs, files in os.walk(host_etc):
        relative_top = os.path.relpath(top, host_etc)
        keep = []
        for name in dirs:
            full = os.path.join(top, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue
            if (info.st_mode & 0o005) != 0o005:
                hidden.append(os.path.normpath(os.path.join(relative_top, name)))
            else:
                keep.append(name)
        dirs[:] = keep
        for name in files:
            full = os.path.join(top, name)
            try:
                info = os.lstat(full)
            except OSError:
                continue
            if (info.st_mode & 0o170000) == 0o120000 or info.st_mode & 0o004:
                continue
            relative = os.path.normpath(os.path.join(relative_top, name))
            own = os.path.join(upper, relative)
            try:
                mine = os.lstat(own)
                if (mine.st_mode & 0o170000) in (0o100000, 0o120000):
                    continue
            except OSError:
                pass
            hidden.append(relative)
    return hidden


def _cgroup_mounts() -> dict[str, str]:
    """``{hierarchy key: mount point}`` from mountinfo: v1 keys are the controller lists (``cpu,cpuacct``,
    ``name=systemd``), the v2 key is ``""``."""
    found: dict[str, str] = {}
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, extra = left.split(), right.split()
            if len(fields) < 5 or len(extra) < 3:
                continue
            if extra[0] == "cgroup2":
                found.setdefault("", fields[4])
            elif extra[0] == "cgroup":
                options = [o for o in extra[2].split(",") if o not in ("rw", "ro") and not o.startswith(
                    ("relatime", "nosuid", "nodev", "noexec", "clone_children", "xattr", "release_agent"))]
                found.setdefault(",".join(sorted(options)), fields[4])
    return found


def _vm_cgroups(name: str) -> list[tuple[str, str, str]]:
    """``(hierarchy key, parent, directory)`` of ``<this process's cgroup>/<name>`` in every mounted hierarchy."""
    mounts = _cgroup_mounts()
    found = []
    with open("/proc/self/cgroup") as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
    for _id, controllers, path in lines:
        key = ",".join(sorted(c for c in controllers.split(",") if c)) if controllers else ""
        base = mounts.get(key)
        if base is not None:
            parent = base + path.rstrip("/")
            found.append((key, parent, os.path.join(parent, name)))
    return found


def enter_vm_cgroups(name: str) -> list[tuple[str, str]]:
    """Make ``<this process's cgroup>/<name>`` in every hierarchy and move this process there. Returns the
    directories made (removed when the VM stops), or raises :class:`RuntimeError`."""
    made = []
    for key, parent, directory in _vm_cgroups(name):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RuntimeError(f"cannot make the VM's cgroup {directory}: {exc.strerror}") from None
        if "cpuset" in key.split(","):
            for knob in ("cpuset.cpus", "cpuset.mems"):
                try:
                    with open(os.path.join(parent, knob)) as src, open(os.path.join(directory, knob), "w") as dst:
                        dst.write(src.read())
                except OSError:
                    pass
        try:
            with open(os.path.join(directory, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            raise RuntimeError(f"cannot move the VM into its cgroup {directory}: {exc.strerror}") from None
        made.append((parent, directory))
    return made


def _remove_group(directory: str) -> bool:
    """Remove a VM's cgroup and the groups made inside it (the VM's Docker Engine makes ``docker/<id>``), deepest
    first; whether it is gone. A group that still holds a process stays (the kernel refuses it), and so do the groups
    above it."""
    if not os.path.isdir(directory):
        return True
    for root, _dirs, _files in os.walk(directory, topdown=False):
        try:
            os.rmdir(root)
        except FileNotFoundError:
            pass
        except OSError:  # a process is still in it, or in a group below it
            return False
    return not os.path.isdir(directory)


def _remove_groups(directories: list[str], wait_s: float) -> list[str]:
    """Remove ``directories`` (:func:`_remove_group`), again every tenth of a second for up to ``wait_s`` while the
    VM's last processes leave them (blocking); returns those still there."""
    deadline = time.monotonic() + wait_s
    while True:
        directories = [directory for directory in directories if not _remove_group(directory)]
        if not directories or time.monotonic() >= deadline:
            return directories
        time.sleep(0.1)


def remove_vm_cgroups(name: str, wait_s: float = 10.0) -> list[str]:
    """Remove what is left of a VM's cgroups (``<this process's cgroup>/<name>``, made by its monitor, a child of
    this process): a monitor that was killed could not. Waits up to ``wait_s`` for the VM's last processes to
    leave them (blocking: call it from a thread); returns the directories that are still there."""
    return _remove_groups([directory for _key, _parent, directory in _vm_cgroups(name)], wait_s)


def leave_vm_cgroups(made: list[tuple[str, str]]) -> None:
    """Move this process back to the groups it came from and remove the VM's (up to 5 seconds for each)."""
    for parent, directory in made:
        try:
            with open(os.path.join(parent, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
        _remove_groups([directory], 5.0)


def write_id_maps(pid: int, plan: dict[str, Any]) -> None:
    for name, text in (("setgroups", "allow"), ("uid_map", plan["uid_map"]), ("gid_map", plan["gid_map"])):
        with open(f"/proc/{pid}/{name}", "w") as f:
            f.write(text)


def monitor(plan: dict[str, Any], agent: socket.socket) -> int:
    """Everything the host's root does for a VM; returns the exit status for this process."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS) (a mount namespace needs root)")
    build_root(plan)
    cgroups = enter_vm_cgroups(plan["cgroup"]) if plan.get("cgroup") else []
    _libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()
    child = os.fork()
    if child == 0:  # the namespace maker: exits once PID 1 is forked
        try:
            os.close(to_child_w)
            os.close(from_child_r)
            _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID |
                                 CLONE_NEWCGROUP), "unshare of the user, network, UTS, IPC, cgroup and PID namespaces")
            os.write(from_child_w, b"u")
            if os.read(to_child_r, 1) != b"m":
                os._exit(1)
            os.setresgid(0, 0, 0)
            os.setresuid(0, 0, 0)
            init = os.fork()
            if init == 0:
                os.close(from_child_w)
                pid1(plan, agent, to_child_r)
                os._exit(0)
            os.write(from_child_w, f"{init}\n".encode())
            os._exit(0)
        except BaseException as exc:
            os.write(from_child_w, f"!{exc}\n".encode())
            os._exit(1)
    os.close(to_child_r)
    os.close(from_child_w)
    first = os.read(from_child_r, 512)
    if first != b"u":
        raise RuntimeError(first.decode(errors="replace").lstrip("!").strip() or "the VM's namespaces were not made")
    write_id_maps(child, plan)
    os.write(to_child_w, b"m")
    answer = os.read(from_child_r, 512).decode().strip()
    os.waitpid(child, 0)
    if not answer or answer.startswith("!"):
        raise RuntimeError(answer.lstrip("!") or "the VM's first process did not start")
    init = int(answer)
    mount_proc_and_sys(plan["disk"], init)
    os.chdir(plan["disk"])
    _mkdirs(".oldroot")
    _pivot_root(".", ".oldroot")
    _check(_libc.umount2(b"/.oldroot", MNT_DETACH), "detaching the host's root")
    os.rmdir("/.oldroot")
    os.chdir("/")
    send(agent, {"op": "booted", "init": init})
    os.write(to_child_w, b"g")  # PID 1 may go on: it is in the VM's root now
    agent.close()
    status = 0
    while True:
        try:
            pid, wait_status = os.wait()
        except ChildProcessError:
            break
        if pid == init:
            status = os.waitstatus_to_exitcode(wait_status)
    leave_vm_cgroups(cgroups)
    return status


def mount_proc_and_sys(root: str, init: int) -> None:
    """``/proc`` of the VM's PID namespace and ``/sys`` of its network namespace, mounted by a helper that joins
    them (as the host's root, in this mount namespace)."""
    pidns = os.open(f"/proc/{init}/ns/pid", os.O_RDONLY)
    netns = os.open(f"/proc/{init}/ns/net", os.O_RDONLY)
    helper = os.fork()
    if helper == 0:
        try:
            _check(_libc.setns(netns, CLONE_NEWNET), "joining the VM's network namespace")
            _check(_libc.setns(pidns, CLONE_NEWPID), "joining the VM's PID namespace")
            inner = os.fork()
            if inner == 0:
                try:
                    mount("proc", root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                    mount("sysfs", root + "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
                    os._exit(0)
                except BaseException as exc:
                    sys.stderr.write(f"{exc}\n")
                    os._exit(1)
            _, status = os.waitpid(inner, 0)
            os._exit(os.waitstatus_to_exitcode(status))
        except BaseException as exc:
            sys.stderr.write(f"{exc}\n")
            os._exit(1)
    _, status = os.waitpid(helper, 0)
    os.close(pidns)
    os.close(netns)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("/proc or /sys of the VM could not be mounted")


# -- PID 1 ---------------------------------------------------------------------------------------------------------

def _interface_up(name: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH22x", name.encode(), 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(s, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sH22x", name.encode(), flags | IFF_UP | IFF_RUNNING))


def _add_address(index: int, address: str, prefix: int) -> None:
    """``ip addr add <address>/<prefix> dev <index>`` through rtnetlink."""
    packed = socket.inet_aton(address)
    body = struct.pack("BBBBI", socket.AF_INET, prefix, 0, 0, index)
    body += struct.pack("HH", 8, IFA_LOCAL) + packed + struct.pack("HH", 8, IFA_ADDRESS) + packed
    header = struct.pack("IHHII", 16 + len(body), RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
                         1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as s:
        s.send(header + body)
        reply = s.recv(4096)
    if len(reply) >= 20 and struct.unpack("H", reply[4:6])[0] == NLMSG_ERROR:
        code = struct.unpack("i", reply[16:20])[0]
        if code not in (0, -errno.EEXIST):
            raise RuntimeError(f"adding {address}/{prefix} to lo: {os.strerror(-code)}")


def check_network() -> list[str]:
    """What the VM's network namespace holds: it must be ``lo`` only, with no route but loopback's."""
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        raise RuntimeError(f"the VM's network namespace has interfaces {interfaces}; expected only lo")
    with open("/proc/net/route") as f:
        routes = f.read().splitlines()[1:]
    with open("/proc/net/ipv6_route") as f:
        routes6 = [line for line in f.read().splitlines() if line.split()[-1] != "lo"]
    if routes or routes6:
        raise RuntimeError(f"the VM's network namespace has routes {routes + routes6}; expected none but loopback's")
    return interfaces


def _listen_tcp(address: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port))
    s.listen(1024)
    return s


def open_doors(plan: dict[str, Any]) -> list[socket.socket]:
    """The listening sockets the server answers on inside the VM, in the order of ``plan["doors"]``."""
    sockets = []
    for door in plan["doors"]:
        kind = door["kind"]
        if kind == "tcp":
            sockets.append(_listen_tcp(door["address"], door["port"]))
        elif kind == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((door["address"], door["port"]))
            sockets.append(s)
        elif kind == "unix":
            path = door["path"]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(path)
            os.chown(path, 0, door.get("gid", 0))
            os.chmod(path, door.get("mode", 0o660))
            s.listen(128)
            sockets.append(s)
        else:
            raise RuntimeError(f"unknown door kind {kind!r}")
    return sockets


class Init:
    """PID 1's agent: processes started for the server, and the reaping of everything else."""

    def __init__(self, agent: socket.socket) -> None:
        self.agent = agent
        self.children: dict[int, int] = {}  # pid -> request id
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: None)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def serve(self) -> None:
        while True:
            try:
                ready, _, _ = select.select([self.agent.fileno(), self.wake_r], [], [])
            except InterruptedError:
                continue
            if self.wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self.reap()
            if self.agent.fileno() in ready:
                try:
                    message, fds = receive(self.agent)
                except (OSError, ValueError):
                    message, fds = None, []
                if message is None:
                    return self.power_off()
                try:
                    self.handle(message, fds)
                finally:
                    for fd in fds:
                        os.close(fd)

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            request = self.children.pop(pid, None)
            if request is not None:
                self._send({"op": "exited", "id": request, "code": os.waitstatus_to_exitcode(status)})

    def _send(self, message: dict[str, Any], fds: Sequence[int] = ()) -> None:
        with contextlib.suppress(OSError):
            send(self.agent, message, fds)

    def handle(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message.get("op")
        if op == SPAWN:
            self.spawn(message, fds)
        elif op == "kill":
            target = int(message["pid"])
            if target > 1:
                with contextlib.suppress(OSError):
                    os.kill(-target if message.get("group") else target, int(message.get("signal", 9)))
        elif op == "poweroff":
            self.power_off()
            os._exit(0)
        elif op == "ping":
            self._send({"op": "pong", "id": message.get("id")})

    def spawn(self, request: dict[str, Any], fds: list[int]) -> None:
        ident = request["id"]
        master = None
        try:
            if request.get("pty"):
                master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
                _libc.grantpt(master)
                _libc.unlockpt(master)
                slave_path = _pts_name(master)
                rows, cols = request.get("winsize") or (24, 80)
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", int(rows), int(cols), 0, 0))
            else:
                slave_path = None
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            pid = os.fork()
            if pid == 0:
                try:
                    os.close(err_r)
                    _child(request, fds, slave_path)
                except BaseException as exc:
                    os.write(err_w, str(exc).encode()[:4000] or b"exec failed")
                os._exit(127)
            os.close(err_w)
            failure = b""
            while chunk := os.read(err_r, 4096):
                failure += chunk
            os.close(err_r)
            if failure:
                os.waitpid(pid, 0)
                self._send({"op": "failed", "id": ident, "error": failure.decode(errors="replace")})
                return
            self.children[pid] = ident
            self._send({"op": "started", "id": ident, "pid": pid}, [master] if master is not None else [])
        except OSError as exc:
            self._send({"op": "failed", "id": ident, "error": f"{exc.strerror or exc}"})
        finally:
            if master is not None:
                os.close(master)

    def power_off(self, grace: float = 5.0) -> None:
        """SIGTERM to every process of the VM, then wait up to ``grace`` seconds for them."""
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.kill(-1, signal.SIGKILL)


def _pts_name(master: int) -> str:
    name = _libc.ptsname(master)
    if not name:
        raise OSError(ctypes.get_errno(), "ptsname")
    return os.fsdecode(name)


def _child(request: dict[str, Any], fds: list[int], slave_path: str | None) -> None:
    """In the forked child: a session of its own, the standard streams and extra descriptors in place, the user's
    ids, then exec. Raises on failure (the agent reports it)."""
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGHUP, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)
    targets = {}
    if slave_path is not None:
        slave = os.open(slave_path, os.O_RDWR)
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        os.fchown(slave, int(request["uid"]), int(request.get("tty_gid", 5)))
        targets.update({0: slave, 1: slave, 2: slave})
    else:
        devnull = os.open("/dev/null", os.O_RDWR)
        for target, index in enumerate(request.get("stdio", [-1, -1, -1])):
            targets[target] = fds[index] if index is not None and index >= 0 else devnull
    for target, index in request.get("extra_fds", []):
        targets[int(target)] = fds[int(index)]
    # Move every source above every target first, so that no dup2 clobbers a source still to be placed.
    keep = max(targets, default=2) + 1
    moved = {target: fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, keep) for target, source in targets.items()}
    for target, source in moved.items():
        os.dup2(source, target, inheritable=True)
    os.closerange(keep, 1 << 20)
    env = dict(request.get("env") or {})
    if request.get("listen_fds"):
        env["LISTEN_FDS"] = str(request["listen_fds"])
        env["LISTEN_PID"] = str(os.getpid())
    os.umask(request.get("umask", 0o022))
    groups = [int(g) for g in request.get("groups", [])]
    os.setgroups(groups)
    os.setresgid(int(request["gid"]), int(request["gid"]), int(request["gid"]))
    os.setresuid(int(request["uid"]), int(request["uid"]), int(request["uid"]))
    try:
        os.chdir(request.get("cwd") or "/")
    except OSError:
        os.chdir("/")
    argv = request["argv"]
    os.execvpe(request.get("file") or argv[0], argv, env)


def pid1(plan: dict[str, Any], agent: socket.socket, go: int) -> None:
    """The VM's PID 1: wait until the monitor has pivoted to the VM's root, set up the network, hand the doors to
    the server, then serve."""
    try:
        if os.read(go, 1) != b"g":
            os._exit(1)
        os.close(go)
        os.chdir("/")
        hostname = plan["hostname"].encode()
        _check(_libc.sethostname(hostname, len(hostname)), "setting the host name")
        _interface_up("lo")
        for address in plan.get("addresses", [IMDS_ADDRESS]):
            _add_address(socket.if_nametoindex("lo"), address, 32)
        interfaces = check_network()
        doors = open_doors(plan)
        send(agent, {"op": "ready", "interfaces": interfaces}, [s.fileno() for s in doors])
        for s in doors:
            s.close()
    except BaseException as exc:
        with contextlib.suppress(OSError):
            send(agent, {"op": "error", "message": str(exc)})
        os._exit(1)
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    Init(agent).serve()
    os._exit(0)


NAMESPACE_ERRORS = {
    errno.EPERM: "not permitted (the server must run as root)",
    errno.ENOSPC: "the per-user limit of namespaces is reached (/proc/sys/user/max_*_namespaces)",
    errno.EINVAL: "this kernel does not support it",
    errno.EUSERS: "the user namespaces nest too deep",
}


def probe() -> str:
    """Make, in a child, the namespaces a VM needs (mount, then user, network, UTS, IPC, cgroup and PID) and check
    that the network namespace holds only ``lo`` with no route; nothing is mounted or kept. Returns ``""`` if
    VMs can run here, else what is missing, in words."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        message = ""
        try:
            for flags, what in ((CLONE_NEWNS, "a mount namespace"),
                                (CLONE_NEWUSER | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID |
                                 CLONE_NEWCGROUP, "user, network, UTS, IPC, cgroup and PID namespaces")):
                if _libc.unshare(flags) != 0:
                    err = ctypes.get_errno()
                    message = f"cannot make {what}: {NAMESPACE_ERRORS.get(err, os.strerror(err))}"
                    break
            else:
                check_network()
        except BaseException as exc:
            message = str(exc) or type(exc).__name__
        os.write(write_end, message.encode()[:4000])
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        answer = f.read().decode(errors="replace")
    os.waitpid(child, 0)
    return answer


def main() -> None:
    if sys.argv[1:] == ["--probe"]:
        missing = probe()
        sys.stdout.write(missing)
        sys.exit(1 if missing else 0)
    given = int(sys.argv[1]) if len(sys.argv) > 1 else AGENT_FD
    if given != AGENT_FD:
        os.dup2(given, AGENT_FD)
        os.close(given)
    agent = socket.socket(fileno=AGENT_FD)
    agent.set_inheritable(False)
    try:
        plan = json.loads(sys.stdin.read())
        status = monitor(plan, agent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            send(agent, {"op": "error", "message": str(exc)})
        sys.stderr.write(f"acrlocal VM: {exc}\n")
        sys.exit(1)
    sys.exit(status)


if __name__ == "__main__":
    main()
