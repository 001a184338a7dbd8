"""SFT: the loss against a hand computation, the demo records, and learning on the tiny task."""

from __future__ import annotations

import math

import pytest
import torch

from alignfw.objectives import sft_loss


def test_sft_loss_is_the_token_mean_nll_over_the_response():
    lp = torch.tensor([[-1.0, -2.0, -9.0], [-0.5, -7.0, -7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert sft_loss(lp, mask).item() == pytest.approx((1.0 + 2.0 + 0.5) / 3)


def test_loss_is_the_nll_of_response_and_eos_tokens(make_trainer):
    from alignfw.models import disable_dropout

    t = make_trainer("sft", "sft", dict(lr=1e-3, warmup_steps=0, micro_batch_size=3), data=dict(n_train=16, n_eval=8), steps=3, batch_size=5)
    disable_dropout(t.model.lm)
    recs, tok = t.train_records[:5], t.model.tokenizer
    nll, n = 0.0, 0
    for r in recs:  # plain forward on unpadded sequences; only response tokens + EOS count
        p_ids = tok(r.prompt, add_special_tokens=False)["input_ids"]
        r_ids = tok(r.response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.no_grad():
            logits = t.model.lm(input_ids=torch.tensor([p_ids + r_ids])).logits[0]
        nll -= torch.log_softmax(logits[len(p_ids) - 1 : -1], -1).gather(1, torch.tensor(r_ids)[:, None]).sum().item()
        n += len(r_ids)
    ev = t.algo.evaluate(recs)
    assert ev["eval/loss"] == pytest.approx(nll / n, rel=1e-5)  # exact token mean across uneven micro-batches
    assert ev["eval/perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
    stats = t.algo.step(recs)
    assert stats["loss/sft"] == pytest.approx(nll / n, rel=1e-5)
    assert stats["lr"] == pytest.approx(1e-3) and stats["grad_norm"] > 0
    assert t.algo.evaluate(recs)["eval/loss"] < ev["eval/loss"]


def test_reference_records_train_on_their_first_reference(make_trainer):
    t = make_trainer("sft", "reference", dict(lr=1e-3), data=dict(n_train=8, n_eval=8), steps=1, batch_size=4)
    assert math.isfinite(t.algo.step(t.train_records[:4])["loss/sft"])


@pytest.mark.slow
def test_sft_learns_the_correct_translation(make_trainer):
    t = make_trainer("sft", "sft", dict(lr=3e-3, warmup_steps=5, micro_batch_size=0), steps=40, batch_size=32, eval_size=64, eval_every=0)
    summary = t.train()
    start, final = summary["start"], summary["final"]
    assert final["eval/loss"] < 0.3 * start["eval/loss"], (start, final)
    recs = t.eval_records[:64]
    gen = t.model.generate([r.prompt for r in recs], max_new_tokens=16, temperature=0)
    exact = sum(g.strip() == r.response.strip() for g, r in zip(gen.responses, recs)) / len(recs)
    assert exact > 0.8, exact  # greedy output of the base model is the decoy: exact match ~0
