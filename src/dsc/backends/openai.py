"""Generation through an OpenAI-compatible chat endpoint: a local server (ollama, vLLM, llama.cpp,
``transformers serve``) or a hosted API.

Features and guarantees:
- one POST ``{base_url}/chat/completions`` per chat (messages, max_tokens, temperature, top_p, seed),
  at most ``max_concurrency`` in flight; results come back in the order of the chats;
- the endpoint is probed once (GET ``{base_url}/models``, short timeout) before the first request, so a
  wrong URL or a server that is down fails in seconds with one line, not after retries on every chat;
- connection errors, timeouts, HTTP 408/409/429 and 5xx are retried ``max_retries`` times with
  exponential backoff (``backoff_s``, 2·``backoff_s``, …; a 429's Retry-After is honoured, capped at
  60 s). Other HTTP errors (bad model name, rejected key) stop the call at once with one line;
- when chats still fail after the retries, the whole call raises a ``DscError`` that says how many
  failed. The sampler stores records per completed batch, so a rerun of the same command resumes and
  regenerates only the missing chats (each chat carries its own seed);
- the API key is read only from the environment variable named by ``api_key_env`` and sent as a
  Bearer token when set; it never comes from a config value and is never logged or written;
- token counts come from the reply's ``usage``. A server that omits it gets a whitespace estimate
  (prompt: words in all messages; completion: words in the reply) and ``estimated_usage`` counts
  those chats; ``finished`` is False when ``finish_reason`` is "length" (without a finish_reason:
  when the estimate reached max_tokens).

Not provided: teacher-forced log-probs (``logprob`` raises), so ``acceptance=mh_exact`` needs the hf
backend. Reproducibility per seed is whatever the server gives: vLLM and llama.cpp honour ``seed``
per request; ``transformers serve`` sets a global torch seed (not reproducible under concurrency) and
samples only when the model's generation_config.json sets ``do_sample: true``, otherwise it decodes
greedily whatever the temperature.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

from dsc.backends.base import Chat, Generation, SamplingParams
from dsc.errors import DscError

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504})
PROBE_TIMEOUT_S = 5.0
MAX_RETRY_AFTER_S = 60.0


class _Fatal(Exception):
    """A reply that retrying cannot fix (HTTP 4xx other than the retryable ones, malformed body)."""


class OpenAIBackend:
    """Generation backend over an OpenAI-compatible ``/chat/completions`` endpoint."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = "OPENAI_API_KEY",
                 max_concurrency: int = 8, timeout_s: float = 60.0, max_retries: int = 3,
                 backoff_s: float = 1.0, failures_file: str | None = None):
        if not base_url or not str(base_url).startswith(("http://", "https://")):
            raise DscError(f"sampler.backend.base_url={base_url} is not an http(s) URL; set it to the server's "
                           "OpenAI-compatible root, e.g. http://localhost:11434/v1")
        if not model:
            raise DscError(f"sampler.backend.model={model} is empty; set it to a model name the server serves "
                           f"(see GET {base_url}/models)")
        if int(max_concurrency) < 1:
            raise DscError(f"sampler.backend.max_concurrency={max_concurrency} must be at least 1; set it to 1 or more")
        self.base_url = str(base_url).rstrip("/")
        self.model = str(model)
        self.api_key_env = api_key_env
        self.max_concurrency = int(max_concurrency)
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_s = float(backoff_s)
        self.failures_file = Path(failures_file) if failures_file else None
        self.model_id = f"openai:{self.model}@{self.base_url}"
        self.generate_calls = 0
        self.generated_tokens = 0
        self.generate_seconds = 0.0
        self.estimated_usage = 0
        """Chats whose token counts are whitespace estimates because the reply had no usage."""
        self._probed = False

    # -- public interface -------------------------------------------------------------------------

    def generate(self, chats: Sequence[Chat], params: SamplingParams, seeds: Sequence[int]) -> list[Generation]:
        if len(chats) != len(seeds):
            raise ValueError(f"generate got {len(chats)} chats but {len(seeds)} seeds")
        if not chats:
            return []
        if not self._probed:
            self.probe()
        started = time.perf_counter()
        workers = min(self.max_concurrency, len(chats))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="dsc-openai") as pool:
            futures = [pool.submit(self._complete, chat, params, seed) for chat, seed in zip(chats, seeds)]
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except _Fatal as error:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise DscError(str(error)) from None
        failed = [(i, reason) for i, (gen, reason) in enumerate(outcomes) if gen is None]
        if failed:
            self._record_failures(failed, seeds)
            where = f"; details in {self.failures_file}" if self.failures_file else ""
            raise DscError(
                f"{len(failed)} of {len(chats)} chats failed at sampler.backend.base_url={self.base_url} after "
                f"{self.max_retries + 1} attempts each (last error: {failed[-1][1]}){where}; completed batches "
                "are saved, so restart the server and rerun the same command to resume")
        results = [gen for gen, _ in outcomes]
        self.generate_calls += 1
        self.generated_tokens += sum(g.completion_tokens for g in results)
        self.generate_seconds += time.perf_counter() - started
        return results

    def logprob(self, chats: Sequence[Chat], completions: Sequence[str], temperature: float = 1.0) -> list[float]:
        raise DscError("acceptance=mh_exact needs teacher-forced log-probs, which sampler/backend=openai cannot "
                       "provide; use sampler/backend=hf")

    def probe(self) -> None:
        """Fail fast, in one line, when nothing answers at base_url or it refuses the key."""
        request = urllib.request.Request(f"{self.base_url}/models", headers=self._headers(), method="GET")
        try:
            with urllib.request.urlopen(request, timeout=min(self.timeout_s, PROBE_TIMEOUT_S)):
                pass
        except urllib.error.HTTPError as error:  # it answered: reachable, unless it refuses us
            if error.code in (401, 403):
                raise DscError(self._key_message(error.code)) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", None) or error
            raise DscError(f"sampler.backend.base_url={self.base_url} is unreachable ({reason}); start the server "
                           "(ollama, vLLM, llama.cpp, transformers serve) or fix the URL") from None
        self._probed = True

    # -- one chat ---------------------------------------------------------------------------------

    def _complete(self, chat: Chat, params: SamplingParams, seed: int) -> tuple[Generation | None, str]:
        """(generation, "") on success, (None, last error) once the retries are spent."""
        payload = {"model": self.model, "messages": list(chat), "max_tokens": int(params.max_new_tokens),
                   "temperature": float(params.temperature), "top_p": float(params.top_p), "seed": int(seed)}
        data = json.dumps(payload).encode("utf-8")
        url = f"{self.base_url}/chat/completions"
        reason = ""
        for attempt in range(self.max_retries + 1):
            wait = 0.0
            request = urllib.request.Request(url, data=data, headers=self._headers(), method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                    body = json.loads(reply.read().decode("utf-8"))
                return self._parse(body, chat, params), ""
            except urllib.error.HTTPError as error:
                detail = " ".join(error.read().decode("utf-8", "replace").split())[:200]
                if error.code in (401, 403):
                    raise _Fatal(self._key_message(error.code)) from None
                if error.code not in RETRY_STATUS:
                    raise _Fatal(f"sampler.backend.model={self.model} request to {url} failed (HTTP {error.code}: "
                                 f"{detail}); check sampler.backend.model against GET {self.base_url}/models") from None
                reason = f"HTTP {error.code}"
                wait = _retry_after(error)
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
                reason = str(getattr(error, "reason", None) or error) or type(error).__name__
            if attempt < self.max_retries:
                time.sleep(max(wait, self.backoff_s * 2 ** attempt))
        return None, reason

    def _parse(self, body: dict, chat: Chat, params: SamplingParams) -> Generation:
        try:
            choice = body["choices"][0]
            text = (choice["message"].get("content") or "").strip()
        except (KeyError, IndexError, TypeError, AttributeError):
            raise _Fatal(f"sampler.backend.base_url={self.base_url} sent a reply without choices[0].message "
                         f"({str(body)[:120]}); point it at an OpenAI-compatible /v1 root") from None
        usage = body.get("usage") or {}
        prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if not isinstance(prompt_tokens, int) or not isinstance(completion_tokens, int):
            self.estimated_usage += 1
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in chat)
            completion_tokens = len(text.split())
        reason = choice.get("finish_reason")
        finished = reason != "length" if reason else completion_tokens < params.max_new_tokens
        return Generation(text=text, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finished=finished)

    # -- helpers ----------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _key_message(self, code: int) -> str:
        return (f"sampler.backend.base_url={self.base_url} rejected the request (HTTP {code}); put a valid key in "
                f"the environment variable named by sampler.backend.api_key_env={self.api_key_env}")

    def _record_failures(self, failed: list[tuple[int, str]], seeds: Sequence[int]) -> None:
        """Append one JSON line per failed chat (index in the call, seed, error); never the key."""
        if self.failures_file is None:
            return
        self.failures_file.parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        with open(self.failures_file, "a") as handle:
            for index, reason in failed:
                handle.write(json.dumps({"time": stamp, "model_id": self.model_id, "index": index,
                                         "seed": int(seeds[index]), "error": reason}) + "\n")


def _retry_after(error: urllib.error.HTTPError) -> float:
    try:
        return min(float(error.headers.get("Retry-After", 0)), MAX_RETRY_AFTER_S)
    except (TypeError, ValueError):
        return 0.0
