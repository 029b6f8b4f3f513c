"""Experiment tracking: Weights & Biases through Lightning's WandbLogger, safe without network.

Features and guarantees:
- ``logger=wandb`` builds :class:`WandbLogger`; its files go to ``<run_dir>/wandb``. ``mode: offline``
  (the default) touches no network (system-metric probes are off) and ``wandb sync`` uploads the run
  later; ``run_dir/wandb_run.json`` records the run id, group and the exact sync command.
- ``mode: online`` first checks that the W&B host answers (``probe_timeout`` s, DNS included) and
  bounds ``wandb.init`` (``init_timeout`` s). Unreachable host, missing key or a failed init: the run
  continues offline and says so in one line. A run never hangs or fails because W&B is unreachable.
- A bad ``logger.mode`` is a one-line DscError when the logger is built (before any model loads).
- In a multirun, runs are grouped by sweep (``group`` = ``<date>_<time>_<sweep name>`` from the multirun
  folder), typed by stage (``job_type``) and named by their overrides, so the W&B UI compares ablations.
- The ``log_*`` functions take any Lightning logger or None: W&B gets metrics, tables (chains, per-step
  sampling, evaluation generations) and artifacts (sample store, LoRA adapter); CSV gets the scalar
  metrics (appended across resumes and re-evaluations: :class:`AppendingCSVLogger`); None and ranks
  other than 0 do nothing.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter as _CSVWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from dsc.environ import temporarily
from dsc.errors import DscError
from dsc.jsonl import read_json, read_rows
from dsc.summary import per_step

MODES = ("offline", "online", "disabled")
_NOT_IN_NAMES = {"sweep", "samples_root", "run_dir", "threads", "logger", "hydra", "resume"}  # noise in run names


class AppendingCSVLogger(_LightningCSVLogger):
    """Lightning's CSVLogger deletes an existing ``metrics.csv`` when it starts, so a resumed fit or a
    ``stage=evaluate`` rerun in the same run_dir would erase the curves of the run it continues. This one
    appends to it. After a resumed fit the steps between the last checkpoint and the kill appear twice;
    the later row is the one the finished run computed."""

    @property
    @rank_zero_experiment
    def experiment(self) -> _CSVWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingCSVWriter(log_dir=self.log_dir)
        return self._experiment


class _AppendingCSVWriter(_CSVWriter):
    def _check_log_dir_exists(self) -> None:
        """Adopt the existing file's header (its column order) instead of deleting the file."""
        if self._fs.isfile(self.metrics_file_path):
            import csv

            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                self.metrics_keys = next(csv.reader(handle), [])


def check_mode(mode: Any) -> str:
    if mode not in MODES:
        raise DscError(f"logger.mode={mode} is not a W&B mode; use one of: {', '.join(MODES)} (e.g. logger.mode=offline)")
    return mode


