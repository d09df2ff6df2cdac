"""Run an untrusted Python program in a contained subprocess.

Containment, per run:
- a fresh uid/gid (random, unused) when the parent is root, so the program cannot read
  root-only files (``/etc/shadow``), signal the parent, read its ``/proc/<pid>/environ``, or
  share a process budget with anything else; ``RLIMIT_NPROC`` then bounds a fork bomb;
- a new network namespace (no interfaces up, so no TCP, not even to 127.0.0.1) where the kernel
  allows it (`network_isolation_available`);
- resource limits: CPU seconds, address space, processes, file size, open files, no core dumps;
- a new session; on exit or time-out the process group *and* every process of the run's uid are
  killed (a child that called ``setsid`` does not escape);
- a fresh, empty working directory; an empty environment (only ``PATH`` and ``LANG``);
  ``python -I -S -B`` (no site-packages, no user paths, no environment variables honoured);
- stdin and stdout are files opened by the parent, so output is bounded by ``RLIMIT_FSIZE`` and
  nothing blocks on a pipe; the expected output never touches the disk.

When the parent is not root the uid cannot change: limits, session and time-outs still apply,
isolation from the parent's user does not (documented limitation for laptop runs).
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import os
import resource
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

_CLONE_NEWNET = 0x40000000
_PR_SET_PDEATHSIG = 1
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
_INTERPRETER_CANDIDATES = ("/usr/bin/python3", "/usr/local/bin/python3")


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Per-run limits. Times in seconds, sizes in bytes."""

    wall_time: float = 2.0
    cpu_time: int = 2
    memory: int = 512 * 2**20
    processes: int = 16
    file_size: int = 4 * 2**20
    open_files: int = 64
    isolate_network: bool = True


@dataclasses.dataclass(frozen=True)
class SandboxResult:
    """What a run did: exit status (negative: killed by that signal), stdout, time-out flag."""

    returncode: int | None
    stdout: bytes
    timed_out: bool
    wall_time: float


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
        return sys.executable
    for candidate in (os.path.realpath(sys.executable), *_INTERPRETER_CANDIDATES):
        if os.path.exists(candidate) and _world_executable(candidate):
            return candidate
    raise RuntimeError(
        "no Python interpreter is executable by an unprivileged uid (the current one lives in a "
        f"private directory); install one at {_INTERPRETER_CANDIDATES[0]}"
    )


def _unshare_network() -> bool:
    return _libc().unshare(_CLONE_NEWNET) == 0


@functools.cache
def network_isolation_available() -> bool:
    """True if a child can be put in its own network namespace here (root, kernel support)."""
    if os.geteuid() != 0:
        return False
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0 if _unshare_network() else 1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def _preexec(uid: int | None, limits: SandboxLimits, isolate_network: bool) -> None:
    """Runs in the child between fork and exec (after setsid and chdir)."""
    if isolate_network and not _unshare_network():
        os._exit(121)
    for which, value in (
        (resource.RLIMIT_CPU, (limits.cpu_time, limits.cpu_time + 1)),
        (resource.RLIMIT_AS, (limits.memory, limits.memory)),
        (resource.RLIMIT_NPROC, (limits.processes, limits.processes)),
        (resource.RLIMIT_FSIZE, (limits.file_size, limits.file_size)),
        (resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        if which != resource.RLIMIT_NPROC or uid is not None:
            resource.setrlimit(which, value)
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


def run_python(source: str, stdin: bytes = b"", limits: SandboxLimits = SandboxLimits()):
    """Runs `source` as ``main.py`` in a sandbox, feeding `stdin`; returns a `SandboxResult`."""
    root = os.geteuid() == 0
    uid = 100_000 + secrets.randbelow(2_000_000_000) if root else None
    isolate = limits.isolate_network and network_isolation_available()
    run_dir = tempfile.mkdtemp(prefix="r1jax-sandbox-")
    try:
        os.chmod(run_dir, 0o711)  # Traversable, not listable: the io files stay private.
        work = os.path.join(run_dir, "work")
        os.mkdir(work, 0o700)
        with open(os.path.join(work, "main.py"), "w", encoding="utf-8") as f:
            f.write(source)
        if uid is not None:
            os.chown(work, uid, uid)
            os.chown(os.path.join(work, "main.py"), uid, uid)
        stdin_path, stdout_path = os.path.join(run_dir, "stdin"), os.path.join(run_dir, "stdout")
        with open(stdin_path, "wb") as f:
            f.write(stdin)
        start = time.monotonic()
        with open(stdin_path, "rb") as fin, open(stdout_path, "wb") as fout:
            proc = subprocess.Popen(
                [sandbox_interpreter(), "-I", "-S", "-B", "main.py"],
                stdin=fin,
                stdout=fout,
                stderr=subprocess.DEVNULL,
                cwd=work,
                env=_ENV,
                close_fds=True,
                start_new_session=True,
                preexec_fn=functools.partial(_preexec, uid, limits, isolate),
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
        elapsed = time.monotonic() - start
        with open(stdout_path, "rb") as f:
            out = f.read(limits.file_size)
        return SandboxResult(proc.returncode, out, timed_out, elapsed)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
