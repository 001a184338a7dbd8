"""DPO: sigmoid / cDPO / IPO losses against hand computations, the first step against the
reference, and learning on the tiny task's preference pairs."""

from __future__ import annotations

import math

import pytest
import torch

from alignfw.exceptions import ConfigError, DataError
from alignfw.objectives import dpo_loss

# sequence log-probs of two pairs: h = (pc - rc) - (pr - rr) = [1.0, -2.0]
PC, PR = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -1.0])
RC, RR = torch.tensor([-1.5, -2.0]), torch.tensor([-1.5, -2.0])


def _softplus(x: float) -> float:  # -log sigmoid(-x)
    return math.log1p(math.exp(x))


def test_sigmoid_loss_and_implicit_rewards():
    loss, rc, rr = dpo_loss(PC, PR, RC, RR, beta=0.1)
    assert loss.item() == pytest.approx((_softplus(-0.1) + _softplus(0.2)) / 2)
    torch.testing.assert_close(rc, torch.tensor([0.05, -0.1]))
    torch.testing.assert_close(rr, torch.tensor([-0.05, 0.1]))


def test_label_smoothing_is_conservative_dpo():
    eps = 0.2
    loss, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.5, label_smoothing=eps)
    per = [(1 - eps) * _softplus(-0.5 * h) + eps * _softplus(0.5 * h) for h in (1.0, -2.0)]
    assert loss.item() == pytest.approx(sum(per) / 2)


def test_ipo_loss():
    loss, _, _ = dpo_loss(PC, PR, RC, RR, beta=0.25, loss_type="ipo")
    assert loss.item() == pytest.approx(((1.0 - 2.0) ** 2 + (-2.0 - 2.0) ** 2) / 2)
    with pytest.raises(ConfigError, match="loss_type"):
        dpo_loss(PC, PR, RC, RR, beta=0.1, loss_type="hinge")


def test_first_step_starts_at_log2_with_the_policy_equal_to_the_reference(make_trainer):
    t = make_trainer("dpo", "preference", dict(lr=1e-3, warmup_steps=0, micro_batch_size=3), data=dict(n_train=16, n_eval=8), steps=2, batch_size=5)
    recs = t.train_records[:5]
    stats = t.algo.step(recs)
    assert stats["loss/total"] == pytest.approx(math.log(2), abs=1e-6)
    assert stats["rewards/chosen"] == stats["rewards/margins"] == 0.0
    # logps are sums of the response's token log-probs (EOS included) under the policy
    from alignfw.models import response_logprobs

    with torch.no_grad():
        t.algo.ref.eval()
        want = response_logprobs(t.model, [r.prompt for r in recs], [r.chosen for r in recs], lm=t.algo.ref)["sum"].mean().item()
    assert stats["logps/chosen"] == pytest.approx(want, rel=1e-5)
    after = t.algo.evaluate(recs)
    assert after["eval/loss"] < math.log(2) and after["eval/rewards/margins"] > 0


def test_ipo_step_uses_length_averaged_logprobs(make_trainer):
    t = make_trainer("dpo", "preference", dict(loss_type="ipo", beta=0.5), data=dict(n_train=8, n_eval=8), steps=1, batch_size=4)
    # policy == reference: h = 0, so the loss is (1 / (2 beta))^2 = 1
    assert t.algo.step(t.train_records[:4])["loss/total"] == pytest.approx(1.0)


def test_wrong_records_are_named(make_trainer):
    t = make_trainer("dpo", "sft", data=dict(n_train=8, n_eval=8), steps=1, batch_size=4)
    with pytest.raises(DataError, match="data.kind=preference"):
        t.algo.step(t.train_records[:4])


@pytest.mark.slow
def test_dpo_prefers_the_correct_translation_on_held_out_prompts(make_trainer):
    t = make_trainer("dpo", "preference", dict(lr=3e-4, beta=0.1, warmup_steps=5, micro_batch_size=0), steps=40, batch_size=32, eval_size=128, eval_every=0)
    summary = t.train()
    start, final = summary["start"], summary["final"]
    assert final["eval/rewards/accuracies"] > 0.95 and final["eval/rewards/margins"] > 0.5, final
    assert final["eval/logps/chosen"] > start["eval/logps/chosen"] + 1.0, (start, final)  # correct translation more likely
    assert final["eval/logps/rejected"] < start["eval/logps/rejected"] - 2.0
