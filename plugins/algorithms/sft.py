"""Supervised fine-tuning (``+algo=sft``): token-level negative log-likelihood of the response.

The loss is the mean NLL over the response tokens of the batch (EOS included, prompt tokens
excluded), as in Ouyang et al. 2022 (https://arxiv.org/abs/2203.02155, §3.5 "SFT") and TRL's
``SFTTrainer`` with ``completion_only_loss``; torchtune's ``full_finetune_single_device`` recipe
is the loop's model. Log-probs come from :meth:`alignfw.models.CausalLM.score` (the fused op on
CUDA). Records of kind ``sft`` (``prompt`` + ``response``) are the input; a record with
``references`` trains on ``references[0]``, so the demo task works with its default records too.

One ``step``: the step's records in micro-batches with gradient accumulation, clipping, AdamW,
and a warmup + cosine/linear/constant schedule. ``evaluate`` reports held-out loss and perplexity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from alignfw.config import option
from alignfw.evaluation import evaluate_batches
from alignfw.hookspecs import hookimpl
from alignfw.models import Generation, PolicyModel, disable_dropout, response_logprobs
from alignfw.objectives import sft_loss
from alignfw.optim import SCHEDULES, accumulate, accumulation_weights, build_optimizer, lr_schedule, micro_batches
from alignfw.registry import BuildContext
from alignfw.types import Record, sft_response

__all__ = ["SFT", "SFTConfig"]


@dataclass
class SFTConfig:
    """Options of SFT. Defaults suit billion-parameter models; the tiny demo's live in conf/preset/."""

    lr: float = option(2e-5, gt=0)
    weight_decay: float = option(0.0, ge=0)
    adam_eps: float = option(1e-8, gt=0)
    schedule: str = option("cosine", choices=SCHEDULES)  #: cosine, linear or constant after warmup, over run.steps
    warmup_steps: int = option(10, ge=0)
    min_lr_ratio: float = option(0.0, ge=0, le=1)  #: the schedule ends at lr * min_lr_ratio
    max_grad_norm: float = option(1.0, ge=0)  #: 0 disables clipping
    micro_batch_size: int = option(8, ge=0)  #: records per forward/backward (gradient accumulation; 0: the whole batch)
    disable_dropout: bool = False  #: dropout off in training (makes a step a deterministic function of the batch)


class SFT:
    """Supervised fine-tuning of the policy on prompt/response records."""

    def __init__(self, cfg: SFTConfig, ctx: BuildContext) -> None:
        self.cfg = cfg
        self.model: PolicyModel = ctx.model
        if cfg.disable_dropout:
            disable_dropout(self.model.lm)
        self.model.parallelize(ctx.distributed.strategy)
        self.optimizer = build_optimizer(self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps)
        self.scheduler = lr_schedule(
            self.optimizer, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=ctx.run.steps, min_lr_ratio=cfg.min_lr_ratio
        )

    def _encode(self, records: Sequence[Record]) -> Generation:
        return self.model.encode_pairs([r.prompt for r in records], [sft_response(r) for r in records])

    def _loss_encoded(self, gen: Generation) -> tuple[torch.Tensor, dict[str, float]]:
        """The token-mean NLL of one encoded micro-batch."""
        lp = self.model.score(gen)["logprobs"].float()  # (b, R)
        return sft_loss(lp, gen.response_mask.float()), {}

    def _loss(self, records: Sequence[Record]) -> tuple[torch.Tensor, dict[str, float]]:
        lp = response_logprobs(self.model, [r.prompt for r in records], [sft_response(r) for r in records])
        loss = sft_loss(lp["token"], lp["mask"])
        n = len(records)
        # per-record sums: averaged over micro-batches by record count they give exact token means
        stats = {"nll_per_record": -lp["sum"].sum().item() / n, "tokens_per_record": lp["length"].sum().item() / n}
        return loss, stats

    def step(self, records: list[Record]) -> dict[str, float]:
        """One optimizer step; the loss is the mean over every response token of ``records``, so each
        micro-batch weighs by its share of the tokens (not of the records)."""
        self.model.lm.train()
        encoded = [self._encode(mb) for mb in micro_batches(records, self.cfg.micro_batch_size)]
        stats = accumulate(
            encoded,
            self._loss_encoded,
            weights=accumulation_weights([float(g.response_mask.sum()) for g in encoded]),
            params=self.model.trainable_parameters(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            max_grad_norm=self.cfg.max_grad_norm,
            no_sync=self.model.no_sync,
            scaler=self.model.grad_scaler,
        )
        stats["loss/sft"] = stats["loss/total"]  # token-weighted mean of token means: the batch's token mean
        return stats

    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Held-out token-level loss (``eval/loss``, exact token mean) and ``eval/perplexity``."""
        m = evaluate_batches(self._loss, records, micro_batch_size=self.cfg.micro_batch_size, modules=[self.model.lm])
        if not m:
            return {}
        loss = m["eval/nll_per_record"] / max(m["eval/tokens_per_record"], 1e-8)
        return {"eval/loss": loss, "eval/perplexity": math.exp(min(loss, 50.0))}

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


@hookimpl
def register_algorithms(register):
    register("sft", SFT, config=SFTConfig)
