"""The user's own prompts: a JSONL, JSON or CSV file (``FilePrompts``) or a 🤗 dataset (``HFDatasetPrompts``).

Features:
- ``text_field`` names the column holding the prompt; ``id_field`` a column of unique ids (else ids are
  ``<file stem>-<row>``, row counted from 0 over non-blank records);
- ``split_field``: when the data carries its own splits (train / validation / test; "val", "valid",
  "dev" mean validation), they are used as they are; otherwise splits are assigned by seed;
- ``group_field``: rows sharing its value share a split (default: rows with the same text do);
- every problem is one line naming the field, the value and where it is (line or row number).

A file written by ``dsc.prompts.save_prompts`` reads back with
``text_field=text, id_field=id, split_field=split``.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dsc.errors import DscError
from dsc.jsonl import read_objects
from dsc.prompts.base import Item, with_splits
from dsc.prompts.splits import DEFAULT_FRACTIONS, SPLITS, check_fractions
from dsc.records import Prompt

log = logging.getLogger(__name__)

FIELD = "task.prompts"
"""Where prompt-source arguments live in the config; error messages name fields under it."""

_SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                  "valid": "validation", "dev": "validation", "test": "test", "testing": "test"}
_READERS = (".jsonl", ".ndjson", ".json", ".csv", ".tsv")

Row = tuple[str, dict[str, Any]]
"""(where, record): where is 'line 3' or 'row 3', for messages."""


def _read_jsonl(path: Path) -> list[Row]:
    return [(f"line {lineno}", record) for lineno, record in read_objects(path, f"{FIELD}.path={path}")]


def _read_json(path: Path) -> list[Row]:
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        return []
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise DscError(f"{FIELD}.path={path}: line {e.lineno} is not valid JSON: {e.msg}; "
                       "give a JSON list of objects, or JSONL with one object per line") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise DscError(f"{FIELD}.path={path} must hold a JSON list of objects; or use JSONL, one object per line")
    return [(f"item {i + 1}", r) for i, r in enumerate(records)]


def _read_csv(path: Path) -> list[Row]:
    rows = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        start = 2  # line 1 is the header
        try:
            for record in reader:
                if any((v or "").strip() for k, v in record.items() if k is not None):
                    rows.append((f"line {start}", {k: v for k, v in record.items() if k is not None}))
                start = reader.line_num + 1
        except csv.Error as e:
            raise DscError(f"{FIELD}.path={path}: line {reader.line_num} is not valid CSV: {e}") from None
    return rows


def read_rows(path: str | Path) -> list[Row]:
    """The records of a JSONL / JSON / CSV / TSV file, chosen by extension."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DscError(f"{FIELD}.path={path} does not exist; point it at a JSONL or CSV file")
    if p.is_dir():
        raise DscError(f"{FIELD}.path={path} is a folder; point it at a JSONL or CSV file "
                       "(a dataset folder loads with dsc.prompts.HFDatasetPrompts)")
    ext = p.suffix.lower()
    if ext not in _READERS:
        raise DscError(f"{FIELD}.path={path} has the unsupported extension {ext or '(none)'!r}; "
                       f"use one of {', '.join(_READERS)}")
    if ext in (".jsonl", ".ndjson"):
        return _read_jsonl(p)
    if ext == ".json":
        return _read_json(p)
    return _read_csv(p)


def rows_to_prompts(rows: Sequence[Row], source: str, id_prefix: str, text_field: str, id_field: str | None,
                    split_field: str | None, group_field: str | None, seed: int,
                    fractions: Sequence[float]) -> list[Prompt]:
    """Turn records into prompts: check fields, build ids, use or assign splits."""
    if not rows:
        raise DscError(f"{FIELD}.path={source} has no prompts (no records in it); "
                       f"add records with a {text_field!r} field")
    items, seen_ids, own_splits = [], {}, []
    uses_split = split_field is not None and any(split_field in r for _, r in rows)
    for i, (where, record) in enumerate(rows):
        if text_field not in record:
            raise DscError(f"{FIELD}.text_field={text_field!r} is not a field of {source} ({where} has fields "
                           f"{sorted(record)}); set {FIELD}.text_field to the field holding the prompt")
        text = record[text_field]
        if not isinstance(text, str) or not text.strip():
            raise DscError(f"{FIELD}.text_field={text_field!r} is empty or not text at {source} {where} "
                           f"(value {text!r}); give every record a non-empty prompt")
        if id_field is None:
            pid = f"{id_prefix}-{i:05d}"
        else:
            if id_field not in record or record[id_field] in (None, ""):
                raise DscError(f"{FIELD}.id_field={id_field!r} is missing or empty at {source} {where} "
                               f"(fields {sorted(record)}); give every record an id or set {FIELD}.id_field=null")
            pid = str(record[id_field])
            if pid in seen_ids:
                raise DscError(f"{FIELD}.id_field={id_field!r}: id {pid!r} appears at {source} {seen_ids[pid]} "
                               f"and {where}; ids must be unique")
        seen_ids[pid] = where
        if uses_split:
            value = record.get(split_field)  # type: ignore[arg-type]
            split = _SPLIT_ALIASES.get(str(value).strip().lower()) if value is not None else None
            if split is None:
                raise DscError(f"{FIELD}.split_field={split_field!r} is {value!r} at {source} {where}; "
                               f"use one of {', '.join(SPLITS)} in every record, or set {FIELD}.split_field=null")
            own_splits.append(split)
        if group_field is not None and group_field not in record:
            raise DscError(f"{FIELD}.group_field={group_field!r} is missing at {source} {where} "
                           f"(fields {sorted(record)}); set it to a field every record has, or null")
        group = text if group_field is None else json.dumps(record[group_field], sort_keys=True, default=str)
        other = {k: v for k, v in record.items() if k != text_field}
        items.append(Item(id=pid, text=text, group=group, meta={"source": source, "where": where, "fields": other}))
    if split_field is not None and not uses_split:
        log.warning("%s.split_field=%r is not a field of %s; assigning splits by seed instead", FIELD, split_field, source)
    prompts = with_splits(items, seed, fractions)
    if uses_split:
        for p, split in zip(prompts, own_splits):
            p.split = split
    return prompts


