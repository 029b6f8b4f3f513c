"""The critique→revision MCMC chain sampler.

Target: p(x|c,r) ∝ p(x|c)·exp(r(c,x)/β). For each prompt c, N chains start from a proposal
x₀ ~ p(x|c). Step t draws a critique z ~ p(z|c,xₜ₋₁) and a revision x' ~ p(x|c,xₜ₋₁,z), each chat
restarted from (c, xₜ₋₁) — the chain is Markov and its context does not grow with t — then the
acceptance rule turns r(c,xₜ₋₁), r(c,x') into α and the chain moves to x' iff u < α.

Guarantees:
- chains are processed in units of ``batch_size`` (prompt-major, then chain id); every turn of a unit
  is one backend call, so generate calls ≤ turns × ⌈prompts·chains / batch_size⌉;
- every random draw is seeded by (seed, prompt id, chain id, step, turn): results do not depend on
  batch composition (exactly in fp32; bf16 padding numerics can flip near-ties), nor on sharding;
- records are appended to the store after every step of every unit; a rerun skips finished steps and
  continues each chain from its last stored state;
- fast path (a backend with ``kv_session``, acceptance without proposal log-probs): the revision
  continues the critique's keys/values by token ids, a prompt's chains share its prefill, and a chain
  whose state did not move reuses its critique prompt next step; the records are those of the simple
  path (greedy decoding gives the same texts wherever decode→encode of an answer round-trips).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from dsc.acceptance import AcceptanceRule
from dsc.backends.base import GenerationBackend, SamplingParams
from dsc.chat import batched, extend, prompt_ids, user_chat
from dsc.errors import DscError
from dsc.records import ChainStep, Prompt
from dsc.rewards.base import Reward
from dsc.seeding import derive_seed, uniform
from dsc.store import SampleStore


@dataclass
class CritiquePrompts:
    """The two instructions of a step, as data (conf/critique/<task>.yaml)."""

    critique_request: str
    """User turn after the answer: asks the model to critique it."""
    revision_request: str
    """User turn after the critique: asks for the rewritten answer only."""


@dataclass
class _Chain:
    prompt: Prompt
    chain_id: int
    step: int = -1
    state: str = ""
    reward: float = 0.0
    ids: list[int] | None = None
    """Fast path: token ids of ``state`` as generated (no end-of-turn)."""
    context: object | None = None
    """Fast path: keys/values of the critique chat of ``state`` (reused while the state stays)."""
    answer: object | None = None
    """Fast path: keys/values of (prompt, state) from the proposal turn."""


def check_rewards(reward: Reward, values: torch.Tensor, expected: int, where: str) -> list[float]:
    values = torch.as_tensor(values).reshape(-1).double()
    name = getattr(reward, "name", type(reward).__name__)
    if values.numel() != expected:
        raise DscError(f"reward={name} returned {values.numel()} scores for {expected} responses ({where}); a reward must return one score per response")
    if not torch.isfinite(values).all():
        raise DscError(f"reward={name} returned NaN/inf ({where}); fix the reward or choose another with reward=<name> — records written so far are kept")
    return values.tolist()


def check_generations(outs, params: SamplingParams, field: str, where: str, model_id: str) -> None:
    """Every answer of a call empty means the model (or its token budget) cannot do the turn at all."""
    if outs and not any(o.text.strip() for o in outs):
        raise DscError(f"sampler.{field}.max_new_tokens={params.max_new_tokens}: all {len(outs)} {where} came back "
                       f"empty from model {model_id}; raise sampler.{field}.max_new_tokens or use a model that answers "
                       "in this chat format (model=...) — records written so far are kept")


class ChainSampler:
    def __init__(self, backend: GenerationBackend, reward: Reward, acceptance: AcceptanceRule,
                 critique: CritiquePrompts | dict, num_chains: int, num_steps: int, batch_size: int,
                 proposal: SamplingParams | dict, critique_params: SamplingParams | dict,
                 revision_params: SamplingParams | dict, seed: int, split: str = "train",
                 num_prompts: int | None = None, kv_across_steps: bool = False):
        self.split, self.num_prompts = split, num_prompts
        # Fast path: keep keys/values across steps too (the proposal's, a rejected chain's critique chat).
        # Faster, but a resumed run computes those tokens anew and bf16 rounding can flip a near-tie, so it
        # is off by default: resumed chains stay byte-identical to uninterrupted ones.
        self.kv_across_steps = kv_across_steps
        self.backend, self.reward, self.acceptance = backend, reward, acceptance
        self.critique = critique if isinstance(critique, CritiquePrompts) else CritiquePrompts(**critique)
        self.num_chains, self.num_steps, self.batch_size, self.seed = num_chains, num_steps, batch_size, seed
        as_params = lambda p: p if isinstance(p, SamplingParams) else SamplingParams(**p)  # noqa: E731
        self.proposal, self.critique_params, self.revision_params = map(as_params, (proposal, critique_params, revision_params))
        self._session, self._follow = None, {}  # fast path state, set for the duration of run()
        if acceptance.needs_logprobs and (self.critique_params.top_p < 1 or self.revision_params.top_p < 1):
            raise DscError(f"sampler.critique_params.top_p={self.critique_params.top_p} and sampler.revision_params.top_p="
                           f"{self.revision_params.top_p}, but acceptance=mh_exact needs both = 1.0 (a truncated "
                           "proposal has no exact density); set them to 1.0 or use acceptance=metropolis")

    def turns_per_step(self) -> int:
        return 3 if self.acceptance.needs_logprobs else 2

    def run(self, prompts: Sequence[Prompt], store: SampleStore, progress: bool = True,
            on_records: Callable[[list[ChainStep]], None] | None = None) -> None:
        """Sample every (prompt, chain) up to num_steps, appending to ``store``; resumes what is there."""
        done: dict[tuple[str, int], ChainStep] = {}
        for record in store.load():
            key = (record.prompt_id, record.chain_id)
            if record.step <= self.num_steps and (key not in done or record.step > done[key].step):
                done[key] = record
        chains = []
        for prompt in prompts:
            for chain_id in range(self.num_chains):
                last = done.get((prompt.id, chain_id))
                chain = _Chain(prompt, chain_id)
                if last is not None:
                    chain.step, chain.state, chain.reward = last.step, last.state, last.reward_state
                chains.append(chain)
        pending = [c for c in chains if c.step < self.num_steps]
        total_steps = sum(self.num_steps - c.step for c in pending)
        self._session = self._fast_session() if pending else None
        try:
            with tqdm(total=total_steps, desc="chain steps", unit="step", disable=not progress) as bar:
                for unit in batched(pending, self.batch_size):
                    for step in range(min(c.step for c in unit) + 1, self.num_steps + 1):
                        active = [c for c in unit if c.step == step - 1]
                        if self._session is not None and not self.kv_across_steps:
                            self._session.forget()  # every step computed from stored texts alone: resumable
                        records = self._proposal(active) if step == 0 else self._step(active, step)
                        store.append(records)
                        if on_records is not None:
                            on_records(records)
                        bar.update(len(active))
                    for chain in unit:  # the unit is done: free its keys/values
                        chain.ids = chain.context = chain.answer = None
        finally:
            self._session = None

    def _fast_session(self):
        """The backend's KV session when the fast path applies (exact MH needs teacher-forced log-probs of
        re-rendered chats, so it keeps the simple path)."""
        make = getattr(self.backend, "kv_session", None)
        if self.acceptance.needs_logprobs or make is None:
            return None
        session = make()
        if session is None:
            return None
        from dsc.backends.kv import follow_up_ids

        try:
            self._follow = {name: follow_up_ids(session.tokenizer, "user", text) for name, text in
                            (("critique", self.critique.critique_request), ("revision", self.critique.revision_request))}
        except ValueError:
            return None
        return session

    def _seed(self, chain: _Chain, step: int, turn: str) -> int:
        return derive_seed(self.seed, chain.prompt.id, chain.chain_id, step, turn)

    def _proposal(self, chains: list[_Chain]) -> list[ChainStep]:
        started = time.perf_counter()
        seeds = [self._seed(c, 0, "proposal") for c in chains]
        if self._session is None:
            outs = self.backend.generate([user_chat(c.prompt.text) for c in chains], self.proposal, seeds)
        else:
            from dsc.backends.kv import Request

            requests = [Request(ids=[], prefix=self._prefix(c)) for c in chains]
            outs, continuations = self._session.generate(requests, self.proposal, seeds, keep_answer=True)
            if self.kv_across_steps:
                for chain, cont in zip(chains, continuations):
                    chain.ids, chain.answer = _answer_ids(cont), cont.answer_context
        check_generations(outs, self.proposal, "proposal", "proposals at step 0", self.backend.model_id)
        rewards = check_rewards(self.reward, self.reward.score([c.prompt.text for c in chains], [o.text for o in outs]),
                                len(chains), "proposals at step 0")
        share = (time.perf_counter() - started) / max(len(chains), 1)
        records = []
        for chain, out, reward, seed in zip(chains, outs, rewards, seeds):
            chain.step, chain.state, chain.reward = 0, out.text, reward
            records.append(ChainStep(
                prompt_id=chain.prompt.id, chain_id=chain.chain_id, step=0, prompt=chain.prompt.text,
                response=out.text, reward_response=reward, state=out.text, reward_state=reward,
                acceptance=self.acceptance.name, seed=seed, model_id=self.backend.model_id,
                prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens, seconds=share))
        return records

    def _critique_chat(self, prompt: str, answer: str):
        return extend(user_chat(prompt), ("assistant", answer), ("user", self.critique.critique_request))

    def _revision_chat(self, prompt: str, answer: str, critique: str):
        return extend(self._critique_chat(prompt, answer), ("assistant", critique), ("user", self.critique.revision_request))

    def _step(self, chains: list[_Chain], step: int) -> list[ChainStep]:
        started = time.perf_counter()
        texts = [c.prompt.text for c in chains]
        seeds = [self._seed(c, step, "critique") for c in chains]
        revision_seeds = [self._seed(c, step, "revision") for c in chains]
        if self._session is None:
            critique_chats = [self._critique_chat(c.prompt.text, c.state) for c in chains]
            critiques = self.backend.generate(critique_chats, self.critique_params, seeds)
            check_generations(critiques, self.critique_params, "critique_params", f"critiques at step {step}",
                              self.backend.model_id)
            revision_chats = [self._revision_chat(c.prompt.text, c.state, z.text) for c, z in zip(chains, critiques)]
            revisions = self.backend.generate(revision_chats, self.revision_params, revision_seeds)
            prompt_contexts, revision_ids = [None] * len(chains), [None] * len(chains)
        else:
            critiques, revisions, prompt_contexts, revision_ids = self._fast_turns(chains, step, seeds, revision_seeds)
        check_generations(revisions, self.revision_params, "revision_params", f"revisions at step {step}",
                          self.backend.model_id)
        new_rewards = check_rewards(self.reward, self.reward.score(texts, [x.text for x in revisions]),
                                    len(chains), f"revisions at step {step}")
        current = torch.tensor([c.reward for c in chains], dtype=torch.float64)
        proposed = torch.tensor(new_rewards, dtype=torch.float64)
        extras: list[dict] = [{} for _ in chains]
        log_q_ratio = None
        extra_prompt_tokens = [0] * len(chains)
        extra_completion_tokens = [0] * len(chains)
        if self.acceptance.needs_logprobs:
            log_q_ratio, extras, extra_prompt_tokens, extra_completion_tokens = self._mh_terms(chains, step, critiques, revisions)
        alphas = self.acceptance(current, proposed, log_q_ratio).tolist()
        share = (time.perf_counter() - started) / max(len(chains), 1)
        records = []
        for i, (chain, z, x_new, r_new, alpha) in enumerate(zip(chains, critiques, revisions, new_rewards, alphas)):
            u = uniform(self._seed(chain, step, "accept"))
            accepted = bool(u < alpha)
            before, r_before = chain.state, chain.reward
            if accepted:
                chain.state, chain.reward = x_new.text, r_new
            if self.kv_across_steps:  # keys/values carried into the next step (else they stay None)
                if accepted:  # a new state starts a new context
                    chain.ids, chain.context = revision_ids[i], None
                else:  # same state, same critique chat: keep its keys/values
                    chain.context = prompt_contexts[i]
                chain.answer = None
            chain.step = step
            records.append(ChainStep(
                prompt_id=chain.prompt.id, chain_id=chain.chain_id, step=step, prompt=chain.prompt.text,
                response=before, reward_response=r_before, state=chain.state, reward_state=chain.reward,
                critique=z.text, revision=x_new.text, reward_revision=r_new, alpha=float(alpha), u=u,
                accepted=accepted, acceptance=self.acceptance.name, seed=seeds[i], model_id=self.backend.model_id,
                prompt_tokens=z.prompt_tokens + x_new.prompt_tokens + extra_prompt_tokens[i],
                completion_tokens=z.completion_tokens + x_new.completion_tokens + extra_completion_tokens[i],
                seconds=share, extra=extras[i]))
        return records

    def _prefix(self, chain: _Chain) -> tuple[int, ...]:
        return tuple(prompt_ids(self._session.tokenizer, user_chat(chain.prompt.text)))

    def _fast_turns(self, chains, step, seeds, revision_seeds):
        """Critique then revision through the KV session: the revision continues the critique's keys/values."""
        from dsc.backends.kv import Request

        requests = []
        for chain in chains:
            if chain.context is not None:  # rejected last step: the same critique chat, already computed
                requests.append(Request(ids=[], context=chain.context))
            elif chain.answer is not None:  # the proposal's keys/values: append the critique request
                requests.append(Request(ids=self._follow["critique"], context=chain.answer))
            else:
                prefix = self._prefix(chain)
                if chain.ids is not None:
                    rest = list(chain.ids) + self._follow["critique"]
                else:  # resumed from the store: only the text is known
                    full = prompt_ids(self._session.tokenizer, self._critique_chat(chain.prompt.text, chain.state))
                    prefix = prefix if tuple(full[:len(prefix)]) == prefix else ()
                    rest = full[len(prefix):]
                requests.append(Request(ids=rest, prefix=prefix))
        critiques, first = self._session.generate(requests, self.critique_params, seeds,
                                                  keep_prompt=self.kv_across_steps, keep_answer=True)
        check_generations(critiques, self.critique_params, "critique_params", f"critiques at step {step}",
                          self.backend.model_id)
        follow = [Request(ids=self._follow["revision"], context=c.answer_context) for c in first]
        for cont in first:
            cont.answer_context = None
        revisions, second = self._session.generate(follow, self.revision_params, revision_seeds)
        return critiques, revisions, [c.prompt_context for c in first], [_answer_ids(c) for c in second]

    def _mh_terms(self, chains, step, critiques, revisions):
        """log of [p(x'|c) q(z'|c,x') q(x|c,x',z')] / [p(x|c) q(z|c,x) q(x'|c,x,z)], teacher forced."""
        b = self.backend
        t_z, t_x = self.critique_params.temperature, self.revision_params.temperature
        texts = [c.prompt.text for c in chains]
        back_chats = [self._critique_chat(c.prompt.text, x.text) for c, x in zip(chains, revisions)]
        back = b.generate(back_chats, self.critique_params, [self._seed(c, step, "critique_back") for c in chains])
        prior_new = b.logprob([user_chat(t) for t in texts], [x.text for x in revisions])
        prior_old = b.logprob([user_chat(t) for t in texts], [c.state for c in chains])
        q_back_z = b.logprob(back_chats, [z.text for z in back], t_z)
        q_back_x = b.logprob([self._revision_chat(c.prompt.text, x.text, z.text) for c, x, z in zip(chains, revisions, back)],
                             [c.state for c in chains], t_x)
        q_fwd_z = b.logprob([self._critique_chat(c.prompt.text, c.state) for c in chains], [z.text for z in critiques], t_z)
        q_fwd_x = b.logprob([self._revision_chat(c.prompt.text, c.state, z.text) for c, z in zip(chains, critiques)],
                            [x.text for x in revisions], t_x)
        terms = zip(prior_new, prior_old, q_back_z, q_back_x, q_fwd_z, q_fwd_x)
        ratios, extras = [], []
        for i, (pn, po, bz, bx, fz, fx) in enumerate(terms):
            ratios.append(pn - po + bz + bx - fz - fx)
            extras.append({"log_p_new": pn, "log_p_old": po, "log_q_back_critique": bz, "log_q_back_revision": bx,
                           "log_q_critique": fz, "log_q_revision": fx, "critique_back": back[i].text})
        ratio = torch.tensor([r if math.isfinite(r) else -math.inf for r in ratios], dtype=torch.float64)
        return ratio, extras, [z.prompt_tokens for z in back], [z.completion_tokens for z in back]


def _answer_ids(continuation) -> list[int]:
    """An answer's ids without its end-of-turn token (the chat template closes the turn itself)."""
    return continuation.tokens[:-1] if continuation.finished else list(continuation.tokens)
