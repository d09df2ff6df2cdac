"""Command-line parsing of ml-collections config files with ``--config.a.b=value`` overrides.

Every ``r1jax`` subcommand that runs a job from a config calls ``parse_config``::

    config, flag_values = parse_config(argv, default_config="configs/tiny.py")

``--config=path/to/file.py[:arg]`` selects a ``get_config()`` file; any field can then be
overridden, e.g. ``--config.model.num_layers=2 --config.mesh.data=4``. Config files are read at
the edge and converted to frozen dataclasses before any pure function sees them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import ml_collections
from absl import flags
from ml_collections import config_flags

_REPO_ROOT = Path(__file__).resolve().parent.parent


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


def parse_config(
    argv: Sequence[str],
    *,
    default_config: str,
    define_flags: Callable[[flags.FlagValues], None] | None = None,
    prog: str = "r1jax",
) -> tuple[ml_collections.ConfigDict, flags.FlagValues]:
    """Parses ``argv`` (without the program name) into ``(config, flag_values)``.

    Args:
      argv: command-line arguments, e.g. ``["--config=configs/tiny.py", "--config.seed=3"]``.
      default_config: config file used when ``--config`` is not given.
      define_flags: optional callback defining extra flags on the given ``FlagValues``.
    """
    flag_values = flags.FlagValues()
    config_path = default_config
    rest = []
    for arg in argv:  # resolve the config path before absl loads it
        if arg.startswith("--config=") or arg.startswith("--config "):
            config_path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    config_flags.DEFINE_config_file(
        "config",
        resolve_config_path(config_path),
        "Path to a get_config() file, optionally with ':argument'.",
        flag_values=flag_values,
        lock_config=True,
        # Overrides (--config.a.b=v) are discovered from this argv, not from sys.argv.
        sys_argv=[prog, *rest],
    )
    if define_flags is not None:
        define_flags(flag_values)
    try:
        flag_values([prog, *rest])
    except flags.Error as e:
        raise SystemExit(f"{prog}: {e}") from None
    return flag_values.config, flag_values
