"""A resumed run keeps the settings that decide its results.

A checkpoint stores the run's config; resuming with another learning rate, data seed, batch
size or model would lay the saved optimizer state and data position onto a different run and
give a trajectory that neither config describes. ``check_resumable`` names each such change;
the settings that leave the trajectory alone (how often to log, evaluate and save, the mesh
and process layout, which reshard the same state) may change freely, and so may the length
(``train.steps``; a learning-rate schedule that follows it, as by default, stretches with it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

# Dotted prefixes of the config keys a resumed run may change.
FREE = (
    "train.steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
    "train.eval_every", "train.transfer_guard", "train.num_microbatches", "eval", "mesh",
    "distributed", "init_from",
)  # fmt: skip
OVERRIDE = "R1JAX_RESUME_WITH_CHANGES"


def _flat(tree, prefix="") -> dict:
    if not isinstance(tree, Mapping) or not tree:
        return {prefix: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def changed_settings(stored: Mapping, now: Mapping) -> dict[str, tuple]:
    """``{dotted key: (stored value, new value)}`` of the settings outside ``FREE`` that
    differ (compared as the checkpoint stores them: JSON)."""
    now = json.loads(json.dumps(now, default=str))
    old, new = _flat(stored), _flat(now)
    for flat in (old, new):  # a schedule that follows train.steps follows it on resume too
        if flat.get("optim.total_steps") == flat.get("train.steps"):
            flat.pop("optim.total_steps", None)
    free = lambda key: any(key == p or key.startswith(p + ".") for p in FREE)
    keys = sorted(k for k in set(old) | set(new) if not free(k) and old.get(k) != new.get(k))
    return {k: (old.get(k), new.get(k)) for k in keys}


def check_resumable(stored: Mapping | None, now: Mapping, where: str) -> None:
    """Raises ValueError naming the changed settings (nothing when the checkpoint stores no
    config, or ``R1JAX_RESUME_WITH_CHANGES=1`` accepts them)."""
    if not stored:
        return
    changed = changed_settings(stored, now)
    if not changed or os.environ.get(OVERRIDE) == "1":
        return
    lines = "; ".join(
        f"config.{k}: {a!r} in the checkpoint, {b!r} now" for k, (a, b) in changed.items()
    )
    raise ValueError(
        f"{where}: resuming with settings that change the run's results: {lines}. Use a new "
        f"workdir, restore those values, or set {OVERRIDE}=1 to resume with them anyway"
    )
