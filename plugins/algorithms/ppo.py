"""PPO for language models with a learned value head and GAE.

Follows Ouyang et al. 2022 (https://arxiv.org/abs/2203.02155) and the "N implementation details of
RLHF with PPO" (Huang et al. 2024, https://arxiv.org/abs/2403.17031); the reference
implementation is TRL's ``PPOTrainer``. One ``step``:

1. roll out one sampled response per prompt with the policy (dropout off);
2. score the responses with the reward (a plugin or any plain callable);
3. compute old log-probs and values with the policy and reference log-probs with the frozen
   reference, all through the fused log-prob op (no full-vocabulary fp32 logits);
4. shape token rewards: ``-kl_coef * (logp - logp_ref)`` per token, plus the score on the last
   response token; advantages and returns by GAE (Rust, ``alignfw.ops.gae``); whiten advantages;
5. ``ppo_epochs`` passes over shuffled minibatches with the clipped policy loss, the clipped
   value loss and an optional entropy bonus; update the adaptive KL coefficient.

Every numerical piece is a pure function below the class, testable on its own.
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
    AdaptiveKLController,
    clipped_surrogate,
    clipped_value_loss,
    kl_estimate,
    kl_shaped_rewards,
    masked_mean,
)
from alignfw.ops import gae
from alignfw.optim import OptimizerOptions, accumulate, accumulation_weights, build_optimizer, lr_schedule, shuffled_minibatches
from alignfw.registry import BuildContext
from alignfw.rollout import Rollout, require_reward, rollout, score_rollout
from alignfw.types import Record

__all__ = ["PPO", "PPOConfig", "clipped_policy_loss"]


@dataclass
class PPOConfig(OptimizerOptions):
    """Options of PPO. Defaults suit billion-parameter models; the tiny demo's live in conf/preset/."""

    ppo_epochs: int = option(4, ge=1)  #: passes over each rollout batch
    minibatch_size: int = option(16, ge=1)  #: sequences per gradient step
    grad_accum: int = option(1, ge=1)  #: minibatches accumulated per optimizer step
    max_grad_norm: float = option(1.0, ge=0)
    clip_range: float = option(0.2, gt=0)  #: policy ratio clipping
    clip_range_value: float = option(0.2, gt=0)  #: value clipping around the old values
    vf_coef: float = option(0.1, ge=0)
    entropy_coef: float = option(0.0, ge=0)
    gamma: float = option(1.0, ge=0, le=1)
    lam: float = option(0.95, ge=0, le=1)
    kl_coef: float = option(0.05, ge=0)  #: initial KL penalty coefficient
    kl_target: float | None = option(None, gt=0)  #: adaptive KL target per sequence (None: fixed coefficient)
    kl_horizon: int = option(10000, ge=1)
    whiten_advantages: bool = True
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = None  #: added to the score of responses without EOS
    temperature: float | None = option(None, gt=0)  #: None: the rollout temperature
    #: truncated importance-sampling cap for engines other than hf (docs/engines.md; e.g. 2.0); None: off
    tis_cap: float | None = option(None, gt=0)