class FilePrompts:
    """Prompts from a JSONL (one object a line), JSON (a list of objects), CSV or TSV file."""

    def __init__(self, path: str, text_field: str = "prompt", id_field: str | None = None, seed: int = 0,
                 fractions: Sequence[float] = DEFAULT_FRACTIONS, split_field: str | None = None,
                 group_field: str | None = None):
        self.path = str(path)
        self.text_field, self.id_field = text_field, id_field
        self.split_field, self.group_field = split_field, group_field
        self.seed = int(seed)
        self.fractions = check_fractions(fractions)

    def load(self) -> list[Prompt]:
        rows = read_rows(self.path)
        return rows_to_prompts(rows, self.path, Path(self.path).stem, self.text_field, self.id_field,
                               self.split_field, self.group_field, self.seed, self.fractions)


class HFDatasetPrompts:
    """Prompts from a 🤗 dataset: a hub id, a local folder of data files, or a ``save_to_disk`` folder.

    ``split`` is the dataset's split to read (all of whose rows become prompts); dsc's own
    train/validation/test come from ``split_field`` or the seed as for files.
    """

    def __init__(self, path: str, name: str | None = None, split: str = "train", text_field: str = "prompt",
                 id_field: str | None = None, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS,
                 split_field: str | None = None, group_field: str | None = None, cache_dir: str | None = None):
        self.path, self.name, self.split = str(path), name, split
        self.text_field, self.id_field = text_field, id_field
        self.split_field, self.group_field = split_field, group_field
        self.seed = int(seed)
        self.fractions = check_fractions(fractions)
        self.cache_dir = cache_dir

    def _dataset(self) -> Any:
        import datasets

        local = Path(self.path).expanduser()
        if not local.exists() and self.path.startswith(("/", ".", "~")):
            raise DscError(f"{FIELD}.path={self.path} does not exist; point it at a dataset folder or a hub id")
        try:
            if local.is_dir() and ((local / "state.json").is_file() or (local / "dataset_dict.json").is_file()):
                ds = datasets.load_from_disk(str(local))
            else:
                ds = datasets.load_dataset(self.path, self.name, split=self.split, cache_dir=self.cache_dir)
        except Exception as e:  # datasets raises many types; the user needs the reason, on one line
            reason = (str(e).strip().splitlines() or [""])[0]
            raise DscError(f"{FIELD}.path={self.path} could not be loaded with datasets ({type(e).__name__}: "
                           f"{reason}); point it at a local dataset folder or a hub id you can reach") from None
        if isinstance(ds, datasets.DatasetDict):
            if self.split not in ds:
                raise DscError(f"{FIELD}.split={self.split!r} is not a split of {self.path}; it has {list(ds)}")
            ds = ds[self.split]
        return ds

    def load(self) -> list[Prompt]:
        ds = self._dataset()
        if self.text_field not in ds.column_names:
            raise DscError(f"{FIELD}.text_field={self.text_field!r} is not a column of {self.path} "
                           f"(columns {ds.column_names}); set {FIELD}.text_field to the column holding the prompt")
        rows = [(f"row {i}", dict(r)) for i, r in enumerate(ds)]
        prefix = Path(self.path.rstrip("/")).name or "dataset"
        return rows_to_prompts(rows, self.path, prefix, self.text_field, self.id_field,
                               self.split_field, self.group_field, self.seed, self.fractions)
