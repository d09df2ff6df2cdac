"""Command-line parsing, the same for every ``r1jax`` command: ``--config`` and overrides.

    config, flag_values = parse_config(argv, command="r1jax train", default="configs/sft_tiny.py")

``--config=path/to/file.py[:arg]`` selects a ``get_config()`` file (``default``: a file, or a
stage kind whose schema defaults are the config); any field can then be overridden, e.g.
``--config.model.num_layers=2 --config.mesh.preset=v5p-64 --config.grpo.variant=dapo``.
``--help`` lists the command's flags and every config field with its value. The ConfigDict is
converted to frozen sections (``r1jax.config.typed``) before any pure function sees it.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections import config_flags

from r1jax.config import schema

_REPO_ROOT = Path(__file__).resolve().parents[2]
HELP_FLAGS = ("-h", "--help", "--helpfull", "--helpshort")


class HelpShown(Exception):  # noqa: N818 - a signal, not an error
    """``--help`` was given and printed; the command exits 0."""


def resolve_config_path(path: str) -> str:
    """``path`` as given if it exists, else relative to the r1jax checkout (editable installs).

    An optional ``:argument`` suffix (passed to ``get_config(argument)``) is preserved.
    """
    file_part, sep, arg = path.partition(":")
    if Path(file_part).exists():
        return path
    candidate = _REPO_ROOT / file_part
    if candidate.exists():
        return str(candidate) + sep + arg
    raise FileNotFoundError(f"config file {file_part!r} not found (also looked in {_REPO_ROOT})")


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """``get_config()`` (or ``get_config(argument)`` for ``path:argument``) of a config file."""
    resolved, _, arg = resolve_config_path(path).partition(":")
    spec = importlib.util.spec_from_file_location(f"r1jax_config_{Path(resolved).stem}", resolved)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {resolved}: defines no get_config()")
    if not arg:
        return module.get_config()
    if not inspect.signature(module.get_config).parameters:
        raise ValueError(f"config file {resolved}: get_config() takes no argument, got {path!r}")
    return module.get_config(arg)


def _check_overrides(config, argv: Sequence[str]) -> None:
    """Each ``--config.a.b=v`` names a field of ``config`` (else: the nearest one)."""
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        node, where = config, "config"
        for part in arg[len("--config.") :].split("=", 1)[0].split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                known = node.keys() if isinstance(node, ml_collections.ConfigDict) else ()
                raise ValueError(f"{arg}: " + schema.unknown_key(where, part, known))
            node, where = node[part], f"{where}.{part}"


def _flat(config, prefix="--config") -> list[str]:
    lines = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict) and len(value):
            lines += _flat(value, f"{prefix}.{key}")
        else:
            lines.append(f"  {prefix}.{key}={value!r}")
    return lines


def _help(command: str, doc: str, flag_values: flags.FlagValues, config) -> str:
    own = [
        f"  --{name}: {flag.help} (default: {flag.default!r})"
        for name, flag in sorted(flag_values._flags().items())
        if name != "config" and not name.startswith("config.")
    ]
    return "\n".join(
        [
            f"usage: {command} [--config=FILE.py[:ARG]] [--config.SECTION.KEY=VALUE ...] [flags]",
            "",
            doc.strip(),
            "",
            "flags:",
            "  --config: a get_config() file, optionally with ':argument'",
            *own,
            "",
            "config fields (override any with --config.SECTION.KEY=VALUE):",
            *_flat(config),
        ]
    )


def parse_config(
    argv: Sequence[str],
    *,
    command: str,
    default: str,
    define_flags: Callable[[flags.FlagValues], None] | None = None,
    doc: str = "",
) -> tuple[ml_collections.ConfigDict, flags.FlagValues]:
    """Parses ``argv`` (without the program name) into ``(config, flag_values)``.

    Args:
      argv: command-line arguments, e.g. ``["--config=configs/tiny.py", "--config.seed=3"]``.
      command: the command's name for messages, e.g. ``"r1jax eval"``.
      default: the config file used without ``--config``, or a stage kind (``schema.KINDS``).
      define_flags: optional callback defining the command's own flags on the ``FlagValues``.
      doc: the command's description, shown by ``--help``.
    Raises:
      HelpShown: after printing the help for ``--help``.
    """
    flag_values = flags.FlagValues()
    config_path = None if default in schema.KINDS else default
    rest, wants_help = [], False
    for arg in argv:  # resolve the config path before absl loads it
        if arg.startswith("--config="):
            config_path = arg.split("=", 1)[1]
        elif arg in HELP_FLAGS:
            wants_help = True
        else:
            rest.append(arg)
    if config_path is None:  # the schema's defaults of the ``default`` kind
        from r1jax.config.typed import defaults

        config = defaults(default)
    else:
        config = load_config_file(config_path)
    _check_overrides(config, rest)
    # Overrides (--config.a.b=v) are discovered from this argv, not from sys.argv.
    config_flags.DEFINE_config_dict(
        "config",
        config,
        "The config (a get_config() file, optionally with ':argument').",
        flag_values=flag_values,
        lock_config=True,
        sys_argv=[command, *rest],
    )
    if define_flags is not None:
        define_flags(flag_values)
    try:
        flag_values([command, *rest])
    except flags.Error as e:
        raise ValueError(f"{e}") from None
    if wants_help:
        print(_help(command, doc, flag_values, flag_values.config), file=sys.stdout)
        raise HelpShown
    return flag_values.config, flag_values
