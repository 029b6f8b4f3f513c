"""KV-cache reuse for chat continuations on a transformers causal LM (the HF backend's fast path).

A conversation that grows by turns (critique chat → critique → revision request → revision) keeps its
keys/values and computes only the new tokens; chats that share a prefix (the system line and the
user's prompt, for every chain of a prompt) prefill it once per session.

Guarantees:
- continuation is by token ids: the generated ids themselves, never re-tokenised text;
- per-row seeds as in ``HFBackend.generate``: a row's tokens depend on its seed and its own tokens
  only, not on its batch neighbours (up to padding numerics); greedy decoding gives the texts of
  ``generate`` on the rendered chats whenever decode→encode of the answers round-trips;
- padding, holes between turns and rows that stopped early are masked out of attention; positions
  count each row's own tokens, so a row's logits do not depend on the layout;
- ``prefilled_tokens`` counts the tokens computed in multi-token forwards (the P2 metric).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass
class KVContext:
    """Keys/values of one conversation's tokens, compact (no padding), ready to be continued."""

    kv: torch.Tensor
    """(layers, 2, kv_heads, n, head_dim): keys and values of the tokens seen so far."""
    pending: tuple[int, ...]
    """Tokens of the conversation not yet in ``kv`` (fed first when the context is continued)."""

    @property
    def length(self) -> int:
        return self.kv.shape[3] + len(self.pending)


@dataclass
class Request:
    """One row: continue ``context`` (or a shareable ``prefix``) with ``ids``, then generate."""

    ids: Sequence[int]
    """Token ids appended after the context's pending tokens (or after the prefix)."""
    context: KVContext | None = None
    """A conversation to continue; ``None`` starts from ``prefix``."""
    prefix: tuple[int, ...] = ()
    """Leading ids shared by several rows (prefilled once per session); ignored with a context."""


@dataclass
class Continuation:
    """What one row produced."""

    tokens: list[int]
    """Generated ids, ending with EOS when ``finished``."""
    finished: bool
    """True when the row stopped at EOS, False at max_new_tokens."""
    prompt_tokens: int
    """Tokens of the conversation the answer was generated from."""
    prompt_context: KVContext | None
    """The conversation up to the generation prompt (to generate from it again)."""
    answer_context: KVContext | None
    """The conversation plus the answer without its EOS (to append the next turn)."""


class _SlabCache:
    """Preallocated keys/values, one tensor for all layers; writes in place at the current column and
    returns views of the columns written so far (padding and holes are masked). DynamicCache's per-step
    torch.cat copied the cache every token: 52 % of decode time at batch 64 × 300 tokens on 2 CPU cores;
    SDPA reads these strided views as fast as contiguous tensors."""

    def __init__(self, slab: torch.Tensor, column: int):
        self.slab, self.column = slab, column

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        end = self.column + key.shape[2]
        self.slab[layer_idx, 0, :, :, self.column:end] = key
        self.slab[layer_idx, 1, :, :, self.column:end] = value
        return self.slab[layer_idx, 0, :, :, :end], self.slab[layer_idx, 1, :, :, :end]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.column


