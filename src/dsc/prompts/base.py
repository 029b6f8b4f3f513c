"""What every prompt source is: constructor arguments from the config, and ``load()``.

A source returns ALL prompts of its set, each with a fixed split; the same arguments (seed and
fractions included) give the same prompts, ids and splits on every machine. Runs pick their prompts
from the result with ``dsc.prompts.select``.
"""

from __future__ import annotations

import string
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from dsc.errors import DscError
from dsc.prompts.splits import assign_splits
from dsc.records import Prompt


@runtime_checkable
class PromptSource(Protocol):
    """Anything with ``load() -> list[Prompt]``."""

    def load(self) -> list[Prompt]: ...


@dataclass
class Item:
    """A prompt before its split is known."""

    id: str
    """Stable, unique id."""
    text: str
    """The user message."""
    group: Hashable
    """Items sharing a group always share a split (a title, a topic, or the text itself)."""
    meta: dict[str, Any] = field(default_factory=dict)
    """Provenance, copied to ``Prompt.meta``."""


def with_splits(items: Sequence[Item], seed: int, fractions: Sequence[float]) -> list[Prompt]:
    """Give each item its group's split and return the prompts, in the items' order."""
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        dupes = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"dsc: prompt ids are not unique: {dupes}")
    splits = assign_splits([it.group for it in items], seed=seed, fractions=fractions)
    return [Prompt(id=it.id, text=it.text, split=s, meta=dict(it.meta)) for it, s in zip(items, splits)]


def check_templates(templates: Sequence[str], required: str, allowed: Sequence[str],
                    field: str = "task.prompts.templates") -> list[str]:
    """Validate request phrasings: each uses ``{required}`` and no placeholder outside ``allowed``."""
    names = ", ".join("{" + a + "}" for a in allowed)
    if isinstance(templates, str) or not templates:
        raise DscError(f"{field}={templates!r} must be a non-empty list of phrasings using {names}")
    out = []
    for i, template in enumerate(templates):
        template = str(template)
        try:
            used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as e:
            raise DscError(f"{field}[{i}]={template!r} is not a valid format string ({e}); use {names} as placeholders") from None
        if required not in used or used - set(allowed):
            raise DscError(f"{field}[{i}]={template!r} must use {{{required}}} and only {names} as placeholders")
        out.append(template)
    return out
