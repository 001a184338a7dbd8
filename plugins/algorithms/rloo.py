"""RLOO: REINFORCE Leave-One-Out, a critic-free policy gradient with a per-prompt baseline.

Follows Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
Learning from Human Feedback in LLMs" (https://arxiv.org/abs/2402.14740, §3.2), after Kool et al.
2019 ("Buy 4 REINFORCE samples, get a baseline for free!"); the reference implementation is TRL's
``RLOOTrainer`` (the sequence-level version, ``trl<0.20``). The whole response is one action. One
``step``:

1. repeat each prompt ``num_generations`` (k) times and sample one response per copy;
2. score the responses; old and reference log-probs through the fused log-prob op;
3. KL-penalised sequence reward ``r = score - kl_coef * sum_t (logp_t - logp_ref_t)`` (k1 per
   token, summed; the coefficient optionally adaptive, as in PPO);
4. advantage ``A_i = r_i - mean_{j != i} r_j`` over the k samples of the prompt (optionally whitened);
5. ``ppo_epochs`` passes over shuffled minibatches of ``-A * ratio`` with the *sequence* ratio
   ``exp(sum_t logp_t - sum_t logp_old_t)``, PPO-clipped when ``clip_range`` is set. On the
   first pass the ratio is 1 and the gradient is exactly REINFORCE's ``-A * grad log pi(y|x)``.

Notation: ``B`` prompts per step, ``k`` = ``num_generations``, ``b = B * k`` sequences (the ``k``
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
from alignfw.objectives import AdaptiveKLController, clipped_surrogate, kl_penalised_rewards, leave_one_out_advantages
from alignfw.optim import OptimizerOptions, accumulate, accumulation_weights, build_optimizer, lr_schedule, shuffled_minibatches
from alignfw.registry import BuildContext
from alignfw.rollout import Rollout, require_reward, rollout, score_rollout
from alignfw.types import Record

__all__ = ["RLOO", "RLOOConfig"]


@dataclass
class RLOOConfig(OptimizerOptions):
    """Options of RLOO. Defaults suit billion-parameter models; the tiny demo's live in conf/preset/."""

    num_generations: int = option(4, ge=2)  #: k, samples per prompt (the paper's best k); rollout batch = run.batch_size * k
    ppo_epochs: int = option(1, ge=1)  #: passes over each rollout batch (> 1 reuses samples: keep clip_range set)
    minibatch_size: int = option(16, ge=1)  #: sequences per gradient step
    grad_accum: int = option(1, ge=1)  #: minibatches accumulated per optimizer step
    max_grad_norm: float = option(1.0, ge=0)
    clip_range: float | None = option(0.2, gt=0)  #: clip of the sequence ratio; None: plain REINFORCE with importance weights
    kl_coef: float = option(0.05, ge=0)  #: initial KL penalty on the sequence reward
    kl_target: float | None = option(None, gt=0)  #: adaptive KL target per sequence (None: fixed coefficient)
    kl_horizon: int = option(10000, ge=1)
    whiten_advantages: bool = False  #: TRL's normalize_advantage
    temperature: float | None = option(None, gt=0)  #: scoring temperature; None: the rollout temperature
    #: truncated importance-sampling cap for engines other than hf (docs/engines.md; e.g. 2.0); None: off
    tis_cap: float | None = option(None, gt=0)


