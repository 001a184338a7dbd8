"""RLOO: the leave-one-out baseline and the KL-penalised reward against hand computations; the
sequence-level surrogate is REINFORCE on the first pass; NaN rewards; exact resume; learning."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import REPO, demo_trainer

from alignfw.exceptions import TrainingError
from alignfw.objectives import clipped_surrogate, kl_penalised_rewards, leave_one_out_advantages

ALGO = "rloo"


def test_preset_applies_over_the_defaults(compose_typed):
    from omegaconf import OmegaConf

    typed = compose_typed("+algo=rloo", "+reward=bleu")
    preset = OmegaConf.load(REPO / "conf" / "preset" / "tiny_rloo.yaml")
    assert typed.algo._name_ == "rloo" and typed.algo.lr == preset.algo.lr
    assert typed.algo.num_generations == preset.algo.num_generations
    # other models keep the defaults, which suit real models
    assert compose_typed("+algo=rloo", "model=hf_causal_lm").algo.lr == 1e-6

# -- the numerical pieces -----------------------------------------------------------------------


def test_leave_one_out_matches_hand_computation():
    adv = leave_one_out_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 2)
    torch.testing.assert_close(adv, torch.tensor([1.0 - 2.0, 2.0 - 1.0, 3.0 - 6.0, 6.0 - 3.0]))
    adv = leave_one_out_advantages(torch.tensor([0.0, 3.0, 6.0]), 3)
    # baselines: (3 + 6) / 2, (0 + 6) / 2, (0 + 3) / 2
    torch.testing.assert_close(adv, torch.tensor([0.0 - 4.5, 3.0 - 3.0, 6.0 - 1.5]))


def test_leave_one_out_baseline_ignores_the_sample_itself():
    r = torch.tensor([0.2, 0.9, 0.4, 0.7])
    bumped = r.clone()
    bumped[1] += 1.0
    delta = leave_one_out_advantages(bumped, 4) - leave_one_out_advantages(r, 4)
    # the bumped sample's advantage moves by the full bump; each other's baseline by bump / (k - 1)
    torch.testing.assert_close(delta, torch.tensor([-1 / 3, 1.0, -1 / 3, -1 / 3]))
    # and it is the scaled group-centred reward, k / (k - 1) * (r - mean)
    torch.testing.assert_close(leave_one_out_advantages(r, 4), 4 / 3 * (r - r.mean()))


def test_leave_one_out_needs_two_samples():
    with pytest.raises(ValueError, match="at least 2"):
        leave_one_out_advantages(torch.zeros(3), 1)


def test_kl_penalised_rewards_sum_k1_over_real_tokens():
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.2, 0.9, 0.9]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.1], [0.4, 0.9, 0.9]]))
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    rewards, seq_kl = kl_penalised_rewards(torch.tensor([1.0, 0.0]), logp, ref, mask, kl_coef=0.5)
    torch.testing.assert_close(seq_kl, torch.tensor([math.log(2.0), math.log(0.5)]))
    torch.testing.assert_close(rewards, torch.tensor([1.0 - 0.5 * math.log(2.0), -0.5 * math.log(0.5)]))


def test_sequence_surrogate_is_reinforce_on_the_first_pass():
    seq_logp = torch.tensor([[-3.0], [-5.0]], requires_grad=True)
    adv = torch.tensor([[2.0], [-1.0]])
    for clip in (0.2, float("inf")):
        loss, _ = clipped_surrogate(seq_logp, seq_logp.detach(), adv, torch.ones(2, 1), clip)
        (grad,) = torch.autograd.grad(loss.mean(), seq_logp)
        torch.testing.assert_close(grad, -adv / 2)  # -A * grad log pi(y|x), averaged


# -- the algorithm ------------------------------------------------------------------------------


def _trainer(reg, tmp_path, seed=0, algo=None, **run):
    return demo_trainer(reg, tmp_path, ALGO, seed=seed, algo=algo, **run)


def test_config_errors_name_the_option(builtin_plugins, tmp_path):
    from alignfw.exceptions import ConfigError

    with pytest.raises(ConfigError, match="num_generations=1"):
        _trainer(builtin_plugins, tmp_path, algo={"num_generations": 1}, eval_size=0)


def test_nan_reward_stops_the_run(builtin_plugins, tmp_path):
    t = _trainer(builtin_plugins, tmp_path, steps=1, batch_size=2, eval_size=0)
    t.algo.reward = lambda prompts, responses, records: [0.5] * (len(prompts) - 1) + [float("nan")]
    with pytest.raises(TrainingError, match="fix the reward"):
        t.train()


def test_equal_rewards_in_every_group_teach_nothing(builtin_plugins, tmp_path):
    """At the first step the policy is the reference (no KL), so a per-prompt constant reward
    gives zero leave-one-out advantages and the weights must not move."""
    t = _trainer(builtin_plugins, tmp_path, eval_size=0)
    t.algo.reward = lambda prompts, responses, records: [float(len(p)) for p in prompts]
    before = {k: v.clone() for k, v in t.model.lm.state_dict().items()}
    stats = t.algo.step(t.train_records[:4])
    assert stats["kl/seq"] == pytest.approx(0.0, abs=1e-5) and stats["advantage/abs"] == pytest.approx(0.0, abs=1e-5)
    for k, v in t.model.lm.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)


def test_state_dict_round_trip_resumes_exactly(builtin_plugins, tmp_path):
    """Saved and loaded through the checkpoint format, a fresh trainer takes the identical next step."""
    from alignfw.checkpoint import load_state, save_state

    run = {"eval_size": 0, "batch_size": 4}
    t1 = _trainer(builtin_plugins, tmp_path / "a", algo={"kl_target": 1.0, "kl_horizon": 10}, **run)
    batches = [t1.train_records[:4], t1.train_records[4:8]]
    t1.algo.step(batches[0])
    weights = {k: v.clone() for k, v in t1.model.lm.state_dict().items()}
    save_state(tmp_path, t1.state_dict())
    coef = t1.algo.kl_ctl.coef
    after_1 = t1.algo.step(batches[1])

    t2 = _trainer(builtin_plugins, tmp_path / "b", algo={"kl_target": 1.0, "kl_horizon": 10}, **run)
    t2.model.lm.load_state_dict(weights)
    t2.load_state_dict(load_state(tmp_path))
    assert t2.algo.kl_ctl.coef == coef != t2.cfg.algo.kl_coef  # the adaptive coefficient moved and was restored
    after_2 = t2.algo.step(batches[1])
    assert after_2 == pytest.approx(after_1, rel=1e-5, abs=1e-6)
    for (k, a), b in zip(t1.model.lm.state_dict().items(), t2.model.lm.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
