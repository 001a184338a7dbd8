"""Gradient checkpointing (``model.gradient_checkpointing=true``) with every algorithm: the step
recomputes activations in the backward instead of storing them, and must give the same update."""

from __future__ import annotations

import pytest
import torch
from helpers import demo_trainer

from alignfw.models.classifier import checkpointing

#: algorithm -> data kind of its demo
ALGOS = {
    "ppo": "reference", "grpo": "reference", "rloo": "reference", "reinforce": "reference",
    "sft": "sft", "sft_ranking": "ranked", "dpo": "preference", "reward_model": "preference",
}  # fmt: skip


@pytest.mark.parametrize("algo", sorted(ALGOS))
def test_gradient_checkpointing_gives_the_same_step(builtin_plugins, tmp_path, algo):
    def one_step(on: bool):
        t = demo_trainer(
            builtin_plugins, tmp_path / str(on), algo, data={"kind": ALGOS[algo]}, batch_size=4, eval_size=0,
            model={"gradient_checkpointing": on},
        )  # fmt: skip
        trained = t.algo.rm if algo == "reward_model" else t.model.lm
        assert checkpointing(trained) == on
        block = max((m for m in trained.modules() if isinstance(m, torch.nn.ModuleList)), key=lambda m: sum(1 for _ in m.parameters()))[0]
        calls = []  # a module inside the first block: it runs again when the backward recomputes the block
        next(block.children()).register_forward_hook(lambda *_: calls.append(torch.is_grad_enabled()))
        torch.manual_seed(0)
        stats = t.algo.step(t.train_records[:4])
        return stats, [p.detach().clone() for p in trained.parameters()], len(calls)

    (s_on, w_on, n_on), (s_off, w_off, n_off) = one_step(True), one_step(False)
    assert n_on > n_off  # the backward ran the blocks again: activations were recomputed, not stored
    assert s_on["grad_norm"] == pytest.approx(s_off["grad_norm"], rel=1e-5)
    for a, b in zip(w_on, w_off):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
