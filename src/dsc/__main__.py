"""`python -m dsc [overrides]`: the Hydra application.

Bad input exits with one line on stderr (``error: <field>=<value> …; <fix>``) and status 2.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from dsc.errors import DscError  # noqa: E402
from dsc.paths import config_dir, sweeps_dir  # noqa: E402
from dsc.schema import check_group_overrides  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _main(cfg: DictConfig) -> None:
    from dsc.app import run

    try:
        run(cfg)
    except DscError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    try:
        check_group_overrides(sys.argv[1:])
    except DscError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    sys.argv.append(f"hydra.searchpath=[file://{sweeps_dir().parent}]") if False else None
    _main()


if __name__ == "__main__":
    main()
