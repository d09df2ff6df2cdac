"""Every ``r1jax <command> ...`` line the README, the config files' docstrings and ``launch/``
show parses: the command exists, and its ``--config`` file and every ``--config.x=y`` override
are valid (run with ``--help`` appended, which parses everything and runs nothing)."""

import re
import shlex
from pathlib import Path

import pytest

from r1jax import cli
from r1jax.config.flags import HelpShown

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [
    ROOT / "README.md",
    ROOT / "launch" / "README.md",
    ROOT / "r1jax" / "data" / "tokenizer_cli.py",
    *sorted((ROOT / "launch").glob("*.sh")),
    *sorted((ROOT / "configs").glob("*.py")),
]
CONFIG_COMMANDS = (
    *("train", "demo", "sample", "eval", "rejection-sample", "convert", "forward", "tokenizer"),
    *("plan", "teacher-topk"),
)


def _joined_lines(text: str) -> list[str]:
    """Lines with their backslash continuations joined, comment markers dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = re.sub(r"^\s*#\s?", "", raw).strip()
        if line.endswith("\\\\"):  # inside a Python docstring
            line = line[:-1]
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        lines.append(current + line)
        current = ""
    return lines


def documented_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in SOURCES:
        for line in _joined_lines(path.read_text()):
            match = re.search(r"\br1jax ([a-z-]+)((?: [^`#]*)?)", line)
            if not match or match.group(1) not in CONFIG_COMMANDS or "..." in line:
                continue
            argv = shlex.split(match.group(2).split(" # ")[0])
            if argv and argv[-1].startswith("["):  # a usage line: [--config=...] placeholders
                continue
            found.append(
                (f"{path.relative_to(ROOT)}: r1jax {match.group(1)}", [match.group(1), *argv])
            )
    return found


COMMANDS = documented_commands()


def test_the_documents_show_every_config_command():
    shown = {argv[0] for _, argv in COMMANDS}
    assert shown == set(CONFIG_COMMANDS), shown
    assert any("--config.grpo.variant=" in " ".join(a) for _, a in COMMANDS)
    assert any("--config.mesh.preset=" in " ".join(a) for _, a in COMMANDS)


@pytest.mark.parametrize("where, argv", COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, argv, monkeypatch):
    monkeypatch.chdir(ROOT)
    module_name, func_name = cli.COMMANDS[argv[0]][0].split(":")
    main = getattr(__import__(module_name, fromlist=[func_name]), func_name)
    with pytest.raises(HelpShown):
        main([*argv[1:], "--help"])


@pytest.mark.parametrize("name", sorted(cli.COMMANDS))
def test_every_command_help_lists_its_flags(name, capsys):
    assert cli.main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert name in CONFIG_COMMANDS
    assert "--config:" in out and "--config." in out, out[:500]


def test_a_bad_override_names_the_nearest_field(capsys):
    assert cli.main(["eval", "--config.eval.num_sample=3"]) == 2
    assert "did you mean config.eval.num_samples?" in capsys.readouterr().err
