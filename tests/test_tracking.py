"""W&B tracking on real wandb (no mocks): offline run files hold the config, the metrics, the chain and
generation tables and the artifacts; CSV gets the scalars; online mode with an unreachable or silent
host falls back to offline in bounded time and says so; a bad logger.mode is a one-line error.

The offline ``.wandb`` file is read with the small LevelDB-log reader below (wandb ≥ 0.2x ships no
Python reader): 7-byte file header, 32 KiB blocks, records of (crc32, length, type) + protobuf chunks.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import wandb
from omegaconf import OmegaConf

from dsc import tracking
from dsc.errors import DscError

BLOCK = 32768


def read_wandb_records(path: Path):
    """Every protobuf Record of an offline run's ``run-<id>.wandb`` file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _ = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1
    pos, pending, records = 7, b"", []
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # block trailer: padding
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _key(item):
    """'a/b' for a scalar, ('a/b', 'path') for a field of a logged table or image."""
    return item.key or (item.nested_key[0] if len(item.nested_key) == 1 else tuple(item.nested_key))


class OfflineRun:
    """What one offline run wrote: config, history rows, artifacts, run record, and its files folder."""

    def __init__(self, run_folder: Path):
        self.folder = run_folder
        self.config, self.history, self.artifacts, self.run = {}, [], {}, None
        for record in read_wandb_records(next(run_folder.glob("run-*.wandb"))):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                self.run = record.run
            elif kind == "config":
                for item in record.config.update:
                    if item.key:
                        self.config[item.key] = json.loads(item.value_json)
            elif kind == "history":
                self.history.append({_key(item): json.loads(item.value_json) for item in record.history.item})
            elif kind == "artifact":
                self.artifacts[record.artifact.name] = record.artifact

    def metric(self, key: str):
        return next(row[key] for row in self.history if key in row)

    def table(self, key: str) -> list[dict]:
        path = self.metric((key, "path"))
        table = json.loads((self.folder / "files" / path).read_text())
        return [dict(zip(table["columns"], row)) for row in table["data"]]


def offline_run(run_dir: Path) -> OfflineRun:
    info = json.loads((run_dir / "wandb_run.json").read_text())
    return OfflineRun(Path(info["local_dir"]))


def md5_b64(path: Path) -> str:
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


# ── a run made through the real tracking functions, on hand-made stage outputs ───────────────────

def _step(step: int, **extra) -> dict:
    base = {"prompt_id": "review-7", "chain_id": 0, "step": step, "prompt": "Write a scathing review of Heat.",
            "response": "Heat is dull.", "reward_response": -0.4, "state": "Heat is dull.", "reward_state": -0.4}
    return {**base, **extra}


SUMMARY = {"prompts": 1, "chains": 1, "records": 2, "num_steps": 1, "acceptance_rate_per_step": {1: 1.0},
           "revision_better_rate_per_step": {1: 1.0}, "mean_reward_per_step": {0: -0.4, 1: 0.3},
           "mean_reward_initial": -0.4, "mean_reward_final": 0.3, "completion_tokens": 50, "prompt_tokens": 80,
           "seconds": 2.0, "tokens_per_second": 25.0}
RESULTS = {"task": "sentiment", "n_prompts": 1, "trained_on": "sentiment_vader",
           "scorers": {"sentiment_vader": {"independent": False}},
           "arms": {"base": {"n": 1, "reward/sentiment_vader": {"mean": -0.2, "ci_low": -0.2, "ci_high": -0.2, "n": 1}},
                    "distilled": {"n": 1, "reward/sentiment_vader": {"mean": 0.1, "ci_low": 0.1, "ci_high": 0.1, "n": 1}}},
           "differences": {"distilled-base": {"sentiment_vader": {"mean": 0.3, "ci_low": 0.3, "ci_high": 0.3, "n": 1}}}}


