"""Generalized advantage estimation (Schulman et al. 2015, https://arxiv.org/abs/1506.02438).

``reference_gae`` is the per-timestep loop TRL's ``PPOTrainer`` runs, extended with response
masks; ``gae`` computes the same in Rust (``alignfw._native.gae_into``): parallel over the batch,
without the GIL, reading the tensors' memory in place and writing into preallocated outputs.

Masked steps get zero advantage and zero return, and the recursion carries over them, so a hole
in the mask (tool output inside a response) behaves as if the step were absent. For right-padded
masks this is exactly TRL's loop with padded rewards and values set to zero.
"""

from __future__ import annotations

import torch

__all__ = ["gae", "reference_gae"]


def reference_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain-torch GAE: a loop over timesteps, vectorised over the batch.

    Args:
        rewards: Per-token rewards. Shape ``(b, T)``.
        values: Value estimates. Shape ``(b, T)``.
        mask: 1 for real steps, 0 for padding. Shape ``(b, T)``; ``None`` means all real.
        gamma: Discount factor.
        lam: GAE lambda.

    Returns:
        ``(advantages, returns)``, each ``(b, T)``, zero where ``mask`` is 0.
    """
    rewards, values = rewards.float(), values.float()
    m = torch.ones_like(rewards) if mask is None else mask.float()
    b, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros_like(last)
    for t in reversed(range(T)):
        mt = m[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        cur = delta + gamma * lam * last
        adv[:, t] = cur * mt
        last = torch.where(mt > 0, cur, last)
        next_value = torch.where(mt > 0, values[:, t], next_value)
    return adv, (adv + values) * m


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    gamma: float = 1.0,
    lam: float = 0.95,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE advantages and returns; same contract as :func:`reference_gae`.

    CPU float32 contiguous inputs go to Rust with no copy; anything else (CUDA, other dtypes) is
    converted once. Results come back on the inputs' device as float32.

    ``out=(advantages, returns)``: contiguous CPU float32 ``(b, T)`` tensors to write into. Reusing
    them across calls skips the allocation and the first-touch page faults of fresh outputs,
    which for large batches cost more than the computation itself (see benchmarks/RESULTS.md).
    """
    from alignfw import _native
    from alignfw.exceptions import InvalidInputError

    if rewards.dim() != 2 or rewards.shape != values.shape or (mask is not None and mask.shape != rewards.shape):
        raise InvalidInputError(
            f"gae expects rewards, values (and mask) of one (batch, T) shape; got rewards {tuple(rewards.shape)}, "
            f"values {tuple(values.shape)}" + ("" if mask is None else f", mask {tuple(mask.shape)}")
        )
    device = rewards.device

    def host(x: torch.Tensor) -> torch.Tensor:
        return x.detach().to("cpu", torch.float32).contiguous()

    r, v = host(rewards), host(values)
    m = None if mask is None else host(mask)
    if out is not None:
        adv, ret = out
        if any(t.shape != r.shape or t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous() for t in out):
            raise InvalidInputError(f"gae(out=...) must be two contiguous CPU float32 tensors of shape {tuple(r.shape)}")
    else:
        adv, ret = torch.empty_like(r), torch.empty_like(r)
    _native.gae_into(
        r.numpy(), v.numpy(), None if m is None else m.numpy(), adv.numpy(), ret.numpy(), gamma=gamma, lam=lam
    )
    return adv.to(device), ret.to(device)
