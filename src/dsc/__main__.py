"""`python -m dsc [overrides]`: the Hydra application.

Bad input exits with one line on stderr (``error: <field>=<value> …; <fix>``) and status 2: a
DscError from anywhere (also when Hydra's instantiate wraps it) and Hydra's own composition errors
(unknown key, unparsable override). HYDRA_FULL_ERROR=1 keeps Hydra's full report for the latter.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Idle OpenMP threads that spin-wait collapse a 2-thread bf16 GEMM when the cores are shared (bench/_common.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from dsc.environ import temporarily  # noqa: E402
from dsc.errors import DscError, fail  # noqa: E402
from dsc.paths import config_dir  # noqa: E402
from dsc.schema import check_group_overrides, dsc_cause, hydra_error_message  # noqa: E402


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="config")
def _main(cfg: DictConfig) -> None:
    from dsc.app import run

    try:
        run(cfg)
    except Exception as error:  # noqa: BLE001 - only a DscError (maybe wrapped by instantiate) is the user's
        cause = dsc_cause(error)
        if cause is None:
            raise
        fail(str(cause))


def main() -> None:
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    argv = sys.argv[1:]
    try:
        check_group_overrides(argv)
    except DscError as error:
        fail(str(error))
    # HYDRA_FULL_ERROR=1 lets composition errors reach us instead of a multi-line report
    with temporarily("HYDRA_FULL_ERROR", "1") as previous:
        try:
            _main()
        except (ConfigCompositionException, MissingConfigException, OverrideParseException) as error:
            if previous == "1":
                raise
            fail(hydra_error_message(error, argv))


if __name__ == "__main__":
    main()
