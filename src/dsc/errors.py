"""User-facing errors: one line that names the field, the value and the fix.

Raised for bad input anywhere (config, prompt files, endpoints, rewards); the entry point prints the
message alone, without a traceback, and exits with status 2. Anything already computed is on disk
before such an error can be raised (the sample store appends as it goes).
"""

import sys
from typing import NoReturn


class DscError(Exception):
    """A problem the user can fix; str(error) is the whole, single-line message."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


def fail(message: object) -> NoReturn:
    """What every command-line entry point does with a DscError: the message alone, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
