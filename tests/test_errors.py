"""Bad input, clear errors: every case runs through the real entry point (`dsc.__main__.main`, in
process, or `python -m dsc` in a subprocess) and must end with exit status 2 and exactly one line
on stderr, ``error: <field>=<value> …; <fix>``, with no traceback. docs/errors.md is the table of
these cases; each row names the test that backs it.

Runtime cases (empty generations, a NaN or short reward, unreachable endpoints) use ``StubBackend``,
a model-free generation backend selected with ``sampler.backend._target_=tests.test_errors.StubBackend``,
so they exercise the real sampler, store and CLI in well under a second each.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dsc.backends.base import Generation
from dsc.errors import DscError

REPO = Path(__file__).resolve().parents[1]
STUB = "sampler.backend._target_=tests.test_errors.StubBackend"
UNREACHABLE = "http://127.0.0.1:9/v1"  # the discard port: nothing listens on loopback


# -- test doubles, importable by Hydra as tests.test_errors.<name> -------------------------------------

class StubBackend:
    """A generation backend without a model: the answer is derived from the seed. ``empty`` names a turn
    (proposal, critique or revision) whose answers all come back empty."""

    def __init__(self, model=None, max_batch_size=None, empty: str | None = None):
        self.model_id = "stub"
        self.empty = empty
        self.calls = 0

    def generate(self, chats, params, seeds):
        self.calls += 1
        out = []
        for chat, seed in zip(chats, seeds):
            turn = {1: "proposal", 3: "critique", 5: "revision"}.get(len(chat), "other")
            text = "" if turn == self.empty else f"{turn} {seed % 1000}: a good, kind and lovely answer"
            out.append(Generation(text=text, prompt_tokens=len(chat), completion_tokens=len(text.split())))
        return out

    def logprob(self, chats, completions, temperature: float = 1.0):
        return [-float(len(c)) for c in completions]


class FlakyReward:
    """A reward that misbehaves on purpose: NaN from its ``nan_on_call``-th call on, or one score too few."""

    def __init__(self, nan_on_call: int | None = None, short: bool = False, name: str = "flaky", **_):
        self.nan_on_call, self.short, self.name, self.calls = nan_on_call, short, name, 0

    def score(self, prompts, responses):
        self.calls += 1
        values = torch.tensor([float(len(r) % 7) for r in responses])
        if self.nan_on_call is not None and self.calls >= self.nan_on_call:
            values[-1] = float("nan")
        return values[:-1] if self.short else values

    def success(self, rewards):
        return rewards > 3


# -- the entry point ------------------------------------------------------------------------------------

def run_cli(args: list[str], tmp_path: Path, capsys, monkeypatch) -> str:
    """Run `python -m dsc <args>` in process; assert exit 2 and one error line; return the message."""
    from dsc.__main__ import main

    argv = ["dsc", *args, f"hydra.run.dir={tmp_path / 'run'}", f"samples_root={tmp_path / 'samples'}"]
    monkeypatch.setattr(sys, "argv", argv)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main()
    err = capsys.readouterr().err
    return _one_error_line(exit_.value.code, err)


def _one_error_line(code, err: str) -> str:
    assert code == 2, f"exit status {code}, stderr: {err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    lines = [line.strip() for line in re.split(r"[\r\n]+", err) if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1, err[-2000:]
    assert lines[-1] == errors[0], f"the error must be the last line: {lines[-3:]}"
    return errors[0][len("error: "):]


def _contains(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def store_lines(samples_root: Path) -> list[str]:
    files = sorted(samples_root.glob("*/samples.*.jsonl"))
    return [line for f in files for line in f.read_text().splitlines()]


# -- config errors, before any model loads --------------------------------------------------------------

CONFIG_CASES = {
    # name: (overrides, parts the message must contain: field=value, and the fix)
    "unknown_task": (["task=sentimint"], ["task=sentimint is not a known task", "choose one of: privacy, safety, sentiment"]),
    "unknown_reward": (["reward=vadr"], ["reward=vadr is not a known reward", "sentiment_vader"]),
    "unknown_acceptance": (["acceptance=mh"], ["acceptance=mh is not a known acceptance", "mh_exact", "metropolis"]),
    "unknown_divergence": (["divergence=kl"], ["divergence=kl is not a known divergence", "forward_kl"]),
    "unknown_logger": (["logger=wandbx"], ["logger=wandbx is not a known logger", "csv"]),
    "unknown_top_level_key": (["foo=1"], ["foo=1 is not a config key (at the top level)", "+foo=1"]),
    "unknown_nested_key": (["sampler.num_stepz=3"], ["sampler.num_stepz=3 is not a config key (under sampler)", "+sampler.num_stepz=3"]),
    "unparsable_override": (["sampler.num_steps=["], ["sampler.num_steps=[ could not be parsed", "key=value"]),
    "beta_not_a_number": (["beta=abc"], ["beta=abc must be a number", "e.g. beta=0.5"]),
    "beta_zero": (["beta=0"], ["beta=0 must be > 0", "e.g. beta=0.5"]),
    "beta_negative": (["beta=-1"], ["beta=-1 must be > 0"]),
    "num_steps_float": (["sampler.num_steps=1.5"], ["sampler.num_steps=1.5 must be an integer", "sampler.num_steps=2"]),
    "num_steps_negative": (["sampler.num_steps=-1"], ["sampler.num_steps=-1 must be >= 0", "sampler.num_steps=2"]),
    "num_chains_zero": (["sampler.num_chains=0"], ["sampler.num_chains=0 must be >= 1", "sampler.num_chains=4"]),
    "batch_size_text": (["sampler.batch_size=big"], ["sampler.batch_size=big must be an integer", "sampler.batch_size=32"]),
    "temperature_negative": (["sampler.proposal.temperature=-0.5"],
                             ["sampler.proposal.temperature=-0.5 must be >= 0", "sampler.proposal.temperature=0.8"]),
    "top_p_above_one": (["sampler.revision_params.top_p=1.5"],
                        ["sampler.revision_params.top_p=1.5 must be in (0, 1]", "sampler.revision_params.top_p=1.0"]),
    "max_new_tokens_zero": (["sampler.critique_params.max_new_tokens=0"],
                            ["sampler.critique_params.max_new_tokens=0 must be >= 1"]),
    "split_unknown": (["sampler.split=dev"], ["sampler.split=dev is not a split", "train, validation or test"]),
    "threads_zero": (["threads=0"], ["threads=0 must be >= 1", "threads=2"]),
    "seed_negative": (["seed=-3"], ["seed=-3 must be >= 0", "seed=0"]),
    "resume_not_bool": (["resume=maybe"], ["resume=maybe must be true or false"]),
    "stage_unknown": (["stage=foo"], ["stage=foo is not a stage", "sample, distill, evaluate, all"]),
    "gguf_missing": (["model.gguf=/nope.gguf"], ["model.gguf=/nope.gguf does not exist", "model=smollm2_135m"]),
    "model_folder_missing": (["model=hf", "model.path=/nope/model"], ["model.path=/nope/model does not exist"]),
    "model_path_unset": (["model=hf"], ["model.path has no value", "model.path=<value>"]),
    "backend_model_unset": (["sampler/backend=openai"], ["sampler.backend.model has no value", "sampler.backend.model=<value>"]),
    "dtype_unknown": (["model.dtype=fp8"], ["model.dtype=fp8 is not a dtype", "bfloat16"]),
    "cuda_on_cpu": (["model.device=cuda"], ["model.device=cuda but no CUDA device is visible", "model.device=cpu"]),
    "gpu_trainer_on_cpu": (["stage=distill", "trainer=gpu"],
                           ["trainer.accelerator=gpu but no CUDA device is visible", "use trainer=cpu"]),
    "vllm_on_cpu": (["sampler/backend=vllm"], ["(sampler/backend=vllm) needs a CUDA GPU", "use sampler/backend=hf"]),
    "mh_exact_top_p": (["acceptance=mh_exact", "sampler.critique_params.top_p=0.9"],
                       ["sampler.critique_params.top_p=0.9 but acceptance=mh_exact", "top_p=1.0"]),
    "mh_exact_openai": (["acceptance=mh_exact", "sampler/backend=openai", "sampler.backend.model=x"],
                        ["acceptance=mh_exact needs teacher-forced log-probs", "sampler/backend=hf"]),
    "max_steps_endless": (["stage=distill", "trainer.max_steps=-1"],
                          ["trainer.max_steps=-1 with trainer.max_epochs=-1 never stops", "trainer.max_steps=24"]),
    "backend_url_not_http": (["stage=sample", "sampler/backend=openai", "sampler.backend.model=x",
                              "sampler.backend.base_url=localhost:8000"],
                             ["sampler.backend.base_url=localhost:8000 is not an http(s) URL", "http://localhost:11434/v1"]),
}


GPU_CASES = {"cuda_on_cpu", "gpu_trainer_on_cpu", "vllm_on_cpu"}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_config_error(case, tmp_path, capsys, monkeypatch):
    if case in GPU_CASES and torch.cuda.is_available():
        pytest.skip("a CPU-machine error; this machine has a GPU")
    overrides, parts = CONFIG_CASES[case]
    stage = [] if any(o.startswith("stage=") for o in overrides) else ["stage=sample"]
    message = run_cli(stage + overrides, tmp_path, capsys, monkeypatch)
    _contains(message, *parts)
    assert not (tmp_path / "samples").exists(), "a config error must stop before sampling starts"


def test_secret_on_command_line_is_refused_and_not_echoed(tmp_path, capsys, monkeypatch):
    message = run_cli(["stage=sample", "reward=llm_judge", "reward.api_key=sk-live-123"], tmp_path, capsys, monkeypatch)
    _contains(message, "reward.api_key=<hidden>", "reward.api_key_env=<VAR>")
    assert "sk-live-123" not in message
    assert not (tmp_path / "run").exists(), "refused before Hydra writes .hydra/overrides.yaml"


# -- prompt files (read before the model loads) ---------------------------------------------------------

def _file_task(path) -> list[str]:
    return ["stage=sample", "task=privacy", "task.prompts._target_=dsc.prompts.FilePrompts", f"+task.prompts.path={path}"]


def test_prompt_file_empty(tmp_path, capsys, monkeypatch):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n")
    message = run_cli(_file_task(path), tmp_path, capsys, monkeypatch)
    _contains(message, f"task.prompts.path={path} has no prompts", "add records with a 'prompt' field")


def test_prompt_file_bad_json_line(tmp_path, capsys, monkeypatch):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "one"}\n{"prompt": "two",\n{"prompt": "three"}\n')
    message = run_cli(_file_task(path), tmp_path, capsys, monkeypatch)
    _contains(message, f"task.prompts.path={path}: line 2 is not valid JSON", "one JSON object per line")


def test_prompt_file_missing_text_field(tmp_path, capsys, monkeypatch):
    path = tmp_path / "fields.jsonl"
    path.write_text('{"question": "one"}\n')
    message = run_cli(_file_task(path), tmp_path, capsys, monkeypatch)
    _contains(message, "task.prompts.text_field='prompt' is not a field", "line 1 has fields ['question']",
              "set task.prompts.text_field")


def test_prompt_file_missing(tmp_path, capsys, monkeypatch):
    message = run_cli(_file_task(tmp_path / "nope.jsonl"), tmp_path, capsys, monkeypatch)
    _contains(message, f"task.prompts.path={tmp_path / 'nope.jsonl'} does not exist", "JSONL or CSV file")


# -- models, runs and endpoints ---------------------------------------------------------------------------

def test_hub_id_not_cached(tmp_path, capsys, monkeypatch):
    message = run_cli(["stage=sample", "model=hf", "model.path=nobody/no-such-model"], tmp_path, capsys, monkeypatch)
    _contains(message, "model.path=nobody/no-such-model could not be loaded", "hub id that is cached")


def test_evaluate_run_dir_without_config(tmp_path, capsys, monkeypatch):
    message = run_cli(["stage=evaluate", f"run_dir={tmp_path / 'empty'}"], tmp_path, capsys, monkeypatch)
    _contains(message, f"run_dir={tmp_path / 'empty'} has no config.yaml", "made by python -m dsc")


def test_evaluate_run_dir_without_samples(tmp_path, capsys, monkeypatch):
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text((REPO / "conf" / "eval" / "default.yaml").read_text())
    message = run_cli(["stage=evaluate", f"run_dir={old}"], tmp_path, capsys, monkeypatch)
    _contains(message, f"run_dir={old} has no samples and no adapter", "stage=all")


def test_unreachable_backend(tmp_path, capsys, monkeypatch):
    message = run_cli(["stage=sample", "debug=tiny", "sampler/backend=openai", "sampler.backend.model=x",
                       f"sampler.backend.base_url={UNREACHABLE}"], tmp_path, capsys, monkeypatch)
    _contains(message, f"sampler.backend.base_url={UNREACHABLE} is unreachable", "start the server")


def test_unreachable_judge(tmp_path, capsys, monkeypatch):
    message = run_cli(["stage=sample", "debug=tiny", STUB, "reward=llm_judge", f"reward.base_url={UNREACHABLE}"],
                      tmp_path, capsys, monkeypatch)
    _contains(message, f"reward.base_url={UNREACHABLE} is unreachable", "set reward.base_url")


# -- runtime errors: one line, and everything written before survives -------------------------------------

RUNTIME = ["stage=sample", "debug=tiny", STUB, "sampler.num_steps=2", "sampler.batch_size=4"]


def test_model_with_empty_outputs(tmp_path, capsys, monkeypatch):
    message = run_cli(RUNTIME + ["+sampler.backend.empty=revision"], tmp_path, capsys, monkeypatch)
    _contains(message, "sampler.revision_params.max_new_tokens=32: all 4 revisions at step 1 came back empty",
              "raise sampler.revision_params.max_new_tokens", "records written so far are kept")
    assert [json.loads(line)["step"] for line in store_lines(tmp_path / "samples")] == [0, 0, 0, 0]


def test_reward_nan_at_step_2(tmp_path, capsys, monkeypatch):
    message = run_cli(RUNTIME + ["reward._target_=tests.test_errors.FlakyReward", "+reward.nan_on_call=3"],
                      tmp_path, capsys, monkeypatch)
    _contains(message, "reward=flaky returned NaN/inf (revisions at step 2)", "records written so far are kept")
    steps = sorted(json.loads(line)["step"] for line in store_lines(tmp_path / "samples"))
    assert steps == [0] * 4 + [1] * 4


def test_reward_wrong_length(tmp_path, capsys, monkeypatch):
    message = run_cli(RUNTIME + ["reward._target_=tests.test_errors.FlakyReward", "+reward.short=true"],
                      tmp_path, capsys, monkeypatch)
    _contains(message, "reward=flaky returned 3 scores for 4 responses (proposals at step 0)", "one score per response")


def test_dpo_without_usable_pairs():
    from dsc.distill.examples import preference_pairs
    from dsc.records import ChainStep

    tied = [ChainStep(prompt_id="p", chain_id=0, step=0, prompt="c", response="x", reward_response=1.0, state="x",
                      reward_state=1.0),
            ChainStep(prompt_id="p", chain_id=0, step=1, prompt="c", response="x", reward_response=1.0, state="y",
                      reward_state=1.0, revision="y", reward_revision=1.0)]
    with pytest.raises(DscError) as error:
        preference_pairs(tied)
    _contains(str(error.value), "divergence=dpo has no usable pairs (divergence.pairs=final_vs_initial",
              "use divergence=forward_kl")


# -- the real process ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, part", [
    pytest.param(["foo=1"], "foo=1 is not a config key", id="hydra_struct_error"),
    pytest.param(["stage=sample", "debug=tiny", STUB, "+sampler.backend.empty=proposal"],
                 "sampler.proposal.max_new_tokens=32: all 4 proposals at step 0 came back empty", id="runtime_error",
                 marks=pytest.mark.slow),  # imports torch and transformers in a fresh process: ≈ 10 s
])
def test_subprocess_prints_one_line_and_exits_2(args, part, tmp_path):
    result = subprocess.run([sys.executable, "-m", "dsc", *args, f"hydra.run.dir={tmp_path / 'run'}",
                             f"samples_root={tmp_path / 'samples'}"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    _contains(_one_error_line(result.returncode, result.stderr), part)


def test_docs_table_names_real_tests():
    """docs/errors.md: at least 20 bad inputs, and every test it names exists (with its parameter id)."""
    import tests.test_reliability as reliability

    text = (REPO / "docs" / "errors.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| `") or line.startswith("| a ") or
            line.startswith("| empty") or line.startswith("| malformed") or line.startswith("| records") or
            line.startswith("| missing")]
    assert len(rows) >= 20
    named = re.findall(r"`(test_\w+)(?:\[(\w+)\])?`", text)
    assert len(named) >= len(rows)
    ids = set(CONFIG_CASES) | {"hydra_struct_error", "runtime_error"}
    for name, param in named:
        assert hasattr(sys.modules[__name__], name) or hasattr(reliability, name), name
        assert not param or param in ids, f"{name}[{param}]"
    for case in CONFIG_CASES:
        assert f"test_config_error[{case}]" in text, f"docs/errors.md has no row for {case}"
