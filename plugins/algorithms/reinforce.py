"""REINFORCE with a moving-average baseline over discounted, KL-shaped token rewards.

Follows Williams 1992, "Simple statistical gradient-following algorithms for connectionist
reinforcement learning" (https://doi.org/10.1007/BF00992696), with the per-token KL shaping of
Ziegler et al. 2019 (https://arxiv.org/abs/1909.08593) that PPO here uses too; the baseline is
Williams' "reinforcement comparison", an exponential moving average of past returns, as in
Ahmadian et al. 2024 (https://arxiv.org/abs/2402.14740, §3.1, "RLOO"'s REINFORCE-with-baseline
arm). The reference implementation is TRL's ``PPOTrainer`` reward shaping plus OpenRLHF's
``reinforce`` advantage estimator. One ``step``:

1. sample one response per prompt with the policy (dropout off) and score it;
2. old and reference log-probs through the fused log-prob op; token rewards
   ``-kl_coef * (logp - logp_ref)`` plus the score on the last token (``objectives.kl_shaped_rewards``);
3. returns ``G_t = sum_{l >= t} gamma^(l-t) r_l`` (the Rust GAE with zero values and lambda 1);
4. advantages ``G_t - baseline`` with the baseline of *previous* steps (so it does not depend on
   this batch and the estimator stays unbiased), then the baseline moves towards this batch's
   mean return; optionally whiten the advantages;
5. one optimizer step on ``-A_t * logp_t`` (minibatches only bound memory: their gradients are
   accumulated, so the update is on-policy).

Notation: ``b`` prompts (= sequences) per step, ``R`` response tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignfw import distributed
from alignfw.config import option
from alignfw.engines import engine_correction
from alignfw.evaluation import evaluate_policy
from alignfw.hookspecs import hookimpl
from alignfw.models import PolicyModel, disable_dropout
from alignfw.objectives import (
    LOSS_AGGREGATIONS,
    aggregate_loss,
    aggregation_units,
    discounted_returns,
    kl_estimate,
    kl_shaped_rewards,
    masked_mean,
)
from alignfw.optim import OptimizerOptions, accumulate, accumulation_weights, build_optimizer, lr_schedule, micro_batches
from alignfw.registry import BuildContext
from alignfw.rollout import Rollout, require_reward, rollout, score_rollout
from alignfw.types import Record

__all__ = ["Reinforce", "ReinforceConfig", "update_baseline"]


@dataclass
class ReinforceConfig(OptimizerOptions):
    """Options of REINFORCE. Defaults suit billion-parameter models; the tiny demo's live in conf/preset/."""

    minibatch_size: int = option(16, ge=1)  #: sequences per forward/backward (memory only: one optimizer step per batch)
    max_grad_norm: float = option(1.0, ge=0)
    gamma: float = option(1.0, ge=0, le=1)  #: discount of the token rewards
    kl_coef: float = option(0.05, ge=0)  #: per-token KL penalty in the rewards (0: no reference model)
    baseline: bool = True  #: subtract a moving average of past returns
    baseline_decay: float = option(0.9, ge=0, lt=1)  #: weight of the old baseline in each update
    whiten_advantages: bool = False
    loss_aggregation: str = option("token", choices=LOSS_AGGREGATIONS)  #: "token" or "sequence" (see alignfw.objectives.aggregate_loss)
    temperature: float | None = option(None, gt=0)  #: scoring temperature; None: the rollout temperature
    #: truncated importance-sampling cap for engines other than hf (docs/engines.md; e.g. 2.0); None: off
    tis_cap: float | None = option(None, gt=0)


