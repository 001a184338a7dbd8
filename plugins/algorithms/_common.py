"""Shared pieces of the offline algorithms (SFT, SFT ranking, reward model, DPO).

Algorithms compose these functions; none inherits from another. What is here:

- :func:`response_logprobs`: summed (and per-token) log-probs of *given* responses through
  :meth:`alignfw.models.CausalLM.encode_pairs` and :meth:`~alignfw.models.CausalLM.score`, i.e. the
  fused log-prob op on CUDA; nothing here materialises ``(B, T, V)`` log-softmax;
- :func:`build_optimizer` and :func:`lr_schedule`: AdamW and a warmup + cosine/linear/constant
  learning-rate schedule (a ``LambdaLR``, whose state goes into the algorithm's ``state_dict``);
- :func:`accumulate_step`: one optimizer step over a batch of records split into micro-batches
  (gradient accumulation weighted by micro-batch size, clipping, scheduler step);
- :func:`evaluate_batches`: the same micro-batch walk without gradients, for ``evaluate()``;
- :func:`sft_response`: the response an SFT-style record supervises;
- :func:`preference_pairs`: (prompt, chosen, rejected) triples from preference and ranked records.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, ContextManager, Sequence

import torch

from alignfw.exceptions import ConfigError, DataError
from alignfw.types import Record

__all__ = [
    "accumulate_step",
    "build_optimizer",
    "evaluate_batches",
    "lr_schedule",
    "preference_pairs",
    "response_logprobs",
    "sft_response",
]

SCHEDULES = ("cosine", "linear", "constant")

#: ``loss_fn(records) -> (loss, stats)``: a scalar loss averaged over the micro-batch, float stats
LossFn = Callable[[list[Record]], "tuple[torch.Tensor, dict[str, float]]"]


def sft_response(record: Record) -> str:
    """The response an SFT record supervises: ``response``, else the first reference answer."""
    if record.response is not None:
        return record.response
    if record.references:
        return record.references[0]
    raise DataError(
        f"record of kind {record.kind!r} (prompt {record.prompt[:60]!r}) has no response to train on; "
        "SFT needs records with a response or references (for the demo task: data.kind=sft)"
    )


def preference_pairs(records: list[Record], *, all_pairs: bool, algo: str) -> tuple[list[str], list[str], list[str]]:
    """``(prompts, chosen, rejected)`` from preference and ranked records.

    A ranked record (best first) gives every ordered pair ``(better, worse)`` with ``all_pairs``
    (reward-model training, as InstructGPT uses all K-choose-2 comparisons), else its best answer
    against each other one. Any other kind raises a :class:`DataError` naming ``algo``.
    """
    prompts: list[str] = []
    chosen: list[str] = []
    rejected: list[str] = []
    for r in records:
        if r.kind == "preference" and r.chosen is not None and r.rejected is not None:
            pairs = [(r.chosen, r.rejected)]
        elif r.kind == "ranked" and r.responses is not None and len(r.responses) >= 2:
            rs = r.responses
            pairs = [(rs[i], rs[j]) for i in range(len(rs) if all_pairs else 1) for j in range(i + 1, len(rs))]
        else:
            raise DataError(
                f"{algo} needs preference records (prompt, chosen, rejected) or ranked ones with at least two answers; "
                f"got a record of kind {r.kind!r} (prompt {r.prompt[:60]!r}); for the demo task set data.kind=preference"
            )
        for c, rej in pairs:
            prompts.append(r.prompt)
            chosen.append(c)
            rejected.append(rej)
    return prompts, chosen, rejected


def response_logprobs(model: Any, prompts: list[str], responses: list[str], *, lm: Any = None) -> dict[str, torch.Tensor]:
    """Log-probs of ``responses`` (each followed by EOS) given ``prompts`` under ``lm`` (default: the policy).

    Differentiable when called outside ``torch.no_grad``.

    Notation:
        b: number of pairs; R: longest response in tokens, EOS included.

    Returns:
        ``token`` ``(b, R)`` per-token log-probs (0 on padding), ``mask`` ``(b, R)`` float,
        ``sum`` ``(b,)`` summed log-prob of each response, ``length`` ``(b,)`` its token count.
    """
    gen = model.encode_pairs(prompts, responses)
    token = model.score(gen, lm=lm)["logprobs"].float()  # (b, R)
    mask = gen.response_mask.float()  # (b, R)
    return {"token": token, "mask": mask, "sum": (token * mask).sum(1), "length": mask.sum(1)}


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


def _micro_batches(records: list[Record], size: int) -> list[list[Record]]:
    size = size if size > 0 else len(records)
    return [records[i : i + size] for i in range(0, len(records), size)]


def accumulate_step(
    loss_fn: LossFn,
    records: list[Record],
    *,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    micro_batch_size: int,
    max_grad_norm: float | None,
    no_sync: Callable[[bool], ContextManager[Any]] | None = None,
) -> dict[str, float]:
    """One optimizer step on ``records``: accumulate gradients over micro-batches, clip, step.

    Each micro-batch's loss is weighted by its share of the records, so the step equals one
    full-batch step whatever ``micro_batch_size`` is (0: the whole batch at once). Returns the
    micro-batch stats averaged with the same weights, plus ``loss/total``, ``grad_norm`` and ``lr``.

    Under torchrun ``records`` is this rank's share (the same size on every rank) and the wrapper
    averages gradients over ranks, so the step equals the single-process step on the whole batch
    when the micro-batch size divides the share. ``no_sync(skip)`` (:meth:`CausalLM.no_sync`)
    keeps every micro-batch's backward but the last one local (one all-reduce per step).
    """
    if not records:
        raise DataError("an offline algorithm step got no records")
    from alignfw.distributed import is_distributed, to_float

    n = len(records)
    acc: dict[str, float] = {}
    batches = _micro_batches(records, micro_batch_size)
    for i, mb in enumerate(batches):
        w = len(mb) / n
        with no_sync(i < len(batches) - 1) if no_sync is not None else contextlib.nullcontext():
            loss, stats = loss_fn(mb)
            (loss * w).backward()
        for k, v in {"loss/total": loss.item(), **stats}.items():
            acc[k] = acc.get(k, 0.0) + w * v
    if max_grad_norm is not None and max_grad_norm > 0:
        gn = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    elif is_distributed():  # the norm of (possibly sharded) gradients without clipping
        gn = torch.nn.utils.clip_grad_norm_(params, float("inf"))
    else:
        gn = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    acc["grad_norm"] = to_float(gn)
    acc["lr"] = optimizer.param_groups[0]["lr"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return acc


@torch.no_grad()
def evaluate_batches(loss_fn: LossFn, records: list[Record], *, micro_batch_size: int, modules: Sequence[torch.nn.Module]) -> dict[str, float]:
    """``loss_fn`` over ``records`` in eval mode without gradients.

    Returns ``eval/loss`` and each stat as ``eval/<name>``, averaged with weights by record count.
    """
    if not records:
        return {}
    was = [m.training for m in modules]
    for m in modules:
        m.eval()
    acc: dict[str, float] = {}
    try:
        for mb in _micro_batches(records, micro_batch_size):
            w = len(mb) / len(records)
            loss, stats = loss_fn(mb)
            for k, v in {"loss": loss.item(), **stats}.items():
                acc[f"eval/{k}"] = acc.get(f"eval/{k}", 0.0) + w * v
    finally:
        for m, t in zip(modules, was):
            m.train(t)
    return acc
