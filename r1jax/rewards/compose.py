"""A config-driven weighted sum of named rewards, evaluated in a time-limited process pool.

    reward = CompositeReward.from_config({
        "accuracy": {"weight": 1.0},
        "format": {"weight": 0.5},
        "language": {"weight": 0.1, "language": "en"},
    })
    result = reward.evaluate(prompts, completions, answer=answers)
    result.total          # per-item weighted sum, what GRPO uses
    result.components     # {"accuracy": [...], "format": [...], ...} for logging
    result.timeouts, result.errors, result.metrics()

Per item and component, a time-out or an error is counted and scores the component's worst:
the lower of `floor` and the least score the reward gives (its ``score_range``), or, under a
negative weight, the higher of `floor` and its greatest, so that no failure (a completion that
hangs the grader) weighs more than an answer that was graded. `evaluate` never
raises for anything a completion does. It raises `ValueError` only for caller bugs: fields whose
lengths differ from the completions'. Keys of the config mapping name the components in logs; a
``"reward"`` entry picks the registered reward when the key is a custom label (e.g. two
``accuracy`` components with different options), and ``"timeout"`` overrides the per-item limit.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from r1jax.rewards.pool import Job, RewardPool
from r1jax.rewards.registry import get_reward


@dataclasses.dataclass(frozen=True)
class RewardSpec:
    """A named reward, its weight, its options and an optional per-item time limit (s)."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    key: str | None = None  # Log name; defaults to `name`.
    timeout: float | None = None

    @property
    def label(self) -> str:
        return self.key or self.name


@dataclasses.dataclass(frozen=True)
class RewardResult:
    """Scores of a batch: totals, per-component scores, and incident counts."""

    total: list[float]
    components: dict[str, list[float]]
    timeouts: int
    errors: int
    incidents: dict[str, int]

    def metrics(self) -> dict[str, float]:
        """Flat scalars for a logger: mean per component and total, incident counts."""
        n = max(len(self.total), 1)
        out = {f"reward/{k}": sum(v) / n for k, v in self.components.items()}
        out["reward/total"] = sum(self.total) / n
        out["reward/timeouts"] = float(self.timeouts)
        out["reward/errors"] = float(self.errors)
        out.update({f"reward/incidents/{k}": float(v) for k, v in self.incidents.items()})
        return out


def specs_from_config(config: Mapping[str, Mapping[str, Any]]) -> list[RewardSpec]:
    """``{key: {"weight": w, "reward": name?, "timeout": s?, **options}}`` to specs."""
    specs = []
    for key, entry in config.items():
        entry = dict(entry)
        name = entry.pop("reward", key)
        weight = float(entry.pop("weight", 1.0))
        timeout = entry.pop("timeout", None)
        specs.append(RewardSpec(name, weight, entry, key=key, timeout=timeout))
    return specs


class CompositeReward:
    """Weighted sum of rewards; also a plain batched reward function via `__call__`."""

    def __init__(
        self,
        specs: Sequence[RewardSpec],
        *,
        num_workers: int = 2,
        item_timeout: float = 10.0,
        floor: float = 0.0,
        chunk_size: int = 8,
        start_method: str = "forkserver",
    ):
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"CompositeReward: duplicate component names {labels}")
        self.specs = tuple(specs)
        self.functions = tuple(get_reward(s.name, **s.options) for s in specs)
        self.item_timeout = item_timeout
        self.floor = floor
        self._pool_args = dict(
            num_workers=num_workers, chunk_size=chunk_size, start_method=start_method
        )
        self._pool: RewardPool | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Mapping[str, Any]], **kwargs) -> CompositeReward:
        """Builds from a plain dict or ConfigDict-like mapping (see the module docstring)."""
        return cls(specs_from_config(config), **kwargs)

    @property
    def pool(self) -> RewardPool:
        if self._pool is None:
            self._pool = RewardPool(self.functions, **self._pool_args)
        return self._pool

    def evaluate(self, prompts: list[str], completions: list[str], **fields) -> RewardResult:
        """Scores every item with every component (see the module docstring)."""
        n = len(completions)
        for name, values in {"prompts": prompts, **fields}.items():
            if isinstance(values, str) or len(values) != n:
                raise ValueError(
                    f"CompositeReward: field {name!r} must be a list of {n} items (one per "
                    f"completion), got {type(values).__name__} of length {len(values)}"
                )
        jobs = [
            Job(
                component=j,
                prompt=prompts[i],
                completion=completions[i],
                fields={k: v[i] for k, v in fields.items()},
                timeout=spec.timeout or self.item_timeout,
            )
            for j, spec in enumerate(self.specs)
            for i in range(n)
        ]
        outcomes = self.pool.run(jobs)
        components: dict[str, list[float]] = {}
        counts: collections.Counter[str] = collections.Counter()
        for j, spec in enumerate(self.specs):
            scores, failed = [], self.failure_score(j)
            for outcome in outcomes[j * n : (j + 1) * n]:
                counts[outcome.status] += 1
                counts.update({f"{spec.label}/{k}": v for k, v in outcome.incidents.items()})
                scores.append(outcome.score if outcome.status == "ok" else failed)
            components[spec.label] = scores
        total = [
            sum(spec.weight * components[spec.label][i] for spec in self.specs) for i in range(n)
        ]
        incident_counts = {k: v for k, v in counts.items() if "/" in k}
        return RewardResult(total, components, counts["timeout"], counts["error"], incident_counts)

    def __call__(self, prompts: list[str], completions: list[str], **fields) -> list[float]:
        return self.evaluate(prompts, completions, **fields).total

    def failure_score(self, j: int) -> float:
        """Component ``j``'s score for an item that timed out or failed (module docstring)."""
        low, high = getattr(self.functions[j], "score_range", (self.floor, self.floor))
        return min(self.floor, low) if self.specs[j].weight >= 0 else max(self.floor, high)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def __enter__(self) -> CompositeReward:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_pool"] = None  # Workers are per process; a copy starts its own.
        return state
