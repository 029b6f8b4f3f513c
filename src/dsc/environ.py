"""Setting an environment variable for the length of a block, for libraries configured only by the
environment (Hydra's error reporting, W&B's staging folder)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def temporarily(name: str, value: str) -> Iterator[str | None]:
    """``name=value`` inside the block; afterwards the previous value (or its absence) is back. Yields the
    previous value."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield previous
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous
