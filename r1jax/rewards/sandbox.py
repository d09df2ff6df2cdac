"""Run an untrusted Python program in a contained subprocess.

Containment, per run (the launcher `r1jax.rewards.sandbox_init` describes the mechanics):
- new PID, mount, network, IPC and UTS namespaces, plus a user namespace when the trainer is not
  root (only its own uid mapped; nothing needs root). The program is PID 2 behind a PID-1 init:
  it cannot see, signal or ``ptrace`` the trainer (``os.getppid()`` is the init, which ignores
  its signals), and when the init exits every process left in the namespace is killed (a child
  that called ``setsid`` does not escape); nothing outlives `run_python`;
- its own root: read-only binds of ``/usr``, ``/bin``, ``/lib*``, ``/etc`` and the interpreter's
  prefix, a fresh ``/proc`` (only its own processes), ``/dev/{null,zero,full,random,urandom}``
  and the writable work directory ``/work``; nothing else (no ``/home``, ``/root``, ``/tmp``,
  ``/run``, ``/sys``, ``/dev/shm``: no other files, no Unix sockets). It can write only in
  ``/work``, a fresh directory deleted after the run (``tempfile`` falls back to it);
- no network: the network namespace has only ``lo``, down (no TCP, not even to 127.0.0.1);
- as root, a fresh uid/gid (random, unused) and no supplementary groups; always no new privileges
  (setuid binaries do nothing) and no capabilities;
- resource limits: CPU seconds, address space, processes, file size, open files, no core dumps;
- an empty environment (only ``PATH`` and ``LANG``); ``python -I -S -B`` (no site-packages, no
  user paths, no environment variables honoured);
- stdin and stdout are files opened by the parent, so output is bounded by ``RLIMIT_FSIZE`` and
  nothing blocks on a pipe; the expected output never touches the disk.

The namespaces need Linux with unprivileged user namespaces (or root; ``mount_setattr`` from
5.12 is used when present). Where they are
unavailable (`isolation_problem` says why), `run_python` raises `SandboxUnavailable` unless the
limits say ``allow_unsandboxed=True``: then the program runs with only the resource limits, a new
session and, as root, a fresh uid. Without root that is no isolation from the trainer's user at
all (the program can signal the trainer and read its files): use it only on trusted code.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import json
import os
import resource
import secrets
import select
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

_PR_SET_PDEATHSIG = 1
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_INTERPRETER_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3")
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_init.py")
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_RLIMITS = {
    "cpu": resource.RLIMIT_CPU,
    "memory": resource.RLIMIT_AS,
    "processes": resource.RLIMIT_NPROC,
    "file_size": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "core": resource.RLIMIT_CORE,
}
_STATUS_WAIT = 5.0  # Seconds to wait for the namespace to empty after the launcher exits.


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Times in seconds, sizes in bytes.

    ``processes`` counts the run's user namespace (its launcher and init too; Linux >= 5.14), or,
    as root, the run's fresh uid.

    ``allow_unsandboxed``: run with only the resource limits when namespaces are unavailable
    (see the module docstring) instead of raising `SandboxUnavailable`.
    """

    wall_time: float = 2.0
    cpu_time: int = 2
    memory: int = 512 * 2**20
    processes: int = 16
    file_size: int = 4 * 2**20
    open_files: int = 64
    isolate_network: bool = True
    allow_unsandboxed: bool = False


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What a run did: exit status (negative: killed by that signal), stdout, time-out flag."""

    returncode: int | None
    stdout: bytes
    timed_out: bool
    wall_time: float


class SandboxUnavailable(RuntimeError):
    """The namespaces the sandbox needs are unavailable and unsandboxed runs were not allowed."""


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _world_executable(path: str) -> bool:
    """True if a non-root uid can execute `path` (every directory above it traversable)."""
    path = os.path.realpath(path)
    try:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == "/":
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


@functools.cache
def sandbox_interpreter() -> str:
    """The Python used for sandboxed programs: one a dropped uid can run."""
    if os.geteuid() != 0:
        return os.path.realpath(sys.executable)
    for candidate in (os.path.realpath(sys.executable), *_INTERPRETER_CANDIDATES):
        if os.path.exists(candidate) and _world_executable(candidate):
            return os.path.realpath(candidate)
    raise RuntimeError(
        "no Python interpreter is executable by an unprivileged uid (the current one lives in a "
        f"private directory); install one at {_INTERPRETER_CANDIDATES[0]}"
    )


def _fresh_uid() -> int | None:
    return 100_000 + secrets.randbelow(2_000_000_000) if os.geteuid() == 0 else None


def _rlimits(limits: SandboxLimits) -> dict[str, int]:
    return {
        "cpu": limits.cpu_time,
        "memory": limits.memory,
        "processes": limits.processes,
        "file_size": limits.file_size,
        "open_files": limits.open_files,
        "core": 0,
    }


def _binds(interpreter: str) -> list[str]:
    """What the program sees, read-only: system directories, the interpreter's prefix, devices."""
    prefix = os.path.dirname(os.path.dirname(interpreter))  # /usr for /usr/bin/python3
    return [*_SYSTEM_DIRS, *([prefix] if prefix != "/" else []), *_DEVICES]


