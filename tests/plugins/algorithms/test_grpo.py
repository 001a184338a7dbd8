"""GRPO: group advantages, k3 KL, the surrogate and loss aggregation against hand computations;
NaN rewards; exact resume from a saved state; learning on the tiny task."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import REPO, demo_trainer

from alignfw.exceptions import TrainingError
from alignfw.objectives import aggregate_loss, clipped_surrogate, group_advantages, kl_estimate
from alignfw.plugins.algorithms.ppo import clipped_policy_loss

ALGO = "grpo"


def test_preset_applies_over_the_defaults(compose_typed):
    from omegaconf import OmegaConf

    typed = compose_typed("+algo=grpo", "+reward=bleu")
    preset = OmegaConf.load(REPO / "conf" / "preset" / "tiny_grpo.yaml")
    assert typed.algo._name_ == "grpo" and typed.algo.lr == preset.algo.lr
    assert typed.algo.num_generations == preset.algo.num_generations
    # other models keep the defaults, which suit real models
    assert compose_typed("+algo=grpo", "model=hf_causal_lm").algo.lr == 1e-6

# -- the numerical pieces -----------------------------------------------------------------------


def test_group_advantages_match_hand_computation():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    adv = group_advantages(rewards, 3, eps=0.0)
    # group 1: mean 2, unbiased std 1; group 2: all equal -> no signal (0, not 0/0)
    torch.testing.assert_close(adv, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    adv = group_advantages(torch.tensor([0.0, 4.0]), 2, eps=0.1)  # mean 2, std sqrt(8)
    torch.testing.assert_close(adv, torch.tensor([-2.0, 2.0]) / (math.sqrt(8.0) + 0.1))


def test_group_advantages_without_scaling_are_centred_rewards():
    rewards = torch.tensor([0.0, 1.0, 0.5, 0.5, 10.0, 12.0])
    torch.testing.assert_close(group_advantages(rewards, 2, scale=False), torch.tensor([-0.5, 0.5, 0.0, 0.0, -1.0, 1.0]))


def test_group_advantages_reject_partial_groups():
    with pytest.raises(ValueError, match="whole groups of 4"):
        group_advantages(torch.zeros(6), 4)


def test_k3_kl_matches_hand_computation_and_masks():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.9]]))
    ref = torch.log(torch.tensor([[0.25, 0.2, 0.1]]))
    kl = kl_estimate(logp, ref, torch.tensor([[1.0, 1.0, 0.0]]), "k3")
    # ratio ref/pi = 0.5: 0.5 - ln 0.5 - 1; equal probabilities: 0; masked: 0
    torch.testing.assert_close(kl, torch.tensor([[0.5 - math.log(0.5) - 1.0, 0.0, 0.0]]))


@pytest.mark.parametrize("kind", ["k1", "k3"])
def test_k1_and_k3_are_unbiased_estimates_of_the_kl(kind):
    p = torch.tensor([0.6, 0.3, 0.1])
    q = torch.tensor([0.2, 0.5, 0.3])
    expected = (p * (p / q).log()).sum()  # KL(p || q)
    estimate = (p * kl_estimate(p.log(), q.log(), kind=kind)).sum()  # E_{x ~ p}[k(x)]
    torch.testing.assert_close(estimate, expected)


def test_k2_is_half_the_squared_log_ratio_and_k3_is_never_negative():
    logp, ref = torch.randn(4, 7), torch.randn(4, 7)
    torch.testing.assert_close(kl_estimate(logp, ref, kind="k2"), 0.5 * (logp - ref) ** 2)
    assert bool((kl_estimate(logp, ref, kind="k3") >= 0).all())
    with pytest.raises(ValueError, match="k1, k2, k3"):
        kl_estimate(logp, ref, kind="k4")


def test_clipped_surrogate_token_mean_is_ppos_loss():
    torch.manual_seed(0)
    logp, old, adv = torch.randn(3, 5) * 0.3, torch.randn(3, 5) * 0.3, torch.randn(3, 5)
    mask = torch.tensor([[1.0] * 5, [1.0] * 3 + [0.0] * 2, [1.0] + [0.0] * 4])
    per_token, stats = clipped_surrogate(logp, old, adv, mask, 0.2)
    ppo_loss, ppo_stats = clipped_policy_loss(logp, old, adv, mask, 0.2)
    torch.testing.assert_close(aggregate_loss(per_token, mask, "token"), ppo_loss)
    assert (stats["clipped"].sum() / mask.sum()).item() == pytest.approx(ppo_stats["policy/clipfrac"])


def test_clip_higher_only_widens_the_upper_bound():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.5, 0.5]]))
    adv = torch.tensor([[1.0, -1.0]])
    loss, _ = clipped_surrogate(new, old, adv, torch.ones(1, 2), 0.2, clip_high=0.4)
    # token 0: A>0, ratio 1.5 -> clipped at 1 + 0.4; token 1: A<0, ratio 0.5 -> max(0.5, 0.8) = 0.8
    torch.testing.assert_close(loss, torch.tensor([[-1.4, 0.8]]))


def test_loss_aggregation_token_vs_sequence():
    per_token = torch.tensor([[1.0, 1.0, 1.0, 1.0], [4.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    assert aggregate_loss(per_token, mask, "token").item() == pytest.approx(8 / 5)  # 5 real tokens
    assert aggregate_loss(per_token, mask, "sequence").item() == pytest.approx((1 + 4) / 2)  # 2 non-empty responses
    with pytest.raises(ValueError, match="token, sequence"):
        aggregate_loss(per_token, mask, "sum")


# -- the algorithm ------------------------------------------------------------------------------


def _trainer(reg, tmp_path, seed=0, algo=None, **run):
    return demo_trainer(reg, tmp_path, ALGO, seed=seed, algo=algo, **run)


def test_config_errors_name_the_option(builtin_plugins, tmp_path):
    from alignfw.exceptions import ConfigError

    with pytest.raises(ConfigError, match="num_generations=1"):
        _trainer(builtin_plugins, tmp_path, algo={"num_generations": 1}, eval_size=0)
    with pytest.raises(ConfigError, match="loss_aggregation"):
        _trainer(builtin_plugins, tmp_path, algo={"loss_aggregation": "sum"}, eval_size=0)


def test_nan_reward_stops_the_run(builtin_plugins, tmp_path):
    t = _trainer(builtin_plugins, tmp_path, steps=1, batch_size=2, eval_size=0)
    t.algo.reward = lambda prompts, responses, records: [0.5] * (len(prompts) - 1) + [float("nan")]
    with pytest.raises(TrainingError, match="fix the reward"):
        t.train()


def test_step_samples_num_generations_per_prompt(builtin_plugins, tmp_path):
    t = _trainer(builtin_plugins, tmp_path, algo={"num_generations": 3}, eval_size=0)
    seen: list[str] = []

    def reward(prompts, responses, records):
        seen.extend(prompts)
        return [float(i % 3) for i in range(len(prompts))]  # a spread inside every group

    t.algo.reward = reward
    stats = t.algo.step(t.train_records[:2])
    assert seen == [t.train_records[0].prompt] * 3 + [t.train_records[1].prompt] * 3
    assert stats["reward/frac_zero_std"] == 0.0 and stats["reward/group_std"] == pytest.approx(1.0)


def test_state_dict_round_trip_resumes_exactly(builtin_plugins, tmp_path):
    """Saved and loaded through the checkpoint format, a fresh trainer takes the identical next step."""
    from alignfw.checkpoint import load_state, save_state

    run = {"eval_size": 0, "batch_size": 4}
    t1 = _trainer(builtin_plugins, tmp_path / "a", **run)
    batches = [t1.train_records[:4], t1.train_records[4:8]]
    t1.algo.step(batches[0])
    weights = {k: v.clone() for k, v in t1.model.lm.state_dict().items()}
    save_state(tmp_path, t1.state_dict())
    after_1 = t1.algo.step(batches[1])

    t2 = _trainer(builtin_plugins, tmp_path / "b", **run)
    t2.model.lm.load_state_dict(weights)
    t2.load_state_dict(load_state(tmp_path))
    assert t2.algo.optimizer.state_dict()["state"].keys() == t1.algo.optimizer.state_dict()["state"].keys()
    after_2 = t2.algo.step(batches[1])
    assert after_2 == pytest.approx(after_1, rel=1e-5, abs=1e-6)
    for (k, a), b in zip(t1.model.lm.state_dict().items(), t2.model.lm.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
