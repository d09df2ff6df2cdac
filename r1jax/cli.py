"""The ``r1jax`` command: ``r1jax <subcommand> [flags]``.

Each subcommand lives in its own module exposing ``main(argv) -> int`` and is imported only when
invoked, so ``r1jax --help`` stays instant and one command's dependencies never slow another.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

# name -> (module:function, one-line help). Order is the order shown by --help.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("r1jax.commands.demo:main", "R1 in miniature on CPU: pretrain, GRPO, distil, report"),
    "train": ("r1jax.commands.train:main", "SFT / distillation / GRPO training from a config"),
    "sample": ("r1jax.commands.sample:main", "sample completions from a checkpoint"),
    "eval": ("r1jax.commands.evaluate:main", "pass@1 / pass@k / maj@k evaluation"),
    "rejection-sample": ("r1jax.commands.rejection_sample:main", "build SFT data by rejection"),
    "teacher-topk": ("r1jax.commands.teacher_topk:main", "store a teacher's top-k with SFT data"),
    "convert": ("r1jax.commands.convert:main", "Hugging Face safetensors <-> r1jax checkpoints"),
    "tokenizer": ("r1jax.data.tokenizer_cli:main", "train a sentencepiece tokenizer"),
    "forward": ("r1jax.commands.forward:main", "build a model from a config, run a forward pass"),
    "plan": ("r1jax.commands.plan:main", "compile a run's programs for a topology: fits? FLOPs?"),
}


def _available() -> dict[str, tuple[str, str]]:
    """The commands whose module is installed, found by file without importing anything
    (``find_spec`` of ``r1jax.data.x`` would import ``r1jax.data``, hence grain and jax)."""
    root = Path(__file__).resolve().parent.parent
    found = {}
    for name, (target, help_text) in COMMANDS.items():
        path = root.joinpath(*target.split(":")[0].split("."))
        if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
            found[name] = (target, help_text)
    return found


def _usage(commands) -> str:
    width = max(map(len, commands))
    lines = [
        "usage: r1jax <command> [flags]   (r1jax <command> --help for its flags)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_text}" for name, (_, help_text) in commands.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the console command (not a call from Python): tune host malloc first
        from r1jax import host_malloc

        host_malloc.ensure()
    argv = sys.argv[1:] if argv is None else list(argv)
    commands = _available()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage(commands))
        return 0
    name, rest = argv[0], argv[1:]
    if name not in commands:
        print(f"r1jax: unknown command {name!r}\n\n{_usage(commands)}", file=sys.stderr)
        return 2
    module_name, func_name = commands[name][0].split(":")
    module = importlib.import_module(module_name)
    from r1jax.config.flags import HelpShown  # after the command's own (heavier) imports
    from r1jax.errors import SetupError
    from r1jax.train import preemption

    try:
        result = getattr(module, func_name)(rest)
    except HelpShown:
        return 0
    except preemption.Preempted as e:  # saved; a scheduler must run it again, not call it done
        print(f"r1jax {name}: {e}", file=sys.stderr)
        return preemption.EXIT_CODE
    except SystemExit as e:  # argparse's --help (0) or usage error (2)
        return e.code if isinstance(e.code, int) else 2
    except (ValueError, FileNotFoundError, KeyError, SetupError) as e:
        # Bad input (config field, file, tensor name): one clear line, unless debugging.
        if os.environ.get("R1JAX_TRACEBACK"):
            raise
        print(
            f"r1jax {name}: error: {e}  (set R1JAX_TRACEBACK=1 for the traceback)", file=sys.stderr
        )
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
