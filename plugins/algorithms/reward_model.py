"""Reward-model training (``+algo=reward_model``): a scalar head on the policy's backbone.

Follows Ouyang et al. 2022 (https://arxiv.org/abs/2203.02155, §3.5 "Reward modeling"): a
Bradley-Terry model of pairwise preferences, ``P(y_w > y_l | x) = sigmoid(r(x, y_w) - r(x, y_l))``,
trained by ``-log sigmoid(r_w - r_l)``; a ranked list gives all of its ``k choose 2`` pairs. The
reference implementation is TRL's ``RewardTrainer`` (including its optional
``center_rewards_coefficient``, Eisenstein et al. 2023, which keeps rewards near zero). Score
records (``prompt``, ``response``, ``score``) are fitted by mean squared error instead, and a batch
may mix both kinds.

The model is ``AutoModelForSequenceClassification`` with ``num_labels=1`` built from the policy's
config, its backbone initialised with the policy's weights (what ``from_pretrained(model_dir,
num_labels=1)`` gives, without reading the files again) and a freshly initialised score head.
It reads ``prompt + response`` exactly as :mod:`alignfw.plugins.rewards.reward_model` does
(:meth:`alignfw.models.ClassifierTokenizer.encode`: the tokenizer's template tokens added, right
padding, left truncation to ``max_length``; the score is the head's output at the last real token),
encoding with the policy's alignfw tokenizer when it has one (``model.fast_tokenizer``). At the end of training (step ``run.steps``) it is saved to
``<run_dir>/final/`` (the pipeline calls :meth:`save_pretrained` of an algorithm that has one) with ``save_pretrained`` (safetensors) and its tokenizer, ready for
``+reward=reward_model reward.path=<run_dir>/reward_model``. The policy itself is not trained.

``evaluate`` reports held-out pairwise accuracy (``eval/accuracy``) and loss; on score records,
``eval/loss/mse`` and ``eval/pair_accuracy``: how often two records with different scores are ordered
the same way by the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from alignfw import distributed
from alignfw.config import option
from alignfw.evaluation import evaluate_batches
from alignfw.exceptions import ConfigError, DataError
from alignfw.hookspecs import hookimpl
from alignfw.models import classifier_from_policy, disable_dropout, save_tokenizer, score_sequences
from alignfw.objectives import bradley_terry_loss
from alignfw.optim import SCHEDULES, batch_step, build_optimizer, lr_schedule
from alignfw.registry import BuildContext
from alignfw.types import Record, preference_pairs

__all__ = ["RewardModelTrainer", "RewardModelTrainerConfig", "pair_accuracy"]


@dataclass
class RewardModelTrainerConfig:
    """Options of reward-model training. Defaults suit billion-parameter models; the tiny demo's live in conf/preset/."""

    lr: float = option(1e-5, gt=0)
    weight_decay: float = option(0.0, ge=0)
    adam_eps: float = option(1e-8, gt=0)
    schedule: str = option("linear", choices=SCHEDULES)  #: cosine, linear or constant after warmup, over run.steps
    warmup_steps: int = option(10, ge=0)
    min_lr_ratio: float = option(0.0, ge=0, le=1)
    max_grad_norm: float = option(1.0, ge=0)  #: 0 disables clipping
    micro_batch_size: int = option(8, ge=0)  #: records per forward/backward (gradient accumulation; 0: the whole batch)
    max_length: int = option(1024, ge=1)  #: prompt + response tokens (longer inputs lose their beginning)
    center_rewards_coef: float = option(0.0, ge=0)  #: weight of mean((r_w + r_l)^2), TRL's center_rewards_coefficient
    score_weight: float = option(1.0, ge=0)  #: weight of the MSE on score records
    disable_dropout: bool = True  #: TRL's RewardConfig default


