"""P1/P2: useful tokens/s of the dsc chain sampler vs a per-prompt generate loop, and vs the compute ceiling.

    python bench/sampler.py --quick          # < 5 min on 2 cores; last line: P1 ratio_vs_loop=<x> frac_of_ceiling=<y>
    python bench/sampler.py                  # default turn budgets (96/64/96), batch sizes 32, 64, 128

Same prompts (sentiment task), critique instructions, reward (VADER), acceptance and turn budgets for
both arms. Baseline: one chat at a time through ``model.generate`` (sampling), proposal → critique →
revision per chain, on a subset of the chains. Candidate: ``ChainSampler`` on ``HFBackend`` (fast path:
KV reuse within a step, shared prompt prefixes, preallocated cache), bf16 where the CPU supports it.
Useful tokens = generated tokens up to EOS, every turn. Ceiling: bf16 GEMM at decode shape
(batch × hidden @ hidden × intermediate) → tokens/s at 2 × parameters FLOP/token, measured between
the repeats. Median of ≥ 3 repeats after a warm-up; JSON in bench/results/sampler.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Timer, gemm_ceiling, load, machine, median, set_threads, write_json  # noqa: E402  (before torch)

import torch  # noqa: E402
import yaml  # noqa: E402

from dsc.acceptance import Metropolis  # noqa: E402
from dsc.backends.base import SamplingParams  # noqa: E402
from dsc.backends.hf import HFBackend  # noqa: E402
from dsc.chat import extend, prompt_ids, user_chat  # noqa: E402
from dsc.models import ModelSpec, cpu_supports_bf16  # noqa: E402
from dsc.paths import config_dir  # noqa: E402
from dsc.prompts import NegativeReviewPrompts  # noqa: E402
from dsc.rewards.vader import VaderSentiment  # noqa: E402
from dsc.sampler import ChainSampler, CritiquePrompts  # noqa: E402
from dsc.store import SampleStore  # noqa: E402


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short budgets, one batch size, 3 repeats (< 5 min)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="auto", help="auto (bf16 where supported), bfloat16 or float32")
    p.add_argument("--batch-sizes", default=None, help="comma-separated chains per generate call")
    p.add_argument("--chains", type=int, default=4, help="chains per prompt")
    p.add_argument("--tokens", default=None, help="proposal,critique,revision max_new_tokens")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--loop-chains", type=int, default=None, help="chains run one chat at a time by the baseline")
    p.add_argument("--kv-across-steps", action="store_true", help="also time kv_across_steps=True (2 steps)")
    p.add_argument("--out", default=None, help="folder for sampler.json (default bench/results)")
    return p.parse_args()


def critique_prompts() -> CritiquePrompts:
    return CritiquePrompts(**yaml.safe_load((config_dir() / "critique" / "sentiment.yaml").read_text()))


def run_sampler(backend, prompts, batch, chains, steps, budgets, seed, kv_across_steps=False, wrap=None):
    proposal, critique, revision = (SamplingParams(max_new_tokens=n, temperature=0.8) for n in budgets)
    sampler = ChainSampler(backend, VaderSentiment(), Metropolis(beta=0.1), critique_prompts(), num_chains=chains,
                           num_steps=steps, batch_size=batch, proposal=proposal, critique_params=critique,
                           revision_params=revision, seed=seed, kv_across_steps=kv_across_steps)
    sessions = []
    make = backend.kv_session

    def spy():
        session = make()
        sessions.append(session)
        return wrap(session) if wrap else session

    backend.kv_session = spy
    try:
        with tempfile.TemporaryDirectory() as folder, Timer() as timer:
            sampler.run(prompts, SampleStore(folder), progress=False)
            records = SampleStore(folder).load()
    finally:
        del backend.kv_session
    useful = sum(r.completion_tokens for r in records)
    session = sessions[0] if sessions else None
    steps_records = [r for r in records if r.step > 0]
    return {"seconds": timer.seconds, "useful_tokens": useful, "tokens_per_s": useful / timer.seconds,
            "prefilled_tokens": session.prefilled_tokens if session else None,
            "decoded_tokens": session.decoded_tokens if session else None,
            "row_steps": session.row_steps if session else None,
            "acceptance_rate": sum(r.accepted for r in steps_records) / max(len(steps_records), 1)}


def p2_fraction(backend, prompts, batch, chains, budgets, kv_across_steps, steps):
    """Prefilled tokens of the last step / that step's conversation tokens (c, x_t, request, z, request, x')."""
    calls = []

    def wrap(session):
        from dsc.backends.kv import count_prefill

        return count_prefill(session, calls)

    run_sampler(backend, prompts, batch, chains, steps, budgets, seed=11, kv_across_steps=kv_across_steps, wrap=wrap)
    prefilled = sum(n for n, _ in calls[-2:])
    conversation = sum(x.prompt_tokens + x.completion_tokens for x in calls[-1][1])
    simple = sum(z.prompt_tokens + x.prompt_tokens for z, x in zip(calls[-2][1], calls[-1][1]))
    return {"prefilled": prefilled, "conversation": conversation, "fraction": prefilled / conversation,
            "simple_path_fraction": simple / conversation, "step": steps, "kv_across_steps": kv_across_steps}


def per_prompt_loop(backend, prompts, chains, budgets, limit):
    """The paper's loop: every chat alone through model.generate (ollama-style), same turns and budgets."""
    model, tok, crit = backend.model, backend.tokenizer, critique_prompts()
    eos = tok.eos_token_id
    useful = 0

    def one(chat, n):
        ids = torch.tensor([prompt_ids(tok, chat)], device=backend.device)
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=True,
                             temperature=0.8, top_p=1.0, top_k=None, eos_token_id=eos, pad_token_id=tok.pad_token_id)
        new = out[0, ids.shape[1]:].tolist()
        length = new.index(eos) + 1 if eos in new else len(new)
        return tok.decode(new[:length], skip_special_tokens=True).strip(), length

    torch.manual_seed(0)
    jobs = [(p, k) for p in prompts for k in range(chains)][:limit]
    reward = VaderSentiment()
    with torch.inference_mode(), Timer() as timer:
        for prompt, _ in jobs:
            x, n0 = one(user_chat(prompt.text), budgets[0])
            critique_chat = extend(user_chat(prompt.text), ("assistant", x), ("user", crit.critique_request))
            z, n1 = one(critique_chat, budgets[1])
            x2, n2 = one(extend(critique_chat, ("assistant", z), ("user", crit.revision_request)), budgets[2])
            reward.score([prompt.text] * 2, [x, x2])
            useful += n0 + n1 + n2
    return {"seconds": timer.seconds, "useful_tokens": useful, "tokens_per_s": useful / timer.seconds, "chains": len(jobs)}


