"""Seeded sampling: each sequence draws its tokens from its own counter-based random stream.

``torch.multinomial`` over a batch takes its randomness from one generator, so which token a row
gets depends on the rows sampled with it: two processes that each sample half of a batch draw
other tokens than one process sampling all of it. Here every row ``i`` has a seed ``seeds[i]``
and its ``t``-th token is drawn by inverse-CDF sampling with the uniform ``u(seeds[i], t)``, a hash
of the two numbers. The token a row gets is then a function of its seed and its own logits only:
independent of the batch, the padding, the number of processes and the device, and exactly
distributed as ``softmax(logits / temperature)`` after top-k / top-p filtering.

:func:`mix` derives seeds (a sequence's from the run seed, the step and the sequence's global
index); :class:`SeededSampler` is the Hugging Face logits processor that does the draw.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

__all__ = ["SeededSampler", "mix", "seeded_warpers", "uniforms"]

_MASK64 = (1 << 64) - 1
_M32 = 0xFFFFFFFF


def mix(*parts: int) -> int:
    """A 63-bit seed (an int64 that is never negative) from integers (SplitMix64's finaliser over
    each part in turn).

    ``mix(a, b)`` and ``mix(b, a)`` differ, and nearby inputs give unrelated outputs, so
    ``mix(run_seed, step, index)`` names one sequence's stream."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        z = ((h ^ (p & _MASK64)) + 0x9E3779B97F4A7C15) & _MASK64
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        h = z ^ (z >> 31)
    return h >> 1


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """Chris Wellons' lowbias32 on int64 tensors holding 32-bit values (its multipliers are below
    2**31, so no product overflows int64)."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _M32
    return x ^ (x >> 15)


def uniforms(seeds: torch.Tensor, t: int) -> torch.Tensor:
    """``u(seed, t)`` in ``(0, 1)`` as float64 for int64 ``seeds`` ``(b,)`` (any device)."""
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    x = _hash32(_hash32(_hash32(torch.full_like(seeds, t & _M32) ^ 0x5BD1E995) ^ hi) ^ lo)
    y = _hash32(x ^ 0x27D4EB2F)  # 32 more bits: u has 53 significant bits
    return ((x << 21 | y >> 11).double() + 0.5) / float(1 << 53)


class SeededSampler:
    """A Hugging Face logits processor that samples each row's next token from its own stream.

    Put it last in ``logits_processor`` of a greedy ``generate`` call (after temperature, top-k and
    top-p warpers): it returns scores that are 0 at the sampled token and ``-inf`` elsewhere, so the
    greedy argmax takes the sample. ``seeds`` ``(b,)``: one int per row (below 2**63).
    """

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = torch.tensor([s & (_MASK64 >> 1) for s in seeds], dtype=torch.long)
        self.start: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.start is None:
            self.start = input_ids.shape[1]  # the (padded) prompt: t counts generated tokens
        if scores.shape[0] != self.seeds.shape[0]:
            raise ValueError(f"SeededSampler has {self.seeds.shape[0]} seeds for a batch of {scores.shape[0]} rows")
        u = uniforms(self.seeds.to(scores.device), input_ids.shape[1] - self.start)  # (b,)
        probs = torch.softmax(scores.double(), dim=-1)  # (b, V); filtered tokens (-inf) have 0
        cdf = probs.cumsum(-1)
        token = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).clamp_(max=scores.shape[1] - 1)  # (b, 1)
        # the first token whose cdf reaches u never has probability 0, but the clamp can land on one
        token = torch.where(probs.gather(1, token) > 0, token, probs.argmax(-1, keepdim=True))
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, token, 0.0)


def seeded_warpers(temperature: float, top_k: int, top_p: float, seeds: Sequence[int]) -> Any:
    """The ``logits_processor`` list of a seeded ``generate``: temperature, top-k (``0``: off) and
    top-p (``1``: off) in Hugging Face's sampling order, then :class:`SeededSampler`."""
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    procs: list[Any] = [TemperatureLogitsWarper(temperature)] if temperature != 1.0 else []
    if top_k > 0:
        procs.append(TopKLogitsWarper(top_k))
    if top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p))
    return LogitsProcessorList([*procs, SeededSampler(seeds)])
