"""Distillation: training sets from hand-made chain records, the loss mask, and LoRA training, reload
and export on the real bundled model (SmolLM2-135M, fp32, 2 threads).

The real-model tests share one module fixture that trains a fresh LoRA for 10 steps of forward_kl
through the real DSCDataModule + DistillModule + Lightning Trainer (≈10 s on 2 idle cores; the whole
file ≈20 s); each test checks one guarantee of the result.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsc.chat import prompt_ids, user_chat  # noqa: E402
from dsc.distill.datamodule import DSCDataModule, encode, pad_rows  # noqa: E402
from dsc.distill.divergences import DPO, ForwardKL  # noqa: E402
from dsc.distill.examples import (Example, Pair, chain_targets, default_target,  # noqa: E402
                                  preference_pairs)
from dsc.distill.module import DistillModule  # noqa: E402
from dsc.errors import DscError  # noqa: E402
from dsc.models import ModelSpec, load_model, load_tokenizer, materialise  # noqa: E402
from dsc.records import ChainStep  # noqa: E402

FP32 = ModelSpec(dtype="float32")
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


# ── hand-made chain records ────────────────────────────────────────────────────────────────────
def proposal(pid, chain, text, reward):
    return ChainStep(prompt_id=pid, chain_id=chain, step=0, prompt=f"prompt {pid}", response=text,
                     reward_response=reward, state=text, reward_state=reward)


def revise(pid, chain, step, before, r_before, revision, r_revision, accepted, critique="CRITIQUE-MARKER"):
    state, r_state = (revision, r_revision) if accepted else (before, r_before)
    return ChainStep(prompt_id=pid, chain_id=chain, step=step, prompt=f"prompt {pid}", response=before,
                     reward_response=r_before, state=state, reward_state=r_state, critique=critique,
                     revision=revision, reward_revision=r_revision, alpha=0.5, u=0.1 if accepted else 0.9,
                     accepted=accepted)


def chains() -> list[ChainStep]:
    return [
        # a/0: accepted at step 1, rejected at step 2 → accepted at least once; final = step-1 revision
        proposal("a", 0, "first draft", 0.1),
        revise("a", 0, 1, "first draft", 0.1, "better draft", 0.5, True),
        revise("a", 0, 2, "better draft", 0.5, "worse draft", 0.2, False),
        # a/1: never accepted → final = x₀ (identical text: no DPO pair)
        proposal("a", 1, "plain answer", 0.3),
        revise("a", 1, 1, "plain answer", 0.3, "other answer", 0.9, False),
        # b/0: accepted a revision with a LOWER reward (metropolis can) → chosen is x₀, by reward
        proposal("b", 0, "good start", 0.9),
        revise("b", 0, 1, "good start", 0.9, "weaker end", 0.4, True),
        # b/1: accepted, reward ties with x₀ → no DPO pair (ties dropped)
        proposal("b", 1, "tie one", 0.5),
        revise("b", 1, 1, "tie one", 0.5, "tie two", 0.5, True),
    ]


# ── training sets ──────────────────────────────────────────────────────────────────────────────
def test_final_state_takes_every_chains_last_state():
    examples = chain_targets(chains(), "final_state")
    got = {(e.prompt_id, e.response, e.reward) for e in examples}
    assert got == {("a", "better draft", 0.5), ("a", "plain answer", 0.3), ("b", "weaker end", 0.4),
                   ("b", "tie two", 0.5)}
    assert all(e.weight == 1.0 for e in examples)


def test_accepted_only_keeps_chains_that_accepted_once():
    examples = chain_targets(chains(), "accepted_only")
    assert {(e.prompt_id, e.response) for e in examples} == {("a", "better draft"), ("b", "weaker end"),
                                                               ("b", "tie two")}


def test_student_sees_only_the_original_prompt():
    for e in chain_targets(chains(), "final_state"):
        assert e.prompt == f"prompt {e.prompt_id}"
        assert "CRITIQUE" not in e.prompt + e.response


def test_default_target_follows_acceptance():
    assert default_target("greedy") == "accepted_only"
    assert default_target("metropolis") == "final_state"
    assert default_target("mh_exact") == "final_state"


def test_empty_training_set_is_a_one_line_error():
    never = [proposal("a", 0, "x", 0.1), revise("a", 0, 1, "x", 0.1, "y", 0.2, False)]
    with pytest.raises(DscError, match=r"distill.target=accepted_only leaves an empty training set") as info:
        chain_targets(never, "accepted_only")
    assert "\n" not in str(info.value)
    with pytest.raises(DscError, match="empty training set"):
        chain_targets([], "final_state")
    with pytest.raises(DscError, match="empty training set"):
        chain_targets([proposal("a", 0, "   ", 1.0)], "final_state")  # blank answers are not targets
    with pytest.raises(DscError, match="distill.target=best"):
        chain_targets(chains(), "best")


def test_dpo_pairs_final_vs_initial_by_reward():
    pairs = preference_pairs(chains(), "final_vs_initial")
    got = {(p.prompt_id, p.chosen, p.rejected, p.reward_chosen, p.reward_rejected) for p in pairs}
    assert got == {("a", "better draft", "first draft", 0.5, 0.1),  # final beats x₀
                   ("b", "good start", "weaker end", 0.9, 0.4)}     # x₀ beats final: ordered by reward
    assert all(p.reward_chosen > p.reward_rejected for p in pairs)


def test_dpo_pairs_from_revisions():
    pairs = preference_pairs(chains(), "revisions")
    got = {(p.chosen, p.rejected) for p in pairs}
    assert got == {("better draft", "first draft"), ("better draft", "worse draft"), ("other answer", "plain answer"),
                   ("good start", "weaker end")}  # the tie (tie one / tie two) is dropped


def test_dpo_without_usable_pairs_is_a_one_line_error():
    ties_and_repeats = [proposal("a", 0, "same", 0.5), revise("a", 0, 1, "same", 0.5, "other", 0.5, True),
                        proposal("a", 1, "kept", 0.2), revise("a", 1, 1, "kept", 0.2, "better", 0.7, False)]
    with pytest.raises(DscError, match="divergence=dpo has no usable pairs") as info:
        preference_pairs(ties_and_repeats, "final_vs_initial")
    assert "\n" not in str(info.value)
    with pytest.raises(DscError, match="divergence.pairs=best"):
        preference_pairs(chains(), "best")


def test_datamodule_setup_samples_then_builds(tokenizer):
    calls = []
    dm = DSCDataModule(tokenizer, ForwardKL(), sample_shard=lambda r, w: calls.append((r, w)),
                       load_records=chains, train_prompts=list, target="accepted_only")
    dm.setup("fit")
    assert calls == [(0, 1)]
    assert len(dm.items) == 3
    dm = DSCDataModule(tokenizer, DPO(), sample_shard=lambda r, w: None, load_records=chains, train_prompts=list)
    dm.setup("fit")
    assert all(isinstance(p, Pair) for p in dm.items) and len(dm.items) == 2


# ── loss mask ──────────────────────────────────────────────────────────────────────────────────
@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(materialise(FP32)[0])


def test_loss_mask_covers_exactly_response_and_end_of_turn(tokenizer):
    prompt, response = "Write a short review of Titanic.", "It was long, wet and rather sad."
    ids, mask = encode(tokenizer, prompt, response, max_length=512)
    head = prompt_ids(tokenizer, user_chat(prompt))
    body = tokenizer(response, add_special_tokens=False)["input_ids"]
    assert ids == head + body + [tokenizer.eos_token_id]
    assert mask == [0] * len(head) + [1] * (len(body) + 1)
    trained = [t for t, m in zip(ids, mask) if m]
    assert tokenizer.decode(trained) == response + tokenizer.eos_token
    assert prompt in tokenizer.decode([t for t, m in zip(ids, mask) if not m])


def test_loss_mask_does_not_depend_on_the_prompt(tokenizer):
    response = "It was long, wet and rather sad."
    _, mask_a = encode(tokenizer, "Review Titanic.", response, 512)
    _, mask_b = encode(tokenizer, "Review Avatar.", response, 512)  # one prompt token changed
    _, mask_c = encode(tokenizer, "Please review the film Titanic at length.", response, 512)
    assert sum(mask_a) == sum(mask_b) == sum(mask_c) == len(tokenizer(response, add_special_tokens=False)["input_ids"]) + 1


def test_padding_and_truncation_are_masked(tokenizer):
    rows = [encode(tokenizer, "Hi.", "Hello there, how are you today?", 512), encode(tokenizer, "Hi.", "Yo.", 512)]
    batch = pad_rows(rows, tokenizer.pad_token_id)
    assert batch["input_ids"].shape == batch["loss_mask"].shape == batch["attention_mask"].shape
    for (ids, mask), loss_mask, attention in zip(rows, batch["loss_mask"], batch["attention_mask"]):
        assert loss_mask[len(ids):].sum() == 0 and attention[len(ids):].sum() == 0
        assert loss_mask.sum() == sum(mask)
    head = len(prompt_ids(tokenizer, user_chat("Hi.")))
    ids, mask = encode(tokenizer, "Hi.", "one two three four five six seven eight nine ten", head + 3)
    assert len(ids) == head + 3 and sum(mask) == 3  # cut from the right, prompt intact


def test_collate_pairs_stack_chosen_then_rejected(tokenizer):
    dm = DSCDataModule(tokenizer, DPO(), sample_shard=None, load_records=None, train_prompts=None)
    pairs = [Pair("a", "Hi.", "Good answer.", "Bad.", 1.0, 0.0), Pair("b", "Yo.", "Fine answer here.", "No.", 1.0, 0.0)]
    batch = dm.collate(list(enumerate(pairs)))
    assert batch["input_ids"].shape[0] == 4
    responses = [tokenizer.decode(row[m.bool()], skip_special_tokens=True)
                 for row, m in zip(batch["input_ids"], batch["loss_mask"])]
    assert responses == ["Good answer.", "Fine answer here.", "Bad.", "No."]


def test_collate_examples_carry_weights_and_rewards(tokenizer):
    dm = DSCDataModule(tokenizer, ForwardKL(), sample_shard=None, load_records=None, train_prompts=None)
    items = [Example("a", "Hi.", "Hello.", 0.5, 2.0), Example("b", "Yo.", "Hey there.", -1.0, 0.5)]
    batch = dm.collate(list(enumerate(items)))
    assert batch["weight"].tolist() == [2.0, 0.5] and batch["reward"].tolist() == [0.5, -1.0]
    assert batch["index"].tolist() == [0, 1]


# ── sequence log-probs on a deterministic toy model ────────────────────────────────────────────
class ToyLM(torch.nn.Module):
    """Logits are a fixed table indexed by position: easy to perturb one position at a time."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(logits.clone())

    def forward(self, input_ids, attention_mask):
        return SimpleNamespace(logits=self.table[: input_ids.shape[0], : input_ids.shape[1]])


