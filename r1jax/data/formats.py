"""Normalise public dataset formats into one record layout, with errors that name the field.

Normalised record (what the pipelines read)::

    prompt:     str            the question (untemplated)
    answer:     str | None     the reference final answer (required for RL)
    think:      str | None     a gold reasoning trace (SFT target: <think>think</think> ...)
    completion: str | None     a full target text (SFT); overrides think/answer when present
    messages:   list | None    chat turns before the target (``template="chat"``)
    _origin:    str            "file:line" of the input row
    ...                        other input fields pass through (level, subject, numbers, ...)

Preference pairs (``purpose="preference"``, format ``preference``: a reward model's data)::

    prompt:     str            the question (untemplated), non-empty
    chosen:     str            the preferred response, non-empty
    rejected:   str            the other response, non-empty and not equal to ``chosen``

Formats: ``gsm8k`` (``question``, ``answer`` ending ``#### N``), ``math`` (``problem``,
``solution`` with ``\\boxed{}``, optional ``answer`` as in MATH-500), ``prompt_answer``
(``prompt``, ``answer``, optional ``think``/``gold_cot``/``completion``), ``messages``
(``messages`` = [{role, content}], optional ``answer``), and ``auto`` (chosen per record by keys).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

from r1jax.data.errors import DataError
from r1jax.rewards.language import LANGUAGE_SCRIPTS

Purpose = Literal["rl", "sft", "preference"]
PURPOSES = ("rl", "sft", "preference")
FORMATS = ("auto", "gsm8k", "math", "prompt_answer", "messages", "preference")

_GSM8K_CALC = re.compile(r"<<[^<>]*>>")


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if none."""
    best = None
    for key in ("\\boxed", "\\fbox"):
        start = text.rfind(key + "{")
        if start > (best[0] if best else -1):
            best = (start, start + len(key))
    if best is None:
        return None
    depth, i = 0, best[1]
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None  # unbalanced


def _get(record: Mapping, key: str, origin: str, *, kind=str, required=True) -> Any:
    if key not in record or record[key] is None:
        if not required:
            return None
        raise DataError(f"missing (record has {sorted(record)})", origin=origin, field=key)
    value = record[key]
    if kind is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # JSON NaN / Infinity, a Parquet float column's NaN
            raise DataError(f"non-finite number {value!r}", origin=origin, field=key)
        return str(value)  # numeric answers in JSON are fine
    if not isinstance(value, kind):
        raise DataError(
            f"expected {kind.__name__}, got {type(value).__name__} {str(value)[:40]!r}",
            origin=origin,
            field=key,
        )
    return value


def _passthrough(record: Mapping, used: tuple[str, ...]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in used}


def _gsm8k(record: Mapping, origin: str, purpose: Purpose) -> dict[str, Any]:
    question = _get(record, "question", origin)
    solution = _get(record, "answer", origin)
    if "####" not in solution:
        raise DataError(
            "expected a GSM8K answer ending in '#### <number>'", origin=origin, field="answer"
        )
    rationale, final = solution.rsplit("####", 1)
    final = final.strip().replace(",", "")
    if not final:
        raise DataError("empty final answer after '####'", origin=origin, field="answer")
    think = _GSM8K_CALC.sub("", rationale).strip()
    rest = _passthrough(record, ("question", "answer"))
    return {**rest, "prompt": question, "answer": final, "think": think}


def _math(record: Mapping, origin: str, purpose: Purpose) -> dict[str, Any]:
    problem = _get(record, "problem", origin)
    solution = _get(record, "solution", origin)
    answer = _get(record, "answer", origin, required=False)
    if answer is None:
        answer = extract_boxed(solution)
        if answer is None:
            raise DataError("no balanced \\boxed{...} answer", origin=origin, field="solution")
    rest = _passthrough(record, ("problem", "solution", "answer"))
    return {**rest, "prompt": problem, "answer": answer, "think": solution.strip()}


def _prompt_answer(record: Mapping, origin: str, purpose: Purpose) -> dict[str, Any]:
    out = dict(record)
    out["prompt"] = _get(record, "prompt", origin)
    has_completion = record.get("completion") is not None
    out["answer"] = _get(record, "answer", origin, required=purpose == "rl" or not has_completion)
    think_key = "think" if record.get("think") is not None else "gold_cot"  # null: gold_cot
    out["think"] = _get(record, think_key, origin, required=False)
    out["completion"] = _get(record, "completion", origin, required=False)
    if purpose == "sft" and out["completion"] is None and out["think"] is None:
        raise DataError(
            "SFT needs 'think' (or 'gold_cot') or 'completion'", origin=origin, field="think"
        )
    return out


