"""The R1 paper's qualitative claims as the demo measures them, each with its margin.

    for claim in paper_claims(results, run_dir): print(claim.text, claim.figures, claim.holds)

``results`` are the recipe's stage results (an evaluation stage's summary: ``pass@1``,
``maj@k``, ``language_mixing``, ...); ``run_dir`` holds the GRPO stage's metrics. A claim whose
stages did not run is left out. The margins are the issue's: RL adds 15 points of pass@1,
majority voting 5 more, the distilled student beats the one trained by RL, the language reward
halves the mixing rate for at most 2 points of pass@1, top-k distillation matches SFT.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from r1jax.pipeline.report import read_metrics

EPS = 1e-9  # margins are compared up to float rounding (0.40 - 0.38 is 0.0200...02)


class Claim(NamedTuple):
    text: str
    figures: str
    holds: bool


def _pass1(results, stage) -> float:
    return float(results[stage]["pass@1"])


def _length_growth(run_dir: Path) -> tuple[float, float] | None:
    """Mean response length over the first and the last quarter of GRPO's steps."""
    rows = [
        r for r in read_metrics(run_dir / "grpo" / "metrics.jsonl") if "response_length/mean" in r
    ]
    if len(rows) < 4:
        return None
    lengths = np.asarray([r["response_length/mean"] for r in rows])
    quarter = len(lengths) // 4
    return float(lengths[:quarter].mean()), float(lengths[-quarter:].mean())


def paper_claims(results: dict, run_dir: Path) -> list[Claim]:
    """See the module docstring."""
    have = lambda *stages: all(s in results for s in stages)
    out = []
    if have("eval_base", "eval_grpo"):
        before, after = _pass1(results, "eval_base"), _pass1(results, "eval_grpo")
        out.append(Claim("RL raises pass@1 (>= +15 points)", f"{before:.3f} -> {after:.3f}",
                         after >= before + 0.15 - EPS))  # fmt: skip
        k = max(int(key[4:]) for key in results["eval_grpo"] if key.startswith("maj@"))
        maj = float(results["eval_grpo"][f"maj@{k}"])
        out.append(Claim(f"maj@{k} beats pass@1 (>= +5 points)", f"{after:.3f} -> {maj:.3f}",
                         maj >= after + 0.05 - EPS))  # fmt: skip
    growth = _length_growth(Path(run_dir))
    if growth is not None:
        first, last = growth
        out.append(Claim("response length grows during RL", f"{first:.1f} -> {last:.1f} tokens",
                         last > first))  # fmt: skip
    if have("eval_student", "eval_student_grpo"):
        distilled, rl = _pass1(results, "eval_student"), _pass1(results, "eval_student_grpo")
        out.append(Claim("distilling the reasoner beats RL on the small model",
                         f"{distilled:.3f} vs {rl:.3f}", distilled > rl))  # fmt: skip
    if have("eval_student", "eval_student_topk"):
        sft, topk = _pass1(results, "eval_student"), _pass1(results, "eval_student_topk")
        out.append(Claim("top-k distillation matches SFT on the traces",
                         f"{topk:.3f} vs {sft:.3f}", topk >= sft))  # fmt: skip
    if have("eval_mixed", "eval_consistent"):
        mixed, consistent = results["eval_mixed"], results["eval_consistent"]
        rate = float(mixed["language_mixing"]), float(consistent["language_mixing"])
        cost = _pass1(results, "eval_mixed") - _pass1(results, "eval_consistent")
        out.append(Claim(
            "the language reward halves language mixing (<= 2 points of pass@1)",
            f"mixing {rate[0]:.3f} -> {rate[1]:.3f}, pass@1 cost {cost * 100:+.1f} points",
            rate[1] <= rate[0] / 2 + EPS and cost <= 0.02 + EPS,
        ))  # fmt: skip
    return out


def claims_markdown(claims: list[Claim]) -> str:
    lines = ["| R1's claim | measured | holds |", "|---|---|---|"]
    lines += [f"| {c.text} | {c.figures} | {'yes' if c.holds else 'NO'} |" for c in claims]
    return "\n".join(lines)
