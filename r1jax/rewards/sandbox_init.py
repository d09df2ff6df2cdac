"""Sandbox launcher, run by `r1jax.rewards.sandbox` as ``python -I -S -B sandbox_init.py CONFIG``.

Standard library only: it runs without site-packages, under whatever interpreter started the
trainer. Three processes:

1. this launcher enters new mount, IPC, UTS and network namespaces (and, when not root, a new
   user namespace mapping only its own uid/gid), and a new PID namespace for its children;
   it waits for the init and exits with its status; SIGTERM makes it kill the init first;
2. the init, PID 1 of the new PID namespace: builds the program's root (a read-only view of the
   system directories and the interpreter's prefix, a fresh ``/proc``, a few ``/dev`` nodes, the
   writable work directory at ``/work``), pivots into it, forks the program, reaps, and writes
   the program's wait status to the status descriptor. Its exit (or death: it dies with the
   launcher) kills every process left in the namespace;
3. the program, PID 2: resource limits, a fresh uid when the trainer is root, no new privileges,
   ``exec`` of ``python -I -S -B main.py`` in an empty environment.

CONFIG is JSON: ``root`` (an empty directory to build the new root on), ``work``,
``interpreter``, ``binds`` (paths shown read-only), ``uid`` (a fresh uid, or null when not
root), ``network`` (isolate the network), ``limits`` (rlimit name -> value), ``status_fd``,
``env``. Lines written to ``status_fd``: ``status N`` (the program's wait status) or
``error MESSAGE`` (set-up failed; nothing was run).
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import select
import signal
import struct
import sys

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 0x1, 0x2, 0x4, 0x8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 0x20, 0x1000, 0x4000, 0x40000
MNT_DETACH = 2
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SYS_MOUNT_SETATTR = 442  # The same number on every architecture.
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
SETUP_FAILED = 125
LIMITS = {
    "cpu": resource.RLIMIT_CPU,
    "memory": resource.RLIMIT_AS,
    "processes": resource.RLIMIT_NPROC,
    "file_size": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
}

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _check(ret: int, what: str) -> None:
    if ret != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _b(text: str | None) -> bytes | None:
    return None if text is None else os.fsencode(text)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data=None) -> None:
    ret = libc.mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags), _b(data))
    _check(ret, f"mount {target}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def enter_namespaces(config: dict) -> None:
    """Unshares everything but the PID namespace of this process (that one is its children's)."""
    flags = CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWPID
    if config["network"]:
        flags |= CLONE_NEWNET
    if config["uid"] is None:  # Not root: a user namespace grants the rights to do the rest.
        flags |= CLONE_NEWUSER
    uid, gid = os.getuid(), os.getgid()
    _check(libc.unshare(flags), "unshare")
    if flags & CLONE_NEWUSER:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")


def _bind(source: str, target: str) -> None:
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "w").close()
    _mount(source, target, None, MS_BIND | MS_REC)


def _populate(new_root: str, binds: list[str]) -> None:
    """Mirrors each of `binds` (or its symlink) under `new_root`, skipping covered paths."""
    done: list[str] = []
    for path in binds:
        covered = any(path == d or path.startswith(d + "/") for d in done)
        if covered or not os.path.lexists(path):
            continue
        target = new_root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
        else:
            _bind(path, target)
        done.append(path)


def _mount_setattr(path: str, flags: int, attr_set: int, attr_clr: int) -> bool:
    """mount_setattr(2); False if the kernel lacks it (before 5.12)."""
    attr = ctypes.create_string_buffer(struct.pack("QQQQ", attr_set, attr_clr, 0, 0))
    ret = libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), _b(path),
        ctypes.c_uint(flags), attr, ctypes.c_size_t(len(attr.raw)),
    )  # fmt: skip
    if ret != 0 and ctypes.get_errno() == 38:  # ENOSYS
        return False
    _check(ret, f"mount_setattr {path}")
    return True


def _mount_points() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [p.encode().decode("unicode_escape") for p in points]


def _remount(path: str, readonly: bool) -> None:
    """Bind-remounts `path`, keeping its nosuid/nodev/noexec flags (locked in a user namespace)."""
    kept = os.statvfs(path).f_flag & (MS_NOSUID | MS_NODEV | MS_NOEXEC)
    flags = MS_REMOUNT | MS_BIND | kept | (MS_RDONLY if readonly else MS_NOSUID | MS_NODEV)
    _mount(None, path, None, flags)


def make_read_only_except_work() -> None:
    """Every mount of the new root read-only, ``/work`` writable (no setuid, no devices)."""
    if _mount_setattr("/", AT_RECURSIVE, MOUNT_ATTR_RDONLY, 0):
        _mount_setattr("/work", 0, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, MOUNT_ATTR_RDONLY)
        return
    for point in _mount_points():
        _remount(point, readonly=point != "/work")


def _pivot_root(new_root: str) -> None:
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise OSError(38, f"pivot_root: unknown system call number on {platform.machine()}")
    os.chdir(new_root)
    _check(libc.syscall(ctypes.c_long(number), b".", b"."), "pivot_root")
    _check(libc.umount2(b".", MNT_DETACH), "umount old root")
    os.chdir("/")


def build_root(config: dict) -> None:
    """Runs in the init: the program's filesystem, then ``chdir /work``."""
    new_root = config["root"]
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # Nothing propagates back to the host.
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=755")
    _populate(new_root, config["binds"])
    _bind(config["work"], new_root + "/work")
    os.mkdir(new_root + "/proc")
    _mount("proc", new_root + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _pivot_root(new_root)
    make_read_only_except_work()
    os.chdir("/work")


def _report(fd: int, line: str) -> None:
    os.write(fd, (line.replace("\n", " ") + "\n").encode())


def run_program(config: dict) -> None:
    """Runs in PID 2: limits, uid, exec. Never returns."""
    for name, value in config["limits"].items():
        resource.setrlimit(LIMITS[name], (value, value + 1 if name == "cpu" else value))
    os.umask(0o077)
    uid = config["uid"]
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    interpreter = config["interpreter"]
    argv = [interpreter, "-I", "-S", "-B", "main.py"]
    os.execve(interpreter, argv, config["env"])


def init(config: dict, launcher_alive: int) -> None:
    """PID 1 of the new PID namespace. Never returns."""
    status_fd = config["status_fd"]
    try:
        _check(libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "pdeathsig")
        if select.select([launcher_alive], [], [], 0)[0]:  # The launcher already died.
            os._exit(SETUP_FAILED)
        os.setsid()
        build_root(config)
        os.set_inheritable(status_fd, False)
        program = os.fork()
        if program == 0:
            try:
                run_program(config)
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                _report(status_fd, f"error program set-up: {e!r}")
            os._exit(SETUP_FAILED)
    except BaseException as e:  # noqa: BLE001 - reported to the parent
        _report(status_fd, f"error {e!r}")
        os._exit(SETUP_FAILED)
    while True:
        pid, status = os.waitpid(-1, 0)
        if pid == program:
            _report(status_fd, f"status {status}")
            os._exit(0)


def main() -> None:
    config = json.loads(sys.argv[1])
    try:
        enter_namespaces(config)
    except OSError as e:
        _report(config["status_fd"], f"error {e!r}")
        sys.exit(SETUP_FAILED)
    alive_r, alive_w = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(alive_w)
        init(config, alive_r)
    os.close(alive_r)
    os.close(config["status_fd"])
    signal.signal(signal.SIGTERM, lambda *_: os.kill(child, signal.SIGKILL))
    _, status = os.waitpid(child, 0)
    sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)


if __name__ == "__main__":
    main()