def _preference(record: Mapping, origin: str, purpose: Purpose) -> dict[str, Any]:
    if purpose != "preference":
        raise DataError(
            f"a preference pair (prompt/chosen/rejected) is not {purpose.upper()} data",
            origin=origin,
        )
    out = dict(record)
    for key in ("prompt", "chosen", "rejected"):
        out[key] = _get(record, key, origin)
        if not out[key].strip():
            raise DataError("empty text", origin=origin, field=key)
    if out["chosen"].strip() == out["rejected"].strip():
        raise DataError("the same text as 'chosen': no preference", origin=origin, field="rejected")
    return out


def _messages(record: Mapping, origin: str, purpose: Purpose) -> dict[str, Any]:
    turns = _get(record, "messages", origin, kind=list)
    if not turns:
        raise DataError("empty message list", origin=origin, field="messages")
    for k, turn in enumerate(turns):
        field = f"messages[{k}]"
        if not isinstance(turn, Mapping):
            raise DataError(
                f"expected an object, got {type(turn).__name__}", origin=origin, field=field
            )
        _get(turn, "role", origin + f" {field}")
        _get(turn, "content", origin + f" {field}")
    turns = [{"role": t["role"], "content": t["content"]} for t in turns]
    completion = None
    if turns[-1]["role"] == "assistant":
        completion = turns.pop()["content"]
    if purpose == "sft" and completion is None:
        raise DataError("SFT needs a final assistant turn", origin=origin, field="messages")
    users = [t["content"] for t in turns if t["role"] == "user"]
    if not users:
        raise DataError("no user turn", origin=origin, field="messages")
    answer = _get(record, "answer", origin, required=purpose == "rl")
    rest = _passthrough(record, ("messages", "answer"))
    return {
        **rest,
        "prompt": users[-1],
        "messages": turns,
        "completion": completion,
        "answer": answer,
    }


_NORMALIZERS: dict[str, Callable[[Mapping, str, Purpose], dict[str, Any]]] = {
    "gsm8k": _gsm8k,
    "math": _math,
    "prompt_answer": _prompt_answer,
    "messages": _messages,
    "preference": _preference,
}


def detect_format(record: Mapping) -> str | None:
    """The format a record's keys say it is in, or None."""
    if "chosen" in record or "rejected" in record:
        return "preference"
    if "messages" in record:
        return "messages"
    if "problem" in record and "solution" in record:
        return "math"
    if "question" in record and "answer" in record:
        return "gsm8k"
    if "prompt" in record:
        return "prompt_answer"
    return None


def normalize_record(
    record: Any,
    origin: str,
    *,
    fmt: str = "auto",
    purpose: Purpose = "rl",
    field_map: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """One raw row → the normalised layout above; raises :class:`DataError` naming the field.

    ``field_map`` renames input fields first (``{"query": "prompt", "label": "answer"}``).
    """
    if not isinstance(record, Mapping):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", origin=origin)
    if field_map:
        record = {field_map.get(k, k): v for k, v in record.items()}
    name = detect_format(record) if fmt == "auto" else fmt
    if purpose == "preference" and name != "preference":
        raise DataError(
            f"not a preference pair: expected prompt, chosen and rejected, got {sorted(record)}",
            origin=origin,
        )
    if name is None:
        raise DataError(
            f"cannot tell the format from fields {sorted(record)}; expected prompt/answer, "
            "question/answer (GSM8K), problem/solution (MATH) or messages",
            origin=origin,
        )
    if name not in _NORMALIZERS:
        raise ValueError(f"unknown format {fmt!r}; known: {FORMATS}")
    out = _NORMALIZERS[name](record, origin, purpose)
    if purpose == "rl" and out.get("answer") is not None and is_blank_answer(out["answer"]):
        raise DataError(
            f"empty gold answer {out['answer']!r}: no completion could ever earn its reward",
            origin=origin,
            field=field_map_inverse(field_map, "answer"),
        )
    language = out.get("language")
    if language is not None and language not in LANGUAGE_SCRIPTS:
        raise DataError(
            f"unknown language {language!r}; known: {sorted(LANGUAGE_SCRIPTS)}",
            origin=origin,
            field=field_map_inverse(field_map, "language"),
        )
    out["_origin"] = origin
    return out


_WRAPPER_RE = re.compile(r"^\\(?:boxed|fbox|text|textbf|mathrm)\s*\{(.*)\}$", re.DOTALL)


def is_blank_answer(answer: str) -> bool:
    """True for an answer with nothing in it: blank, ``$ $``, ``\\boxed{}``, ``\\text{ }``."""
    text = answer.strip().strip("$").strip()
    while (m := _WRAPPER_RE.match(text)) is not None:
        text = m.group(1).strip().strip("$").strip()
    return not text


def field_map_inverse(field_map: Mapping[str, str] | None, field: str) -> str:
    """The user's own name of a normalised ``field`` (``field_map`` renamed it), for errors."""
    for theirs, ours in (field_map or {}).items():
        if ours == field:
            return theirs
    return field
