"""Reward-model training: Bradley-Terry and regression losses against hand computations, the
backbone copied from the policy, and the round trip into ``+reward=reward_model``."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignfw.exceptions import DataError
from alignfw.objectives import bradley_terry_loss
from alignfw.plugins.algorithms.reward_model import pair_accuracy
from alignfw.types import Record


def test_bradley_terry_loss_and_accuracy():
    loss, acc = bradley_terry_loss(torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 0.5, 2.0]))
    want = (math.log1p(math.exp(-1.0)) + math.log1p(math.exp(0.5)) + math.log(2)) / 3
    assert loss.item() == pytest.approx(want)
    assert acc.item() == pytest.approx(1 / 3)  # a tie is not a win


def test_pair_accuracy_skips_ties_in_the_target():
    target = torch.tensor([0.0, 1.0, 1.0, 0.5])
    pred = torch.tensor([0.1, 0.9, 0.2, 0.3])
    # ordered target pairs (a<b): (0,1) ok, (0,2) ok, (0,3) ok, (3,1) ok, (3,2) wrong; (1,2) is a tie
    assert pair_accuracy(pred, target) == pytest.approx(4 / 5)
    assert pair_accuracy(pred, torch.ones(4)) is None


def test_backbone_is_the_policys(make_trainer):
    t = make_trainer("reward_model", "preference", data=dict(n_train=8, n_eval=8), steps=1, batch_size=4)
    rm, lm = t.algo.rm, t.model.lm
    assert rm.config.num_labels == 1 and rm.config.pad_token_id == t.model.tokenizer.pad_token_id
    assert t.model.fast_tokenizer is not None and t.algo.tokenizer.fast is t.model.fast_tokenizer  # the policy's Rust tokenizer, not a second one
    for (name, p), q in zip(lm.base_model.named_parameters(), rm.base_model.parameters()):
        assert torch.equal(p, q), name
    assert not any(p.data_ptr() == q.data_ptr() for p, q in zip(lm.parameters(), rm.parameters()))  # a copy


def test_mixed_batch_loss_is_bradley_terry_over_all_pairs_plus_mse(make_trainer):
    t = make_trainer("reward_model", "preference", dict(score_weight=0.5, center_rewards_coef=0.1), data=dict(n_train=8, n_eval=8), steps=1, batch_size=4)
    recs = [
        Record(prompt="translate: cat =", chosen=" nyan", rejected=" taber"),
        Record(prompt="translate: dog =", responses=[" vauv", " miru", " el"]),
        Record(prompt="translate: red fish =", response=" roka sakan", score=1.0),
        Record(prompt="translate: red fish =", response=" roka joli", score=0.3),
    ]
    t.algo.rm.eval()
    with torch.no_grad():
        loss, stats = t.algo._loss(recs)
        r = lambda p, y: t.algo.rewards([p], [y])[0]  # noqa: E731
        ch = torch.stack([r(recs[0].prompt, " nyan"), r(recs[1].prompt, " vauv"), r(recs[1].prompt, " vauv"), r(recs[1].prompt, " miru")])
        rj = torch.stack([r(recs[0].prompt, " taber"), r(recs[1].prompt, " miru"), r(recs[1].prompt, " el"), r(recs[1].prompt, " el")])
        sc = torch.stack([r(recs[2].prompt, " roka sakan"), r(recs[3].prompt, " roka joli")])
    bt = -F.logsigmoid(ch - rj).mean()
    mse = ((sc - torch.tensor([1.0, 0.3])) ** 2).mean()
    want = bt + 0.1 * ((ch + rj) ** 2).mean() + 0.5 * mse
    assert loss.item() == pytest.approx(want.item(), rel=1e-4)
    assert stats["loss/bt"] == pytest.approx(bt.item(), rel=1e-4) and stats["loss/mse"] == pytest.approx(mse.item(), rel=1e-4)
    with pytest.raises(DataError, match="kind 'sft'"):
        t.algo._loss([Record(prompt="p", response="r")])


def test_saved_model_loads_as_the_reward_model_reward(make_trainer, builtin_plugins):
    """End of training writes run_dir/reward_model; +reward=reward_model scores exactly as the trainer does."""
    from alignfw._hydra import named_config

    t = make_trainer("reward_model", "preference", dict(lr=1e-3, warmup_steps=0), data=dict(n_train=16, n_eval=8), steps=2, batch_size=4, eval_size=0)
    t.train()
    path = t.run_dir / "final"
    assert (path / "model.safetensors").exists() and (path / "tokenizer.json").exists()
    reg = builtin_plugins.get("reward", "reward_model")
    reward = reg.build(named_config(reg.config, "reward_model")(path=str(path), batch_size=3))
    recs = t.train_records[:5]
    prompts, responses = [r.prompt for r in recs], [r.chosen for r in recs]
    t.algo.rm.eval()
    with torch.no_grad():
        want = t.algo.rewards(prompts, responses)
    torch.testing.assert_close(reward(prompts, responses, recs), want, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_reward_model_ranks_correct_above_decoy_on_held_out_prompts(make_trainer, builtin_plugins):
    from alignfw._hydra import named_config

    t = make_trainer("reward_model", "preference", dict(lr=3e-3, warmup_steps=5, micro_batch_size=0), steps=40, batch_size=32, eval_size=128, eval_every=0)
    summary = t.train()
    start, final = summary["start"], summary["final"]
    assert start["eval/accuracy"] < 0.7 and final["eval/accuracy"] > 0.9, (start, final)
    # the saved model, loaded as a reward, prefers the correct translation of unseen prompts
    reg = builtin_plugins.get("reward", "reward_model")
    reward = reg.build(named_config(reg.config, "reward_model")(path=str(t.run_dir / "final")))
    recs = t.eval_records
    prompts = [r.prompt for r in recs]
    wins = reward(prompts, [r.chosen for r in recs], recs) > reward(prompts, [r.rejected for r in recs], recs)
    assert wins.float().mean() > 0.9


@pytest.mark.slow
def test_score_regression_orders_held_out_answers(make_trainer):
    t = make_trainer(
        "reward_model", "score", dict(lr=1e-2, warmup_steps=10, micro_batch_size=0), data=dict(n_train=4096), steps=120, batch_size=64, eval_size=256, eval_every=0
    )  # regression from one answer per prompt learns slower than from contrasting pairs
    summary = t.train()
    start, final = summary["start"], summary["final"]
    assert final["eval/loss/mse"] < 0.7 * start["eval/loss/mse"], (start, final)
    # start ~0.47, measured 0.59: a score depends on every word, and the 2-layer tiny model's last
    # token aggregates them poorly (the preference test, where the last word decides, reaches 1.0)
    assert final["eval/pair_accuracy"] > 0.55, (start, final)
