"""Per-step RL metrics of a rollout (SPEC section 8): pure host functions over NumPy and strings.

What the R1 paper plots during RL: reward per component, accuracy, response length, and the rate
of reflection words ("wait", "verify", "re-check": the "aha" signal). KL, entropy and the clip
fraction come from the loss (the train step's metrics) and are merged by the loop.

Names are flat ``"group/name"`` keys, ready for a JSONL or TensorBoard writer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

# Reflection phrases (the R1 paper's "aha" signal), each a case-insensitive whole-word pattern
# that also takes the usual inflections and spellings ("verified", "re-check", "recheck"), and
# their Chinese counterparts.
REFLECTION_PATTERNS = {
    "wait": r"\bwait\b",
    "let me check": r"\blet me (?:double[\s-]?)?check\b",
    "verify": r"\bverif(?:y|ies|ied|ying|ication)\b",
    "re-evaluate": r"\bre[\s-]?evaluat(?:e|es|ed|ing|ion)\b",
    "re-check": r"\bre[\s-]?check(?:s|ed|ing)?\b",
    # Chinese (no word boundaries): R1's own "aha" words in its Chinese traces.
    "等等": r"等等|等一下",
    "让我检查": r"让我(?:再)?(?:检查|验证|确认|核对)",
    "重新": r"重新(?:计算|检查|考虑|思考|审视|看)",
    "再想想": r"再想想|再想一下",
    "验证": r"验证一下|验算",
}
_REFLECTION_RE = re.compile("|".join(REFLECTION_PATTERNS.values()), flags=re.IGNORECASE)


def reflection_counts(completions: Sequence[str]) -> np.ndarray:
    """int32 [B]: reflection phrases in each completion ("Wait", "verified", "re-check", ...)."""
    return np.asarray([len(_REFLECTION_RE.findall(c)) for c in completions], np.int32)


def reflection_metrics(completions: Sequence[str]) -> dict[str, float]:
    """``reflection/per_completion`` (mean count) and ``reflection/rate`` (share with >= 1)."""
    return reflection_stats(reflection_counts(completions))


def reflection_stats(counts: np.ndarray) -> dict[str, float]:
    """``reflection_metrics`` from per-completion counts (e.g. gathered from all processes)."""
    counts = np.asarray(counts)
    if counts.size == 0:
        return {"reflection/per_completion": 0.0, "reflection/rate": 0.0}
    return {
        "reflection/per_completion": float(counts.mean()),
        "reflection/rate": float((counts > 0).mean()),
    }


def length_metrics(lengths_B: np.ndarray, finish_reason_B: np.ndarray) -> dict[str, float]:
    """Response length mean/max (tokens, stop token included) and the truncation rate.

    ``finish_reason_B``: str [B], "length" for a completion cut at ``max_new_tokens``.
    """
    lengths_B = np.asarray(lengths_B, np.float64)
    truncated = np.asarray(finish_reason_B) == "length"
    return {
        "response_length/mean": float(lengths_B.mean()) if lengths_B.size else 0.0,
        "response_length/max": float(lengths_B.max()) if lengths_B.size else 0.0,
        "truncation_rate": float(truncated.mean()) if truncated.size else 0.0,
    }


def reward_metrics(
    total_B: Sequence[float],
    components: Mapping[str, Sequence[float]],
    *,
    accuracy_key: str = "accuracy",
    format_key: str = "format",
) -> dict[str, float]:
    """Mean, std and max of the total reward, the mean of each component, accuracy and format
    rate (the share of completions whose component score is > 0.5; absent without the component).
    """
    total = np.asarray(total_B, np.float64)
    out = {
        "reward/total": float(total.mean()),
        "reward/std": float(total.std()),
        "reward/max": float(total.max()),
    }
    for name, values in components.items():
        out[f"reward/{name}"] = float(np.mean(values))
    for metric, key in (("accuracy", accuracy_key), ("format_rate", format_key)):
        if key in components:
            out[metric] = float(np.mean(np.asarray(components[key], np.float64) > 0.5))
    return out


def group_metrics(rewards_B: np.ndarray, group_size: int) -> dict[str, float]:
    """Share of groups whose G rewards are all equal (no learning signal) and mean group std."""
    r_QG = np.asarray(rewards_B, np.float64).reshape(-1, group_size)
    degenerate = r_QG.max(axis=1) == r_QG.min(axis=1)
    return {
        "groups/degenerate_rate": float(degenerate.mean()),
        "groups/reward_std": float(r_QG.std(axis=1).mean()),
    }


def loss_metrics(step_metrics: Mapping[str, float]) -> dict[str, float]:
    """The train step's metrics under ``train/``; KL, entropy and clip fraction also at the top
    level (the names the progress bar and the plots use)."""
    out = {f"train/{k}": float(v) for k, v in step_metrics.items()}
    for key in ("kl", "entropy", "clip_frac"):
        if key in step_metrics:
            out[key] = float(step_metrics[key])
    return out
