"""Hydra plugin of dsc: the config group ``sweep`` is the folder ``sweeps/`` (``dsc.paths.sweeps_dir()``).

``python -m dsc -m +sweep=divergences`` loads ``sweeps/divergences.yaml`` whether dsc is installed
editable (the repository's top-level ``sweeps/``) or from a wheel (``dsc/sweeps``). Hydra finds this
module because it lives in the ``hydra_plugins`` namespace package; it adds the group only to apps
whose primary config folder is dsc's. ``sweeps/wandb/`` (W&B sweep files) is not part of the group.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from hydra.core.config_search_path import ConfigSearchPath
from hydra.core.object_type import ObjectType
from hydra.plugins.config_source import ConfigLoadError, ConfigResult, ConfigSource
from hydra.plugins.search_path_plugin import SearchPathPlugin
from omegaconf import OmegaConf

GROUP = "sweep"


def _folder() -> Path | None:
    from dsc.paths import sweeps_dir

    try:
        return sweeps_dir()
    except FileNotFoundError:
        return None


class DscSweepsConfigSource(ConfigSource):
    """Serves ``sweep/<name>`` from ``sweeps/<name>.yaml``; nothing else."""

    @staticmethod
    def scheme() -> str:
        return "dsc-sweeps"

    def _file(self, config_path: str) -> Path | None:
        group, _, name = config_path.strip("/").partition("/")
        folder = _folder()
        if group != GROUP or not name or "/" in name or folder is None:
            return None
        path = folder / self._normalize_file_name(name)
        return path if path.is_file() else None

    def available(self) -> bool:
        return _folder() is not None

    def is_group(self, config_path: str) -> bool:
        return config_path.strip("/") in ("", GROUP) and self.available()

    def is_config(self, config_path: str) -> bool:
        return self._file(config_path) is not None

    def load_config(self, config_path: str) -> ConfigResult:
        path = self._file(config_path)
        if path is None:
            raise ConfigLoadError(f"Config not found : {config_path}")
        text = path.read_text(encoding="utf-8")
        return ConfigResult(config=OmegaConf.create(text), path=f"file://{path.parent}",
                            provider=self.provider, header=self._get_header_dict(text[:512]))

    def list(self, config_path: str, results_filter: Optional[ObjectType]) -> List[str]:
        where = config_path.strip("/")
        folder = _folder()
        if folder is None:
            return []
        if where == "" and results_filter in (None, ObjectType.GROUP):
            return [GROUP]
        if where == GROUP and results_filter in (None, ObjectType.CONFIG):
            return sorted(p.stem for p in folder.glob("*.yaml"))
        return []


class DscSweepsSearchPathPlugin(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        from dsc.paths import config_dir

        ours = {f"file://{config_dir()}", str(config_dir())}
        if any(element.path in ours for element in search_path.get_path()):
            search_path.append(provider="dsc", path="dsc-sweeps://sweeps")
