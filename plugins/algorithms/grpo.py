"""GRPO: Group Relative Policy Optimization, a critic-free PPO with group-normalised advantages.

Follows Shao et al. 2024, "DeepSeekMath" (https://arxiv.org/abs/2402.03300, §4.1), with the
options of DAPO (Yu et al. 2025, https://arxiv.org/abs/2503.14476: token-level loss, clip-higher)
and Dr. GRPO (Liu et al. 2025, https://arxiv.org/abs/2503.20783: no std scaling); the reference
implementation is TRL's ``GRPOTrainer``. One ``step``:

1. repeat each prompt ``num_generations`` times and sample one response per copy (dropout off);
2. score the responses with the reward (a plugin or any plain callable);
3. advantages: each reward minus its group's mean, over the group's std (``scale_rewards``), the
   same value for every token of the response; no value head, no GAE;
4. old log-probs (only when a sample is reused: ``ppo_epochs > 1`` or several minibatches) and
   reference log-probs (only when ``beta > 0``) through the fused log-prob op;
5. ``ppo_epochs`` passes over shuffled minibatches: per-token clipped surrogate plus
   ``beta * k3(policy || ref)`` (the KL is in the loss, not in the reward as in PPO), reduced by
   ``loss_aggregation`` ("token": DAPO; "sequence": the paper).

Notation: ``B`` prompts per step, ``G`` = ``num_generations``, ``b = B * G`` sequences (the ``G``
samples of a prompt contiguous), ``R`` response tokens.
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
from alignfw.objectives import LOSS_AGGREGATIONS, aggregate_loss, aggregation_units, clipped_surrogate, group_advantages, kl_estimate, masked_mean
from alignfw.optim import OptimizerOptions, accumulate, accumulation_weights, build_optimizer, lr_schedule, shuffled_minibatches
from alignfw.registry import BuildContext
from alignfw.rollout import Rollout, require_reward, rollout, score_rollout
from alignfw.types import Record

__all__ = ["GRPO", "GRPOConfig"]


@dataclass
class GRPOConfig(OptimizerOptions):
    """Options of GRPO. Defaults suit billion-parameter models; the tiny demo's live in conf/preset/."""

    num_generations: int = option(8, ge=2)  #: G, samples per prompt (the group); rollout batch = run.batch_size * G
    ppo_epochs: int = option(1, ge=1)  #: passes over each rollout batch (TRL's num_iterations, the paper's mu)
    minibatch_size: int = option(16, ge=1)  #: sequences per gradient step
    grad_accum: int = option(1, ge=1)  #: minibatches accumulated per optimizer step
    max_grad_norm: float = option(1.0, ge=0)
    clip_range: float = option(0.2, gt=0)  #: epsilon, lower ratio clip (and upper, unless clip_range_high is set)
    clip_range_high: float | None = option(None, gt=0)  #: DAPO's clip-higher (e.g. 0.28); None: clip_range
    beta: float = option(0.04, ge=0)  #: weight of the k3 KL to the reference in the loss (0: no reference model)
    scale_rewards: bool = True  #: divide by the group std (False: Dr. GRPO)
    eps: float = option(1e-4, gt=0)  #: added to the group std
    loss_aggregation: str = option("token", choices=LOSS_AGGREGATIONS)  #: "token" (DAPO, TRL's default) or "sequence" (the paper)
    temperature: float | None = option(None, gt=0)  #: scoring temperature; None: the rollout temperature
    #: truncated importance-sampling cap for engines other than hf (docs/engines.md; e.g. 2.0); None: off
    tis_cap: float | None = option(None, gt=0)


