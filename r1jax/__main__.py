"""``python -m r1jax ...``: the ``r1jax`` command (same as the console script)."""

import sys

from r1jax.cli import main

sys.exit(main())