def _read_status(fd: int) -> list[str]:
    """Lines from the launcher, read until every holder closed (the namespace is then empty)."""
    data = b""
    deadline = time.monotonic() + _STATUS_WAIT
    while (left := deadline - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").splitlines()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM: the launcher kills the init (and with it the namespace); SIGKILL if it lingers."""
    proc.terminate()
    try:
        proc.wait(1.0)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def _run_isolated(run_dir: str, uid: int | None, limits: SandboxLimits, fin, fout):
    """(returncode, timed_out) of ``/work/main.py`` run through the namespace launcher."""
    interpreter = sandbox_interpreter()
    status_r, status_w = os.pipe()
    config = {
        "root": os.path.join(run_dir, "root"),
        "work": os.path.join(run_dir, "work"),
        "interpreter": interpreter,
        "binds": _binds(interpreter),
        "uid": uid,
        "network": limits.isolate_network,
        "limits": _rlimits(limits),
        "status_fd": status_w,
        "env": _ENV,
    }
    try:
        proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-B", _LAUNCHER, json.dumps(config)],
            stdin=fin,
            stdout=fout,
            stderr=subprocess.DEVNULL,
            cwd=run_dir,
            env=_ENV,
            close_fds=True,
            pass_fds=(status_w,),
            start_new_session=True,
        )
        os.close(status_w)
        status_w = -1
        timed_out = False
        try:
            proc.wait(limits.wall_time)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop(proc)
        lines = _read_status(status_r)
    finally:
        os.close(status_r)
        if status_w >= 0:
            os.close(status_w)
    for line in lines:
        kind, _, value = line.partition(" ")
        if kind == "error":
            raise SandboxUnavailable(f"sandbox set-up failed: {value}")
        if kind == "status":
            return os.waitstatus_to_exitcode(int(value)), timed_out
    return (-signal.SIGKILL if timed_out else proc.returncode), timed_out


def _preexec_unsandboxed(uid: int | None, limits: SandboxLimits) -> None:
    """Runs in the child between fork and exec (after setsid and chdir)."""
    for name, value in _rlimits(limits).items():
        if name != "processes" or uid is not None:  # NPROC counts all of the trainer's user.
            resource.setrlimit(_RLIMITS[name], (value, value + 1 if name == "cpu" else value))
    os.umask(0o077)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    # The parent-death signal is cleared by a uid change, so set it last.
    _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _kill_uid(uid: int) -> None:
    """Kills every process of `uid` (as that uid, so nothing else can be hit)."""
    for _ in range(2):  # Twice: a fork racing the first sweep is caught by the second.
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            try:
                os.setgid(uid)
                os.setuid(uid)
                os.kill(-1, signal.SIGKILL)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)