class RLOO:
    """The RLOO algorithm: owns the optimizer, the KL controller and the frozen reference model."""

    def __init__(self, cfg: RLOOConfig, ctx: BuildContext) -> None:
        self.reward = require_reward(ctx, "RLOO")
        self.cfg = cfg
        self.model: PolicyModel = ctx.model
        self.rollout_cfg = ctx.rollout
        self.temperature = cfg.temperature if cfg.temperature is not None else self.rollout_cfg.temperature
        disable_dropout(self.model.lm)
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
        """One RLOO iteration on ``B = len(records)`` prompts (``B * k`` samples); returns the metrics."""
        cfg, model, k = self.cfg, self.model, self.cfg.num_generations
        ro = rollout(model, self.reward, records, self.rollout_cfg, group_size=k)
        scores, mask = ro.scores, ro.mask  # (b,), (b, R)

        old = score_rollout(model, ro.gen, temperature=self.temperature, ref=self.ref)
        rewards, seq_kl = kl_penalised_rewards(scores, old["logprobs"], old["ref_logprobs"], mask, self.kl_ctl.coef)  # (b,), (b,)
        advantages = leave_one_out_advantages(rewards, k)  # (b,)
        if cfg.whiten_advantages:  # over every rank's samples under torchrun
            advantages = distributed.global_masked_whiten(advantages, torch.ones_like(advantages))
        old_seq_logprobs = (old["logprobs"] * mask).sum(1)  # (b,), log pi_old(y|x)
        is_weights, engine_stats = engine_correction(old["logprobs"], ro.engine_logprobs, mask, cfg.tis_cap, level="sequence")
        if is_weights is not None:  # truncated importance sampling: engine samples, trainer's policy
            advantages = advantages * is_weights

        stats = self._optimize(ro, old_seq_logprobs, advantages)
        stats.update(engine_stats)
        self.scheduler.step()
        self.kl_ctl.update(distributed.global_mean(seq_kl).item(), len(records) * distributed.world_size())
        stats.update(
            {
                "reward/mean": scores.mean().item(),
                "reward/std": scores.std().item(),
                "reward/penalised": rewards.mean().item(),
                "kl/seq": seq_kl.mean().item(),
                "kl/coef": self.kl_ctl.coef,
                "advantage/abs": advantages.abs().mean().item(),
                "response/length": ro.lengths.mean().item(),
            }
        )
        return stats

    def _optimize(self, ro: Rollout, old_seq_logprobs, advantages) -> dict[str, float]:
        cfg, model, mask = self.cfg, self.model, ro.mask
        clip = cfg.clip_range if cfg.clip_range is not None else float("inf")
        model.lm.train()  # dropout is already 0; train() only matters for layers like batch-norm

        def loss_fn(idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            logprobs = model.score(ro.gen.select(idx), temperature=self.temperature)["logprobs"].float()  # (n, R)
            seq_logprobs = (logprobs * mask[idx]).sum(1, keepdim=True)  # (n, 1)
            ones = torch.ones_like(seq_logprobs)
            # the response is one action: the surrogate on (n, 1) sequence log-probs
            per_seq, st = clipped_surrogate(seq_logprobs, old_seq_logprobs[idx, None], advantages[idx, None], ones, clip)
            loss = per_seq.mean()
            return loss, {"loss/policy": loss.item(), "policy/clipfrac": st["clipped"].mean().item(), "policy/ratio": st["ratio"].mean().item()}

        minibatches = shuffled_minibatches(mask.shape[0], cfg.minibatch_size, cfg.ppo_epochs, mask.device)
        sequences = [float(len(idx)) for idx in minibatches]  # the loss is a mean over sequences
        return accumulate(
            minibatches, loss_fn, weights=accumulation_weights(sequences, cfg.grad_accum), accum_steps=cfg.grad_accum,
            optimizer=self.optimizer, params=model.trainable_parameters(), max_grad_norm=cfg.max_grad_norm, no_sync=model.no_sync, scaler=model.grad_scaler,
        )  # fmt: skip

    # -- evaluation and state -----------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Mean reward, KL to the reference and response length of fresh samples on ``records``."""
        return evaluate_policy(self.model, self.reward, records, self.rollout_cfg, ref=self.ref, temperature=self.temperature)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "kl_ctl": self.kl_ctl.state_dict(), "ref": self.ref.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if "scheduler" in state:  # checkpoints written before online algorithms had a schedule have none
            self.scheduler.load_state_dict(state["scheduler"])
        self.kl_ctl.load_state_dict(state["kl_ctl"])
        self.ref.load_state_dict(state["ref"])


@hookimpl
def register_algorithms(register):
    register("rloo", RLOO, config=RLOOConfig, description="REINFORCE Leave-One-Out (Ahmadian et al. 2024), no value head")
