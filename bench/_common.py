"""Shared bench setup: thread control (before torch is imported), machine description, medians, JSON.

Import this module before torch. ``OMP_WAIT_POLICY=PASSIVE`` is set unless the caller set it: on a CPU
shared with other processes, OpenMP workers that spin-wait between parallel regions made a 2-thread
bf16 GEMM 20× slower (6 vs 129 GFLOP/s, load average 9 on 2 cores); passive waiting keeps 2 threads at
least as fast as 1.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"


def set_threads(threads: int) -> int:
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable before the first parallel region
        pass
    return torch.get_num_threads()


def machine() -> dict:
    import torch

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from dsc.models import cpu_supports_bf16

    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "bf16": cpu_supports_bf16(), "torch": torch.__version__,
            "python": platform.python_version(), "torch_threads": torch.get_num_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "gpu": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None}


def load() -> list[float]:
    """1, 5 and 15-minute load averages (other processes share these cores)."""
    return [round(x, 2) for x in os.getloadavg()]


def median(values) -> float:
    return float(statistics.median(values))


class Timer:
    def __enter__(self):
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started


def write_json(name: str, payload: dict, out_dir: str | None = None) -> Path:
    folder = Path(out_dir) if out_dir else RESULTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def gemm_ceiling(batch: int, hidden: int, intermediate: int, params: int, dtype=None, repeats: int = 200) -> dict:
    """Tokens/s at the GEMM rate of a decode-shaped product (batch × hidden @ hidden × intermediate),
    2 × params FLOP per token: the compute ceiling of decoding this model on this machine."""
    import torch

    dtype = dtype or torch.bfloat16
    a = torch.randn(batch, hidden, dtype=dtype)
    w = torch.randn(hidden, intermediate, dtype=dtype)
    for _ in range(20):
        a @ w
    started = time.perf_counter()
    for _ in range(repeats):
        a @ w
    seconds = (time.perf_counter() - started) / repeats
    flops = 2 * batch * hidden * intermediate / seconds
    return {"gflops": flops / 1e9, "tokens_per_s": flops / (2 * params)}
