"""A trainer that dropped to uid 65534 (nobody), for the sandbox tests when the suite runs as root.

That trainer cannot use the repository's virtual environment: its interpreter may live under
``/root`` (not traversable by nobody), and the checkout may be private too. It needs neither:
`r1jax.rewards.sandbox` and its launcher are standard-library only, so both files are copied to a
world-readable temporary directory and loaded by path under a world-executable interpreter (this
process's own if nobody can run it, else ``/usr/bin/python3``). One helper process serves every
run (a JSON request per line), so a test pays only for its sandbox runs; ``TRAINER_PID`` in a
program is the helper's pid, and each reply proves the helper survived the run.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile

from r1jax.rewards import sandbox as sb

NOBODY = 65534
_FILES = ("sandbox.py", "sandbox_init.py")
_HELPER = """
import base64, dataclasses, importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("sandbox", sys.argv[1])
sandbox = importlib.util.module_from_spec(spec)
sys.modules["sandbox"] = sandbox  # dataclasses looks the module up.
spec.loader.exec_module(sandbox)
for line in sys.stdin:
    request = json.loads(line)
    source = request["source"].replace("TRAINER_PID", str(os.getpid()))
    limits = sandbox.SandboxLimits(**request["limits"])
    try:
        result = sandbox.run_python(source, base64.b64decode(request["stdin"]), limits)
        reply = dataclasses.asdict(result)
        reply["stdout"] = base64.b64encode(result.stdout).decode()
    except Exception as e:
        reply = {"error": repr(e)}
    reply["uid"] = os.getuid()
    print(json.dumps(reply), flush=True)
"""


def find_dropped_interpreter() -> str | None:
    """A Python that uid 65534 can execute, or None."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if os.path.exists(candidate) and sb._world_executable(candidate):
            return os.path.realpath(candidate)
    return None


class DroppedTrainer:
    """Context manager: the helper, run as nobody with `secret` in its environment.

    `run` mirrors `run_python` (default limits: `limits`) and returns a `SandboxResult`.
    """

    def __init__(self, interpreter: str, secret: str, limits: sb.SandboxLimits):
        self.interpreter, self.secret, self.limits = interpreter, secret, limits

    def __enter__(self) -> DroppedTrainer:
        self.dir = tempfile.mkdtemp(prefix="r1jax-dropped-trainer-")
        os.chmod(self.dir, 0o755)
        for name in _FILES:
            target = os.path.join(self.dir, name)
            shutil.copyfile(os.path.join(os.path.dirname(sb.__file__), name), target)
            os.chmod(target, 0o644)
        self.proc = subprocess.Popen(
            [self.interpreter, "-I", "-c", _HELPER, os.path.join(self.dir, "sandbox.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=self.dir,
            env={"PATH": "/usr/bin:/bin", "R1JAX_TEST_SECRET": self.secret},
            text=True,
            user=NOBODY,
            group=NOBODY,
            extra_groups=[],
        )
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, source: str, stdin: bytes = b"", limits: sb.SandboxLimits | None = None):
        limits = limits or self.limits
        request = {
            "source": source,
            "stdin": base64.b64encode(stdin).decode(),
            "limits": dataclasses.asdict(limits),
        }
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the dropped trainer died (exit status {self.proc.wait()})")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the dropped trainer's run_python failed: {reply['error']}")
        assert reply.pop("uid") == NOBODY
        reply["stdout"] = base64.b64decode(reply["stdout"])
        return sb.SandboxResult(**reply)