class PPO:
    """The PPO algorithm: owns the optimizer, the KL controller and the reference model."""

    def __init__(self, cfg: PPOConfig, ctx: BuildContext) -> None:
        self.reward = require_reward(ctx, "PPO")
        self.cfg = cfg
        self.model: PolicyModel = ctx.model
        self.rollout_cfg = ctx.rollout
        self.temperature = cfg.temperature if cfg.temperature is not None else self.rollout_cfg.temperature
        disable_dropout(self.model.lm)
        self.model.add_value_head()
        self.ref = self.model.make_reference()
        self.model.parallelize(ctx.distributed.strategy)
        self.optimizer = build_optimizer(
            self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps
        )
        # stepped once per run step (however many optimizer steps a rollout takes), as warmup_steps counts
        self.scheduler = lr_schedule(self.optimizer, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=ctx.run.steps, min_lr_ratio=cfg.min_lr_ratio)
        self.kl_ctl = AdaptiveKLController(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon)

    # -- one step -----------------------------------------------------------------------------

    def step(self, records: list[Record]) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        ro = rollout(model, self.reward, records, self.rollout_cfg)
        scores, mask = ro.scores, ro.mask  # (b,), (b, R)
        if cfg.missing_eos_penalty is not None:
            scores = scores + (~ro.gen.ended).float() * cfg.missing_eos_penalty  # ended: any of the model's EOS ids

        old = score_rollout(model, ro.gen, temperature=self.temperature, ref=self.ref, values=True)
        old_logprobs, old_values = old["logprobs"], old["values"]
        kl = kl_estimate(old_logprobs, old["ref_logprobs"], mask, "k1")  # (b, R)
        shaped = kl_shaped_rewards(scores, kl, mask, self.kl_ctl.coef)
        # whitening statistics are global under torchrun: N ranks whiten as one process would
        if cfg.whiten_rewards:
            shaped = distributed.global_masked_whiten(shaped, mask, shift_mean=False)
        advantages, returns = gae(shaped, old_values, mask, gamma=cfg.gamma, lam=cfg.lam)
        if cfg.whiten_advantages:
            advantages = distributed.global_masked_whiten(advantages, mask)
        is_weights, engine_stats = engine_correction(old_logprobs, ro.engine_logprobs, mask, cfg.tis_cap)
        if is_weights is not None:  # truncated importance sampling: engine samples, trainer's policy
            advantages = advantages * is_weights

        stats = self._optimize(ro, old_logprobs, old_values, advantages, returns)
        stats.update(engine_stats)
        self.scheduler.step()
        # the KL controller sees the global batch, so every rank keeps the same coefficient
        seq_kl = distributed.global_mean(kl.sum(1)).item()
        self.kl_ctl.update(seq_kl, len(records) * distributed.world_size())
        stats.update(
            {
                "reward/mean": scores.mean().item(),
                "reward/std": scores.std().item() if len(scores) > 1 else 0.0,
                "kl/seq": seq_kl,
                "kl/coef": self.kl_ctl.coef,
                "response/length": ro.lengths.mean().item(),
                "value/mean": masked_mean(old_values, mask).item(),
                "returns/mean": masked_mean(returns, mask).item(),
            }
        )
        return stats

    def _optimize(self, ro: Rollout, old_logprobs, old_values, advantages, returns) -> dict[str, float]:
        cfg, model, mask = self.cfg, self.model, ro.mask
        model.lm.train()  # dropout is already 0; train() only matters for layers like batch-norm

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            m = mask[idx]
            out = model.score(ro.gen.select(idx), temperature=self.temperature, values=True, entropy=cfg.entropy_coef > 0)
            pg_loss, stats = clipped_policy_loss(out["logprobs"].float(), old_logprobs[idx], advantages[idx], m, cfg.clip_range)
            vf_loss, vf_stats = clipped_value_loss(out["values"], old_values[idx], returns[idx], m, cfg.clip_range_value)
            loss = pg_loss + cfg.vf_coef * vf_loss
            if cfg.entropy_coef > 0:
                ent = masked_mean(out["entropy"].float(), m)
                loss = loss - cfg.entropy_coef * ent
                stats["entropy"] = ent.item()
            return loss, {**stats, **vf_stats}

        minibatches = shuffled_minibatches(mask.shape[0], cfg.minibatch_size, cfg.ppo_epochs, mask.device)
        tokens = [float(mask[idx].sum()) for idx in minibatches]  # every loss term is a token mean
        return accumulate(
            minibatches, loss_fn, weights=accumulation_weights(tokens, cfg.grad_accum), accum_steps=cfg.grad_accum,
            optimizer=self.optimizer, params=model.trainable_parameters(), max_grad_norm=cfg.max_grad_norm, no_sync=model.no_sync, scaler=model.grad_scaler,
        )  # fmt: skip

    # -- evaluation and state -----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Mean reward, KL to the reference and response length of fresh samples on ``records``."""
        return evaluate_policy(self.model, self.reward, records, self.rollout_cfg, ref=self.ref, temperature=self.temperature)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "kl_ctl": self.kl_ctl.state_dict(),
            "value_head": self.model.policy_state_dict()["value_head"] if self.model.value_head is not None else {},
            "ref": self.ref.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:  # checkpoints written before online algorithms had a schedule have none
            self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        if self.model.value_head is not None:
            self.model.load_policy_state_dict(value_head_state=state["value_head"])
        self.ref.load_state_dict(state["ref"])


# -- the numerical pieces ---------------------------------------------------------------------


def clipped_policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip: float
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7), token-mean, with PPO's stats.

    Shapes ``(b, R)``. The surrogate itself is :func:`alignfw.objectives.clipped_surrogate`.
    """
    per_token, st = clipped_surrogate(logprobs, old_logprobs, advantages, mask, clip)
    loss = masked_mean(per_token, mask)
    with torch.no_grad():
        log_ratio = (logprobs - old_logprobs) * mask
        stats = {
            "loss/policy": loss.item(),
            "policy/clipfrac": masked_mean(st["clipped"], mask).item(),
            "policy/approxkl": masked_mean(0.5 * log_ratio**2, mask).item(),
            "policy/ratio": masked_mean(st["ratio"], mask).item(),
        }
    return loss, stats


@hookimpl
def register_algorithms(register):
    register("ppo", PPO, config=PPOConfig)
