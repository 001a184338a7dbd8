"""Optimisation: the optimizer builder, learning-rate schedules and the one update loop.

Every algorithm, online or offline, built-in or third-party, updates its model through
:func:`accumulate`: micro-batches, each loss scaled by its weight and back-propagated (inside
``no_sync`` unless an optimizer step follows, so under torchrun gradients are all-reduced once per
step), an optimizer step every ``accum_steps`` micro-batches and on the remainder, each step
clipping the gradient norm (:func:`optimizer_step`) and advancing the schedule.

- :func:`build_optimizer`: AdamW, no weight decay on biases and norms, fused where possible;
- :func:`lr_schedule`: linear warmup, then cosine / linear / constant (a ``LambdaLR``);
- :func:`micro_batches`, :func:`shuffled_minibatches`: how a batch is cut;
- :func:`accumulate`, :func:`optimizer_step`; :func:`batch_step`, the offline algorithms' step.

Reference: torchtune's recipes (gradient accumulation, ``get_cosine_schedule_with_warmup``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Sequence, TypeVar

import torch

from alignfw import distributed
from alignfw.config import option
from alignfw.distributed import to_float
from alignfw.exceptions import ConfigError, DataError

__all__ = [
    "OptimizerOptions",
    "SCHEDULES",
    "accumulate",
    "accumulation_weights",
    "batch_step",
    "build_optimizer",
    "lr_schedule",
    "micro_batches",
    "optimizer_step",
    "shuffled_minibatches",
]

T = TypeVar("T")

#: learning-rate shapes after the warmup
SCHEDULES = ("cosine", "linear", "constant")


@dataclass
class OptimizerOptions:
    """The optimizer (AdamW, :func:`build_optimizer`) and learning-rate (:func:`lr_schedule`) options
    an algorithm's config inherits, with RL's defaults: a constant lr of 1e-6. A config that needs
    other defaults redeclares those fields."""

    lr: float = option(1e-6, gt=0)
    schedule: str = option("constant", choices=SCHEDULES)  #: the lr after warmup: constant, linear or cosine (decaying over run.steps)
    warmup_steps: int = option(0, ge=0)  #: run steps of linear lr warmup
    min_lr_ratio: float = option(0.0, ge=0, le=1)  #: linear / cosine decay ends at lr * min_lr_ratio
    weight_decay: float = option(0.0, ge=0)
    adam_eps: float = option(1e-8, gt=0)


def build_optimizer(params: Sequence[torch.nn.Parameter], *, lr: float, weight_decay: float, adam_eps: float) -> torch.optim.AdamW:
    """AdamW over ``params`` (no decay on biases and norm weights: the 1-D parameters).

    The fused implementation (one kernel over all parameters, on CPU as on GPU) when every
    parameter is a plain tensor; FSDP2's sharded parameters (DTensors) take the default one.
    """
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = bool(params) and all(type(p.data) is torch.Tensor and p.is_floating_point() for p in params)
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, eps=adam_eps, fused=fused or None)


def lr_schedule(optimizer: torch.optim.Optimizer, *, schedule: str, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0):
    """Linear warmup over ``warmup_steps``, then ``schedule`` down to ``min_lr_ratio * lr`` at ``total_steps``.

    ``cosine`` and ``linear`` decay; ``constant`` stays at ``lr`` after warmup. Returns a
    ``torch.optim.lr_scheduler.LambdaLR`` stepped once per optimizer step.
    """
    if schedule not in SCHEDULES:
        raise ConfigError(f"algo.schedule={schedule!r}; choose one of {', '.join(SCHEDULES)}")
    if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0:
        raise ConfigError("algo.warmup_steps must be >= 0 and algo.min_lr_ratio in [0, 1]")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
        return min_lr_ratio + (1.0 - min_lr_ratio) * decay

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def micro_batches(items: Sequence[T], size: int) -> list[Sequence[T]]:
    """Consecutive slices of ``size`` items (``size <= 0``: one slice with everything)."""
    size = size if size > 0 else len(items)
    return [items[i : i + size] for i in range(0, len(items), size)]


def shuffled_minibatches(n: int, size: int, epochs: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Index tensors of ``epochs`` passes over ``n`` rows, each pass a fresh permutation cut into ``size``."""
    out: list[torch.Tensor] = []
    for _ in range(epochs):
        perm = torch.randperm(n, device=device)
        out += [perm[s : s + size] for s in range(0, n, size)]
    return out