def sweep_identity() -> tuple[str | None, str | None]:
    """(group, run name) of this Hydra multirun job, or (None, None) outside a multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except (ImportError, ValueError):
        return None, None
    if hc.mode != RunMode.MULTIRUN:
        return None, None
    folder = Path(hc.runtime.output_dir).parent
    sweep = hc.runtime.choices.get("sweep") or "multirun"
    label = folder.name if folder.name.endswith(sweep) else f"{folder.name}_{sweep}"
    overrides = [o for o in hc.overrides.task if o.lstrip("+~").split("=")[0].split(".")[0] not in _NOT_IN_NAMES]
    return f"{folder.parent.name}_{label}", ",".join(overrides) or f"job{hc.job.num}"


def _hydra_tags() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
    except (ImportError, ValueError):
        return []
    return [f"{g}={choices[g]}" for g in ("acceptance", "divergence", "sweep") if choices.get(g)]


def probe(url: str, timeout: float) -> str | None:
    """None if ``url`` answers HTTP within ``timeout`` seconds (any status), else the reason."""
    outcome: list[str | None] = []

    def attempt() -> None:
        try:
            urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=timeout).close()
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # it answered
        except Exception as error:  # noqa: BLE001 — any failure means "not reachable"
            outcome.append(f"{type(error).__name__}: {getattr(error, 'reason', error)}")

    thread = threading.Thread(target=attempt, daemon=True)
    thread.start()
    thread.join(timeout)
    return outcome[0] if outcome else f"no answer within {timeout:g} s"


class WandbLogger(_LightningWandbLogger):
    """Lightning's WandbLogger, offline by default, falling back to offline when online W&B fails."""

    def __init__(self, mode: str = "offline", project: str = "dsc", group: str | None = None,
                 job_type: str | None = None, name: str | None = None, tags: Iterable[str] = (),
                 save_dir: str = ".", probe_timeout: float = 5.0, init_timeout: float = 30.0,
                 log_artifacts: bool = True, table_rows: int = 1000, **kwargs: Any):
        check_mode(mode)
        sweep_group, sweep_name = sweep_identity()
        save_dir = str(Path(save_dir).resolve())
        Path(save_dir).mkdir(parents=True, exist_ok=True)
        self.probe_timeout, self.init_timeout = float(probe_timeout), float(init_timeout)
        self.log_artifacts, self.table_rows = bool(log_artifacts), int(table_rows)
        super().__init__(name=name or sweep_name, save_dir=str(save_dir), project=project,
                         group=group or sweep_group, job_type=job_type, mode=mode,
                         tags=sorted({str(t) for t in tags} | set(_hydra_tags())), **kwargs)
        self._wandb_init["settings"] = self._settings(mode)
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)  # deprecated in wandb; passing None only warns

    def _settings(self, mode: str):
        import wandb

        if mode == "online":
            return wandb.Settings(init_timeout=self.init_timeout, login_timeout=self.init_timeout)
        # offline: no system-metric sampling and no cloud-metadata lookups, i.e. no network at all
        return wandb.Settings(x_disable_stats=True, x_disable_machine_info=True)

    def _go_offline(self, reason: str) -> None:
        self._wandb_init.update(mode="offline", settings=self._settings("offline"))
        folder = Path(self.save_dir or ".") / "wandb"
        print(f"wandb: online logging unavailable ({' '.join(reason.split())}); logging offline to {folder}; "
              f"upload later with: wandb sync {folder}/offline-run-*", file=sys.stderr, flush=True)

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._experiment is None and self._wandb_init.get("mode") == "online":
            import wandb

            base_url = os.environ.get("WANDB_BASE_URL") or wandb.Settings().base_url
            reason = probe(base_url, self.probe_timeout)
            if reason is None:
                try:
                    return self._started(super().experiment)
                except Exception as error:  # noqa: BLE001 — W&B failing must not fail the run
                    reason = f"wandb.init failed: {error}"
                    self._experiment = None
            else:
                reason = f"{base_url} unreachable: {reason}"
            self._go_offline(reason)
        started = self._experiment is None
        run = super().experiment
        return self._started(run) if started else run

    def _started(self, run):
        if self.save_dir and hasattr(run, "id") and getattr(run, "dir", None):
            local = Path(run.dir).parent
            (Path(self.save_dir) / "wandb_run.json").write_text(json.dumps({
                "id": run.id, "project": run.project, "group": run.group, "job_type": run.job_type,
                "name": run.name, "mode": self._wandb_init.get("mode"), "local_dir": str(local),
                "sync": f"wandb sync {local}"}, indent=2))
        return run


# ── logging helpers: any logger (W&B, CSV) or None ───────────────────────────────────────────────

def _wandb_run(logger):
    if (isinstance(logger, _LightningWandbLogger) and rank_zero_only.rank == 0
            and logger._wandb_init.get("mode") != "disabled"):
        return logger.experiment
    return None


@contextmanager
def _staging_in_run_folder(logger):
    """Artifact and table files are staged (copied) under <save_dir>/wandb/artifacts, not ~/.local/share."""
    with temporarily("WANDB_DATA_DIR", str(Path(logger.save_dir) / "wandb")):
        yield


def flatten(tree: Any, prefix: str) -> dict[str, float]:
    """Numeric leaves of nested dicts as {'a/b/c': value} (strings and booleans dropped)."""
    if isinstance(tree, dict):
        out: dict[str, float] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}/{key}"))
        return out
    if isinstance(tree, (int, float)) and not isinstance(tree, bool):
        return {prefix: float(tree)}
    return {}


def _log_scalars(logger, metrics: dict[str, float]) -> None:
    if logger is None or not metrics or rank_zero_only.rank != 0:
        return
    logger.log_metrics(metrics)
    logger.save()


def log_config(logger, cfg: DictConfig) -> None:
    """The resolved config (W&B: run config; CSV: hparams.yaml). Starts the W&B run (and its fallback)."""
    if logger is not None and rank_zero_only.rank == 0:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
        _wandb_run(logger)


def sampling_metrics(summary: dict) -> dict[str, float]:
    """Scalars of a sampling summary: per-step acceptance and reward, x₀ vs final reward, tokens, tokens/s."""
    out = {f"sampling/{k}": float(summary[k]) for k in (
        "prompts", "chains", "records", "num_steps", "mean_reward_initial", "mean_reward_final",
        "completion_tokens", "prompt_tokens", "seconds", "tokens_per_second") if k in summary}
    for name, series in (("acceptance_rate", "acceptance_rate_per_step"), ("revision_better_rate",
                         "revision_better_rate_per_step"), ("mean_reward", "mean_reward_per_step")):
        for step, value in summary.get(series, {}).items():
            out[f"sampling/{name}/step_{step}"] = float(value)
    rates = list(summary.get("acceptance_rate_per_step", {}).values())
    if rates:
        out["sampling/acceptance_rate"] = sum(rates) / len(rates)
    if "mean_reward_initial" in summary and "mean_reward_final" in summary:
        out["sampling/reward_gain"] = summary["mean_reward_final"] - summary["mean_reward_initial"]
    return out