class GRPO:
    """The GRPO algorithm: owns the optimizer and the frozen reference model (when ``beta > 0``)."""

    def __init__(self, cfg: GRPOConfig, ctx: BuildContext) -> None:
        self.reward = require_reward(ctx, "GRPO")
        self.cfg = cfg
        self.model: PolicyModel = ctx.model
        self.rollout_cfg = ctx.rollout
        self.temperature = cfg.temperature if cfg.temperature is not None else self.rollout_cfg.temperature
        disable_dropout(self.model.lm)
        self.ref = self.model.make_reference() if cfg.beta > 0 else None
        self.model.parallelize(ctx.distributed.strategy)
        self.optimizer = build_optimizer(
            self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps
        )
        # stepped once per run step (however many optimizer steps a rollout takes), as warmup_steps counts
        self.scheduler = lr_schedule(self.optimizer, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=ctx.run.steps, min_lr_ratio=cfg.min_lr_ratio)

    # -- one step -----------------------------------------------------------------------------

    def step(self, records: list[Record]) -> dict[str, float]:
        """One GRPO iteration on ``B = len(records)`` prompts (``B * G`` samples); returns the metrics."""
        cfg, model, G = self.cfg, self.model, self.cfg.num_generations
        ro = rollout(model, self.reward, records, self.rollout_cfg, group_size=G)
        scores = ro.scores  # (b,)
        advantages = group_advantages(scores, G, scale=cfg.scale_rewards, eps=cfg.eps)  # (b,)

        reused = cfg.ppo_epochs > 1 or cfg.minibatch_size * cfg.grad_accum < len(ro.prompts)
        old = score_rollout(model, ro.gen, temperature=self.temperature, ref=self.ref, policy=reused or ro.engine_logprobs is not None)
        is_weights, engine_stats = engine_correction(old.get("logprobs"), ro.engine_logprobs, ro.mask, cfg.tis_cap)

        seq_kl = torch.zeros_like(scores)  # (b,): filled by the loss, which has the sampling policy's log-probs
        stats = self._optimize(ro, old.get("logprobs"), old.get("ref_logprobs"), advantages, seq_kl, is_weights)
        if self.ref is not None:  # a mean over every rank's sequences, not over minibatches
            stats["kl/seq"] = distributed.global_mean(seq_kl).item()
        stats.update(engine_stats)
        self.scheduler.step()
        group_std = scores.view(-1, G).std(1)  # (B,)
        stats.update(
            {
                "reward/mean": scores.mean().item(),
                "reward/std": scores.std().item(),
                "reward/group_std": group_std.mean().item(),
                "reward/frac_zero_std": (group_std == 0).float().mean().item(),  # groups with no signal
                "response/length": ro.lengths.mean().item(),
            }
        )
        return stats

    def _optimize(self, ro: Rollout, old_logprobs, ref_logprobs, advantages, seq_kl: torch.Tensor, is_weights=None) -> dict[str, float]:
        cfg, model, mask = self.cfg, self.model, ro.mask
        model.lm.train()  # dropout is already 0; train() only matters for layers like batch-norm

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            m = mask[idx]  # (n, R)
            logprobs = model.score(ro.gen.select(idx), temperature=self.temperature)["logprobs"].float()  # (n, R)
            old = logprobs.detach() if old_logprobs is None else old_logprobs[idx]
            adv = advantages[idx, None].expand_as(m)  # (n, R): the sequence's advantage on every token
            if is_weights is not None:  # truncated importance sampling: engine samples, trainer's policy
                adv = adv * is_weights[idx]
            pg, st = clipped_surrogate(logprobs, old, adv, m, cfg.clip_range, cfg.clip_range_high)
            per_token = pg
            stats = {
                "loss/policy": aggregate_loss(pg, m, cfg.loss_aggregation).item(),
                "policy/clipfrac": masked_mean(st["clipped"], m).item(),
                "policy/ratio": masked_mean(st["ratio"], m).item(),
            }
            if ref_logprobs is not None:
                kl = kl_estimate(logprobs, ref_logprobs[idx], m, "k3")  # (n, R)
                per_token = pg + cfg.beta * kl
                stats["kl/k3"] = masked_mean(kl, m).item()
                seq_kl[idx] = kl_estimate(old, ref_logprobs[idx], m, "k1").sum(1).detach()  # of the sampling policy
            return aggregate_loss(per_token, m, cfg.loss_aggregation), stats

        minibatches = shuffled_minibatches(mask.shape[0], cfg.minibatch_size, cfg.ppo_epochs, mask.device)
        units = aggregation_units(mask, cfg.loss_aggregation)  # (b,): what the aggregation is a mean over
        return accumulate(
            minibatches, loss_fn, weights=accumulation_weights([float(units[idx].sum()) for idx in minibatches], cfg.grad_accum),
            accum_steps=cfg.grad_accum, optimizer=self.optimizer, params=model.trainable_parameters(),
            max_grad_norm=cfg.max_grad_norm, no_sync=model.no_sync, scaler=model.grad_scaler,
        )  # fmt: skip

    # -- evaluation and state -----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Mean reward, KL to the reference (when there is one) and response length on ``records``."""
        return evaluate_policy(self.model, self.reward, records, self.rollout_cfg, ref=self.ref, temperature=self.temperature)

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
        if self.ref is not None:
            state["ref"] = self.ref.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:  # checkpoints written before online algorithms had a schedule have none
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ref is not None:
            self.ref.load_state_dict(state["ref"])


@hookimpl
def register_algorithms(register):
    register("grpo", GRPO, config=GRPOConfig, description="Group Relative Policy Optimization (DeepSeekMath), no value head")
