"""alignfw.optim (schedule, gradient accumulation) and the record helpers of alignfw.types (pairs,
and exact resume (checkpoint round trip of every offline algorithm's state)."""

from __future__ import annotations

import math

import pytest
import torch

from alignfw.exceptions import DataError
from alignfw.optim import batch_step, lr_schedule
from alignfw.types import Record, preference_pairs, sft_response


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

        stats = batch_step(loss_fn, records, params=[w], optimizer=opt, scheduler=sched, micro_batch_size=micro, max_grad_norm=0)
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
