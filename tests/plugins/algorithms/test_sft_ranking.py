"""SFT with a ranking loss: RRHF's hinge and PRO's list-wise loss against hand computations, the
records it accepts, and learning on the tiny task's ranked answers."""

from __future__ import annotations

import math

import pytest
import torch

from alignfw.exceptions import ConfigError, DataError
from alignfw.objectives import pro_loss, rrhf_loss


def test_rrhf_hinge_counts_only_misordered_pairs():
    scores = torch.tensor([[-1.0, -0.5, -2.0], [-0.1, -0.2, -0.3]])
    # record 0: p1 > p0 by 0.5 (misordered); p2 < p0, p2 < p1 fine. record 1: well ordered
    assert rrhf_loss(scores).item() == pytest.approx((0.5 + 0.0) / 2)
    worst = torch.tensor([[-3.0, -2.0, -1.0]])  # fully reversed: 1 + 2 + 1
    assert rrhf_loss(worst).item() == pytest.approx(4.0)


def test_pro_is_the_plackett_luce_nll():
    s = torch.tensor([[-1.0, -0.5, -2.0]])
    a, b, c = -1.0, -0.5, -2.0
    lse = lambda *x: math.log(sum(math.exp(v) for v in x))  # noqa: E731
    want = -(a - lse(a, b, c)) - (b - lse(b, c))
    assert pro_loss(s).item() == pytest.approx(want, rel=1e-6)
    assert pro_loss(s, temperature=2.0).item() == pytest.approx(-(a / 2 - lse(a / 2, b / 2, c / 2)) - (b / 2 - lse(b / 2, c / 2)), rel=1e-6)


def test_step_combines_ranking_and_sft_losses(make_trainer):
    t = make_trainer("sft_ranking", "ranked", dict(rank_weight=2.0, sft_weight=0.5, micro_batch_size=0), data=dict(n_train=8, n_eval=8), steps=1, batch_size=4)
    stats = t.algo.evaluate(t.train_records[:4])
    assert stats["eval/loss"] == pytest.approx(2.0 * stats["eval/loss/rank"] + 0.5 * stats["eval/loss/sft"], rel=1e-5)
    assert stats["eval/loss/rank"] > 0  # the base model prefers the decoy: the ranking is violated


def test_records_must_be_ranked_lists_of_equal_length(make_trainer):
    from alignfw.types import Record

    t = make_trainer("sft_ranking", "ranked", data=dict(n_train=8, n_eval=8), steps=1, batch_size=4)
    with pytest.raises(DataError, match="data.kind=ranked"):
        t.algo.step([Record(prompt="translate: cat =", response=" nyan")])
    with pytest.raises(DataError, match="same number"):
        t.algo.step([Record(prompt="a =", responses=[" x", " y"]), Record(prompt="b =", responses=[" x", " y", " z"])])
    with pytest.raises(ConfigError, match="loss_type"):
        make_trainer("sft_ranking", "ranked", dict(loss_type="listnet"), data=dict(n_train=8, n_eval=8))


@pytest.mark.slow
@pytest.mark.parametrize("loss_type", ["rrhf", "pro"])
def test_ranking_is_learned_on_held_out_prompts(make_trainer, loss_type):
    t = make_trainer(
        "sft_ranking", "ranked", dict(loss_type=loss_type, lr=3e-3, warmup_steps=5, micro_batch_size=0), steps=30, batch_size=32, eval_size=64, eval_every=0
    )
    summary = t.train()
    start, final = summary["start"], summary["final"]
    assert start["eval/rank_accuracy"] < 0.1 and final["eval/rank_accuracy"] > 0.95, (start, final)
    assert final["eval/top1"] > 0.95
    assert final["eval/logps/best"] > start["eval/logps/best"] + 2.0