def chain_rows(records: list[dict]) -> tuple[list[str], list[list]]:
    """One row per chain step (columns, rows): prompt, x₀, critique, revision, rewards, accepted."""
    x0 = {(r["prompt_id"], r["chain_id"]): r["response"] for r in records if r["step"] == 0}
    columns = ["prompt_id", "chain_id", "step", "prompt", "x0", "response", "critique", "revision",
               "reward_response", "reward_revision", "alpha", "accepted", "state", "reward_state"]
    rows = [[r["prompt_id"], r["chain_id"], r["step"], r["prompt"], x0.get((r["prompt_id"], r["chain_id"])),
             r["response"], r.get("critique"), r.get("revision"), r["reward_response"], r.get("reward_revision"),
             r.get("alpha"), r.get("accepted"), r["state"], r["reward_state"]] for r in records]
    return columns, rows


def log_sampling(logger, run_dir: Path, summary: dict | None) -> None:
    """Sampling metrics; on W&B also the per-step table and charts, the chain table and the store artifact."""
    if not summary or logger is None:
        return
    _log_scalars(logger, sampling_metrics(summary))
    run = _wandb_run(logger)
    if run is not None:
        with _staging_in_run_folder(logger):
            _wandb_sampling(run, logger, run_dir, summary)


def _wandb_sampling(run, logger, run_dir: Path, summary: dict) -> None:
    import wandb

    accepted, better, reward = (per_step(summary, f"{name}_per_step") for name in
                                ("acceptance_rate", "revision_better_rate", "mean_reward"))
    steps = sorted(reward)
    table = wandb.Table(columns=["step", "acceptance_rate", "revision_better_rate", "mean_reward", "mean_reward_x0"],
                        data=[[s, accepted.get(s), better.get(s), reward[s], summary.get("mean_reward_initial")]
                              for s in steps])
    columns, rows = chain_rows(read_rows(run_dir / "samples.jsonl"))
    run.log({"sampling/per_step": table,
             "sampling/acceptance_rate_chart": wandb.plot.line(table, "step", "acceptance_rate",
                                                               title="acceptance rate per chain step"),
             "sampling/mean_reward_chart": wandb.plot.line(table, "step", "mean_reward",
                                                           title="mean reward of the chain state per step (0 = x₀)"),
             "sampling/chains": wandb.Table(columns=columns, data=rows[:logger.table_rows])})
    store = Path(summary.get("store") or run_dir / "store")
    if logger.log_artifacts and store.is_dir():
        artifact = wandb.Artifact(f"samples-{store.resolve().name}", type="samples",
                                  description="content-addressed sample store (ChainStep JSONL shards)",
                                  metadata={k: v for k, v in summary.items() if not isinstance(v, dict)})
        for path in sorted(store.iterdir()):
            if path.is_file() and not path.name.startswith(".lock"):
                artifact.add_file(str(path))
        run.log_artifact(artifact)


def log_adapter(logger, run_dir: Path) -> None:
    """The trained LoRA adapter (run_dir/adapter) as a W&B model artifact ``adapter-<run id>``."""
    run = _wandb_run(logger)
    adapter = run_dir / "adapter"
    if run is None or not logger.log_artifacts or not adapter.is_dir():
        return
    import wandb

    metrics = run_dir / "train_metrics.json"
    artifact = wandb.Artifact(f"adapter-{run.id}", type="model", description="LoRA adapter (peft) of the distilled student",
                              metadata=read_json(metrics))
    with _staging_in_run_folder(logger):
        artifact.add_dir(str(adapter))
        run.log_artifact(artifact)


def evaluation_metrics(results: dict) -> dict[str, float]:
    out = flatten({k: v for k, v in results.items() if k not in ("scorers", "task", "trained_on")}, "eval")
    gain = results.get("differences", {}).get("distilled-base", {}).get(results.get("trained_on"), {})
    if "mean" in gain:
        out["eval/reward_gain"] = float(gain["mean"])  # distilled − base on the training reward (sweep metric)
    return out


def log_evaluation(logger, run_dir: Path, results: dict | None) -> None:
    """Flattened results.json; on W&B also the table of evaluation generations and the reward plot."""
    if not results or logger is None:
        return
    _log_scalars(logger, evaluation_metrics(results))
    run = _wandb_run(logger)
    if run is not None:
        with _staging_in_run_folder(logger):
            _wandb_evaluation(run, logger, run_dir)


def _wandb_evaluation(run, logger, run_dir: Path) -> None:
    import wandb

    rows = read_rows(run_dir / "eval" / "generations.jsonl")
    payload: dict[str, Any] = {}
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        payload["eval/generations"] = wandb.Table(columns=columns, data=[[row.get(c) for c in columns]
                                                                         for row in rows[:logger.table_rows]])
    if (run_dir / "eval" / "rewards.png").exists():
        payload["eval/rewards_plot"] = wandb.Image(str(run_dir / "eval" / "rewards.png"))
    if payload:
        run.log(payload)


def finish(logger) -> None:
    """Close the W&B run (so the next multirun job starts its own) and flush CSV metrics."""
    if logger is None or rank_zero_only.rank != 0:
        return
    if isinstance(logger, _LightningWandbLogger):
        if logger._experiment is not None:
            logger._experiment.finish()
            logger._experiment = None
    else:
        logger.save()