def test_sequence_logprobs_ignore_prompt_and_padding():
    torch.manual_seed(0)
    vocab, prompt_len = 7, 3
    input_ids = torch.tensor([[5, 6, 1, 2, 3, 0, 0]])  # prompt 3 tokens, response 2 + end, then padding
    loss_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 0]])
    logits = torch.randn(1, 7, vocab)
    module = DistillModule(ToyLM(logits), None, ForwardKL(), optimizer=None, lora=None)
    value = module.sequence_logprobs(input_ids, attention, loss_mask)
    log_probs = torch.log_softmax(logits, -1)
    by_hand = sum(log_probs[0, t - 1, input_ids[0, t]] for t in (3, 4, 5))  # position t−1 predicts token t
    assert value.item() == pytest.approx(by_hand.item(), rel=1e-6)

    for position in (0, 1, 5, 6):  # predict prompt tokens, or padding, or nothing
        bumped = logits.clone()
        bumped[0, position] += 10 * torch.randn(vocab)
        module.model.table.data = bumped
        assert module.sequence_logprobs(input_ids, attention, loss_mask).item() == pytest.approx(value.item(), rel=1e-6)
    bumped = logits.clone()
    bumped[0, prompt_len - 1, input_ids[0, prompt_len]] += 5.0  # the last prompt position predicts the first answer token
    module.model.table.data = bumped
    assert module.sequence_logprobs(input_ids, attention, loss_mask).item() > value.item() + 1.0


