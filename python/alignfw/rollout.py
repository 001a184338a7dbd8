"""Shared pieces of online algorithms: turn reward outputs into checked tensors, KL estimates,
masked statistics and the adaptive KL controller. Algorithms compose these; none inherits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from alignfw.exceptions import TrainingError
from alignfw.types import Record

__all__ = [
    "AdaptiveKLController",
    "compute_rewards",
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


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Normalise ``x`` to unit variance (and zero mean) over the masked elements."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        out = out + mean
    return out * mask


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
