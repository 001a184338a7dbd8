"""Shared pieces of online algorithms: turn reward outputs into checked tensors, KL estimates,
masked statistics, group baselines (GRPO, RLOO), the clipped surrogate, loss aggregation and the
adaptive KL controller. Algorithms compose these; none inherits.

Notation: ``b`` sequences in a rollout batch, ``R`` response tokens (padded), ``G`` samples per
prompt; grouped tensors keep the ``G`` samples of one prompt contiguous (``repeat_interleave``).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Sequence

import torch

from alignfw.exceptions import TrainingError
from alignfw.types import Record

__all__ = [
    "AdaptiveKLController",
    "minibatch_epochs",
    "require_reward",
    "LOSS_AGGREGATIONS",
    "aggregate_loss",
    "clipped_surrogate",
    "compute_rewards",
    "group_advantages",
    "k3_kl",
    "leave_one_out_advantages",
    "masked_mean",
    "masked_var",
    "masked_whiten",
]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` where ``mask`` is 1 (over ``dim``, or all elements)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.sum()
        if n > 1:
            var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, *, mean_var: tuple[torch.Tensor, torch.Tensor] | None = None
) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean) over the masked elements.

    ``mean_var``: the statistics to use instead of ``x``'s own (``distributed.global_masked_whiten``
    passes those of every rank's elements).
    """
    mean, var = mean_var if mean_var is not None else (masked_mean(x, mask), masked_var(x, mask))
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


def require_reward(ctx: Any, algo: str) -> None:
    """Online algorithms need a reward: stop with the installed names if none was chosen."""
    if ctx.reward is None:
        from alignfw.exceptions import ConfigError

        names = ", ".join(ctx.registry.names("reward"))
        raise ConfigError(f"{algo} needs a reward: add +reward=<name> (installed: {names})")


def compute_rewards(
    reward_fn: Callable[..., Any], prompts: list[str], responses: list[str], records: Sequence[Record], device: torch.device
) -> torch.Tensor:
    """Call a reward (plugin object or plain callable) and return a finite float32 ``(b,)`` tensor.

    A NaN or infinite score stops training with a message naming the rows, instead of silently
    poisoning the advantages.
    """
    out = reward_fn(prompts, responses, records)
    scores = torch.as_tensor(out if isinstance(out, torch.Tensor) else list(out), dtype=torch.float32).to(device)
    if scores.dim() != 1 or scores.shape[0] != len(prompts):
        raise TrainingError(
            f"the reward returned shape {tuple(scores.shape)} for {len(prompts)} responses; a reward must return one "
            "score per response (a list of floats or a 1-D tensor)"
        )
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        i = bad[0]
        raise TrainingError(
            f"the reward returned {scores[i].item()} for {len(bad)} of {len(prompts)} responses (first: index {i}, "
            f"prompt {prompts[i][:60]!r}, response {responses[i][:60]!r}); fix the reward so that it returns finite "
            "numbers (e.g. guard divisions by zero)"
        )
    return scores


@dataclass
class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, https://arxiv.org/abs/1909.08593, §2.2).

    ``coef`` is scaled by ``1 + clip((kl - target) / target, ±0.2) * n_steps / horizon`` after
    each step; with ``target=None`` the coefficient stays fixed.
    """

    coef: float
    target: float | None = None
    horizon: int = 10000

    def update(self, kl: float, n_steps: int) -> None:
        if self.target is None or not math.isfinite(kl):
            return
        err = max(-0.2, min(0.2, kl / self.target - 1.0))
        self.coef *= 1.0 + err * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"coef": self.coef}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.coef = float(state["coef"])


# -- group baselines, KL estimators and the surrogate objective (GRPO, RLOO, REINFORCE) -----------


def _grouped(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(b,)`` -> ``(b // G, G)``, checking that whole groups were given."""
    if rewards.dim() != 1 or group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(f"expected a 1-D tensor of whole groups of {group_size}; got shape {tuple(rewards.shape)}")
    return rewards.view(-1, group_size)


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO's outcome advantages: each reward minus its group's mean, over the group's std when ``scale``.

    ``A_i = (r_i - mean(r_group)) / (std(r_group) + eps)`` (Shao et al. 2024, §4.1.2), with the
    unbiased std as TRL's ``GRPOTrainer`` computes it. ``scale=False`` is Dr. GRPO (Liu et al.
    2025, https://arxiv.org/abs/2503.20783), which drops the division because it up-weights
    prompts that are nearly always solved or always failed. A group of identical rewards gets 0.

    Args:
        rewards: Sequence rewards, the ``G`` samples of each prompt contiguous. Shape ``(b,)``.
        group_size: ``G``, samples per prompt; ``b`` must be a multiple of it.
        scale: Divide by the group's standard deviation.
        eps: Added to the std, so that a group of equal rewards does not divide by zero.

    Returns:
        Advantages. Shape ``(b,)``.
    """
    g = _grouped(rewards, group_size)  # (b/G, G)
    centred = g - g.mean(1, keepdim=True)
    if scale:
        std = g.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(g[:, :1])  # (b/G, 1)
        denom = std + eps
        centred = torch.where(denom > 0, centred / denom.clamp(min=torch.finfo(g.dtype).tiny), torch.zeros_like(centred))
    return centred.reshape(-1)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO's advantages: each reward minus the mean of the *other* samples of its prompt.

    ``A_i = r_i - 1/(G-1) * sum_{j != i} r_j`` (Kool et al. 2019; Ahmadian et al. 2024, eq. 4). The
    baseline does not depend on ``r_i``, so the estimator stays unbiased; it equals
    ``G/(G-1) * (r_i - mean(r_group))``.

    Args:
        rewards: Sequence rewards, the ``G`` samples of each prompt contiguous. Shape ``(b,)``.
        group_size: ``G >= 2``.

    Returns:
        Advantages. Shape ``(b,)``.
    """
    if group_size < 2:
        raise ValueError(f"the leave-one-out baseline needs at least 2 samples per prompt; got {group_size}")
    g = _grouped(rewards, group_size)  # (b/G, G)
    baseline = (g.sum(1, keepdim=True) - g) / (group_size - 1)  # (b/G, G), mean of the others
    return (g - baseline).reshape(-1)


