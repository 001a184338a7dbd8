"""Invariances every algorithm keeps (after TRL's tests/invariant): one optimizer step on a batch of
8 in one micro-batch equals the step in 8 micro-batches of 1 with gradient accumulation. Loss
normalisation under accumulation (a per-micro-batch mean averaged with equal weights) is the most
reported silent bug of RLHF trainers; here each micro-batch weighs by its share of the tokens,
sequences or pairs its loss is a mean over (``optim.accumulation_weights``). The 1 vs 2 processes
invariance is in tests/test_distributed.py."""

from __future__ import annotations

import pytest
import torch
from helpers import demo_trainer

from alignfw.models import disable_dropout

#: algo -> (data kind, options for "one micro-batch of everything", options for "micro-batches of 1")
CASES = {
    "ppo": ("reference", dict(minibatch_size=8, grad_accum=1, ppo_epochs=1), dict(minibatch_size=1, grad_accum=8, ppo_epochs=1)),
    "grpo": ("reference", dict(num_generations=2, minibatch_size=8, grad_accum=1), dict(num_generations=2, minibatch_size=1, grad_accum=8)),
    "rloo": ("reference", dict(num_generations=2, minibatch_size=8, grad_accum=1), dict(num_generations=2, minibatch_size=1, grad_accum=8)),
    "reinforce": ("reference", dict(minibatch_size=8), dict(minibatch_size=1)),
    "sft": ("sft", dict(micro_batch_size=8), dict(micro_batch_size=1)),
    "sft_ranking": ("ranked", dict(micro_batch_size=8), dict(micro_batch_size=1)),
    "dpo": ("preference", dict(micro_batch_size=8), dict(micro_batch_size=1)),
    "reward_model": ("preference", dict(micro_batch_size=8), dict(micro_batch_size=1)),
}
#: prompts per step: the online algorithms with 2 samples each see 8 sequences
PROMPTS = {"grpo": 4, "rloo": 4}


@pytest.mark.parametrize("algo", sorted(CASES))
def test_accumulated_micro_batches_equal_one_batch(builtin_plugins, tmp_path, algo):
    kind, whole, split = CASES[algo]
    n = PROMPTS.get(algo, 8)

    def step(opts, name):
        t = demo_trainer(builtin_plugins, tmp_path / name, algo, algo=opts, data={"kind": kind}, batch_size=n, eval_size=0)
        trained = t.algo.rm if algo == "reward_model" else t.model.lm
        disable_dropout(trained)  # SFT trains with dropout (random masks differ with the split)
        # plain SGD with lr 1: the update is the (clipped) accumulated gradient itself (AdamW's
        # g / (|g| + eps) would turn rounding noise in near-zero gradients into visible differences)
        params = list(trained.parameters()) if algo == "reward_model" else t.model.trainable_parameters()
        t.algo.optimizer = torch.optim.SGD(params, lr=1.0)
        before = [p.detach().clone() for p in trained.parameters()]
        torch.manual_seed(0)
        stats = t.algo.step(t.train_records[:n])
        grads_gone = all(p.grad is None for p in trained.parameters())
        return stats, [p.detach() - b for p, b in zip(trained.parameters(), before)], grads_gone

    (s1, d1, g1), (s8, d8, g8) = step(whole, "whole"), step(split, "split")
    assert g1 and g8
    if "response/length" in s1:  # the same samples were drawn in both runs
        assert s1["response/length"] == s8["response/length"] and s1["reward/mean"] == s8["reward/mean"]
    assert s1["grad_norm"] == pytest.approx(s8["grad_norm"], rel=1e-4)
    moved = sum(int((d != 0).sum()) for d in d1)
    assert moved > 0
    scale = max(float(d.abs().max()) for d in d1)
    for a, b in zip(d1, d8):  # fp32 sums in another order: agreement to ~1e-6 of the largest update
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale)
