"""Fused token log-probabilities (and entropy) from logits or from hidden states and the LM head.

Policy-gradient losses (PPO, GRPO, RLOO) and DPO need, for every position, the log-probability of
the token that was actually chosen, ``log_softmax(logits / temperature)[target]``, and PPO's entropy
bonus needs ``H = -sum_v p_v log p_v``. Written as ``logits.float().log_softmax(-1).gather(...)``
this materialises several ``(tokens, vocab)`` fp32 tensors (8192 tokens x 128k vocab = 4 GiB each).

This file follows Liger-Kernel's ``FusedLinearCrossEntropy`` (Hsu et al. 2024,
https://arxiv.org/abs/2410.10989; https://github.com/linkedin/Liger-Kernel) with the per-token
(not summed) outputs that RL needs, and the online log-sum-exp of Milakov & Gimelshein 2018
(https://arxiv.org/abs/1805.02867) as used by "Cut Your Losses" (Wijmans et al. 2024,
https://arxiv.org/abs/2411.09009):

* Two Triton kernels work on rows of logits, one program per token, walking the vocabulary in
  ``BLOCK_V`` slices: ``_logprob_fwd_kernel`` keeps a per-lane running max, sum of exponentials and
  (for the entropy) the running sum of ``exp(z) * z``, so it reads the logits once in their own
  dtype and writes three floats per token; ``_logprob_bwd_kernel`` recomputes the softmax from the
  saved log-sum-exp and writes ``d(out)/d(logits)`` (in place when asked).
* From hidden states, :class:`FusedLinearLogprob` gets the logits ``h @ W^T`` from cuBLAS in the
  input dtype and has the kernels reduce them. Backward turns the logits into their gradient in
  place and feeds two matmuls (``grad_h = g @ W``, ``grad_W = g^T h``). Either the ``(N, V)``
  16-bit logits are kept for backward (``recompute=False``, the default for fp16/bf16: the same
  matmul count as the unfused code, about a sixth of its memory), or the tokens are walked
  ``chunk_size`` at a time and each chunk's logits recomputed in backward (``recompute=True``, the
  default for fp32: ``O(chunk x V)`` memory, one extra matmul). Either way the batch's logits never
  exist in fp32 unless the inputs are fp32, and then only a chunk at a time.

Maths (``z = logits / temperature``, ``lse = logsumexp(z)``, ``p = softmax(z)``, ``t`` the target):
``logprob = z_t - lse``; ``entropy = lse - sum_v p_v z_v``;
``d logprob / d z_v = [v == t] - p_v``; ``d entropy / d z_v = -p_v (z_v - (lse - entropy))``.
Positions whose target is ``ignore_index`` get logprob 0, entropy 0 and zero gradient.

Dispatch: ``backend="auto"`` runs the Triton kernels on CUDA tensors when Triton is installed and
the plain-torch path (same chunking, torch ops for the row maths) everywhere else.
``backend="triton"`` forces the kernels, which on CPU tensors needs ``TRITON_INTERPRET=1`` set
before Triton is first imported (the tests do this). Triton is optional: without it this module
still imports and ``"auto"`` always picks torch.
"""

from __future__ import annotations

import math

import torch

from alignfw.exceptions import InvalidInputError

try:  # Triton is an optional dependency (the ``gpu`` extra).
    import triton
    import triton.language as tl

    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised by a subprocess test
    triton = None
    tl = None
    HAS_TRITON = False

__all__ = [
    "FusedLinearLogprob",
    "FusedLogprob",
    "HAS_TRITON",
    "SUPPORTED_DTYPES",
    "fused_linear_logprob",
    "fused_logprob",
    "reference_logprob",
]

SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "triton", "torch")
# Default token chunk of the hidden-state path when recomputing: about this many logits at once.
CHUNK_ELEMENTS = 1 << 27
# The torch row maths upcasts at most this many logits to fp32 at once (128 MiB).
ROW_CHUNK_ELEMENTS = 1 << 25


# --------------------------------------------------------------------------------------------
# Plain-torch reference: the definition of correctness.
# --------------------------------------------------------------------------------------------


