"""vLLM backend (GPU, optional extra ``dsc[gpu]``): the offline engine with prefix caching and
continuous batching, tensor-parallel across GPUs by config.

The chains' turns share long prefixes (the prompt, the answer being critiqued), which prefix caching
reuses across a prompt's chains and across the critique and revision turns. vLLM takes a seed per
request, so the determinism contract holds (per chat, independent of its batch). ``release`` frees
the GPU before training starts, so the engine and the trainer never fight for memory.
"""

from __future__ import annotations

import gc
from typing import Sequence

from dsc.backends.base import Chat, Generation, SamplingParams
from dsc.errors import DscError
from dsc.models import ModelSpec, load_tokenizer, materialise


class VLLMBackend:
    def __init__(self, model: ModelSpec | dict, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.85,
                 enable_prefix_caching: bool = True, max_model_len: int = 4096, dtype: str = "auto"):
        try:
            import vllm
        except ImportError as error:
            raise DscError("sampler/backend=vllm needs vLLM, which is not installed; pip install 'dsc[gpu]' on a "
                           "CUDA machine, or use sampler/backend=hf") from error
        spec = model if isinstance(model, ModelSpec) else ModelSpec(**model)
        source, self.model_id = materialise(spec)
        self.tokenizer = load_tokenizer(source, spec.trust_remote_code)
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(source), tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                            gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=enable_prefix_caching,
                            max_model_len=max_model_len, trust_remote_code=spec.trust_remote_code, seed=0)
        self.generate_calls = 0

    def generate(self, chats: Sequence[Chat], params: SamplingParams, seeds: Sequence[int]) -> list[Generation]:
        sampling = [self._vllm.SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                              top_p=params.top_p, seed=int(seed) % (2**31)) for seed in seeds]
        outputs = self.llm.chat([list(c) for c in chats], sampling, use_tqdm=False)
        self.generate_calls += 1
        return [Generation(text=o.outputs[0].text.strip(), prompt_tokens=len(o.prompt_token_ids),
                           completion_tokens=len(o.outputs[0].token_ids), finished=o.outputs[0].finish_reason == "stop")
                for o in outputs]

    def logprob(self, chats: Sequence[Chat], completions: Sequence[str], temperature: float = 1.0) -> list[float]:
        """Teacher-forced log-probs through prompt_logprobs (temperature 1 only: vLLM scores raw logits)."""
        if temperature != 1.0:
            raise DscError("acceptance=mh_exact with sampler/backend=vllm needs sampler.*.temperature=1.0 (vLLM scores "
                           "untempered log-probs); or use sampler/backend=hf")
        from dsc.chat import prompt_and_response_ids

        scores = []
        for chat, text in zip(chats, completions):
            prompt, response = prompt_and_response_ids(self.tokenizer, chat, text)
            out = self.llm.generate({"prompt_token_ids": prompt + response},
                                    self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)[0]
            token_logps = out.prompt_logprobs[len(prompt):]
            scores.append(sum(next(iter(d.values())).logprob if len(d) == 1 else d[tok].logprob
                              for d, tok in zip(token_logps, response)))
        return scores

    def release(self) -> None:
        """Free the GPU for the trainer."""
        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
