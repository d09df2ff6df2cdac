"""Code sandbox: each attack is contained, the trainer survives, nothing lingers.

Every attack runs from two trainers: this test process (root or not, whoever runs the suite)
and, when the suite runs as root, a helper process that dropped to uid 65534 (nobody) first, so
the unprivileged case is checked either way (see `sandbox_driver`).
"""

import os
import socket
import subprocess
import threading
import time

import pytest
from sandbox_driver import DroppedTrainer, find_dropped_interpreter

from r1jax.rewards import CodeReward, SandboxLimits
from r1jax.rewards import sandbox as sb

LIMITS = SandboxLimits(wall_time=1.5, cpu_time=1, memory=256 * 2**20, processes=8)
REWARD = CodeReward(wall_time=1.5, cpu_time=1, memory_mb=256, processes=8)
IS_ROOT = os.geteuid() == 0
SECRET = "hunter2-r1jax"


def _fenced(program: str) -> str:
    return f"<think>t</think><answer>\n```python\n{program}\n```\n</answer>"


def _sandbox_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "uid=,args="], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "main.py" in line and "-I -S" in line]


@pytest.fixture(autouse=True)
def nothing_left_running():
    yield
    assert _sandbox_processes() == []


class InProcessTrainer:
    """The test process itself is the trainer; ``TRAINER_PID`` in a program is its pid."""

    pid = os.getpid()

    def run(self, source: str, stdin: bytes = b"", limits: SandboxLimits = LIMITS):
        return sb.run_python(source.replace("TRAINER_PID", str(self.pid)), stdin, limits)


@pytest.fixture(scope="module")
def dropped_trainer():
    interpreter = find_dropped_interpreter()
    if interpreter is None:
        pytest.skip("no Python interpreter that uid 65534 can execute")
    with DroppedTrainer(interpreter, secret=SECRET, limits=LIMITS) as trainer:
        yield trainer


@pytest.fixture(params=["this-process", "dropped-to-nobody"])
def trainer(request, monkeypatch):
    """Runs sandboxes for a test; the environment holds a secret the program must not read."""
    monkeypatch.setenv("R1JAX_TEST_SECRET", SECRET)
    if request.param == "this-process":
        return InProcessTrainer()
    if not IS_ROOT:
        pytest.skip("dropping to another uid needs root (this run is the unprivileged case)")
    return request.getfixturevalue("dropped_trainer")


def test_honest_program_runs(trainer):
    result = trainer.run("print(int(input()) * 2)", b"21\n")
    assert (result.returncode, result.stdout, result.timed_out) == (0, b"42\n", False)


def test_a_run_costs_well_under_a_second(trainer):
    trainer.run("print(1)")  # Warm: the probe runs once per process.
    start = time.monotonic()
    assert trainer.run("print(1)").stdout == b"1\n"
    assert time.monotonic() - start < 1.0


def test_infinite_loop_is_killed_at_the_wall_limit(trainer):
    start = time.monotonic()
    result = trainer.run("while True: pass")
    assert result.timed_out or result.returncode != 0
    assert time.monotonic() - start < LIMITS.wall_time + 1.0


def test_sleeping_program_is_killed_at_the_wall_limit(trainer):
    start = time.monotonic()
    assert trainer.run("import time\ntime.sleep(60)").timed_out
    assert time.monotonic() - start < LIMITS.wall_time + 1.0


FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"


def test_fork_bomb_is_contained(trainer):
    start = time.monotonic()
    result = trainer.run(FORK_BOMB)
    assert result.timed_out or result.returncode != 0
    assert time.monotonic() - start < LIMITS.wall_time + 2.0


def test_fork_bomb_scores_zero():
    tests = [{"stdin": "", "stdout": "ok"}]
    assert REWARD.score(_fenced(FORK_BOMB + "\nprint('ok')"), tests) == 0.0


def test_detached_children_are_killed_too(trainer):
    program = (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('ok')"
    )
    result = trainer.run(program)
    assert result.stdout == b"ok\n"  # The fixture checks that the sleeper is gone.


MEMORY_BOMB = "x = bytearray(10 * 2**30)\nprint('allocated')"


def test_ten_gigabyte_allocation_fails_inside_the_sandbox(trainer):
    result = trainer.run(MEMORY_BOMB)
    assert b"allocated" not in result.stdout and result.returncode != 0
    assert REWARD.score(_fenced(MEMORY_BOMB), [{"stdin": "", "stdout": "allocated"}]) == 0.0


def test_huge_file_is_cut_at_the_file_size_limit(trainer):
    program = "f = open('big', 'wb')\nwhile True:\n    f.write(b'x' * 2**20)"
    assert trainer.run(program).returncode != 0
    flood = trainer.run("while True: print('x' * 1000)")
    assert len(flood.stdout) <= LIMITS.file_size


def test_trainer_environment_secrets_are_not_visible(trainer):
    program = (
        "import os\nprint(dict(os.environ))\n"
        "for pid in (os.getppid(), TRAINER_PID, 1, 'self'):\n"
        "    try:\n        print(open('/proc/%s/environ' % pid).read())\n"
        "    except OSError as e:\n        print(e)"
    )
    result = trainer.run(program)
    assert result.returncode == 0 and result.stdout.startswith(b"{")
    assert SECRET.encode() not in result.stdout
    assert REWARD.score(_fenced(program), [{"stdin": "", "stdout": SECRET}]) == 0.0