def reference_logprob(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probability and entropy, written the obvious way (fp32 log-softmax + gather).

    Differentiable through ordinary autograd; materialises ``(..., V)`` fp32 tensors.

    Args:
        logits: Unnormalised scores. Shape ``(..., V)``.
        targets: Chosen token ids. Shape ``(...)``; ``ignore_index`` marks positions to skip.
        temperature: Logits are divided by this before the softmax.
        ignore_index: Target value whose position gets logprob 0 and entropy 0.

    Returns:
        ``(logprobs, entropy)``, both fp32 with the shape of ``targets``.
    """
    z = logits.float() / temperature  # (..., V)
    logp = torch.log_softmax(z, dim=-1)  # (..., V)
    keep = targets != ignore_index  # (...)
    safe = torch.where(keep, targets, torch.zeros_like(targets))
    lp = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)  # (...)
    # clamp: a -inf logit has p = 0 and must add 0 (not 0 * -inf = nan) to the entropy.
    ent = -(logp.exp() * logp.clamp_min(torch.finfo(logp.dtype).min)).sum(-1)  # (...)
    zero = torch.zeros((), dtype=lp.dtype, device=lp.device)
    return torch.where(keep, lp, zero), torch.where(keep, ent, zero)


# --------------------------------------------------------------------------------------------
# Triton kernels.
# --------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _logprob_fwd_kernel(
        logits_ptr,  # (B, T, V) with unit stride over V
        stride_lb,
        stride_lt,
        targets_ptr,  # (B*T,) int64, contiguous
        lp_ptr,  # (B*T,) fp32 out
        ent_ptr,  # (B*T,) fp32 out
        lse_ptr,  # (B*T,) fp32 out
        T,
        V,
        inv_temp,
        ignore_index,
        BLOCK_V: tl.constexpr,
        WITH_ENTROPY: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        base = logits_ptr + (row // T) * stride_lb + (row % T) * stride_lt
        cols = tl.arange(0, BLOCK_V)
        # Per-lane running statistics; lanes are combined once at the end, so the loop has no
        # cross-lane reduction. The max starts finite so exp(m_old - m_new) is never nan.
        m = tl.full([BLOCK_V], -1e30, tl.float32)
        s = tl.zeros([BLOCK_V], tl.float32)  # sum exp(z - m)
        w = tl.zeros([BLOCK_V], tl.float32)  # sum exp(z - m) * z
        for start in range(0, V, BLOCK_V):
            idx = start + cols
            z = tl.load(base + idx, mask=idx < V, other=float("-inf")).to(tl.float32) * inv_temp
            m_new = tl.maximum(m, z)
            alpha = tl.exp(m - m_new)
            e = tl.exp(z - m_new)  # 0 for padding lanes and -inf logits
            s = s * alpha + e
            if WITH_ENTROPY:
                # e == 0 wherever z == -inf; clamping z keeps 0 * -inf (nan) out of the sum.
                w = w * alpha + e * tl.maximum(z, -1e30)
            m = m_new
        m_row = tl.max(m, 0)
        scale = tl.exp(m - m_row)
        s_row = tl.sum(s * scale, 0)
        lse = m_row + tl.log(s_row)

        target = tl.load(targets_ptr + row)
        keep = target != ignore_index
        z_t = tl.load(base + tl.where(keep, target, 0)).to(tl.float32) * inv_temp
        tl.store(lp_ptr + row, tl.where(keep, z_t - lse, 0.0))
        tl.store(lse_ptr + row, lse)
        if WITH_ENTROPY:
            w_row = tl.sum(w * scale, 0)
            tl.store(ent_ptr + row, tl.where(keep, lse - w_row / s_row, 0.0))

    @triton.jit
    def _logprob_bwd_kernel(
        logits_ptr,  # (B, T, V) read
        stride_lb,
        stride_lt,
        grad_ptr,  # (B, T, V) written; may alias logits_ptr (each element is read, then written)
        stride_gb,
        stride_gt,
        targets_ptr,
        lse_ptr,
        ent_ptr,
        glp_ptr,  # (B*T,) upstream grad of logprobs
        gent_ptr,  # (B*T,) upstream grad of entropy
        T,
        V,
        inv_temp,
        ignore_index,
        BLOCK_V: tl.constexpr,
        HAS_GRAD_LP: tl.constexpr,
        HAS_GRAD_ENT: tl.constexpr,
    ):
        row = tl.program_id(0).to(tl.int64)
        b = row // T
        t = row % T
        src = logits_ptr + b * stride_lb + t * stride_lt
        dst = grad_ptr + b * stride_gb + t * stride_gt
        cols = tl.arange(0, BLOCK_V)
        target = tl.load(targets_ptr + row)
        keep = target != ignore_index
        lse = tl.load(lse_ptr + row)
        g_lp = 0.0
        if HAS_GRAD_LP:
            g_lp = tl.load(glp_ptr + row).to(tl.float32)
        g_ent = 0.0
        mean_z = 0.0
        if HAS_GRAD_ENT:
            g_ent = tl.load(gent_ptr + row).to(tl.float32)
            mean_z = lse - tl.load(ent_ptr + row)  # sum_v p_v z_v
        # Ignored rows: zero upstream gradient gives an all-zero logit gradient.
        g_lp = tl.where(keep, g_lp, 0.0)
        g_ent = tl.where(keep, g_ent, 0.0)
        for start in range(0, V, BLOCK_V):
            idx = start + cols
            inb = idx < V
            z = tl.load(src + idx, mask=inb, other=float("-inf")).to(tl.float32) * inv_temp
            p = tl.exp(z - lse)
            g = -g_lp * p + tl.where(idx == target, g_lp, 0.0)
            if HAS_GRAD_ENT:
                g -= g_ent * p * (tl.maximum(z, -1e30) - mean_z)  # p == 0 where z == -inf
            g = g * inv_temp
            tl.store(dst + idx, g.to(grad_ptr.dtype.element_ty), mask=inb)


def _interpreting() -> bool:
    """Whether the kernels above were built for Triton's CPU interpreter."""
    return HAS_TRITON and type(_logprob_fwd_kernel).__name__ == "InterpretedFunction"


def _block_v(V: int) -> int:
    if _interpreting():
        return 16 if V <= 64 else 64  # the interpreter is slow per program, not per lane
    return min(4096, triton.next_power_of_2(V))


def _as_3d(x: torch.Tensor) -> torch.Tensor:
    """View ``(..., V)`` as ``(B, T, V)`` without copying when possible; V must be unit-stride."""
    if x.dim() == 1:
        x = x.view(1, 1, -1)
    elif x.dim() == 2:
        x = x.unsqueeze(0)
    elif x.dim() > 3:
        x = x.reshape(-1, x.shape[-2], x.shape[-1])
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x


def _triton_row_fwd(logits, targets, inv_temp, ignore_index, with_entropy):
    """Launch the forward kernel. logits ``(..., V)``; targets flattened ``(N,)``; returns fp32 (N,)x3."""
    l3 = _as_3d(logits)  # (B, T, V)
    B, T, V = l3.shape
    N = B * T
    lp = torch.empty(N, dtype=torch.float32, device=logits.device)
    ent = torch.empty(N, dtype=torch.float32, device=logits.device) if with_entropy else lp
    lse = torch.empty(N, dtype=torch.float32, device=logits.device)
    if N == 0:
        return lp, (ent if with_entropy else None), lse
    block = _block_v(V)
    _logprob_fwd_kernel[(N,)](
        l3, l3.stride(0), l3.stride(1), targets, lp, ent, lse,
        T, V, inv_temp, ignore_index,
        BLOCK_V=block, WITH_ENTROPY=with_entropy,
        num_warps=1 if _interpreting() else (8 if block >= 2048 else 4),
    )  # fmt: skip
    return lp, (ent if with_entropy else None), lse


def _triton_row_bwd(logits, targets, lse, ent, g_lp, g_ent, inv_temp, ignore_index, out):
    """Launch the backward kernel; writes d(sum g_lp*lp + g_ent*ent)/d(logits) into ``out``."""
    l3 = _as_3d(logits)
    if not out.is_contiguous():  # a copy would swallow the writes
        raise ValueError("the gradient buffer must be contiguous")
    o3 = out.view(l3.shape)
    B, T, V = l3.shape
    N = B * T
    if N == 0:
        return out
    block = _block_v(V)
    dummy = lse
    _logprob_bwd_kernel[(N,)](
        l3, l3.stride(0), l3.stride(1), o3, o3.stride(0), o3.stride(1),
        targets, lse, ent if ent is not None else dummy,
        g_lp if g_lp is not None else dummy, g_ent if g_ent is not None else dummy,
        T, V, inv_temp, ignore_index,
        BLOCK_V=block, HAS_GRAD_LP=g_lp is not None, HAS_GRAD_ENT=g_ent is not None,
        num_warps=1 if _interpreting() else (8 if block >= 2048 else 4),
    )  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# Plain-torch row maths with the same contract as the two launchers (used off CUDA).
# Rows are processed in chunks so fp32 temporaries stay at ``chunk x V``.
# --------------------------------------------------------------------------------------------


def _rows_per_chunk(V: int) -> int:
    return max(1, ROW_CHUNK_ELEMENTS // max(V, 1))


def _torch_row_fwd(logits, targets, inv_temp, ignore_index, with_entropy):
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)  # (N, V)
    N = flat.shape[0]
    lp = torch.empty(N, dtype=torch.float32, device=logits.device)
    ent = torch.empty(N, dtype=torch.float32, device=logits.device) if with_entropy else None
    lse = torch.empty(N, dtype=torch.float32, device=logits.device)
    step = _rows_per_chunk(V)
    for s in range(0, N, step):
        z = flat[s : s + step].float() * inv_temp  # (c, V)
        tgt = targets[s : s + step]
        keep = tgt != ignore_index
        lse_c = torch.logsumexp(z, dim=-1)  # (c,)
        z_t = z.gather(-1, torch.where(keep, tgt, 0).unsqueeze(-1)).squeeze(-1)
        lp[s : s + step] = torch.where(keep, z_t - lse_c, 0.0)
        lse[s : s + step] = lse_c
        if with_entropy:
            p = torch.exp(z - lse_c.unsqueeze(-1))
            pz = (p * z.clamp_min(-1e30)).sum(-1)  # p == 0 where z == -inf
            ent[s : s + step] = torch.where(keep, lse_c - pz, 0.0)
    return lp, ent, lse


def _torch_row_bwd(logits, targets, lse, ent, g_lp, g_ent, inv_temp, ignore_index, out):
    V = logits.shape[-1]
    flat = logits.reshape(-1, V)
    oflat = out.view(-1, V)
    N = flat.shape[0]
    step = _rows_per_chunk(V)
    for s in range(0, N, step):
        e = s + step
        z = flat[s:e].float() * inv_temp  # (c, V)
        tgt = targets[s:e]
        keep = (tgt != ignore_index).unsqueeze(-1)  # (c, 1)
        p = torch.exp(z - lse[s:e].unsqueeze(-1))  # (c, V)
        g = torch.zeros_like(z)
        if g_lp is not None:
            glp = torch.where(keep, g_lp[s:e].float().unsqueeze(-1), 0.0)  # (c, 1)
            g -= glp * p
            g.scatter_add_(-1, torch.where(keep, tgt.unsqueeze(-1), 0), glp)
        if g_ent is not None:
            gent = torch.where(keep, g_ent[s:e].float().unsqueeze(-1), 0.0)
            mean_z = (lse[s:e] - ent[s:e]).unsqueeze(-1)
            g -= gent * p * (z.clamp_min(-1e30) - mean_z)
        oflat[s:e] = g * inv_temp
    return out


def _row_ops(backend: str):
    return (_triton_row_fwd, _triton_row_bwd) if backend == "triton" else (_torch_row_fwd, _torch_row_bwd)


# --------------------------------------------------------------------------------------------
# Autograd functions.
# --------------------------------------------------------------------------------------------


class FusedLogprob(torch.autograd.Function):
    """Log-probabilities (and entropy) from logits; saves only the logits and per-token stats."""

    @staticmethod
    def forward(ctx, logits, targets, inv_temp, ignore_index, with_entropy, backend):
        row_fwd, _ = _row_ops(backend)
        lp, ent, lse = row_fwd(logits, targets, inv_temp, ignore_index, with_entropy)
        ctx.save_for_backward(logits, targets, lse, ent if with_entropy else lse)
        ctx.cfg = (inv_temp, ignore_index, with_entropy, backend)
        shape = logits.shape[:-1]
        if with_entropy:
            return lp.view(shape), ent.view(shape)
        return lp.view(shape)

    @staticmethod
    def backward(ctx, g_lp, g_ent=None):
        logits, targets, lse, ent = ctx.saved_tensors
        inv_temp, ignore_index, with_entropy, backend = ctx.cfg
        if not ctx.needs_input_grad[0]:
            return (None,) * 6
        _, row_bwd = _row_ops(backend)
        g_lp = None if g_lp is None else g_lp.reshape(-1).contiguous()
        g_ent = None if (g_ent is None or not with_entropy) else g_ent.reshape(-1).contiguous()
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        if g_lp is None and g_ent is None:
            return grad.zero_(), None, None, None, None, None
        row_bwd(logits, targets, lse, ent if with_entropy else None, g_lp, g_ent, inv_temp, ignore_index, grad)
        return grad, None, None, None, None, None


class FusedLinearLogprob(torch.autograd.Function):
    """Log-probabilities (and entropy) of ``hidden @ weight^T + bias``.

    Two memory modes:

    * ``recompute=True``: walk the tokens ``chunk`` at a time; save only the inputs and three floats
      per token; backward recomputes each chunk's logits, turns them into their gradient in place
      and feeds two matmuls. ``grad_weight`` is accumulated per chunk in the weight's dtype (cuBLAS
      accumulates each chunk's product in fp32, then rounds once per chunk). Memory ``O(chunk x V)``;
      costs one extra ``hidden @ weight^T``.
    * ``recompute=False``: keep the ``(N, V)`` logits in the input dtype (what ``lm_head`` would
      have produced anyway; never an fp32 copy), and in backward overwrite them in place with their
      gradient, so ``grad_hidden`` and ``grad_weight`` are one matmul each. Same matmul count as
      the unfused baseline, a sixth of its memory. A second backward through the same graph raises
      a RuntimeError rather than reading clobbered logits.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, inv_temp, ignore_index, with_entropy, chunk, recompute, backend):
        row_fwd, _ = _row_ops(backend)
        N = hidden.shape[0]
        if recompute:
            lp = torch.empty(N, dtype=torch.float32, device=hidden.device)
            ent = torch.empty(N, dtype=torch.float32, device=hidden.device) if with_entropy else None
            lse = torch.empty(N, dtype=torch.float32, device=hidden.device)
            for s in range(0, N, chunk):
                e = min(N, s + chunk)
                logits = _chunk_logits(hidden[s:e], weight, bias)  # (c, V)
                lp_c, ent_c, lse_c = row_fwd(logits, targets[s:e], inv_temp, ignore_index, with_entropy)
                lp[s:e], lse[s:e] = lp_c, lse_c
                if with_entropy:
                    ent[s:e] = ent_c
                del logits
            saved_logits = lse  # placeholder, unused
        else:
            saved_logits = _chunk_logits(hidden, weight, bias)  # (N, V), input dtype
            lp, ent, lse = row_fwd(saved_logits, targets, inv_temp, ignore_index, with_entropy)
        ctx.save_for_backward(hidden, weight, bias, targets, lse, ent if with_entropy else lse, saved_logits)
        ctx.cfg = (inv_temp, ignore_index, with_entropy, chunk, recompute, backend)
        return (lp, ent) if with_entropy else lp

    @staticmethod
    def backward(ctx, g_lp, g_ent=None):
        if getattr(ctx, "logits_consumed", False):
            raise RuntimeError(
                "Trying to backward through fused log-probs a second time: recompute=False overwrote the saved "
                "logits with their gradient. Pass recompute=True to backward through the graph twice."
            )
        hidden, weight, bias, targets, lse, ent, saved_logits = ctx.saved_tensors
        inv_temp, ignore_index, with_entropy, chunk, recompute, backend = ctx.cfg
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        nones = (None,) * 7
        if g_ent is None or not with_entropy:
            g_ent = None
        if g_lp is None and g_ent is None:
            return (
                torch.zeros_like(hidden) if need_h else None,
                torch.zeros_like(weight) if need_w else None,
                torch.zeros_like(bias) if need_b else None,
            ) + nones
        _, row_bwd = _row_ops(backend)
        g_lp = None if g_lp is None else g_lp.contiguous()
        g_ent = None if g_ent is None else g_ent.contiguous()
        N = hidden.shape[0]
        ent = ent if with_entropy else None
        if not recompute:
            # The saved logits become d(out)/d(logits) in place: (N, V), input dtype.
            ctx.logits_consumed = True
            g = row_bwd(saved_logits, targets, lse, ent, g_lp, g_ent, inv_temp, ignore_index, saved_logits)
            grad_h = g @ weight if need_h else None  # (N, H)
            grad_w = g.t() @ hidden if need_w else None  # (V, H)
            grad_b = torch.sum(g, 0, dtype=torch.float32).to(bias.dtype) if need_b else None
            return grad_h, grad_w, grad_b, *nones
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight) if need_w else None
        grad_b = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need_b else None
        for s in range(0, N, chunk):
            e = min(N, s + chunk)
            logits = _chunk_logits(hidden[s:e], weight, bias)  # (c, V)
            g = row_bwd(
                logits, targets[s:e], lse[s:e], None if ent is None else ent[s:e],
                None if g_lp is None else g_lp[s:e], None if g_ent is None else g_ent[s:e],
                inv_temp, ignore_index, logits,  # in place: the chunk's logits become its gradient
            )  # fmt: skip
            if need_h:
                torch.mm(g, weight, out=grad_h[s:e])  # (c, H)
            if need_w:
                grad_w.addmm_(g.t(), hidden[s:e])  # (V, H)
            if need_b:
                grad_b += torch.sum(g, 0, dtype=torch.float32)
            del logits, g
        return grad_h, grad_w, (grad_b.to(bias.dtype) if need_b else None), *nones


def _chunk_logits(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is None:
        return h @ weight.t()  # (c, V)
    return torch.addmm(bias, h, weight.t())  # (c, V)


# --------------------------------------------------------------------------------------------
# Dispatchers.
# --------------------------------------------------------------------------------------------


def _resolve_backend(backend: str, *tensors: torch.Tensor) -> str:
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    on_cuda = tensors[0].is_cuda
    if backend == "auto":
        return "triton" if (on_cuda and HAS_TRITON) else "torch"
    if backend == "triton":
        if not HAS_TRITON:
            raise InvalidInputError("backend='triton' needs the triton package (pip install 'alignfw[gpu]')")
        if not on_cuda and not _interpreting():
            raise InvalidInputError(
                f"backend='triton' runs on CUDA tensors, or on CPU tensors under Triton's interpreter "
                f"(TRITON_INTERPRET=1 set before triton is imported); got device {tensors[0].device}"
            )
        if on_cuda and _interpreting():
            raise InvalidInputError("TRITON_INTERPRET=1 is set: the Triton kernels only accept CPU tensors")
    return backend


def _check_common(x: torch.Tensor, what: str, targets: torch.Tensor, temperature: float) -> None:
    if x.dtype not in SUPPORTED_DTYPES:
        raise InvalidInputError(f"{what} dtype {x.dtype} is not supported; use float32, float16 or bfloat16")
    if targets.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise InvalidInputError(f"targets must be an integer tensor, got {targets.dtype}")
    if targets.device != x.device:
        raise InvalidInputError(f"targets are on {targets.device} but {what} is on {x.device}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise InvalidInputError(f"temperature must be a finite number > 0, got {temperature!r}")


def _check_targets_in_range(targets: torch.Tensor, V: int, ignore_index: int) -> None:
    # A target outside [0, V) would read out of bounds in the kernel: refuse instead.
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= V))
    if bool(bad.any()):  # one host sync per call
        val = int(targets[bad][0])
        raise InvalidInputError(f"target id {val} is outside the vocabulary [0, {V}) and is not ignore_index")


def fused_logprob(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    ignore_index: int = -100,
    return_entropy: bool = False,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probability (and entropy) from logits, differentiable w.r.t. the logits.

    Args:
        logits: Scores in fp32, fp16 or bf16; the vocabulary dimension must be unit-stride
            (a slice like ``logits[:, :-1]`` is fine and is not copied). Shape ``(..., V)``.
        targets: Chosen token ids. Shape ``(...)`` matching ``logits.shape[:-1]``.
        temperature: Logits are divided by this before the softmax.
        ignore_index: Positions with this target get logprob 0, entropy 0 and zero gradient.
        return_entropy: Also return the entropy of ``softmax(logits / temperature)``.
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.

    Returns:
        fp32 log-probabilities of shape ``targets.shape``, or ``(logprobs, entropy)``.

    Raises:
        InvalidInputError: unsupported dtype, mismatched shapes or devices, target out of range,
            or ``backend="triton"`` where it cannot run.
    """
    _check_common(logits, "logits", targets, temperature)
    if logits.dim() < 1 or tuple(logits.shape[:-1]) != tuple(targets.shape):
        raise InvalidInputError(f"logits {tuple(logits.shape)} must be targets {tuple(targets.shape)} + (V,)")
    backend = _resolve_backend(backend, logits)
    _check_targets_in_range(targets, logits.shape[-1], ignore_index)
    tgt = targets.reshape(-1).to(torch.int64).contiguous()
    return FusedLogprob.apply(logits, tgt, 1.0 / float(temperature), int(ignore_index), bool(return_entropy), backend)


def fused_linear_logprob(
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
    """Per-token log-probability (and entropy) of ``hidden @ weight^T + bias``, never in fp32 for the batch.

    Notation:
        N: number of tokens (``prod(hidden.shape[:-1])``); H: hidden size; V: vocabulary size.

    Args:
        hidden: Final hidden states. Shape ``(..., H)``.
        weight: LM-head weight, same dtype as ``hidden``. Shape ``(V, H)``.
        targets: Chosen token ids. Shape ``hidden.shape[:-1]``.
        bias: Optional LM-head bias. Shape ``(V,)``.
        temperature: Logits are divided by this before the softmax.
        ignore_index: Positions with this target get logprob 0, entropy 0 and zero gradient.
        return_entropy: Also return the token entropy.
        chunk_size: Tokens per chunk when recomputing; at most ``chunk_size x V`` logits exist at
            a time. Default: about 2**27 logits per chunk.
        recompute: True: memory ``O(chunk_size x V)``, one extra matmul in backward. False: keep the
            ``(N, V)`` logits in the input dtype for backward (fastest; a sixth of the unfused
            baseline's memory for 16-bit inputs). Default (None): False for fp16/bf16, True for
            fp32, so fp32 logits of the whole batch are never held; always True when no gradient
            is needed (no backward, so chunking is free).
        backend: ``"auto"`` (Triton on CUDA, torch elsewhere), ``"triton"`` or ``"torch"``.

    Returns:
        fp32 log-probabilities of shape ``targets.shape``, or ``(logprobs, entropy)``.
    """
    _check_common(hidden, "hidden", targets, temperature)
    if weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise InvalidInputError(f"weight {tuple(weight.shape)} must be (V, H) with H = hidden.shape[-1] = {hidden.shape[-1]}")
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise InvalidInputError(
            f"hidden ({hidden.dtype}), weight ({weight.dtype}) and bias must share one dtype; cast them first"
        )
    if weight.device != hidden.device or (bias is not None and bias.device != hidden.device):
        raise InvalidInputError("hidden, weight and bias must be on one device")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise InvalidInputError(f"bias {tuple(bias.shape)} must be (V,) = ({weight.shape[0]},)")
    if tuple(hidden.shape[:-1]) != tuple(targets.shape):
        raise InvalidInputError(f"hidden {tuple(hidden.shape)} must be targets {tuple(targets.shape)} + (H,)")
    if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
        raise InvalidInputError(f"chunk_size must be a positive int, got {chunk_size!r}")
    backend = _resolve_backend(backend, hidden)
    V = weight.shape[0]
    _check_targets_in_range(targets, V, ignore_index)
    chunk = chunk_size or max(16, CHUNK_ELEMENTS // V)
    h2 = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
    tgt = targets.reshape(-1).to(torch.int64).contiguous()
    needs_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias)
    )
    if recompute is None:
        # Without a backward (reference-model and rollout log-probs) chunking costs nothing extra.
        recompute = hidden.dtype == torch.float32 or not needs_grad
    out = FusedLinearLogprob.apply(
        h2, weight, bias, tgt, 1.0 / float(temperature), int(ignore_index), bool(return_entropy), int(chunk),
        bool(recompute), backend,
    )  # fmt: skip
    if return_entropy:
        return out[0].view(targets.shape), out[1].view(targets.shape)
    return out.view(targets.shape)