def k3_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-token k3 estimate of ``KL(policy || ref)`` at the sampled tokens (Schulman 2020,
    http://joschu.net/blog/kl-approx.html): ``exp(d) - d - 1`` with ``d = ref_logprobs - logprobs``.

    Unbiased, always >= 0, and lower-variance than ``-d`` (k1); GRPO puts it in the loss
    (Shao et al. 2024, eq. 4). Its gradient flows through ``logprobs``.

    Shapes: ``logprobs``, ``ref_logprobs``, ``mask`` ``(b, R)``. Returns ``(b, R)``, zero where masked.
    """
    d = ref_logprobs - logprobs
    kl = torch.expm1(d) - d
    return kl if mask is None else kl * mask


def clipped_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_low: float,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) as an unreduced per-element loss.

    ``max(-A * ratio, -A * clip(ratio, 1 - clip_low, 1 + clip_high))`` with
    ``ratio = exp(logprobs - old_logprobs)``. ``clip_high`` defaults to ``clip_low``; a larger one is
    DAPO's "clip-higher" (Yu et al. 2025, https://arxiv.org/abs/2503.14476). ``clip_low=inf``
    disables clipping: at ``ratio = 1`` the gradient is exactly REINFORCE's ``-A * grad logprobs``.
    Reduce the result with :func:`aggregate_loss`. Works per token ``(b, R)`` or per sequence ``(b, 1)``.

    Returns:
        ``(loss, stats)``: ``loss`` shaped like ``logprobs``, zero where masked; ``stats`` holds the
        detached ``ratio`` and ``clipped`` (1 where the clipped branch was taken) tensors.
    """
    clip_high = clip_low if clip_high is None else clip_high
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = log_ratio.exp()
    loss_unclipped = -advantages * ratio
    loss_clipped = -advantages * ratio.clamp(1.0 - clip_low, 1.0 + clip_high)
    loss = torch.maximum(loss_unclipped, loss_clipped) * mask
    return loss, {"ratio": ratio.detach(), "clipped": (loss_clipped > loss_unclipped).float() * mask}


#: ``"token"``: mean over every response token of the batch (DAPO, TRL's default);
#: ``"sequence"``: mean over each response's tokens, then over responses (the GRPO paper).
LOSS_AGGREGATIONS = ("token", "sequence")


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """Reduce a per-token loss ``(b, R)`` to a scalar.

    ``"token"`` weighs every token equally, so long responses count more (DAPO, Yu et al. 2025);
    ``"sequence"`` weighs every response equally, so each token of a long response counts less,
    a length bias Dr. GRPO points out (GRPO paper, eq. 3). Responses with no tokens count in neither.
    """
    if mode == "token":
        return masked_mean(per_token, mask)
    if mode == "sequence":
        lengths = mask.sum(1)  # (b,)
        per_seq = (per_token * mask).sum(1) / lengths.clamp(min=1)  # (b,)
        return per_seq.sum() / (lengths > 0).sum().clamp(min=1)
    raise ValueError(f"loss aggregation {mode!r}: use one of {', '.join(LOSS_AGGREGATIONS)}")


def minibatch_epochs(
    gen: Any,
    loss_fn: Callable[[Any, torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
    *,
    epochs: int,
    minibatch_size: int,
    grad_accum: int,
    params: Sequence[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    max_grad_norm: float,
    no_sync: Callable[[bool], ContextManager[Any]] | None = None,
) -> dict[str, float]:
    """The update loop PPO, GRPO and RLOO share: ``epochs`` passes over shuffled minibatches of a
    rollout, ``loss_fn(minibatch, idx) -> (loss, stats)`` per minibatch, an optimizer step (with
    gradient clipping) every ``grad_accum`` minibatches and once more for a remainder.

    ``no_sync(skip)`` (:meth:`alignfw.models.CausalLM.no_sync`) is entered around each backward:
    under torchrun only the backward right before an optimizer step all-reduces the gradients.
    Every rank holds the same number of sequences, so all ranks run the same number of backwards.

    Returns the mean of each stat over minibatches, plus ``loss/total`` and ``grad_norm``.
    """
    from alignfw.distributed import to_float

    b = gen.sequences.shape[0]
    acc: dict[str, list[float]] = {}
    n_mb = 0
    per_epoch = -(-b // minibatch_size)
    total_mb = epochs * per_epoch

    def optimizer_step() -> float:
        gn = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return to_float(gn)

    for _ in range(epochs):
        perm = torch.randperm(b, device=gen.sequences.device)
        for start in range(0, b, minibatch_size):
            idx = perm[start : start + minibatch_size]
            syncs = (n_mb + 1) % grad_accum == 0 or n_mb + 1 == total_mb
            with no_sync(not syncs) if no_sync is not None else contextlib.nullcontext():
                loss, stats = loss_fn(gen.select(idx), idx)
                (loss / grad_accum).backward()
            n_mb += 1
            if n_mb % grad_accum == 0:
                stats["grad_norm"] = optimizer_step()
            stats["loss/total"] = loss.item()
            for k, v in stats.items():
                acc.setdefault(k, []).append(v)
    if n_mb % grad_accum:
        optimizer_step()
    return {k: sum(v) / len(v) for k, v in acc.items()}
