"""Code sandbox: each attack is contained, the test process survives, nothing lingers."""

import os
import socket
import subprocess
import threading
import time

import pytest

from r1jax.rewards import CodeReward, SandboxLimits, run_python
from r1jax.rewards.sandbox import network_isolation_available

LIMITS = SandboxLimits(wall_time=1.5, cpu_time=1, memory=256 * 2**20, processes=8)
REWARD = CodeReward(wall_time=1.5, cpu_time=1, memory_mb=256, processes=8)
IS_ROOT = os.geteuid() == 0


def _fenced(program: str) -> str:
    return f"<think>t</think><answer>\n```python\n{program}\n```\n</answer>"


def _sandbox_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "uid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "main.py" in line and "-I -S" in line]


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert _sandbox_processes() == []


def test_honest_program_runs():
    result = run_python("print(int(input()) * 2)", b"21\n", LIMITS)
    assert (result.returncode, result.stdout, result.timed_out) == (0, b"42\n", False)


def test_infinite_loop_is_killed_at_the_wall_limit():
    start = time.monotonic()
    result = run_python("while True: pass", b"", LIMITS)
    assert result.timed_out or result.returncode != 0
    assert time.monotonic() - start < LIMITS.wall_time + 1.0


def test_sleeping_program_is_killed_at_the_wall_limit():
    start = time.monotonic()
    assert run_python("import time\ntime.sleep(60)", b"", LIMITS).timed_out
    assert time.monotonic() - start < LIMITS.wall_time + 1.0


def test_fork_bomb_is_contained():
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    start = time.monotonic()
    run_python(bomb, b"", LIMITS)
    assert time.monotonic() - start < LIMITS.wall_time + 2.0
    tests = [{"stdin": "", "stdout": "ok"}]
    assert REWARD.score(_fenced(bomb + "\nprint('ok')"), tests) == 0.0


def test_detached_children_are_killed_too():
    program = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('ok')"
    )
    result = run_python(program, b"", LIMITS)
    assert result.stdout == b"ok\n"  # The fixture checks that the sleeper is gone.


def test_ten_gigabyte_allocation_fails_inside_the_sandbox():
    program = "x = bytearray(10 * 2**30)\nprint('allocated')"
    result = run_python(program, b"", LIMITS)
    assert b"allocated" not in result.stdout
    assert REWARD.score(_fenced(program), [{"stdin": "", "stdout": "allocated"}]) == 0.0


def test_huge_file_is_cut_at_the_file_size_limit(tmp_path):
    program = "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 2**20)"
    result = run_python(program, b"", LIMITS)
    assert result.returncode != 0
    flood = run_python("while True: print('x' * 1000)", b"", LIMITS)
    assert len(flood.stdout) <= LIMITS.file_size


def test_parent_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("R1JAX_TEST_SECRET", "hunter2")
    program = (
        "import os\nprint(os.environ.get('R1JAX_TEST_SECRET', ''))\n"
        "try:\n    print(open('/proc/%d/environ' % os.getppid()).read())\n"
        "except OSError:\n    pass"
    )
    result = run_python(program, b"", LIMITS)
    assert b"hunter2" not in result.stdout
    assert REWARD.score(_fenced(program), [{"stdin": "", "stdout": "hunter2"}]) == 0.0


@pytest.mark.skipif(not IS_ROOT, reason="uid isolation needs the trainer to run as root")
def test_runs_as_an_unprivileged_user_and_cannot_read_etc_shadow():
    result = run_python("import os\nprint(os.getuid(), os.getgid())", b"", LIMITS)
    uid, gid = map(int, result.stdout.split())
    assert uid != 0 and gid != 0
    shadow = open("/etc/shadow").read()  # We are root: the real contents.
    program = "print(open('/etc/shadow').read(), end='')"
    assert run_python(program, b"", LIMITS).stdout == b""
    assert REWARD.score(_fenced(program), [{"stdin": "", "stdout": shadow}]) == 0.0


@pytest.mark.skipif(
    not network_isolation_available(),
    reason="no network namespace here (needs root and CLONE_NEWNET); TCP cannot be blocked",
)
def test_tcp_connection_to_a_local_server_is_blocked():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    accepted = []

    def accept():
        server.settimeout(3)
        try:
            accepted.append(server.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    program = (
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'x')\n"
        "    print('connected')\nexcept OSError as e:\n    print('blocked', e)"
    )
    result = run_python(program, b"", LIMITS)
    thread.join()
    server.close()
    assert b"blocked" in result.stdout
    assert accepted == []


def test_killing_the_parent_fails():
    program = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)"
    result = run_python(program, b"", LIMITS)
    assert result.returncode != 0  # PermissionError: a different uid
    assert REWARD.score(_fenced(program + "\nprint('ok')"), [{"stdin": "", "stdout": "ok"}]) == 0.0
