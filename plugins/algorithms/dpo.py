"""Direct Preference Optimization (``+algo=dpo``) against a frozen reference.

Follows Rafailov et al. 2023 (https://arxiv.org/abs/2305.18290); the reference implementation is
TRL's ``DPOTrainer``. With ``h = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))``:

- ``loss_type=sigmoid`` (DPO, eq. 7): ``-(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)``;
  ``label_smoothing=eps > 0`` is conservative DPO (cDPO, Mitchell 2023), robust to flipped labels;
- ``loss_type=ipo`` (Azar et al. 2023, https://arxiv.org/abs/2310.12036, eq. 17):
  ``(h - 1 / (2 beta))^2`` on *length-averaged* log-probs, as TRL computes it.

One ``step``: chosen and rejected responses of a micro-batch go through the policy in one
concatenated forward (and through the reference under ``no_grad``), log-probs from
:meth:`alignfw.models.CausalLM.score` (fused op on CUDA); AdamW, clipping, warmup + schedule.
Metrics follow TRL: ``rewards/chosen``, ``rewards/rejected`` (``beta`` times the log-ratio to the
reference), ``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected``.
Records are preference pairs; a ranked record contributes its best answer against each other one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from alignfw.config import option
from alignfw.evaluation import evaluate_batches
from alignfw.hookspecs import hookimpl
from alignfw.models import PolicyModel, disable_dropout, response_logprobs
from alignfw.objectives import DPO_LOSS_TYPES, dpo_loss
from alignfw.optim import SCHEDULES, batch_step, build_optimizer, lr_schedule
from alignfw.registry import BuildContext
from alignfw.types import Record, preference_pairs

__all__ = ["DPO", "DPOConfig"]


@dataclass
class DPOConfig:
    """Options of DPO. Defaults suit billion-parameter models (TRL's); the tiny demo's live in conf/preset/."""

    beta: float = option(0.1, gt=0)  #: strength of the implicit KL constraint (IPO: the regularisation tau)
    loss_type: str = option("sigmoid", choices=DPO_LOSS_TYPES)  #: sigmoid (DPO; cDPO with label_smoothing) or ipo
    label_smoothing: float = option(0.0, ge=0, lt=0.5)  #: cDPO: assumed probability that a preference label is flipped
    lr: float = option(5e-7, gt=0)
    weight_decay: float = option(0.0, ge=0)
    adam_eps: float = option(1e-8, gt=0)
    schedule: str = option("linear", choices=SCHEDULES)  #: cosine, linear or constant after warmup, over run.steps
    warmup_steps: int = option(10, ge=0)
    min_lr_ratio: float = option(0.0, ge=0, le=1)
    max_grad_norm: float = option(1.0, ge=0)  #: 0 disables clipping
    micro_batch_size: int = option(8, ge=0)  #: pairs per forward/backward (gradient accumulation; 0: the whole batch)
    disable_dropout: bool = True  #: policy and reference log-probs must be comparable (TRL's default)


class DPO:
    """DPO on preference pairs; owns the optimizer, the schedule and the frozen reference."""

    def __init__(self, cfg: DPOConfig, ctx: BuildContext) -> None:
        self.cfg = cfg
        self.model: PolicyModel = ctx.model
        if cfg.disable_dropout:
            disable_dropout(self.model.lm)
        self.ref = self.model.make_reference()
        self.model.parallelize(ctx.distributed.strategy)
        self.optimizer = build_optimizer(self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps)
        self.scheduler = lr_schedule(
            self.optimizer, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=ctx.run.steps, min_lr_ratio=cfg.min_lr_ratio
        )

    def _loss(self, records: Sequence[Record]) -> tuple[torch.Tensor, dict[str, float]]:
        prompts, chosen, rejected = preference_pairs(records, all_pairs=False, algo="DPO")
        n = len(prompts)
        both_prompts, both = prompts + prompts, chosen + rejected  # one forward for chosen and rejected
        pol = response_logprobs(self.model, both_prompts, both)
        with torch.no_grad():
            ref = response_logprobs(self.model, both_prompts, both, lm=self.ref)
        if self.cfg.loss_type == "ipo":  # IPO works on length-averaged log-probs
            pol_lp, ref_lp = pol["sum"] / pol["length"], ref["sum"] / ref["length"]
        else:
            pol_lp, ref_lp = pol["sum"], ref["sum"]
        cfg = self.cfg
        loss, rc, rr = dpo_loss(
            pol_lp[:n], pol_lp[n:], ref_lp[:n], ref_lp[n:], beta=cfg.beta, loss_type=cfg.loss_type, label_smoothing=cfg.label_smoothing
        )
        stats = {
            "rewards/chosen": rc.mean().item(),
            "rewards/rejected": rr.mean().item(),
            "rewards/accuracies": (rc > rr).float().mean().item(),
            "rewards/margins": (rc - rr).mean().item(),
            "logps/chosen": pol["sum"][:n].mean().item(),
            "logps/rejected": pol["sum"][n:].mean().item(),
        }
        return loss, stats

    def step(self, records: list[Record]) -> dict[str, float]:
        self.model.lm.train()
        return batch_step(
            self._loss,
            records,
            micro_batch_size=self.cfg.micro_batch_size,
            units=lambda mb: len(preference_pairs(mb, all_pairs=False, algo="DPO")[0]),  # the loss is a mean over pairs
            params=self.model.trainable_parameters(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            max_grad_norm=self.cfg.max_grad_norm,
            no_sync=self.model.no_sync,
            scaler=self.model.grad_scaler,
        )

    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """The loss and reward metrics on held-out pairs (``eval/loss``, ``eval/rewards/margins``, ...)."""
        return evaluate_batches(self._loss, records, micro_batch_size=self.cfg.micro_batch_size, modules=[self.model.lm])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(), "ref": self.ref.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.ref.load_state_dict(state["ref"])


@hookimpl
def register_algorithms(register):
    register("dpo", DPO, config=DPOConfig)