class KVSession:
    """Continuations that share a prefix cache; one session per sampling run (the model must not change
    during it). Built by ``HFBackend.kv_session()``."""

    def __init__(self, model, tokenizer, choose, max_prefixes: int = 128, compact_below: float = 0.75,
                 backend=None):
        config = model.config
        self.backend = backend
        self.model, self.tokenizer, self.choose = model, tokenizer, choose
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        self.layers = config.num_hidden_layers
        self.kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.max_prefixes, self.compact_below = max_prefixes, compact_below
        self._cache_kwarg = _cache_kwarg(model)
        self._prefixes: OrderedDict[tuple[int, ...], KVContext] = OrderedDict()
        self.prefilled_tokens = 0
        """Tokens whose keys/values were computed in multi-token forwards (prefill), padding excluded."""
        self.decoded_tokens = 0
        """Tokens fed one per row in decode forwards."""
        self.row_steps = 0
        """Rows × decode forwards, finished rows included (compute spent, useful or not)."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ── public ──────────────────────────────────────────────────────────────────────────────────
    def forget(self) -> None:
        """Drop the shared prefixes (the next call computes them again)."""
        self._prefixes.clear()

    @torch.inference_mode()
    def generate(self, requests: Sequence[Request], params, seeds: Sequence[int], keep_prompt: bool = False,
                 keep_answer: bool = False):
        """Continue every request and generate up to ``params.max_new_tokens``; returns (Generation records
        as ``HFBackend.generate`` makes them, continuations). Counts one generate call on the backend."""
        from dsc.backends.hf import decoded

        started = time.perf_counter()
        bases, blocks = self._resolve(requests)
        outs = self._generate(bases, blocks, params.max_new_tokens, params, seeds, keep_prompt, keep_answer)
        gens = [decoded(self.tokenizer, o.tokens, o.prompt_tokens, o.finished) for o in outs]
        if self.backend is not None:
            self.backend.count_call(gens, started)
        return gens, outs

    # ── prefix sharing ──────────────────────────────────────────────────────────────────────────
    def _resolve(self, requests):
        missing = list(OrderedDict.fromkeys(r.prefix for r in requests if r.context is None and r.prefix))
        missing = [p for p in missing if p not in self._prefixes]
        if missing:
            outs = self._generate([None] * len(missing), [list(p) for p in missing], 0, None, [0] * len(missing),
                                  keep_prompt=True, keep_answer=False)
            for prefix, out in zip(missing, outs):
                self._prefixes[prefix] = out.prompt_context
        bases, blocks = [], []
        for r in requests:
            base = r.context
            if base is None and r.prefix:
                base = self._prefixes[r.prefix]
                self._prefixes.move_to_end(r.prefix)
            block = (list(base.pending) if base is not None else []) + list(r.ids)
            if not block:
                raise ValueError("a request needs at least one token to feed (pending or ids)")
            bases.append(base)
            blocks.append(block)
        while len(self._prefixes) > self.max_prefixes:
            self._prefixes.popitem(last=False)
        return bases, blocks

    # ── the batch ───────────────────────────────────────────────────────────────────────────────
    def _generate(self, bases, blocks, max_new, params, seeds, keep_prompt, keep_answer):
        rows, device = len(blocks), self.device
        lengths = [0 if b is None else b.kv.shape[3] for b in bases]
        context, width_q = max(lengths), max(len(b) for b in blocks)
        width = context + width_q + max(max_new - 1, 0)
        slab = torch.empty(self.layers, 2, rows, self.kv_heads, width, self.head_dim, dtype=self.dtype, device=device)
        slab[..., :context + width_q, :].zero_()  # padding and holes are masked but must be finite (0 × NaN = NaN);
        # decode columns are written (a finished row's too) before any view reaches them
        valid = torch.zeros(rows, width, dtype=torch.bool, device=device)
        for r, base in enumerate(bases):
            if base is not None and lengths[r]:
                slab[:, :, r, :, context - lengths[r]:context] = base.kv
                valid[r, context - lengths[r]:context] = True
        ids = torch.full((rows, width_q), self.pad, dtype=torch.long)
        pos = torch.zeros(rows, width_q, dtype=torch.long)
        for r, block in enumerate(blocks):
            ids[r, width_q - len(block):] = torch.tensor(block)
            pos[r, width_q - len(block):] = torch.arange(lengths[r], lengths[r] + len(block))
            valid[r, context + width_q - len(block):context + width_q] = True
        logits = self._forward(slab, valid, ids.to(device), pos.to(device), context)
        self.prefilled_tokens += sum(len(b) for b in blocks)

        outs = [Continuation([], False, lengths[r] + len(blocks[r]), None, None) for r in range(rows)]
        if keep_prompt:  # the generation prompt minus its last token, which stays pending
            for r in range(rows):
                start = context + width_q - len(blocks[r])
                kv = torch.cat([slab[:, :, r, :, context - lengths[r]:context],
                                slab[:, :, r, :, start:context + width_q - 1]], dim=3)
                outs[r].prompt_context = KVContext(kv, (blocks[r][-1],))  # cat made a copy: no view of the slab
        if max_new == 0:
            return outs
        self._decode(slab, valid, logits, [lengths[r] + len(blocks[r]) for r in range(rows)], context + width_q,
                     max_new, params, seeds, outs, keep_answer)
        return outs

    def _decode(self, slab, valid, logits, next_pos, column, max_new, params, seeds, outs, keep_answer):
        from dsc.seeding import generator

        device = self.device
        gens = [generator(s, device) for s in seeds]
        slots = list(range(len(outs)))  # slab row → request row
        alive = [True] * len(slots)
        first_column = column
        pos = torch.tensor(next_pos, dtype=torch.long)
        for step in range(max_new):
            live = [s for s in range(len(slots)) if alive[s]]
            rows = logits[torch.tensor(live, device=device), -1].float() if len(live) < len(slots) else logits[:, -1].float()
            chosen = self.choose(rows, params, [gens[slots[s]] for s in live]).tolist()
            for s, token in zip(live, chosen):
                outs[slots[s]].tokens.append(token)
                if token == self.eos:
                    outs[slots[s]].finished, alive[s] = True, False
            if step + 1 == max_new:
                break
            if keep_answer:
                for s in live:
                    if not alive[s]:
                        self._answer(outs[slots[s]], slab, valid, s, first_column, column)
            if not any(alive):
                return
            if sum(alive) <= self.compact_below * len(slots) and max_new - step > 8:
                keep = [s for s in range(len(slots)) if alive[s]]
                index = torch.tensor(keep, device=device)
                slab, valid, pos = slab.index_select(2, index), valid.index_select(0, index), pos[torch.tensor(keep)]
                slots, alive = [slots[s] for s in keep], [True] * len(keep)
            feed = torch.full((len(slots), 1), self.pad, dtype=torch.long)
            mask = torch.tensor(alive)
            for s in range(len(slots)):
                if alive[s]:
                    feed[s, 0] = outs[slots[s]].tokens[-1]
            valid[:, column] = mask.to(device)
            logits = self._forward(slab, valid, feed.to(device), pos[:, None].to(device), column)
            pos = pos + mask.long()
            self.decoded_tokens += int(mask.sum())
            self.row_steps += len(slots)
            column += 1
        if keep_answer:
            for s, r in enumerate(slots):
                self._answer(outs[r], slab, valid, s, first_column, column)

    def _answer(self, out: Continuation, slab, valid, slot, first_column, column):
        """Answer context of a row: its valid columns so far; an unfed last token stays pending."""
        if out.answer_context is not None:
            return
        columns = valid[slot, :column].nonzero().squeeze(-1)
        fed = column - first_column if not out.finished else len(out.tokens) - 1
        pending = () if out.finished else tuple(out.tokens[fed:])
        out.answer_context = KVContext(slab[:, :, slot].index_select(3, columns), pending)  # index_select copies

    def _forward(self, slab, valid, ids, pos, column):
        """One forward of ``ids`` written at columns [column, column + q); returns last-position logits."""
        q = ids.shape[1]
        keys = torch.arange(column + q, device=ids.device)
        queries = torch.arange(column, column + q, device=ids.device)
        allowed = valid[:, None, :column + q] & (keys[None, None, :] <= queries[None, :, None])
        pad_query = ~valid[:, column:column + q]  # padding rows see themselves only (no empty softmax)
        allowed |= pad_query[:, :, None] & (keys[None, None, :] == queries[None, :, None])
        mask = torch.zeros(allowed.shape, dtype=self.dtype, device=ids.device)
        mask.masked_fill_(~allowed, torch.finfo(self.dtype).min)
        out = self.model(input_ids=ids, attention_mask=mask[:, None], position_ids=pos, use_cache=True,
                         logits_to_keep=1, **{self._cache_kwarg: _SlabCache(slab, column)})
        return out.logits


def _cache_kwarg(model) -> str:
    """``cache`` (transformers ≥ 5.2x) or ``past_key_values`` (earlier), read from the model's forward."""
    import inspect

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = inspect.signature(base.forward).parameters
    return "cache" if "cache" in names else "past_key_values"