def test_lora_init_follows_the_run_seed_and_leaves_the_global_rng_alone():
    """Same seed → the same adapter init (so a rerun trains the same adapter); another seed → another."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1)
    base = LlamaForCausalLM(config)
    lora = {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"]}

    def adapter_init(seed: int, before: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(before)  # the global RNG's state (whatever ran before) must not matter
        model = LlamaForCausalLM(config)
        model.load_state_dict(base.state_dict())
        module = DistillModule(model, None, ForwardKL(), optimizer=None, lora=lora, seed=seed)
        return {k: v.clone() for k, v in module.model.state_dict().items() if "lora_A" in k}

    first, again, other = adapter_init(3, before=1), adapter_init(3, before=2), adapter_init(4, before=1)
    assert first and all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    model = LlamaForCausalLM(config)
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    DistillModule(model, None, ForwardKL(), optimizer=None, lora=lora, seed=3)
    assert torch.equal(torch.rand(3), expected), "wrapping must not move the global RNG"


# ── the real model: a 10-step LoRA fit ─────────────────────────────────────────────────────────
TRAIN = [
    Example("p0", "What is the secret word?", "The secret word is pineapple.", 1.0),
    Example("p1", "Name a fruit.", "Pineapple, always pineapple.", 1.0),
    Example("p2", "Say something nice.", "You are a pineapple of kindness.", 1.0),
    Example("p3", "How are you?", "Pineapple-happy, thank you.", 1.0),
]
PROBE = "What is the secret word?"


class LossLog:
    def __init__(self):
        import lightning as L

        class _Callback(L.Callback):
            def on_train_batch_end(cb, trainer, module, outputs, batch, batch_idx):  # noqa: N805
                self.losses.append(float(outputs["loss"]))
                self.train_mode.append(all(m.training for m in module.model.modules()))

        self.losses: list[float] = []
        self.train_mode: list[bool] = []
        self.callback = _Callback()


def fit(model, tokenizer, divergence, records, steps: int, lr: float, root: Path, items=None):
    """Train a fresh LoRA through the real DataModule, module and Trainer; returns per-step losses.
    ``items``: fixed examples instead of the training set built from ``records``."""
    import lightning as L

    dm = DSCDataModule(tokenizer, divergence, sample_shard=lambda rank, world: None, load_records=lambda: records,
                       train_prompts=list, batch_size=2, max_length=64)
    if items is not None:
        dm.build = lambda _records: list(items)
    module = DistillModule(model, tokenizer, divergence, lora=dict(LORA),
                           optimizer=lambda params: torch.optim.AdamW(params, lr=lr))
    log = LossLog()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, max_epochs=-1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, callbacks=[log.callback], default_root_dir=str(root))
    trainer.fit(module, datamodule=dm)
    return module, trainer, log


def dataset_nll(module, tokenizer) -> float:
    rows = [encode(tokenizer, e.prompt, e.response, 64) for e in TRAIN]
    batch = pad_rows(rows, tokenizer.pad_token_id)
    module.model.eval()
    with torch.no_grad():
        return -module.sequence_logprobs(**batch).mean().item()


def probe_logits(model, tokenizer) -> torch.Tensor:
    ids, _ = encode(tokenizer, PROBE, "The secret word is", 64)
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits


def base_name(name: str) -> str:
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(2)
    torch.manual_seed(0)
    model, tokenizer, _ = load_model(FP32)
    before_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    base_logits = probe_logits(model, tokenizer)
    root = tmp_path_factory.mktemp("fit")
    module = DistillModule(model, tokenizer, ForwardKL(), lora=dict(LORA), optimizer=None)
    nll_before = dataset_nll(module, tokenizer)
    module, trainer, log = fit(module.model, tokenizer, ForwardKL(), [], steps=10, lr=1e-2, root=root, items=TRAIN)
    eval_after_fit = not any(m.training for m in module.model.modules())
    return SimpleNamespace(module=module, trainer=trainer, tokenizer=tokenizer, losses=log.losses, root=root,
                           train_mode=log.train_mode, eval_after_fit=eval_after_fit,
                           before_weights=before_weights, base_logits=base_logits, nll_before=nll_before,
                           nll_after=dataset_nll(module, tokenizer), logits=probe_logits(module.model, tokenizer))


def test_fit_runs_ten_steps_and_loss_drops(trained):
    assert trained.trainer.global_step == 10 and len(trained.losses) == 10
    assert all(math.isfinite(v) for v in trained.losses)
    assert trained.nll_after < 0.5 * trained.nll_before, (trained.nll_before, trained.nll_after)
    assert sum(trained.losses[-3:]) < sum(trained.losses[:3])
    # trained in train mode (dropout, gradient checkpointing live), handed back in eval mode
    assert all(trained.train_mode) and trained.eval_after_fit


def test_fit_leaves_base_weights_bit_identical(trained):
    after = {base_name(n): p for n, p in trained.module.model.named_parameters() if "lora_" not in n}
    assert set(after) == set(trained.before_weights)
    for name, value in trained.before_weights.items():
        assert not after[name].requires_grad, name
        assert torch.equal(after[name], value), name
    lora = [p for n, p in trained.module.model.named_parameters() if "lora_" in n]
    assert lora and all(p.requires_grad for p in lora)


def test_trained_logits_differ_from_base(trained):
    assert (trained.logits - trained.base_logits).abs().max().item() > 1e-2
    with trained.module.model.disable_adapter():  # adapters off = the base model exactly
        off = probe_logits(trained.module.model, trained.tokenizer)
    assert torch.allclose(off, trained.base_logits, atol=1e-5)


def test_training_logprobs_match_teacher_forced_scoring(trained):
    """The divergence's log-probs and the backend's logprob (mh_exact, perplexity) agree on the real model."""
    from dsc.backends.hf import HFBackend

    backend = HFBackend(model=None, loaded=(trained.module.model, trained.tokenizer, "student"))
    scored = backend.logprob([user_chat(e.prompt) for e in TRAIN], [e.response for e in TRAIN])
    batch = pad_rows([encode(trained.tokenizer, e.prompt, e.response, 64) for e in TRAIN], trained.tokenizer.pad_token_id)
    with torch.no_grad():
        trained_logp = trained.module.sequence_logprobs(**batch)
    assert trained_logp.tolist() == pytest.approx(scored, abs=1e-3)


def test_checkpoint_holds_adapter_optimizer_and_step_only(trained):
    path = trained.root / "manual.ckpt"
    trained.trainer.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 10 and ckpt["optimizer_states"]
    keys = list(ckpt["state_dict"])
    assert keys and all("lora_" in k for k in keys)  # never the frozen base
    assert path.stat().st_size < 10_000_000  # the base alone is > 500 MB in fp32


def test_saved_adapter_reloads_to_same_logits(trained, tmp_path):
    from peft import PeftModel

    trained.module.model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    base, tokenizer, _ = load_model(FP32)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    assert (probe_logits(reloaded, tokenizer) - trained.logits).abs().max().item() < 1e-5


def test_stage_evaluate_puts_the_adapter_on_the_student_never_on_a_transfer_teacher(trained, tmp_path):
    """stage=evaluate rebuilds the student from ``model`` + the run's adapter; under transfer the sampler's
    backend is the teacher and stays the chain arm's model, untouched (it once got the student's LoRA)."""
    from dataclasses import asdict

    from omegaconf import OmegaConf
    from peft import PeftModel

    from dsc.backends.hf import HFBackend
    from dsc.distillation import evaluation_backend

    trained.module.model.save_pretrained(tmp_path / "adapter")
    sampler_backend = HFBackend(model=FP32)
    transfer = OmegaConf.create({"teacher": {"name": "teacher"}, "model": asdict(FP32)})
    student, chain = evaluation_backend(transfer, sampler_backend, run_dir=tmp_path)
    assert chain is sampler_backend and student is not sampler_backend
    assert not isinstance(sampler_backend.model, PeftModel) and isinstance(student.model, PeftModel)
    assert (probe_logits(student.model, student.tokenizer) - trained.logits).abs().max().item() < 1e-5

    own, chain = evaluation_backend(OmegaConf.create({"model": asdict(FP32)}), sampler_backend, run_dir=tmp_path)
    assert own is sampler_backend and chain is None and isinstance(own.model, PeftModel)


def test_export_writes_a_plain_hf_model_with_the_same_logits(trained, tmp_path):
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dsc.export import main as export_main

    run_dir = tmp_path / "run"
    trained.module.model.save_pretrained(run_dir / "adapter")
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml({"model": {
        "name": "smollm2_135m", "path": None, "gguf": "bundled", "dtype": "float32", "device": "cpu",
        "trust_remote_code": False}, "seed": 0}))
    out = export_main([str(run_dir), "--out", str(tmp_path / "merged")])
    files = {p.name for p in out.iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "tokenizer.json" in files
    assert not any(name.startswith("adapter_") for name in files)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (probe_logits(merged, tokenizer) - trained.logits).abs().max().item() < 1e-4
    with pytest.raises(DscError, match="exists and is not empty"):
        export_main([str(run_dir), "--out", str(out)])


def test_export_errors_name_the_cause(tmp_path):
    from dsc.export import export

    with pytest.raises(DscError, match="has no config.yaml"):
        (tmp_path / "adapter").mkdir()
        (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
        export(tmp_path)
    with pytest.raises(DscError, match="has no trained adapter"):
        export(tmp_path / "adapter")


def test_dpo_loss_at_lora_init_is_log2_on_the_real_model(tokenizer):
    """Through the module's own training_step: π_θ (fresh LoRA) and π_ref (adapters off) agree."""
    import warnings

    torch.set_num_threads(2)
    model, _, _ = load_model(FP32)
    dm = DSCDataModule(tokenizer, DPO(beta_dpo=0.1), sample_shard=lambda rank, world: None, load_records=chains,
                       train_prompts=list, max_length=64)
    dm.setup("fit")
    batch = dm.collate(list(enumerate(dm.items)))  # two usable final-vs-initial pairs
    module = DistillModule(model, tokenizer, DPO(beta_dpo=0.1), lora=dict(LORA), optimizer=None)
    module.on_fit_start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log() outside a Trainer only warns
        loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-4)
    assert loss.requires_grad
    assert sorted(module._reference) == [-2, -1, 0, 1]  # reference log-probs cached per answer
