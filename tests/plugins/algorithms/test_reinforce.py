"""REINFORCE: discounted returns and the moving-average baseline against hand computations;
minibatches only bound memory; NaN rewards; exact resume (baseline included); learning."""

from __future__ import annotations


import pytest
import torch
from helpers import REPO, demo_trainer

from alignfw.exceptions import TrainingError
from alignfw.objectives import discounted_returns
from alignfw.plugins.algorithms.reinforce import update_baseline

ALGO = "reinforce"


def test_preset_applies_over_the_defaults(compose_typed):
    from omegaconf import OmegaConf

    typed = compose_typed("+algo=reinforce", "+reward=bleu")
    preset = OmegaConf.load(REPO / "conf" / "preset" / "tiny_reinforce.yaml")
    assert typed.algo._name_ == "reinforce" and typed.algo.lr == preset.algo.lr
    assert typed.algo.gamma == preset.algo.gamma
    # other models keep the defaults, which suit real models
    assert compose_typed("+algo=reinforce", "model=hf_causal_lm").algo.lr == 1e-6

# -- the numerical pieces -----------------------------------------------------------------------


def test_discounted_returns_match_hand_computation():
    rewards = torch.tensor([[1.0, 0.0, 2.0, 7.0], [-1.0, 3.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    g = discounted_returns(rewards, mask, gamma=0.5)
    # row 0: G2 = 2, G1 = 0 + .5 * 2 = 1, G0 = 1 + .5 * 1 = 1.5 (the padded 7 is ignored); row 1: G1 = 3, G0 = -1 + 1.5
    torch.testing.assert_close(g, torch.tensor([[1.5, 1.0, 2.0, 0.0], [0.5, 3.0, 0.0, 0.0]]))
    # gamma = 1: reward-to-go is the suffix sum
    torch.testing.assert_close(discounted_returns(rewards, mask, gamma=1.0), torch.tensor([[3.0, 2.0, 2.0, 0.0], [2.0, 3.0, 0.0, 0.0]]))


def test_moving_average_baseline():
    assert update_baseline(None, 2.0, decay=0.9) == 2.0  # the first batch starts it
    assert update_baseline(1.0, 2.0, decay=0.9) == pytest.approx(1.1)
    assert update_baseline(1.0, 2.0, decay=0.0) == 2.0


# -- the algorithm ------------------------------------------------------------------------------


def _trainer(reg, tmp_path, seed=0, algo=None, **run):
    return demo_trainer(reg, tmp_path, ALGO, seed=seed, algo=algo, **run)


def _weights(t) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in t.model.lm.state_dict().items()}


def test_config_errors_name_the_option(builtin_plugins, tmp_path):
    from alignfw.exceptions import ConfigError

    with pytest.raises(ConfigError, match="baseline_decay"):
        _trainer(builtin_plugins, tmp_path, algo={"baseline_decay": 1.0}, eval_size=0)


def test_nan_reward_stops_the_run(builtin_plugins, tmp_path):
    t = _trainer(builtin_plugins, tmp_path, steps=1, batch_size=4, eval_size=0)
    t.algo.reward = lambda prompts, responses, records: [0.5] * (len(prompts) - 1) + [float("nan")]
    with pytest.raises(TrainingError, match="fix the reward"):
        t.train()


def test_baseline_comes_from_earlier_steps(builtin_plugins, tmp_path):
    """Without KL and with gamma 1, every token's return is the score. A constant score is
    absorbed by the baseline (no update); a new score is compared with the old baseline."""
    t = _trainer(builtin_plugins, tmp_path, algo={"kl_coef": 0.0, "gamma": 1.0, "baseline_decay": 0.75}, eval_size=0)
    assert t.algo.ref is None  # no reference model without a KL term
    score = {"value": 2.0}
    t.algo.reward = lambda prompts, responses, records: [score["value"]] * len(prompts)
    before = _weights(t)
    for _ in range(2):
        stats = t.algo.step(t.train_records[:4])
        assert stats["baseline"] == 2.0 and stats["advantage/mean"] == pytest.approx(0.0)
    for k, v in t.model.lm.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)
    score["value"] = 4.0
    stats = t.algo.step(t.train_records[:4])
    assert stats["advantage/mean"] == pytest.approx(4.0 - 2.0)  # against the baseline before this batch
    assert stats["baseline"] == pytest.approx(0.75 * 2.0 + 0.25 * 4.0)
    assert any(not torch.equal(v, before[k]) for k, v in t.model.lm.state_dict().items())


def test_minibatches_only_bound_memory(builtin_plugins, tmp_path):
    """The gradients of the minibatches are accumulated into one update: the weights after a
    step do not depend on minibatch_size (for either loss aggregation)."""
    for agg in ("token", "sequence"):
        after = []
        for mb in (8, 3):
            t = _trainer(builtin_plugins, tmp_path / f"{agg}{mb}", algo={"minibatch_size": mb, "loss_aggregation": agg}, eval_size=0)
            # plain SGD, so the weights show the gradient (Adam's first step is ~lr * sign(grad))
            t.algo.optimizer = torch.optim.SGD(t.model.trainable_parameters(), lr=1.0)
            t.algo.step(t.train_records[:8])
            after.append(_weights(t))
        for k, v in after[0].items():
            torch.testing.assert_close(v, after[1][k], rtol=1e-4, atol=1e-6, msg=f"{agg}: {k}")


def test_state_dict_round_trip_resumes_exactly(builtin_plugins, tmp_path):
    """Saved and loaded through the checkpoint format, a fresh trainer (baseline included) takes the identical next step."""
    from alignfw.checkpoint import load_state, save_state

    run = {"eval_size": 0, "batch_size": 8}
    t1 = _trainer(builtin_plugins, tmp_path / "a", **run)
    batches = [t1.train_records[:8], t1.train_records[8:16]]
    t1.algo.step(batches[0])
    weights = _weights(t1)
    save_state(tmp_path, t1.state_dict())
    baseline = t1.algo.baseline
    after_1 = t1.algo.step(batches[1])

    t2 = _trainer(builtin_plugins, tmp_path / "b", **run)
    t2.model.lm.load_state_dict(weights)
    t2.load_state_dict(load_state(tmp_path))
    assert t2.algo.baseline == baseline is not None
    after_2 = t2.algo.step(batches[1])
    assert after_2 == pytest.approx(after_1, rel=1e-5, abs=1e-6)
    for (k, a), b in zip(t1.model.lm.state_dict().items(), t2.model.lm.state_dict().values()):
        torch.testing.assert_close(a, b, msg=k)
