"""Errors the ``r1jax`` command reports in one line (no traceback): the user's to fix."""

from __future__ import annotations


class SetupError(RuntimeError):
    """This host lacks what the command needs (a compiler, a package): install it."""