def _run_unsandboxed(run_dir: str, uid: int | None, limits: SandboxLimits, fin, fout):
    """(returncode, timed_out) with only limits, a session and (as root) a fresh uid."""
    proc = subprocess.Popen(
        [sandbox_interpreter(), "-I", "-S", "-B", "main.py"],
        stdin=fin,
        stdout=fout,
        stderr=subprocess.DEVNULL,
        cwd=os.path.join(run_dir, "work"),
        env=_ENV,
        close_fds=True,
        start_new_session=True,
        preexec_fn=functools.partial(_preexec_unsandboxed, uid, limits),
    )
    timed_out = False
    try:
        proc.wait(limits.wall_time)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        if uid is not None:
            _kill_uid(uid)
        proc.wait()
    return proc.returncode, timed_out


def _run(source: str, stdin: bytes, limits: SandboxLimits, isolated: bool) -> SandboxResult:
    uid = _fresh_uid()
    run_dir = tempfile.mkdtemp(prefix="r1jax-sandbox-")
    try:
        os.chmod(run_dir, 0o711)  # Traversable, not listable: the io files stay private.
        work = os.path.join(run_dir, "work")
        os.mkdir(work, 0o700)
        os.mkdir(os.path.join(run_dir, "root"), 0o700)
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
            f.write(source)
        if uid is not None:
            os.chown(work, uid, uid)
            os.chown(os.path.join(work, "main.py"), uid, uid)
        stdin_path, stdout_path = os.path.join(run_dir, "stdin"), os.path.join(run_dir, "stdout")
        with open(stdin_path, "wb") as f:
            f.write(stdin)
        start = time.monotonic()
        runner = _run_isolated if isolated else _run_unsandboxed
        with open(stdin_path, "rb") as fin, open(stdout_path, "wb") as fout:
            returncode, timed_out = runner(run_dir, uid, limits, fin, fout)
        elapsed = time.monotonic() - start
        with open(stdout_path, "rb") as f:
            out = f.read(limits.file_size)
        return SandboxResult(returncode, out, timed_out, elapsed)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _read_sysctl(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _hints() -> str:
    """How to enable what the kernel refuses, from the usual sysctls."""
    hints = []
    if _read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == "0":
        hints.append("sysctl -w kernel.unprivileged_userns_clone=1")
    if _read_sysctl("/proc/sys/user/max_user_namespaces") == "0":
        hints.append("sysctl -w user.max_user_namespaces=10000")
    if _read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1":
        hints.append("sysctl -w kernel.apparmor_restrict_unprivileged_userns=0")
    hints.append(
        "in a container, allow unshare and mount (e.g. docker run --security-opt "
        "seccomp=unconfined --security-opt apparmor=unconfined), or run the trainer as root"
    )
    return "; ".join(hints)


@functools.cache
def isolation_problem() -> str | None:
    """None if a run can be put in its namespaces here, else what is missing and how to fix it."""
    try:
        result = _run("print('ok')", b"", SandboxLimits(), isolated=True)
    except (OSError, RuntimeError) as e:
        error = str(e)
    else:
        if result.stdout == b"ok\n" and result.returncode == 0:
            return None
        error = f"a test run failed (exit status {result.returncode}, output {result.stdout!r})"
    return (
        f"the code sandbox cannot isolate programs here ({error}); it needs Linux user, PID, "
        f"mount and network namespaces: {_hints()}"
    )


def check_sandbox(limits: SandboxLimits = SandboxLimits()) -> bool:
    """True if runs are isolated; False if not but allowed; raises `SandboxUnavailable` else."""
    problem = isolation_problem()
    if problem is None:
        return True
    if limits.allow_unsandboxed:
        return False
    raise SandboxUnavailable(
        f"{problem}. To run untrusted code anyway, with only resource limits (no isolation from "
        "the trainer's user), pass allow_unsandboxed=True (CodeReward or SandboxLimits)"
    )


def run_python(source: str, stdin: bytes = b"", limits: SandboxLimits = SandboxLimits()):
    """Runs `source` as ``main.py`` in a sandbox, feeding `stdin`; returns a `SandboxResult`."""
    return _run(source, stdin, limits, isolated=check_sandbox(limits))