def main() -> None:
    args = parse()
    threads = set_threads(args.threads)
    budgets = tuple(int(x) for x in args.tokens.split(",")) if args.tokens else ((48, 32, 48) if args.quick else (96, 64, 96))
    batch_sizes = [int(x) for x in args.batch_sizes.split(",")] if args.batch_sizes else ([64] if args.quick else [32, 64, 128])
    dtype = args.dtype if args.dtype != "auto" else ("bfloat16" if cpu_supports_bf16() else "float32")
    load_start = load()
    print(f"machine: {machine()}  load {load_start}  threads {threads}  dtype {dtype}  budgets {budgets}", flush=True)

    backend = HFBackend(ModelSpec(dtype=dtype))
    config = backend.model.config
    params = sum(p.numel() for p in backend.model.parameters())
    largest = max(batch_sizes)
    prompts = [p for p in NegativeReviewPrompts().load() if p.split == "train"][: largest // args.chains]
    ceilings = []

    def ceiling(batch):
        value = gemm_ceiling(batch, config.hidden_size, config.intermediate_size, params, torch.bfloat16)
        ceilings.append((batch, value["tokens_per_s"]))
        return value

    # warm-up: kernels, tokenizer, reward lexicon
    run_sampler(backend, prompts[:2], 8, 2, 1, (8, 8, 8), seed=0)

    candidates = {}
    for batch in batch_sizes:
        chosen = prompts[: batch // args.chains]
        runs = []
        for r in range(args.repeats):
            ceiling(batch)
            runs.append(run_sampler(backend, chosen, batch, args.chains, 1, budgets, seed=r))
            print(f"  candidate batch {batch} repeat {r}: {runs[-1]['tokens_per_s']:.1f} tok/s "
                  f"({runs[-1]['useful_tokens']} tokens, {runs[-1]['seconds']:.1f} s) load {load()}", flush=True)
        ceiling(batch)
        candidates[batch] = {"tokens_per_s": median(r["tokens_per_s"] for r in runs), "runs": runs,
                             "ceiling_tokens_per_s": median(c for b, c in ceilings if b == batch)}
    best = max(candidates, key=lambda b: candidates[b]["tokens_per_s"])
    cand = candidates[best]

    loop_chains = args.loop_chains or (2 if args.quick else 4)
    loop_runs = []
    for r in range(args.repeats):
        loop_runs.append(per_prompt_loop(backend, prompts, args.chains, budgets, loop_chains))
        print(f"  baseline repeat {r}: {loop_runs[-1]['tokens_per_s']:.1f} tok/s load {load()}", flush=True)
    baseline = median(r["tokens_per_s"] for r in loop_runs)

    p2 = [p2_fraction(backend, prompts[:4], 16, args.chains, budgets, False, 1)]
    if args.kv_across_steps:
        p2.append(p2_fraction(backend, prompts[:4], 16, args.chains, budgets, True, 2))
        timed = run_sampler(backend, prompts[: best // args.chains], best, args.chains, 2, budgets, 0, True)
        candidates["kv_across_steps_2_steps"] = timed
    ratio = cand["tokens_per_s"] / baseline
    frac = cand["tokens_per_s"] / cand["ceiling_tokens_per_s"]
    result = {"machine": machine(), "load_start": load_start, "load_end": load(), "dtype": dtype, "threads": threads,
              "budgets": budgets, "chains_per_prompt": args.chains, "best_batch": best, "candidates": candidates,
              "baseline": {"tokens_per_s": baseline, "runs": loop_runs}, "ceilings": ceilings, "p2": p2,
              "ratio_vs_loop": ratio, "frac_of_ceiling": frac, "quick": args.quick}
    path = write_json("sampler.json", result, args.out)
    print(f"baseline (per-prompt loop, {loop_chains} chains): {baseline:.1f} tok/s")
    for batch, c in candidates.items():
        if isinstance(batch, int):
            print(f"candidate ChainSampler batch {batch}: {c['tokens_per_s']:.1f} tok/s; ceiling {c['ceiling_tokens_per_s']:.0f} tok/s")
    for item in p2:
        print(f"P2 step {item['step']} kv_across_steps={item['kv_across_steps']}: prefilled {item['fraction']:.1%} of the "
              f"step's conversation tokens (simple path {item['simple_path_fraction']:.0%})")
    print(f"load average start {load_start} end {result['load_end']}; wrote {path}")
    print(f"P1 ratio_vs_loop={ratio:.2f} frac_of_ceiling={frac:.3f}")


if __name__ == "__main__":
    main()