class Reinforce:
    """The REINFORCE algorithm: owns the optimizer, the baseline and the reference model (``kl_coef > 0``)."""

    def __init__(self, cfg: ReinforceConfig, ctx: BuildContext) -> None:
        self.reward = require_reward(ctx, "REINFORCE")
        self.cfg = cfg
        self.model: PolicyModel = ctx.model
        self.rollout_cfg = ctx.rollout
        self.temperature = cfg.temperature if cfg.temperature is not None else self.rollout_cfg.temperature
        disable_dropout(self.model.lm)
        self.ref = self.model.make_reference() if cfg.kl_coef > 0 else None
        self.model.parallelize(ctx.distributed.strategy)
        self.optimizer = build_optimizer(
            self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps
        )
        # stepped once per run step (however many optimizer steps a rollout takes), as warmup_steps counts
        self.scheduler = lr_schedule(self.optimizer, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=ctx.run.steps, min_lr_ratio=cfg.min_lr_ratio)
        self.baseline: float | None = None  #: None until the first batch

    # -- one step -----------------------------------------------------------------------------

    def step(self, records: list[Record]) -> dict[str, float]:
        """One REINFORCE update from one sample per record; returns the metrics."""
        cfg, model = self.cfg, self.model
        ro = rollout(model, self.reward, records, self.rollout_cfg)
        scores, mask = ro.scores, ro.mask  # (b,), (b, R)

        old = {}  # the trainer's log-probs: for the KL, and for the engine's gap (engines other than hf)
        if self.ref is not None or ro.engine_logprobs is not None:
            old = score_rollout(model, ro.gen, temperature=self.temperature, ref=self.ref)
        if self.ref is not None:
            kl = kl_estimate(old["logprobs"], old["ref_logprobs"], mask, "k1")  # (b, R)
        else:
            kl = torch.zeros_like(mask)
        rewards = kl_shaped_rewards(scores, kl, mask, cfg.kl_coef)  # (b, R)
        returns = discounted_returns(rewards, mask, cfg.gamma)  # (b, R)
        batch_return = distributed.global_masked_mean(returns, mask).item()  # the global batch's, under torchrun
        if cfg.baseline:
            baseline = batch_return if self.baseline is None else self.baseline  # first step: nothing older to use
            advantages = (returns - baseline) * mask
            self.baseline = update_baseline(self.baseline, batch_return, cfg.baseline_decay)
        else:
            advantages = returns
        if cfg.whiten_advantages:
            advantages = distributed.global_masked_whiten(advantages, mask)
        is_weights, engine_stats = engine_correction(old.get("logprobs"), ro.engine_logprobs, mask, cfg.tis_cap)
        if is_weights is not None:  # truncated importance sampling: engine samples, trainer's policy
            advantages = advantages * is_weights

        stats = self._optimize(ro, advantages)
        stats.update(engine_stats)
        self.scheduler.step()
        stats.update(
            {
                "reward/mean": scores.mean().item(),
                "reward/std": scores.std().item() if len(scores) > 1 else 0.0,
                "kl/seq": kl.sum(1).mean().item(),
                "returns/mean": batch_return,
                "response/length": ro.lengths.mean().item(),
            }
        )
        if self.baseline is not None:
            stats["baseline"] = self.baseline
        return stats

    def _optimize(self, ro: Rollout, advantages: torch.Tensor) -> dict[str, float]:
        """One on-policy optimizer step over the rollout in minibatches (memory only: gradients accumulate)."""
        cfg, model, mask = self.cfg, self.model, ro.mask
        model.lm.train()  # dropout is already 0; train() only matters for layers like batch-norm
        units = aggregation_units(mask, cfg.loss_aggregation)  # (b,): what the loss is a mean over
        rows = micro_batches(range(mask.shape[0]), cfg.minibatch_size)

        def loss_fn(sl: range) -> tuple[torch.Tensor, dict[str, float]]:
            s = slice(sl.start, sl.stop)
            logprobs = model.score(ro.gen.select(s), temperature=self.temperature)["logprobs"].float()  # (n, R)
            per_token = -advantages[s] * logprobs * mask[s]  # (n, R)
            return aggregate_loss(per_token, mask[s], cfg.loss_aggregation), {}

        # minibatches bound memory only: one optimizer step whose gradient is the whole batch's
        weights = accumulation_weights([float(units[sl.start : sl.stop].sum()) for sl in rows])
        stats = accumulate(
            rows, loss_fn, weights=weights, optimizer=self.optimizer, params=model.trainable_parameters(),
            max_grad_norm=cfg.max_grad_norm, no_sync=model.no_sync, scaler=model.grad_scaler,
        )  # fmt: skip
        stats["loss/policy"] = stats["loss/total"]
        stats["advantage/mean"] = masked_mean(advantages, mask).item()
        return stats

    # -- evaluation and state -----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Mean reward, KL to the reference (when there is one) and response length on ``records``."""
        return evaluate_policy(self.model, self.reward, records, self.rollout_cfg, ref=self.ref, temperature=self.temperature)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "baseline": self.baseline}
        if self.ref is not None:
            state["ref"] = self.ref.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:  # checkpoints written before online algorithms had a schedule have none
            self.scheduler.load_state_dict(state["scheduler"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        if self.ref is not None:
            self.ref.load_state_dict(state["ref"])


# -- the numerical pieces ---------------------------------------------------------------------


def update_baseline(baseline: float | None, batch_return: float, decay: float) -> float:
    """Exponential moving average ``decay * baseline + (1 - decay) * batch_return``; the first
    batch's mean return starts it."""
    return batch_return if baseline is None else decay * baseline + (1.0 - decay) * batch_return


@hookimpl
def register_algorithms(register):
    register("reinforce", Reinforce, config=ReinforceConfig, description="REINFORCE (Williams 1992) with a moving-average baseline")
