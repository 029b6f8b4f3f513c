"""Reading JSONL files that people write or edit: one JSON object a line, blank lines skipped, and a
bad line stops the run with one line naming the file, the line number and the fix.

(The sample store has its own reader: a torn last line there is a killed writer, not a user mistake.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dsc.errors import DscError


def read_objects(path: Path, where: str, fix: str = "write one JSON object per line") -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; ``where`` starts every error (e.g. the config field)."""
    with Path(path).open(encoding="utf-8-sig") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DscError(f"{where}: line {lineno} is not valid JSON: {e}; {fix}") from None
            if not isinstance(record, dict):
                raise DscError(f"{where}: line {lineno} is {type(record).__name__}, not a JSON object; {fix}")
            yield lineno, record


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Every object of a JSONL file a run wrote (samples.jsonl, eval/generations.jsonl); [] when absent."""
    path = Path(path)
    return [record for _, record in read_objects(path, str(path), fix="rerun the stage that writes it")] if path.exists() else []


def read_json(path: Path) -> Any:
    """A JSON file a run wrote (results.json, sampling_summary.json, …); None when absent."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else None