class RewardModelTrainer:
    """Trains a Bradley-Terry / regression reward model; the policy only lends its backbone."""

    def __init__(self, cfg: RewardModelTrainerConfig, ctx: BuildContext) -> None:
        self.cfg = cfg
        self.rm, self.tokenizer = classifier_from_policy(ctx.model.lm, ctx.model.tokenizer, getattr(ctx.model, "fast_tokenizer", None))
        if cfg.disable_dropout:
            disable_dropout(self.rm)
        self.rm.train()
        self.device = next(self.rm.parameters()).device
        strategy = ctx.distributed.strategy
        if strategy == "fsdp2" and distributed.is_distributed():
            raise ConfigError(
                "reward_model training supports distributed.strategy=ddp only (its classifier is saved and checkpointed "
                "whole); use distributed.strategy=ddp"
            )
        #: the module whose forward runs under autograd: DDP's wrapper under torchrun, else ``rm``
        self.rm_train = distributed.wrap(self.rm, strategy, self.device)
        self.total_steps = ctx.run.steps
        self.steps_done = 0
        self.optimizer = build_optimizer(list(self.rm.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay, adam_eps=cfg.adam_eps)
        self.scheduler = lr_schedule(
            self.optimizer, schedule=cfg.schedule, warmup_steps=cfg.warmup_steps, total_steps=self.total_steps, min_lr_ratio=cfg.min_lr_ratio
        )

    def rewards(self, prompts: list[str], responses: list[str]) -> torch.Tensor:
        """The model's score of each ``prompt + response``, ``(b,)`` float32, tokenised as the reward plugin does."""
        module = self.rm_train if torch.is_grad_enabled() else self.rm  # gradients sync through the wrapper
        return score_sequences(module, self.tokenizer, prompts, responses, max_length=self.cfg.max_length)

    def _loss(self, records: Sequence[Record]) -> tuple[torch.Tensor, dict[str, float]]:
        pair_recs = [r for r in records if r.kind in ("preference", "ranked")]
        score_recs = [r for r in records if r.kind == "score"]
        if len(pair_recs) + len(score_recs) != len(records):
            bad = next(r for r in records if r.kind not in ("preference", "ranked", "score"))
            raise DataError(
                f"reward_model trains on preference, ranked or score records; got kind {bad.kind!r} (prompt {bad.prompt[:60]!r}); "
                "for the demo task set data.kind=preference"
            )
        prompts, chosen, rejected = preference_pairs(pair_recs, all_pairs=True, algo="reward_model")
        n = len(prompts)
        all_prompts = prompts + prompts + [r.prompt for r in score_recs]
        r = self.rewards(all_prompts, chosen + rejected + [s.response for s in score_recs])  # one forward, (2n + m,)
        loss = r.new_zeros(())
        stats: dict[str, float] = {}
        if n:
            bt, acc = bradley_terry_loss(r[:n], r[n : 2 * n])
            loss = loss + bt
            stats.update(
                {"loss/bt": bt.item(), "accuracy": acc.item(), "rewards/chosen": r[:n].mean().item(), "rewards/rejected": r[n : 2 * n].mean().item()}
            )
            if self.cfg.center_rewards_coef > 0:
                loss = loss + self.cfg.center_rewards_coef * ((r[:n] + r[n : 2 * n]) ** 2).mean()
        if score_recs:
            target = torch.tensor([s.score for s in score_recs], dtype=torch.float32, device=r.device)
            mse = F.mse_loss(r[2 * n :], target)
            loss = loss + self.cfg.score_weight * mse
            stats["loss/mse"] = mse.item()
        return loss, stats

    def step(self, records: list[Record]) -> dict[str, float]:
        self.rm.train()
        stats = batch_step(
            self._loss,
            records,
            micro_batch_size=self.cfg.micro_batch_size,
            units=_units,
            params=list(self.rm.parameters()),
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            max_grad_norm=self.cfg.max_grad_norm,
            no_sync=lambda skip: distributed.no_sync(self.rm_train, skip),
        )
        self.steps_done += 1
        return stats

    @torch.no_grad()
    def evaluate(self, records: list[Record]) -> dict[str, float]:
        """Held-out ``eval/loss``, ``eval/accuracy`` (pairs); ``eval/loss/mse`` and ``eval/pair_accuracy`` (score records)."""
        out = evaluate_batches(self._loss, records, micro_batch_size=self.cfg.micro_batch_size, modules=[self.rm])
        scored = [r for r in records if r.kind == "score"]
        if scored:
            self.rm.eval()
            mb = self.cfg.micro_batch_size or len(scored)
            chunks = [scored[i : i + mb] for i in range(0, len(scored), mb)]
            pred = torch.cat([self.rewards([r.prompt for r in c], [r.response for r in c]) for c in chunks])
            self.rm.train()
            acc = pair_accuracy(pred.cpu(), torch.tensor([r.score for r in scored]))
            if acc is not None:
                out["eval/pair_accuracy"] = acc
        return out

    def save_pretrained(self, path: str | Path) -> None:
        """Save the reward model (safetensors) and its tokenizer; ``+reward=reward_model reward.path=path`` loads it."""
        self.rm.save_pretrained(str(path), safe_serialization=True)
        save_tokenizer(self.tokenizer.hf, path)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.rm.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "steps_done": self.steps_done,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rm.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.steps_done = int(state["steps_done"])


def _units(records: Sequence[Record]) -> float:
    """What the loss is a mean over: the comparisons (pairs) and the scored records."""
    pairs = [r for r in records if r.kind in ("preference", "ranked")]
    return float(len(preference_pairs(pairs, all_pairs=True, algo="reward_model")[0]) + len(records) - len(pairs))


# -- the numerical pieces ---------------------------------------------------------------------


def pair_accuracy(pred: torch.Tensor, target: torch.Tensor) -> float | None:
    """Over all pairs whose targets differ, the fraction that ``pred`` orders the same way (None: no such pair). Shapes ``(m,)``."""
    dt = target.unsqueeze(0) - target.unsqueeze(1)  # (m, m)
    dp = pred.unsqueeze(0) - pred.unsqueeze(1)
    valid = dt != 0
    if not valid.any():
        return None
    return ((dt.sign() == dp.sign()) & valid).sum().item() / valid.sum().item()


@hookimpl
def register_algorithms(register):
    register("reward_model", RewardModelTrainer, config=RewardModelTrainerConfig)