def accumulation_weights(units: Sequence[float], accum_steps: int | None = None) -> list[float]:
    """Loss weights that make accumulated gradients equal the gradient of one big batch.

    ``units[i]`` is what micro-batch ``i``'s loss is a mean over (its tokens for a token-mean loss,
    its sequences or records for a per-sequence one). Micro-batch ``i`` gets ``units[i] / U`` with
    ``U`` the units of its accumulation group (``accum_steps`` consecutive micro-batches; ``None``:
    all), so ``sum_i w_i * mean_i`` is the mean over the whole group, whatever the split: the
    normalisation error behind silently wrong gradient accumulation is a per-micro-batch mean
    averaged with equal weights. Under torchrun ``U`` is the mean over ranks of their group units,
    because the wrapper averages gradients over ranks: the step then equals one process's on the
    global batch.
    """
    n = len(units)
    per = accum_steps if accum_steps is not None else max(n, 1)
    totals = torch.tensor([float(sum(units[g : g + per])) for g in range(0, n, per)], dtype=torch.float64)
    if distributed.is_distributed():
        totals = distributed.all_reduce_sum(totals) / distributed.world_size()
    return [float(u) / float(totals[i // per]) if totals[i // per] > 0 else 0.0 for i, u in enumerate(units)]


def optimizer_step(
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    max_grad_norm: float | None,
    scheduler: Any = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """Clip the gradient norm (``max_grad_norm`` <= 0 or None: measure it only), step, zero the
    gradients, advance ``scheduler``. Returns ``grad_norm`` (before clipping) and the ``lr`` used.

    With fp16's ``scaler`` the gradients are unscaled before clipping, and a step whose gradients
    overflowed is skipped (and the scale lowered) by the scaler, as PyTorch's AMP recipe does.
    """
    if scaler is not None:
        scaler.unscale_(optimizer)
    limit = max_grad_norm if max_grad_norm is not None and max_grad_norm > 0 else float("inf")
    gn = torch.nn.utils.clip_grad_norm_(params, limit)  # a DTensor under FSDP2
    lr = optimizer.param_groups[0]["lr"]
    out = {"grad_norm": to_float(gn), "lr": lr}
    if scaler is not None:
        scaler.step(optimizer)
        out["loss_scale"] = scaler.get_scale()
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return out


def accumulate(
    batches: Sequence[T],
    loss_fn: Callable[[T], tuple[torch.Tensor, dict[str, float]]],
    *,
    weights: Sequence[float],
    optimizer: torch.optim.Optimizer,
    params: Sequence[torch.nn.Parameter],
    max_grad_norm: float | None,
    accum_steps: int | None = None,
    scheduler: Any = None,
    no_sync: Callable[[bool], ContextManager[Any]] | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> dict[str, float]:
    """The update loop: back-propagate ``weights[i] * loss_fn(batches[i])`` for every micro-batch and
    take an optimizer step after every ``accum_steps`` of them (``None``: one step after all) and
    after the last.

    Args:
        batches: Micro-batches, anything ``loss_fn`` takes (records, index tensors).
        loss_fn: ``batch -> (loss, stats)``, the mean loss of that micro-batch over its units and float stats.
        weights: Each micro-batch's factor on its loss, from :func:`accumulation_weights`: the weights
            of an accumulation group sum to 1 (on average over ranks), so the accumulated gradient is
            the gradient of the group's mean loss whatever the split.
        no_sync: ``no_sync(skip)`` (:meth:`alignfw.models.CausalLM.no_sync`): every backward but the
            one before an optimizer step runs without the cross-rank gradient all-reduce.
        scaler: fp16's loss scaler (``CausalLM.grad_scaler``; None otherwise).

    Returns:
        Each stat and ``loss/total`` as the weighted sum over each group's micro-batches (the group's
        mean; averaged over ranks, the global batch's), averaged over groups; ``grad_norm`` and ``lr``
        averaged over the optimizer steps taken.
    """
    n = len(batches)
    per_step = accum_steps if accum_steps is not None else n
    if per_step < 1:
        raise ConfigError(f"gradient accumulation over {per_step} micro-batches: use >= 1")
    if len(weights) != n:
        raise ValueError(f"accumulate: {n} micro-batches but {len(weights)} weights")
    sums: dict[str, float] = {}
    steps: dict[str, list[float]] = {}
    for i, mb in enumerate(batches):
        step_after = (i + 1) % per_step == 0 or i + 1 == n
        with no_sync(not step_after) if no_sync is not None else contextlib.nullcontext():
            loss, stats = loss_fn(mb)
            weighted = loss * weights[i]
            (scaler.scale(weighted) if scaler is not None else weighted).backward()
        for k, v in {"loss/total": loss.item(), **stats}.items():
            sums[k] = sums.get(k, 0.0) + weights[i] * v
        if step_after:
            for k, v in optimizer_step(optimizer, params, max_grad_norm, scheduler, scaler).items():
                steps.setdefault(k, []).append(v)
    groups = max(len(steps.get("grad_norm", [])), 1)
    out = {k: v / groups for k, v in sums.items()}
    out.update({k: sum(v) / len(v) for k, v in steps.items()})
    return out


def batch_step(
    loss_fn: Callable[[Sequence[T]], tuple[torch.Tensor, dict[str, float]]],
    items: Sequence[T],
    *,
    micro_batch_size: int,
    units: Callable[[Sequence[T]], float] = len,
    **kwargs: Any,
) -> dict[str, float]:
    """One optimizer step on ``items`` through :func:`accumulate`, cut into micro-batches of
    ``micro_batch_size`` (0: all at once).

    ``loss_fn`` returns the mean loss of its micro-batch over ``units(micro_batch)`` units (default:
    its items; SFT counts response tokens), and :func:`accumulation_weights` weighs each micro-batch
    by its share of the units, so the step equals one full-batch step whatever the micro-batch size;
    stats are averaged with the same weights. ``kwargs``: :func:`accumulate`'s ``optimizer``,
    ``params``, ``max_grad_norm``, ``scheduler``, ``no_sync``, ``scaler``.
    """
    if not items:
        raise DataError("an algorithm step got no records")
    batches = micro_batches(items, micro_batch_size)
    return accumulate(batches, loss_fn, weights=accumulation_weights([units(mb) for mb in batches]), **kwargs)
