"""Per-token log-probabilities (and entropy) of chosen tokens, the quantity every RL loss starts from.

PPO, GRPO, RLOO and DPO call these on the policy and reference models. The work is done in
:mod:`alignfw.kernels.fused_logprob` (Liger-Kernel's fused linear cross-entropy, made per-token):
on CUDA the Triton kernels, elsewhere the same token-chunked algorithm in plain torch, so neither
path ever holds fp32 logits for the whole batch when given hidden states.
``alignfw.kernels.fused_logprob.reference_logprob`` is the definition both are tested against.

Typical use, with ``hidden`` the last hidden state of a causal LM (``output_hidden_states=True``)::

    lp = logprobs_from_hidden(hidden[:, :-1], model.lm_head.weight, input_ids[:, 1:],
                              temperature=cfg.temperature)            # (b, T-1)
"""

from __future__ import annotations

import torch

from alignfw.kernels.fused_logprob import fused_linear_logprob, fused_logprob

__all__ = ["logprobs_from_hidden", "logprobs_from_logits"]


def logprobs_from_hidden(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    chunk_size: int | None = None,
    recompute: bool | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target under ``softmax((hidden @ weight^T + bias) / temperature)``.

    Differentiable w.r.t. ``hidden``, ``weight`` and ``bias``. fp16/bf16 inputs keep their
    ``(N, V)`` logits in that dtype for backward and overwrite them with their gradient
    (``recompute=False``); fp32 inputs walk ``chunk_size`` tokens at a time and recompute each chunk
    in backward (``recompute=True``, memory ``O(chunk_size x V)``). Either mode can be forced.

    Notation:
        b: batch; T: positions; H: hidden size; V: vocabulary size.

    Args:
        hidden: Hidden states feeding the LM head (fp32, fp16 or bf16). Shape ``(b, T, H)``
            (any leading shape works).
        weight: LM-head weight, same dtype and device as ``hidden``. Shape ``(V, H)``.
        targets: Token ids whose log-probability is wanted. Shape ``(b, T)``.
        bias: Optional LM-head bias. Shape ``(V,)``.
        temperature: Sampling temperature the logits are divided by (> 0).
        ignore_index: Positions whose target equals this get logprob 0, entropy 0, no gradient.
        return_entropy: Also return the entropy of each position's distribution.
        chunk_size: Tokens per chunk when recomputing (default: about 2**27 logits per chunk).
        recompute: See above; None picks by dtype, and chunks whenever no gradient is needed.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.

    Returns:
        fp32 log-probabilities, shape ``(b, T)``; with ``return_entropy``, ``(logprobs, entropy)``.

    Raises:
        alignfw.exceptions.InvalidInputError: unsupported dtype, mismatched shapes/dtypes/devices,
            a target outside ``[0, V)``, or ``backend="triton"`` where Triton cannot run.
    """
    return fused_linear_logprob(
        hidden,
        weight,
        targets,
        bias=bias,
        temperature=temperature,
        ignore_index=ignore_index,
        return_entropy=return_entropy,
        chunk_size=chunk_size,
        recompute=recompute,
        backend=backend,
    )


def logprobs_from_logits(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of each target under ``softmax(logits / temperature)``.

    Reads the logits in their own dtype (no fp32 copy on CUDA); backward writes the logit gradient
    once, in the logits' dtype. A slice such as ``logits[:, :-1]`` is used in place.

    Args:
        logits: Scores (fp32, fp16 or bf16), unit stride over the vocabulary. Shape ``(b, T, V)``.
        targets: Token ids. Shape ``(b, T)``.
        temperature: Sampling temperature the logits are divided by (> 0).
        ignore_index: Positions whose target equals this get logprob 0, entropy 0, no gradient.
        return_entropy: Also return the entropy of each position's distribution.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.

    Returns:
        fp32 log-probabilities, shape ``(b, T)``; with ``return_entropy``, ``(logprobs, entropy)``.

    Raises:
        alignfw.exceptions.InvalidInputError: as :func:`logprobs_from_hidden`.
    """
    return fused_logprob(
        logits,
        targets,
        temperature=temperature,
        ignore_index=ignore_index,
        return_entropy=return_entropy,
        backend=backend,
    )
