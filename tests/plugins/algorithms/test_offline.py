"""What every offline algorithm must do: resume exactly from a checkpoint, and compose its tiny preset
over the real-model defaults."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.parametrize(
    "algo,kind,kwargs",
    [
        ("sft", "sft", dict(lr=1e-3, warmup_steps=1)),
        ("sft_ranking", "ranked", dict(lr=1e-3, warmup_steps=1, micro_batch_size=2)),
        ("reward_model", "preference", dict(lr=1e-3, warmup_steps=1)),
        ("dpo", "preference", dict(lr=1e-3, warmup_steps=1)),
    ],
)
def test_resume_continues_exactly(make_trainer, algo, kind, kwargs):
    """4 steps in one go == resume from the step-2 checkpoint (optimizer, schedule, reference or reward model) + 2 steps."""
    run = dict(steps=4, batch_size=4, eval_size=0)
    data = dict(n_train=64, n_eval=8)
    straight = make_trainer(algo, kind, kwargs, data=data, save_every=2, **run)
    straight.train()
    ckpt = straight.run_dir / "checkpoints" / "step_00000002"
    resumed = make_trainer(algo, kind, kwargs, data=data, resume=str(ckpt), **run)
    resumed.run_dir = resumed.run_dir.with_name(resumed.run_dir.name + "-resumed")
    resumed.train()
    a, b = straight.algo.state_dict(), resumed.algo.state_dict()
    assert a["scheduler"]["last_epoch"] == b["scheduler"]["last_epoch"] == 4
    trained = (lambda t: t.algo.rm) if algo == "reward_model" else (lambda t: t.model.lm)
    for (name, p), q in zip(trained(straight).named_parameters(), trained(resumed).parameters()):
        torch.testing.assert_close(p, q, msg=name)


@pytest.mark.parametrize("algo,kind", [("sft", "sft"), ("sft_ranking", "ranked"), ("reward_model", "preference"), ("dpo", "preference")])
def test_tiny_presets_compose_over_real_model_defaults(compose_typed, algo, kind):
    from omegaconf import OmegaConf

    from helpers import REPO

    preset = OmegaConf.load(REPO / "conf" / "preset" / f"tiny_{algo}.yaml")
    cfg = compose_typed(f"+algo={algo}")
    assert cfg.algo._name_ == algo and cfg.reward is None
    assert cfg.data.kind == preset.data.kind == kind
    assert cfg.algo.lr == preset.algo.lr
    plain = compose_typed(f"+algo={algo}", "model=hf_causal_lm")  # no preset: the real-model defaults
    assert plain.algo.lr < preset.algo.lr and plain.data.kind == "reference"
    assert compose_typed(f"+algo={algo}", "data.kind=sft", "algo.lr=0.5").algo.lr == 0.5