def test_killing_the_trainer_fails(trainer):
    program = (
        "import os, signal\n"
        "for pid in (os.getppid(), TRAINER_PID, 1, -1):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n"
        "    except OSError:\n        pass\nprint('alive')"
    )
    result = trainer.run(program)
    assert result.stdout == b"alive\n"  # Only its own namespace is in reach: nothing else died.
    assert trainer.run("print(1)").stdout == b"1\n"  # The trainer still works.


def test_program_sees_only_its_own_processes_and_files(trainer):
    program = (
        "import os\nprint(os.getpid(), os.getppid())\n"
        "print(sorted(p for p in os.listdir('/proc') if p.isdigit()))\n"
        "print(sorted(os.listdir('/')), os.getcwd())"
    )
    pids, proc, root = trainer.run(program).stdout.decode().splitlines()
    assert pids == "2 1" and proc == "['1', '2']"
    for hidden in ("'home'", "'root'", "'tmp'", "'run'", "'sys'", "'var'", "'work'"):
        assert (hidden in root) == (hidden == "'work'")
    assert root.endswith(" /work")


def test_writes_outside_the_work_directory_fail(trainer, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o777)
    outside.chmod(0o777)  # Writable by the dropped trainer too.
    targets = [str(outside / "x"), "/tmp/r1jax-escape", "/etc/r1jax-escape", "/usr/r1jax-escape"]
    program = (
        "import os\nopen('inside', 'w').write('ok')\nprint(open('inside').read())\n"
        f"for path in {targets!r} + ['../escape', '/r1jax-escape', '/dev/r1jax-escape']:\n"
        "    try:\n        open(path, 'w').write('x')\n        print('wrote', path)\n"
        "    except OSError:\n        pass"
    )
    result = trainer.run(program)
    assert result.stdout == b"ok\n"
    assert not any(os.path.exists(path) for path in targets)


def test_tcp_connection_to_a_local_server_is_blocked(trainer):
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
    result = trainer.run(program)
    thread.join()
    server.close()
    assert b"blocked" in result.stdout
    assert accepted == []


@pytest.mark.skipif(not IS_ROOT, reason="a fresh uid needs the trainer to run as root")
def test_root_trainer_runs_programs_as_a_fresh_uid_that_cannot_read_etc_shadow():
    result = sb.run_python("import os\nprint(os.getuid(), os.getgid(), os.getgroups())")
    uid, gid, groups = result.stdout.decode().split(maxsplit=2)
    assert int(uid) >= 100_000 and int(gid) >= 100_000 and groups.strip() == "[]"
    shadow = open("/etc/shadow").read()  # We are root: the real contents.
    program = "print(open('/etc/shadow').read(), end='')"
    assert sb.run_python(program, b"", LIMITS).stdout == b""
    assert REWARD.score(_fenced(program), [{"stdin": "", "stdout": shadow}]) == 0.0


# Where namespaces are unavailable: refuse, unless explicitly allowed.

UNAVAILABLE = "the code sandbox cannot isolate programs here (simulated)"


@pytest.fixture
def no_isolation(monkeypatch):
    monkeypatch.setattr(sb, "isolation_problem", lambda: UNAVAILABLE)


def test_without_isolation_the_sandbox_and_the_code_reward_refuse_to_start(no_isolation):
    with pytest.raises(sb.SandboxUnavailable, match="simulated.*allow_unsandboxed=True"):
        sb.run_python("print(1)", b"", LIMITS)
    with pytest.raises(sb.SandboxUnavailable, match="allow_unsandboxed"):
        CodeReward(wall_time=1.5)


def test_without_isolation_an_explicit_opt_in_runs_with_limits_only(no_isolation):
    limits = SandboxLimits(wall_time=1.5, cpu_time=1, memory=256 * 2**20, allow_unsandboxed=True)
    assert sb.run_python("print(int(input()) + 1)", b"41\n", limits).stdout == b"42\n"
    assert sb.run_python("import time\ntime.sleep(60)", b"", limits).timed_out
    assert b"allocated" not in sb.run_python(MEMORY_BOMB, b"", limits).stdout
    reward = CodeReward(wall_time=1.5, cpu_time=1, memory_mb=256, allow_unsandboxed=True)
    assert reward.score(_fenced("print('ok')"), [{"stdin": "", "stdout": "ok"}]) == 1.0


def test_the_probe_says_what_failed_and_how_to_enable_it(monkeypatch, tmp_path):
    launcher = tmp_path / "launcher.py"
    launcher.write_text(
        "import json, os, sys\nfd = json.loads(sys.argv[1])['status_fd']\n"
        "os.write(fd, b'error unshare: [Errno 1] Operation not permitted\\n')\nsys.exit(125)\n"
    )
    monkeypatch.setattr(sb, "_LAUNCHER", str(launcher))
    problem = sb.isolation_problem.__wrapped__()
    assert "unshare: [Errno 1] Operation not permitted" in problem
    assert "namespaces" in problem and "docker" in problem
    assert sb.isolation_problem() is None  # The real probe (cached) still says: isolated.
