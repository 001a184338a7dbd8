"""SFT with a ranking loss over k ranked answers (``+algo=sft_ranking``): RRHF (default) or PRO.

Each record holds a prompt and ``responses`` ranked best first. Every answer is scored by the
policy's *length-normalised* log-probability ``p_i = (1/|y_i|) sum_t log pi(y_i,t | x, y_i,<t)``
(EOS included), through :meth:`alignfw.models.CausalLM.score` (fused op on CUDA). Then:

- ``loss_type=rrhf`` (default): RRHF, Yuan et al. 2023 (https://arxiv.org/abs/2304.05302, eq. 2-4;
  reference implementation github.com/GanjinZero/RRHF ``train.py``):
  ``L = rank_weight * sum_{i better than j} max(0, p_j - p_i) + sft_weight * NLL(best)``;
- ``loss_type=pro``: PRO, Song et al. 2023 (https://arxiv.org/abs/2306.17492, eq. 6): the
  list-wise Plackett-Luce loss ``-sum_k log(exp(p_k / T) / sum_{i>=k} exp(p_i / T))`` plus
  ``sft_weight * NLL(best)`` (PRO's beta); PRO's reward-dependent temperature is left out because
  ranked records carry no reward values, so ``T = pro_temperature`` is fixed.

RRHF is the default: its hinge is zero once the ranking holds, so a well-ranked list costs
nothing beyond SFT on the best answer and the model is not pushed to keep widening margins; it
is also what "SFT + ranking loss" usually means in practice. The NLL is each best answer's token
mean (``-p_best``), averaged over records as RRHF's reference code does, so every term of the loss
is a mean over records and micro-batches weigh by record count. Optimiser, schedule and
micro-batching are those of SFT. ``evaluate`` reports the held-out loss, the fraction of
correctly ordered pairs (``eval/rank_accuracy``) and the fraction of records whose best answer
scores highest (``eval/top1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from alignfw.config import option
from alignfw.evaluation import evaluate_batches
from alignfw.exceptions import DataError
from alignfw.hookspecs import hookimpl
from alignfw.models import PolicyModel, disable_dropout, response_logprobs
from alignfw.objectives import pro_loss, rrhf_loss
from alignfw.optim import SCHEDULES, batch_step, build_optimizer, lr_schedule
from alignfw.registry import BuildContext
from alignfw.types import Record

__all__ = ["SFTRanking", "SFTRankingConfig"]

LOSS_TYPES = ("rrhf", "pro")


@dataclass
class SFTRankingConfig:
    """Options of SFT with a ranking loss. Defaults suit billion-parameter models (RRHF's); the tiny demo's live in conf/preset/."""

    loss_type: str = option("rrhf", choices=LOSS_TYPES)  #: rrhf (pairwise hinge) or pro (list-wise Plackett-Luce)
    rank_weight: float = option(1.0, ge=0)  #: weight of the ranking loss
    sft_weight: float = option(1.0, ge=0)  #: weight of the NLL of the best answer (RRHF's L_ft, PRO's beta)
    pro_temperature: float = option(1.0, gt=0)  #: PRO: scores are divided by this
    lr: float = option(2e-5, gt=0)
    weight_decay: float = option(0.0, ge=0)
    adam_eps: float = option(1e-8, gt=0)
    schedule: str = option("cosine", choices=SCHEDULES)  #: cosine, linear or constant after warmup, over run.steps
    warmup_steps: int = option(10, ge=0)
    min_lr_ratio: float = option(0.0, ge=0, le=1)
    max_grad_norm: float = option(1.0, ge=0)  #: 0 disables clipping
    micro_batch_size: int = option(4, ge=0)  #: ranked records per forward/backward (each has k answers; 0: the whole batch)
    disable_dropout: bool = False  #: dropout off in training (makes a step a deterministic function of the batch)


class SFTRanking:
    """SFT on the best answer plus a ranking loss over all k answers of each record."""

    def __init__(self, cfg: SFTRankingConfig, ctx: BuildContext) -> None:
        self.cfg = cfg
        self.model: PolicyModel = ctx.model
        if cfg.disable_dropout:
            disable_dropout(self.model.lm)
        self.model.parallelize(ctx.distributed.strategy)
        self.optimizer = build_optimizer(self.model.trainable_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps)
        self.scheduler = lr_schedule(
            self.optimizer, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=ctx.run.steps, min_lr_ratio=cfg.min_lr_ratio
        )

    def _loss(self, records: Sequence[Record]) -> tuple[torch.Tensor, dict[str, float]]:
        k = _check_ranked(records)
        prompts = [r.prompt for r in records for _ in range(k)]
        answers = [a for r in records for a in r.responses]  # record-major: (b * k,)
        lp = response_logprobs(self.model, prompts, answers)
        b = len(records)
        scores = (lp["sum"] / lp["length"]).view(b, k)  # length-normalised log-probs, (b, k)
        best = torch.arange(b, device=scores.device) * k  # rows of the best answers
        nll = -(scores[:, 0]).mean()  # each best answer's token-mean NLL, averaged over records
        if self.cfg.loss_type == "rrhf":
            rank = rrhf_loss(scores)
        else:
            rank = pro_loss(scores, temperature=self.cfg.pro_temperature)
        loss = self.cfg.rank_weight * rank + self.cfg.sft_weight * nll
        with torch.no_grad():
            better, worse = torch.triu_indices(k, k, offset=1, device=scores.device)  # all pairs i < j
            ordered = (scores[:, better] > scores[:, worse]).float().mean().item()
            top1 = (scores.argmax(1) == 0).float().mean().item()
        stats = {
            "loss/rank": rank.item(),
            "loss/sft": nll.item(),
            "rank_accuracy": ordered,
            "top1": top1,
            "logps/best": lp["sum"][best].mean().item(),
        }
        return loss, stats

    def step(self, records: list[Record]) -> dict[str, float]:
        self.model.lm.train()
        return batch_step(
            self._loss,
            records,
            micro_batch_size=self.cfg.micro_batch_size,
            params=self.model.trainable_parameters(),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            max_grad_norm=self.cfg.max_grad_norm,
            no_sync=self.model.no_sync,
            scaler=self.model.grad_scaler,
        )

    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Held-out ``eval/loss``, ``eval/rank_accuracy`` (pairs ordered right) and ``eval/top1``."""
        return evaluate_batches(self._loss, records, micro_batch_size=self.cfg.micro_batch_size, modules=[self.model.lm])

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


# -- checks -----------------------------------------------------------------------------------


def _check_ranked(records: Sequence[Record]) -> int:
    """The common number of answers k (>= 2) of ranked records; a clear error otherwise."""
    ks = {len(r.responses) if r.kind == "ranked" and r.responses is not None else -1 for r in records}
    if -1 in ks:
        bad = next(r for r in records if r.kind != "ranked")
        raise DataError(
            f"sft_ranking needs ranked records (prompt, responses best first); got kind {bad.kind!r} "
            f"(prompt {bad.prompt[:60]!r}); for the demo task set data.kind=ranked"
        )
    if len(ks) != 1 or min(ks) < 2:
        raise DataError(f"sft_ranking needs the same number (>= 2) of ranked answers in every record; this batch has {sorted(ks)}")
    return ks.pop()


@hookimpl
def register_algorithms(register):
    register("sft_ranking", SFTRanking, config=SFTRankingConfig)