def follow_up_ids(tokenizer, role: str, text: str) -> list[int]:
    """Ids that close an assistant answer and open the assistant's next turn after a ``role`` turn with
    ``text``, as the chat template renders them (ChatML: ``<|im_end|>\\n<|im_start|>user\\n…``)."""
    from dsc.chat import extend, prompt_ids, user_chat

    suffixes = []
    base = prompt_ids(tokenizer, user_chat("Question?"))
    for probe in ("Hello there.", "Another probe answer"):
        answer = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
        full = prompt_ids(tokenizer, extend(user_chat("Question?"), ("assistant", probe), (role, text)))
        if full[:len(base) + len(answer)] != base + answer:
            raise ValueError("the chat template does not render an assistant answer as its own ids; use the simple path")
        suffixes.append(full[len(base) + len(answer):])
    if suffixes[0] != suffixes[1]:
        raise ValueError("the chat template's turn suffix depends on the answer; use the simple path")
    return suffixes[0]


def count_prefill(session, calls: list):
    """Wrap a session so that each generate call appends (tokens prefilled, generations) to ``calls``:
    how tests and benches measure the prefill-reuse bound (issue 6, P2)."""
    inner = session.generate

    def generate(requests, params, seeds, **keep):
        before = session.prefilled_tokens
        gens, outs = inner(requests, params, seeds, **keep)
        calls.append((session.prefilled_tokens - before, gens))
        return gens, outs

    session.generate = generate
    return session
