"""The demo's claim checks: each margin as the issue states it, on synthetic stage results."""

import json

from r1jax.pipeline.claims import claims_markdown, paper_claims


def _results(**pass1):
    out = {stage: {"pass@1": value, "maj@8": value} for stage, value in pass1.items()}
    return out


def test_margins(tmp_path):
    (tmp_path / "grpo").mkdir()
    lengths = [10, 10, 11, 11, 12, 13, 14, 15]
    (tmp_path / "grpo" / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": i, "response_length/mean": n}) + "\n" for i, n in enumerate(lengths)
        )
    )
    results = _results(eval_base=0.30, eval_grpo=0.45, eval_student=0.25, eval_student_grpo=0.05,
                       eval_student_topk=0.25, eval_mixed=0.40, eval_consistent=0.38)  # fmt: skip
    results["eval_grpo"]["maj@8"] = 0.50
    results["eval_mixed"]["language_mixing"] = 0.4
    results["eval_consistent"]["language_mixing"] = 0.2
    claims = {c.text.split(" (")[0]: c for c in paper_claims(results, tmp_path)}
    assert all(c.holds for c in claims.values()), claims
    assert claims["response length grows during RL"].figures == "10.0 -> 14.5 tokens"
    results["eval_grpo"] |= {"pass@1": 0.449, "maj@8": 0.498}  # +14.9 and +4.9 points
    results["eval_consistent"] |= {"pass@1": 0.379, "language_mixing": 0.201}
    results["eval_student_topk"]["pass@1"] = 0.249
    failing = [c.text for c in paper_claims(results, tmp_path) if not c.holds]
    assert len(failing) == 4, failing
    assert "| NO |" in claims_markdown(paper_claims(results, tmp_path))
    assert paper_claims({}, tmp_path / "nothing") == []
