"""Data errors that name the file, line and field, and the policy for bad records.

Every record read from disk carries an ``_origin`` string (``"path:line"`` for JSONL, ``"path:row"``
for Parquet, ``"task:<name>#<index>"`` for built-in tasks), so an error raised anywhere in the
pipeline (parsing, validation, tokenisation, length checks) points at the exact input row.
"""

from __future__ import annotations

from typing import Literal

OnError = Literal["raise", "skip"]
"""What to do with a malformed record: raise a :class:`DataError`, or skip it and count it."""

OnTooLong = Literal["raise", "skip", "truncate"]
"""What to do with an over-long example: raise, skip and count, or truncate (SFT only)."""


class DataError(ValueError):
    """A bad input record. ``str(err)`` reads ``"<file>:<line>: field '<f>': <what>"``."""

    def __init__(
        self,
        message: str,
        *,
        origin: str | None = None,
        field: str | None = None,
    ):
        self.origin = origin
        self.field = field
        self.reason = message
        parts = []
        if origin is not None:
            parts.append(origin)
        if field is not None:
            parts.append(f"field {field!r}")
        parts.append(message)
        super().__init__(": ".join(parts))


def origin_of(path: object, line: int) -> str:
    """``"path:line"`` with a 1-based line (or row) number, as editors and compilers print it."""
    return f"{path}:{line}"


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Validate a string option early, with the allowed values in the message."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