@pytest.fixture(scope="module")
def logged_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    store = run_dir.parent / "samples" / "sentiment-0123456789abcdef"
    store.mkdir(parents=True)
    records = [_step(0), _step(1, critique="Too negative about the plot.", revision="Heat is a triumph.",
                                reward_revision=0.3, alpha=1.0, accepted=True, state="Heat is a triumph.", reward_state=0.3)]
    lines = "".join(json.dumps(r) + "\n" for r in records)
    (store / "samples.0.jsonl").write_text(lines)
    (store / ".lock.0").write_text("")
    run_dir.mkdir()
    (run_dir / "samples.jsonl").write_text(lines)
    (run_dir / "adapter").mkdir()
    (run_dir / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "generations.jsonl").write_text(json.dumps(
        {"prompt_id": "test-1", "prompt": "Review Jaws.", "arm": "distilled", "response": "Jaws thrills.",
         "reward/sentiment_vader": 0.1}) + "\n")
    logger = tracking.WandbLogger(save_dir=str(run_dir), job_type="all", tags=["sentiment"])
    tracking.log_config(logger, OmegaConf.create({"task": {"name": "sentiment"}, "beta": 0.1}))
    logger.log_metrics({"train/loss": 0.94}, step=0)
    tracking.log_adapter(logger, run_dir)
    tracking.log_sampling(logger, run_dir, {**SUMMARY, "store": str(store)})
    tracking.log_evaluation(logger, run_dir, RESULTS)
    tracking.finish(logger)
    wandb.teardown()  # the wandb service flushes the run file when it stops (at exit in a real run)
    return run_dir, records, store


def test_offline_run_files_hold_config_metrics_tables_and_artifacts(logged_run):
    run_dir, records, store = logged_run
    run = offline_run(run_dir)
    assert run.folder.parent == run_dir / "wandb" and run.folder.name.startswith("offline-run-")
    assert run.run.job_type == "all" and "sentiment" in run.run.tags
    assert run.config["task"] == {"name": "sentiment"} and run.config["beta"] == 0.1
    assert run.metric("train/loss") == 0.94
    assert run.metric("sampling/acceptance_rate/step_1") == 1.0
    assert run.metric("sampling/reward_gain") == pytest.approx(0.7)
    assert run.metric("sampling/tokens_per_second") == 25.0
    assert run.metric("eval/differences/distilled-base/sentiment_vader/mean") == 0.3
    assert run.metric("eval/reward_gain") == 0.3
    chains = run.table("sampling/chains")
    assert [row["step"] for row in chains] == [0, 1]
    assert chains[1]["prompt"] == records[0]["prompt"] and chains[1]["x0"] == records[0]["response"]
    assert chains[1]["critique"] == "Too negative about the plot." and chains[1]["accepted"] is True
    assert chains[1]["reward_revision"] == 0.3
    per_step = run.table("sampling/per_step")
    assert [(r["step"], r["mean_reward"]) for r in per_step] == [(0, -0.4), (1, 0.3)]
    generations = run.table("eval/generations")
    assert generations == [{"prompt_id": "test-1", "prompt": "Review Jaws.", "arm": "distilled",
                            "response": "Jaws thrills.", "reward/sentiment_vader": 0.1}]
    samples = run.artifacts[f"samples-{store.name}"]
    assert samples.type == "samples"
    entries = {e.path: e.digest for e in samples.manifest.contents}
    assert entries == {"samples.0.jsonl": md5_b64(store / "samples.0.jsonl")}  # the lock file stays out
    adapter = run.artifacts[f"adapter-{run.run.run_id}"]
    assert adapter.type == "model"
    assert {e.path: e.digest for e in adapter.manifest.contents} == {
        "adapter_config.json": md5_b64(run_dir / "adapter" / "adapter_config.json")}
    staged = [e.local_path for e in adapter.manifest.contents]
    assert all(Path(p).is_relative_to(run_dir / "wandb") for p in staged)  # `wandb sync` needs nothing outside
    info = json.loads((run_dir / "wandb_run.json").read_text())
    assert info["mode"] == "offline" and info["sync"] == f"wandb sync {run.folder}"


def test_csv_logger_gets_the_scalars_and_no_logger_is_a_no_op(tmp_path):
    logger = tracking.AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    tracking.log_config(logger, OmegaConf.create({"beta": 0.1}))
    tracking.log_sampling(logger, tmp_path, SUMMARY)
    tracking.log_evaluation(logger, tmp_path, RESULTS)
    tracking.log_adapter(logger, tmp_path)
    tracking.finish(logger)
    text = (tmp_path / "logs" / "metrics.csv").read_text()
    assert "sampling/acceptance_rate/step_1" in text and "eval/reward_gain" in text
    assert "beta: 0.1" in (tmp_path / "logs" / "hparams.yaml").read_text()
    for log in (tracking.log_sampling, tracking.log_evaluation):
        log(None, tmp_path, SUMMARY)
    tracking.log_config(None, OmegaConf.create({}))


