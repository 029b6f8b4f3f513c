"""OpenAI-compatible backend against a real server on loopback: `transformers serve` with the bundled
SmolLM2-135M (dequantised folder), CPU, one torch thread. Needs `pip install "transformers[serving]"`
(fastapi, uvicorn, starlette, openai); without it the fixture fails with that command.

Covers: real generations with server-side token counts; a fast one-line error for a URL with no
server; a server that dies between batches (error names the failed count, a restart completes the
same chats); the Hydra config instantiates.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dsc.backends.base import GenerationBackend, SamplingParams
from dsc.backends.openai import OpenAIBackend
from dsc.errors import DscError
from dsc.models import ModelSpec, materialise
from dsc.paths import config_dir

READY_TIMEOUT_S = 120.0  # the machine's 2 cores are shared; a quiet start takes ≈ 9 s
PARAMS = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.95)
CHATS = [
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "Name a colour."}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}],
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TransformersServe:
    """`transformers serve <folder>` as a subprocess on 127.0.0.1:<port>, restartable on the same port."""

    def __init__(self, folder: Path, port: int, log: Path):
        self.folder, self.port, self.log = folder, port, log
        self.process: subprocess.Popen | None = None
        self.base_url = f"http://127.0.0.1:{port}/v1"

    def start(self) -> float:
        """Start and wait for /health; returns the seconds it took."""
        missing = [m for m in ("fastapi", "uvicorn", "openai") if importlib.util.find_spec(m) is None]
        assert not missing, f"transformers serve needs {missing}: pip install 'transformers[serving]'"
        env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   TOKENIZERS_PARALLELISM="false")
        command = [sys.executable, "-c", "from transformers.cli.transformers import main; main()", "serve",
                   "--host", "127.0.0.1", "--port", str(self.port), "--device", "cpu", "--log-level", "warning",
                   str(self.folder)]
        started = time.perf_counter()
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        while time.perf_counter() - started < READY_TIMEOUT_S:
            if self.process.poll() is not None:
                raise AssertionError(f"transformers serve exited with {self.process.returncode}: {self._tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1) as reply:
                    if reply.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise AssertionError(f"transformers serve not ready after {READY_TIMEOUT_S:.0f} s: {self._tail()}")

    def stop(self, crash: bool = False) -> None:
        """SIGKILL when ``crash`` (a server that dies), else SIGTERM then SIGKILL after 10 s."""
        if self.process is None or self.process.poll() is not None:
            return
        if crash:
            self.process.kill()
        else:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
                return
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait(timeout=10)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


@pytest.fixture(scope="module")
def model_folder() -> Path:
    folder, _ = materialise(ModelSpec())
    return Path(folder)


@pytest.fixture(scope="module")
def server(model_folder, tmp_path_factory):
    serve = TransformersServe(model_folder, free_port(), tmp_path_factory.mktemp("serve") / "serve.log")
    serve.start()
    yield serve
    serve.stop()


def backend_for(serve: TransformersServe, **overrides) -> OpenAIBackend:
    return OpenAIBackend(base_url=serve.base_url, model=str(serve.folder), **overrides)


def test_generate_returns_real_generations(server):
    from transformers import AutoTokenizer

    from dsc.chat import prompt_ids

    backend = backend_for(server)
    assert isinstance(backend, GenerationBackend)
    assert backend.model_id == f"openai:{server.folder}@{server.base_url}"
    out = backend.generate(CHATS, PARAMS, seeds=[1, 2, 3])
    assert len(out) == len(CHATS)
    tokenizer = AutoTokenizer.from_pretrained(server.folder)
    for chat, gen in zip(CHATS, out):
        assert gen.text.strip(), out
        assert gen.prompt_tokens == len(prompt_ids(tokenizer, chat))  # the server's usage, same template as hf
        assert 0 < gen.completion_tokens <= PARAMS.max_new_tokens
        assert gen.finished or gen.completion_tokens == PARAMS.max_new_tokens
    assert backend.estimated_usage == 0
    assert backend.generated_tokens == sum(g.completion_tokens for g in out)


def test_unreachable_base_url_fails_fast_in_one_line():
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(base_url=url, model="m")  # default retries and backoff: the probe must skip them
    started = time.perf_counter()
    with pytest.raises(DscError) as caught:
        backend.generate(CHATS[:1], PARAMS, seeds=[0])
    elapsed = time.perf_counter() - started
    message = str(caught.value)
    assert elapsed < 10, elapsed
    assert f"sampler.backend.base_url={url} is unreachable" in message
    assert "\n" not in message


def test_server_dies_then_rerun_completes(server, tmp_path):
    failures = tmp_path / "failures.jsonl"
    backend = backend_for(server, max_retries=2, backoff_s=0.05, timeout_s=20, failures_file=str(failures))
    chats, seeds = CHATS[:2], [5, 6]
    assert len(backend.generate(chats, PARAMS, seeds)) == 2
    server.stop(crash=True)
    try:
        started = time.perf_counter()
        with pytest.raises(DscError) as caught:
            backend.generate(chats, PARAMS, seeds)
        assert time.perf_counter() - started < 10
        message = str(caught.value)
        assert "2 of 2 chats failed" in message and "rerun" in message and "\n" not in message
        lines = [json.loads(line) for line in failures.read_text().splitlines()]
        assert sorted(line["seed"] for line in lines) == seeds
    finally:
        server.start()  # leave the module's server running for whichever test comes next
    out = backend.generate(chats, PARAMS, seeds)  # the rerun: same chats, same seeds, server back
    assert len(out) == 2 and all(g.text and g.completion_tokens > 0 for g in out)


def test_config_instantiates():
    path = config_dir() / "sampler" / "backend" / "openai.yaml"
    assert path.read_text().startswith("# python -m dsc sampler/backend=openai ")
    url = "http://127.0.0.1:1/v1"
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose("config", overrides=["sampler/backend=openai", f"sampler.backend.base_url={url}",
                                           "sampler.backend.model=smollm2:135m"])
    backend = instantiate(cfg.sampler.backend)
    assert isinstance(backend, OpenAIBackend)
    assert backend.model_id == f"openai:smollm2:135m@{url}"
    with pytest.raises(DscError, match="sampler/backend=hf"):
        backend.logprob(CHATS[:1], ["x"])
