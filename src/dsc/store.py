"""The sample store: chain-step records appended to JSONL as they are produced.

Guarantees:
- each batch of records is appended with one write, flushed and fsynced, so a kill loses at most the
  batch in flight; a torn last line (no newline, or not JSON) is detected, never parsed as data, and
  cut off before the next append;
- one writer at a time: ``lock()`` is a file lock that a second run on the same store waits on;
- records load as ChainStep or as a ``datasets.Dataset``.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from filelock import FileLock

from dsc.records import ChainStep


class SampleStore:
    """A folder of shard files ``samples.<shard>.jsonl``: each rank appends to its own shard (so ranks
    never contend), and ``load`` reads all of them (so any rank, or a rerun with another world size,
    sees every finished chain)."""

    def __init__(self, folder: str | Path, shard: int | str = 0):
        self.folder = Path(folder)
        self.shard = str(shard)
        self.path = self.folder / f"samples.{self.shard}.jsonl"

    @contextmanager
    def lock(self, timeout: float = -1):
        """Exclusive writer lock on this shard; a second writer (e.g. a parallel sweep job) waits."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.folder / f".lock.{self.shard}"), timeout=timeout):
            yield self

    def append(self, records: Iterable[ChainStep]) -> None:
        payload = "".join(record.to_json() + "\n" for record in records)
        if not payload:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, payload.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def load(self) -> list[ChainStep]:
        """Every complete record of every shard, first occurrence of each (prompt, chain, step) kept."""
        seen: dict[tuple, ChainStep] = {}
        for row in self.rows():
            record = ChainStep.from_dict(row)
            seen.setdefault(record.key, record)
        return list(seen.values())

    def shard_files(self) -> list[Path]:
        return sorted(self.folder.glob("samples.*.jsonl"))

    def rows(self) -> list[dict]:
        rows = []
        for path in self.shard_files():
            rows.extend(_read_rows(path))
        return rows

    def _drop_torn_tail(self) -> None:
        """Cut a torn last line (no newline, or not JSON) left by a killed writer. Reads only the tail:
        appends happen once per batch, and rereading a large shard each time would grow quadratically."""
        if not self.path.exists():
            return
        with open(self.path, "r+b") as handle:
            size = handle.seek(0, os.SEEK_END)
            start, last = _last_line(handle, size)
            if last.endswith(b"\n") and (not last.strip() or _is_json(last.strip())):
                return
            handle.truncate(start)

    def to_dataset(self):
        import datasets

        rows = self.rows()
        for row in rows:
            row["extra"] = json.dumps(row.get("extra", {}))
        return datasets.Dataset.from_list(rows)


def _read_rows(path: Path) -> list[dict]:
    rows = []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]  # a last line without its newline is torn, even if it parses
    for line in complete.split(b"\n"):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn tail from a killed writer; everything before it is intact
    return rows


def _last_line(handle, size: int, window: int = 1 << 16) -> tuple[int, bytes]:
    """(offset, bytes) of a file's last line, trailing newlines included; reads backwards in growing
    windows so a long record costs a few reads, not the whole file."""
    while True:
        begin = max(0, size - window)
        handle.seek(begin)
        tail = handle.read(size - begin)
        cut = tail.rstrip(b"\n").rfind(b"\n")
        if cut >= 0 or begin == 0:
            start = begin + cut + 1  # cut == -1 with begin == 0: the whole file is one line
            return start, tail[start - begin:]
        window *= 4


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False
