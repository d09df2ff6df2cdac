"""r1jax.host_malloc: when a command re-executes itself with huge-page malloc, and that it does."""

import os
import subprocess
import sys

import pytest

from r1jax import host_malloc

LINUX = {"libc": "glibc", "huge_pages": True}


@pytest.mark.parametrize(
    ("environ", "machine", "expected"),
    [
        ({}, LINUX, True),
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, LINUX, True),
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, LINUX, False),  # already tuned: no loop
        ({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, LINUX, False),  # the user chose
        ({"R1JAX_HOST_MALLOC": "0"}, LINUX, False),
        ({"R1JAX_HOST_MALLOC": "1"}, LINUX, True),
        ({}, {"libc": "", "huge_pages": True}, False),  # musl, or not Linux
        ({}, {"libc": "glibc", "huge_pages": False}, False),  # THP set to [never]
    ],
)
def test_wanted(environ, machine, expected):
    if sys.platform != "linux" and expected:
        pytest.skip("re-execution is Linux-only")
    assert host_malloc.wanted(environ, **machine) is expected


def test_tuned_environment_keeps_the_users_tunables():
    env = host_malloc.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2", "A": "1"})
    assert env == {"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1", "A": "1"}
    assert host_malloc.tuned_environment({})["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_huge_pages_setting_is_read_from_the_kernel_file(tmp_path):
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    assert host_malloc._huge_pages_available(str(setting))
    setting.write_text("always madvise [never]\n")
    assert not host_malloc._huge_pages_available(str(setting))
    assert not host_malloc._huge_pages_available(str(tmp_path / "missing"))


def test_ensure_reexecutes_the_same_command_once(tmp_path):
    """A real process: it runs twice (same pid), the second time with the tunable set."""
    script = tmp_path / "child.py"
    script.write_text(
        "import os, sys\n"
        "print(os.getpid(), os.environ.get('GLIBC_TUNABLES'), sys.argv[1:], flush=True)\n"
        "from r1jax import host_malloc\n"
        "host_malloc.ensure()\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "R1JAX_HOST_MALLOC")}
    out = subprocess.run(
        [sys.executable, str(script), "--flag", "x y"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.splitlines()
    if not host_malloc.wanted(env):
        assert len(out) == 1  # this machine cannot use it: one run, untouched
        return
    assert len(out) == 2, out
    (pid1, tun1, args1), (pid2, tun2, args2) = (line.split(" ", 2) for line in out)
    assert pid1 == pid2 and args1 == args2 == "['--flag', 'x y']"
    assert tun1 == "None" and tun2 == host_malloc.TUNABLE


def test_cli_called_from_python_never_reexecutes(monkeypatch):
    """``r1jax.cli.main([...])`` (tests, notebooks) must not replace the calling process."""
    from r1jax import cli

    monkeypatch.setattr(host_malloc, "ensure", lambda: pytest.fail("ensure() was called"))
    assert cli.main(["--help"]) == 0
