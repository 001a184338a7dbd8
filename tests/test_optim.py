"""Shared pieces of the offline algorithms: schedule, gradient accumulation, pairs from records,
and exact resume (checkpoint round trip of every offline algorithm's state)."""

from __future__ import annotations

import math

import pytest
import torch

from alignfw.exceptions import DataError
from alignfw.plugins.algorithms._common import accumulate_step, lr_schedule, preference_pairs, sft_response
from alignfw.types import Record


def _factors(schedule, warmup, total, min_ratio=0.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = lr_schedule(opt, schedule=schedule, warmup_steps=warmup, total_steps=total, min_lr_ratio=min_ratio)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_and_linear():
    cos = _factors("cosine", warmup=2, total=6)
    assert cos[:2] == pytest.approx([1 / 3, 2 / 3])
    # after warmup: progress (s - 2) / 4 for s = 2..5
    assert cos[2:] == pytest.approx([0.5 * (1 + math.cos(math.pi * p / 4)) for p in range(4)])
    assert _factors("linear", warmup=0, total=4, min_ratio=0.2) == pytest.approx([1.0, 0.8, 0.6, 0.4])
    assert _factors("constant", warmup=1, total=3) == pytest.approx([0.5, 1.0, 1.0])


def test_accumulated_micro_batches_equal_one_full_batch():
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    records = [Record(prompt=str(i)) for i in range(5)]  # the loss reads rows of x by record index

    def run(micro):
        w = torch.nn.Parameter(torch.ones(3))
        opt = torch.optim.SGD([w], lr=0.1)
        sched = lr_schedule(opt, schedule="constant", warmup_steps=0, total_steps=1)

        def loss_fn(recs):
            rows = x[[int(r.prompt) for r in recs]]
            loss = ((rows @ w) ** 2).mean()
            return loss, {"rows": float(len(recs))}

        stats = accumulate_step(loss_fn, records, params=[w], optimizer=opt, scheduler=sched, micro_batch_size=micro, max_grad_norm=0)
        return w.detach().clone(), stats

    full, s_full = run(0)
    for micro in (1, 2, 3):
        w, s = run(micro)
        torch.testing.assert_close(w, full)
        assert s["loss/total"] == pytest.approx(s_full["loss/total"], rel=1e-5)
        assert s["grad_norm"] == pytest.approx(s_full["grad_norm"], rel=1e-5)


def test_preference_pairs_from_preference_and_ranked_records():
    recs = [Record(prompt="p", chosen="a", rejected="b"), Record(prompt="q", responses=["x", "y", "z"])]
    assert preference_pairs(recs, all_pairs=False, algo="DPO") == (["p", "q", "q"], ["a", "x", "x"], ["b", "y", "z"])
    assert preference_pairs(recs, all_pairs=True, algo="RM") == (["p", "q", "q", "q"], ["a", "x", "x", "y"], ["b", "y", "z", "z"])
    with pytest.raises(DataError, match="DPO needs preference records.*kind 'sft'"):
        preference_pairs([Record(prompt="p", response="r")], all_pairs=False, algo="DPO")


def test_sft_response_falls_back_to_the_first_reference():
    assert sft_response(Record(prompt="p", response="r")) == "r"
    assert sft_response(Record(prompt="p", references=["a", "b"])) == "a"
    with pytest.raises(DataError, match="data.kind=sft"):
        sft_response(Record(prompt="p"))


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