def test_csv_logger_appends_when_a_run_is_resumed_or_re_evaluated(tmp_path):
    """A second logger on the same run_dir (a resumed fit, a stage=evaluate rerun) keeps the first's rows;
    new columns rewrite the header without losing old values."""
    import csv

    first = tracking.AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    first.log_metrics({"train/loss": 2.0}, step=0)
    first.log_metrics({"train/loss": 1.5}, step=1)
    first.save()
    second = tracking.AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    second.log_metrics({"train/loss": 1.2}, step=2)
    second.save()
    third = tracking.AppendingCSVLogger(save_dir=str(tmp_path), name="logs", version="")
    third.log_metrics({"eval/reward_gain": 0.3}, step=0)
    third.save()
    with open(tmp_path / "logs" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["train/loss"] for r in rows] == ["2.0", "1.5", "1.2", ""]
    assert [r["step"] for r in rows] == ["0", "1", "2", "0"] and rows[-1]["eval/reward_gain"] == "0.3"
    tracking.log_adapter(None, tmp_path)
    tracking.finish(None)


def test_bad_logger_mode_is_one_line_before_any_model_loads(tmp_path):
    with pytest.raises(DscError, match=r"logger.mode=onlin .*offline, online, disabled"):
        tracking.WandbLogger(mode="onlin", save_dir=str(tmp_path))
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "dsc", "logger=wandb", "logger.mode=onlin", f"hydra.run.dir={tmp_path}"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr[-2000:]
    assert "logger.mode=onlin" in done.stderr and "offline, online, disabled" in done.stderr
    assert not (tmp_path / "samples.jsonl").exists() and time.perf_counter() - started < 120


def _online(tmp_path, monkeypatch, base_url: str, **kwargs):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", base_url)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a dummy: the host is never reached
    started = time.perf_counter()
    logger = tracking.WandbLogger(mode="online", save_dir=str(tmp_path), **kwargs)
    tracking.log_config(logger, OmegaConf.create({"beta": 0.1}))
    logger.log_metrics({"x": 1.0})
    tracking.finish(logger)
    wandb.teardown()
    return time.perf_counter() - started


def test_online_with_unreachable_host_falls_back_offline_and_says_so(tmp_path, monkeypatch, capfd):
    seconds = _online(tmp_path, monkeypatch, "http://127.0.0.1:9", probe_timeout=3)
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "online logging unavailable" in line]
    assert len(lines) == 1 and "http://127.0.0.1:9 unreachable" in lines[0] and "wandb sync" in lines[0]
    assert seconds < 60
    assert json.loads((tmp_path / "wandb_run.json").read_text())["mode"] == "offline"
    assert offline_run(tmp_path).metric("x") == 1.0


class _HealthyButSilent(http.server.BaseHTTPRequestHandler):
    """Answers the probe (/healthz) but never answers W&B's API: only init_timeout can end the wait."""

    def do_GET(self):
        if self.path.startswith("/healthz"):
            self.send_response(200)
            self.end_headers()
            return
        time.sleep(120)

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_online_with_a_silent_server_is_bounded_by_init_timeout(tmp_path, monkeypatch, capfd):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HealthyButSilent)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        seconds = _online(tmp_path, monkeypatch, f"http://127.0.0.1:{server.server_address[1]}", init_timeout=5)
    finally:
        server.shutdown()
    assert "online logging unavailable (wandb.init failed" in capfd.readouterr().err
    assert seconds < 60
    assert offline_run(tmp_path).metric("x") == 1.0


def test_wandb_yaml_builds_a_lazy_offline_logger(make_config, tmp_path):
    from hydra.utils import instantiate

    cfg = make_config(["logger=wandb", f"run_dir={tmp_path}", "stage=sample"])
    logger = instantiate(cfg.logger)
    assert isinstance(logger, tracking.WandbLogger) and logger._experiment is None  # nothing started yet
    assert logger._wandb_init["mode"] == "offline" and logger._wandb_init["job_type"] == "sample"
    assert logger.save_dir == str(tmp_path.resolve()) and os.environ.get("WANDB_DATA_DIR") is None
