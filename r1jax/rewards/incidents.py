"""Per-process counters of incidents (time-outs, errors) that reward functions swallow.

A reward never raises into the trainer; when it gives up on an item (a soft time-out in the
equivalence engine, an unparsable test case) it scores the item at the floor and records the
incident here. The pool drains these counters after each item and reports them with the scores,
so the trainer can log them. The counters are telemetry only: no score depends on them.
"""

from __future__ import annotations

import collections

_COUNTS: collections.Counter[str] = collections.Counter()


def record(kind: str, n: int = 1) -> None:
    """Counts `n` incidents of `kind` (e.g. "timeout", "error") in this process."""
    _COUNTS[kind] += n


def drain() -> dict[str, int]:
    """Returns the counts recorded since the last drain and resets them."""
    out = dict(_COUNTS)
    _COUNTS.clear()
    return out
