"""Fused causal self-attention (FlashAttention-2 style), forward and backward, with GQA and key padding.

Follows FlashAttention-2 (Dao 2023, https://arxiv.org/abs/2307.08691) as written in Triton's
fused-attention tutorial (https://github.com/triton-lang/triton/blob/main/python/tutorials/06-fused-attention.py):

* forward: one program per (query block, batch x query head); it walks the key blocks left of the
  diagonal without any mask, then the diagonal blocks with the causal mask, keeping an online
  softmax (running max ``m``, running sum ``l``, unnormalised accumulator) in base 2. It writes the
  output straight into the ``(b, T, n_heads, d)`` layout Hugging Face models want, plus the
  per-row log-sum-exp for backward.
* backward: ``delta = rowsum(dO * O)``; one kernel per key block computes ``dK, dV`` and, for
  grouped-query attention, loops over the query heads that share the key/value head so the group
  reduction happens in registers (no ``repeat_kv`` copy, no atomics); one kernel per query block
  computes ``dQ``.

Masks: causal with ``q_len == kv_len`` (query ``i`` sees keys ``j <= i``), optionally AND a key
padding mask ``(b, T)`` (True/1 = real token; left or right padding, or holes). A query row that
can see no key at all (a left-padding position) gets output 0 and zero gradients, where
``softmax`` would give nan; such rows are padding and must be ignored downstream anyway.

Launch: each kernel goes through ``triton.autotune`` over a handful of tile configs keyed on
(next power of two of T, head dim, padding), so changing batch lengths do not retune every step.

Supported by the kernels: fp16 / bf16 on CUDA, head dims 64 and 128. On CPU the kernels run under
Triton's interpreter (``TRITON_INTERPRET=1``) in fp32, fp16 and bf16, which is how the tests check
them. Everything else goes to :func:`reference_attention` through the dispatcher's documented rule
(see :func:`fused_attention`).
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
    "FusedAttention",
    "HAS_TRITON",
    "SUPPORTED_HEAD_DIMS",
    "fused_attention",
    "reference_attention",
    "triton_supports",
]

SUPPORTED_HEAD_DIMS = (64, 128)
GPU_DTYPES = (torch.float16, torch.bfloat16)
INTERPRETER_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
BACKENDS = ("auto", "triton", "torch")
LOG2E = 1.4426950408889634


# --------------------------------------------------------------------------------------------
# Plain-torch reference.
# --------------------------------------------------------------------------------------------


def reference_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
) -> torch.Tensor:
    """Causal softmax attention in fp32, the obvious way.

    Notation:
        b: batch; h: query heads; hk: key/value heads (h % hk == 0); T: sequence; d: head dim.

    Args:
        q: Queries. Shape ``(b, h, T, d)``.
        k: Keys. Shape ``(b, hk, T, d)``.
        v: Values. Shape ``(b, hk, T, d)``.
        key_padding_mask: True (or 1) for real tokens. Shape ``(b, T)``; None means no padding.
        scale: Softmax scale; default ``d ** -0.5``.

    Returns:
        Attention output in ``q``'s dtype. Shape ``(b, h, T, d)``; rows that see no key are 0.
    """
    b, h, T, d = q.shape
    group = h // k.shape[1]
    scale = d**-0.5 if scale is None else scale
    kf = k.float().repeat_interleave(group, dim=1)  # (b, h, T, d)
    vf = v.float().repeat_interleave(group, dim=1)  # (b, h, T, d)
    s = torch.matmul(q.float(), kf.transpose(-1, -2)) * scale  # (b, h, T, T)
    allowed = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()  # (T, T)
    allowed = allowed.view(1, 1, T, T)
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask.bool().view(b, 1, 1, T)  # (b, 1, T, T)
    s = s.masked_fill(~allowed, float("-inf"))
    p = torch.softmax(s, dim=-1).nan_to_num(0.0)  # fully masked rows -> 0
    return torch.matmul(p, vf).to(q.dtype)  # (b, h, T, d)


# --------------------------------------------------------------------------------------------
# Triton kernels.
# --------------------------------------------------------------------------------------------

if HAS_TRITON:

    @triton.jit
    def _mm(a, b, UPCAST: tl.constexpr):
        # Triton 3.9's interpreter computes bf16 x bf16 tl.dot wrongly; fp32 of the same bf16
        # values is exact, and matches the GPU's bf16 MMA with fp32 accumulation.
        if UPCAST:
            return tl.dot(a.to(tl.float32), b.to(tl.float32))
        else:
            return tl.dot(a, b)

    @triton.jit
    def _fwd_inner(
        acc, l_i, m_i, q, k_base, v_base, kp_base, stride_kt, stride_vt,
        start_m, lo, hi, T, qk_scale,
        offs_m, offs_n, offs_d,
        MASKED: tl.constexpr, HAS_PAD: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + offs_n  # (BLOCK_N,)
            inb = cols < T
            k = tl.load(k_base + cols[:, None] * stride_kt + offs_d[None, :], mask=inb[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None] * stride_vt + offs_d[None, :], mask=inb[:, None], other=0.0)
            s = _mm(q, tl.trans(k), UPCAST) * qk_scale  # (BLOCK_M, BLOCK_N), log2 units
            if MASKED:
                ok = (cols[None, :] <= offs_m[:, None]) & inb[None, :]
                s = tl.where(ok, s, float("-inf"))
            if HAS_PAD:
                kp = tl.load(kp_base + cols, mask=inb, other=0)
                s = tl.where(kp[None, :] != 0, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))  # finite: m_i starts at -1e30
            p = tl.math.exp2(s - m_new[:, None])
            alpha = tl.math.exp2(m_i - m_new)
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + _mm(p.to(v.dtype), v, UPCAST)
            m_i = m_new
        return acc, l_i, m_i

    @triton.jit
    def _attn_fwd_kernel(
        Q, K, V, O, LSE, KPM,
        sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot, skpb,
        H, GROUP, T, T_BUCKET, qk_scale,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_PAD: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        hk = h // GROUP
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        row_ok = offs_m < T
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        k_base = K + b * skb + hk * skh
        v_base = V + b * svb + hk * svh
        kp_base = KPM + b * skpb
        m_i = tl.full([BLOCK_M], -1e30, tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        # Stage 1: key blocks entirely left of this query block's diagonal need no causal mask.
        diag = start_m * BLOCK_M
        acc, l_i, m_i = _fwd_inner(
            acc, l_i, m_i, q, k_base, v_base, kp_base, skt, svt, start_m, 0, diag, T, qk_scale,
            offs_m, offs_n, offs_d, False, HAS_PAD, BLOCK_N, UPCAST,
        )  # fmt: skip
        # Stage 2: the diagonal blocks, with the causal (and sequence-end) mask.
        hi = tl.minimum(diag + BLOCK_M, T)
        acc, l_i, m_i = _fwd_inner(
            acc, l_i, m_i, q, k_base, v_base, kp_base, skt, svt, start_m, diag, hi, T, qk_scale,
            offs_m, offs_n, offs_d, True, HAS_PAD, BLOCK_N, UPCAST,
        )  # fmt: skip
        empty = l_i == 0.0  # a row that saw no key (left padding): output 0, lse +inf
        l_safe = tl.where(empty, 1.0, l_i)
        out = acc / l_safe[:, None]
        lse = tl.where(empty, float("inf"), m_i + tl.math.log2(l_safe))
        tl.store(LSE + bh.to(tl.int64) * T + offs_m, lse, mask=row_ok)
        o_ptrs = O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :]
        tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None])

    @triton.jit
    def _attn_bwd_preprocess(
        O, DO, DELTA, sob, soh, sot, sdb, sdh, sdt, H, T,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        ok = offs_m < T
        o = tl.load(O + b * sob + h * soh + offs_m[:, None] * sot + offs_d[None, :], mask=ok[:, None], other=0.0)
        do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=ok[:, None], other=0.0)
        delta = tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)
        tl.store(DELTA + bh.to(tl.int64) * T + offs_m, delta, mask=ok)

    @triton.jit
    def _bwd_dkdv_inner(
        dk, dv, k, v, kp_ok, q_base, do_base, lse_base, delta_base, sqt, sdt,
        start_n, lo, hi, T, qk_scale,
        offs_n, offs_d,
        MASKED: tl.constexpr, BLOCK_M: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        for start_m in range(lo, hi, BLOCK_M):
            rows = start_m + tl.arange(0, BLOCK_M)  # (BLOCK_M,)
            rok = rows < T
            q = tl.load(q_base + rows[:, None] * sqt + offs_d[None, :], mask=rok[:, None], other=0.0)
            do = tl.load(do_base + rows[:, None] * sdt + offs_d[None, :], mask=rok[:, None], other=0.0)
            lse = tl.load(lse_base + rows, mask=rok, other=float("inf"))  # +inf -> p = 0
            delta = tl.load(delta_base + rows, mask=rok, other=0.0)
            qkT = _mm(k, tl.trans(q), UPCAST)  # (BLOCK_N, BLOCK_M)
            pT = tl.math.exp2(qkT * qk_scale - lse[None, :])
            ok = kp_ok[:, None]
            if MASKED:
                ok = ok & (rows[None, :] >= offs_n[:, None])
            pT = tl.where(ok, pT, 0.0)
            dv += _mm(pT.to(do.dtype), do, UPCAST)  # (BLOCK_N, D)
            dpT = _mm(v, tl.trans(do), UPCAST)  # (BLOCK_N, BLOCK_M)
            dsT = pT * (dpT - delta[None, :])
            dk += _mm(dsT.to(q.dtype), q, UPCAST)  # (BLOCK_N, D)
        return dk, dv

    @triton.jit
    def _attn_bwd_dkdv_kernel(
        Q, K, V, DO, LSE, DELTA, KPM, DK, DV,
        sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
        sdkb, sdkh, sdkt, sdvb, sdvh, sdvt, skpb,
        H, HK, GROUP, T, T_BUCKET, qk_scale, sm_scale,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_PAD: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        pid_n = tl.program_id(0)
        bhk = tl.program_id(1)
        b = (bhk // HK).to(tl.int64)
        hk = (bhk % HK).to(tl.int64)
        start_n = pid_n * BLOCK_N
        offs_n = start_n + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        nok = offs_n < T
        k = tl.load(K + b * skb + hk * skh + offs_n[:, None] * skt + offs_d[None, :], mask=nok[:, None], other=0.0)
        v = tl.load(V + b * svb + hk * svh + offs_n[:, None] * svt + offs_d[None, :], mask=nok[:, None], other=0.0)
        kp_ok = nok
        if HAS_PAD:
            kp_ok = kp_ok & (tl.load(KPM + b * skpb + offs_n, mask=nok, other=0) != 0)
        dk = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
        dv = tl.zeros([BLOCK_N, HEAD_DIM], tl.float32)
        diag_end = tl.minimum(start_n + BLOCK_N, T)
        for g in range(0, GROUP):
            h = hk * GROUP + g
            q_base = Q + b * sqb + h * sqh
            do_base = DO + b * sdb + h * sdh
            stat = (b * H + h) * T
            # Queries on this key block's diagonal: causal mask.
            dk, dv = _bwd_dkdv_inner(
                dk, dv, k, v, kp_ok, q_base, do_base, LSE + stat, DELTA + stat, sqt, sdt,
                start_n, start_n, diag_end, T, qk_scale, offs_n, offs_d, True, BLOCK_M, UPCAST,
            )  # fmt: skip
            # Queries strictly below it see the whole key block.
            dk, dv = _bwd_dkdv_inner(
                dk, dv, k, v, kp_ok, q_base, do_base, LSE + stat, DELTA + stat, sqt, sdt,
                start_n, diag_end, T, T, qk_scale, offs_n, offs_d, False, BLOCK_M, UPCAST,
            )  # fmt: skip
        dk *= sm_scale
        dk_ptrs = DK + b * sdkb + hk * sdkh + offs_n[:, None] * sdkt + offs_d[None, :]
        dv_ptrs = DV + b * sdvb + hk * sdvh + offs_n[:, None] * sdvt + offs_d[None, :]
        tl.store(dk_ptrs, dk.to(DK.dtype.element_ty), mask=nok[:, None])
        tl.store(dv_ptrs, dv.to(DV.dtype.element_ty), mask=nok[:, None])

    @triton.jit
    def _bwd_dq_inner(
        dq, q, do, lse, delta, k_base, v_base, kp_base, skt, svt,
        start_m, lo, hi, T, qk_scale,
        offs_m, offs_d,
        MASKED: tl.constexpr, HAS_PAD: tl.constexpr, BLOCK_N: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        for start_n in range(lo, hi, BLOCK_N):
            cols = start_n + tl.arange(0, BLOCK_N)
            inb = cols < T
            k = tl.load(k_base + cols[:, None] * skt + offs_d[None, :], mask=inb[:, None], other=0.0)
            v = tl.load(v_base + cols[:, None] * svt + offs_d[None, :], mask=inb[:, None], other=0.0)
            qk = _mm(q, tl.trans(k), UPCAST)  # (BLOCK_M, BLOCK_N)
            p = tl.math.exp2(qk * qk_scale - lse[:, None])
            ok = inb[None, :]
            if MASKED:
                ok = ok & (cols[None, :] <= offs_m[:, None])
            if HAS_PAD:
                ok = ok & (tl.load(kp_base + cols, mask=inb, other=0) != 0)[None, :]
            p = tl.where(ok, p, 0.0)
            dp = _mm(do, tl.trans(v), UPCAST)  # (BLOCK_M, BLOCK_N)
            ds = p * (dp - delta[:, None])
            dq += _mm(ds.to(k.dtype), k, UPCAST)  # (BLOCK_M, D)
        return dq

    @triton.jit
    def _attn_bwd_dq_kernel(
        Q, K, V, DO, LSE, DELTA, KPM, DQ,
        sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt, sdqb, sdqh, sdqt, skpb,
        H, GROUP, T, T_BUCKET, qk_scale, sm_scale,
        HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
        HAS_PAD: tl.constexpr, UPCAST: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = (bh // H).to(tl.int64)
        h = (bh % H).to(tl.int64)
        hk = h // GROUP
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        rok = offs_m < T
        q = tl.load(Q + b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :], mask=rok[:, None], other=0.0)
        do = tl.load(DO + b * sdb + h * sdh + offs_m[:, None] * sdt + offs_d[None, :], mask=rok[:, None], other=0.0)
        stat = bh.to(tl.int64) * T
        lse = tl.load(LSE + stat + offs_m, mask=rok, other=float("inf"))
        delta = tl.load(DELTA + stat + offs_m, mask=rok, other=0.0)
        k_base = K + b * skb + hk * skh
        v_base = V + b * svb + hk * svh
        kp_base = KPM + b * skpb
        dq = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        diag = start_m * BLOCK_M
        dq = _bwd_dq_inner(
            dq, q, do, lse, delta, k_base, v_base, kp_base, skt, svt, start_m, 0, diag, T, qk_scale,
            offs_m, offs_d, False, HAS_PAD, BLOCK_N, UPCAST,
        )  # fmt: skip
        dq = _bwd_dq_inner(
            dq, q, do, lse, delta, k_base, v_base, kp_base, skt, svt, start_m, diag,
            tl.minimum(diag + BLOCK_M, T), T, qk_scale, offs_m, offs_d, True, HAS_PAD, BLOCK_N, UPCAST,
        )  # fmt: skip
        dq *= sm_scale
        dq_ptrs = DQ + b * sdqb + h * sdqh + offs_m[:, None] * sdqt + offs_d[None, :]
        tl.store(dq_ptrs, dq.to(DQ.dtype.element_ty), mask=rok[:, None])


def _interpreting() -> bool:
    """Whether the kernels above were built for Triton's CPU interpreter."""
    return HAS_TRITON and type(_attn_fwd_kernel).__name__ == "InterpretedFunction"


def triton_supports(q: torch.Tensor, k: torch.Tensor) -> str | None:
    """Why the Triton kernels cannot take these inputs, or None when they can.

    The kernels take fp16/bf16 CUDA tensors (plus fp32 on CPU under the interpreter) with head
    dim 64 or 128, ``q_len == kv_len`` and a whole number of query heads per key/value head.
    """
    if not HAS_TRITON:
        return "triton is not installed"
    if q.dim() != 4 or k.dim() != 4:
        return f"q and k must be 4-D (b, heads, T, d); got {tuple(q.shape)} and {tuple(k.shape)}"
    interp = _interpreting()
    if q.is_cuda and interp:
        return "TRITON_INTERPRET=1 is set, so the kernels only run on CPU tensors"
    if not q.is_cuda and not interp:
        return (
            f"the Triton kernels run on CUDA tensors (or on CPU under TRITON_INTERPRET=1); got device {q.device}"
        )
    ok_dtypes = INTERPRETER_DTYPES if interp else GPU_DTYPES
    if q.dtype not in ok_dtypes:
        names = ", ".join(str(d).removeprefix("torch.") for d in ok_dtypes)
        return f"dtype {q.dtype} is not supported by the Triton kernels (supported: {names})"
    if q.shape[-1] not in SUPPORTED_HEAD_DIMS:
        return f"head dim {q.shape[-1]} is not supported by the Triton kernels (supported: {SUPPORTED_HEAD_DIMS})"
    if q.shape[2] != k.shape[2]:
        return f"q_len ({q.shape[2]}) != kv_len ({k.shape[2]}): the kernels do causal self-attention only"
    return None


def _configs(kind: str) -> list:
    """Autotuning candidates per kernel (``kind``: fwd, dkdv, dq).

    Under the interpreter there is exactly one small config, so the autotuner never benchmarks and
    the CPU tests go through the very launch path the GPU uses. On GPU the candidates bracket the
    H100 settings of Triton's fused-attention tutorial (forward 128x64 / 128x128; backward
    BLOCK_M1=32, BLOCK_N1=128, BLOCK_M2=128, BLOCK_N2=32); configs that do not fit in shared memory
    are dropped by the autotuner. Constraints: forward and dQ need BLOCK_M % BLOCK_N == 0, dK/dV
    needs BLOCK_N % BLOCK_M == 0 (the diagonal is a whole number of inner tiles).
    """
    C = triton.Config
    if _interpreting():
        small = {"fwd": (16, 16), "dkdv": (16, 32), "dq": (32, 16)}[kind]
        return [C({"BLOCK_M": small[0], "BLOCK_N": small[1]}, num_warps=1, num_stages=1)]
    table = {
        "fwd": [(128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 32, 4, 4), (64, 64, 4, 4), (64, 32, 4, 3)],
        "dkdv": [(32, 128, 4, 5), (32, 128, 8, 3), (64, 128, 8, 3), (32, 64, 4, 4), (64, 64, 4, 3)],
        "dq": [(128, 32, 4, 5), (128, 32, 8, 3), (128, 64, 8, 3), (64, 32, 4, 4), (64, 64, 4, 3)],
    }[kind]
    return [C({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st) for m, n, w, st in table]


_TUNED: dict = {}


def _tuned(kind: str):
    """The autotuned wrapper of one kernel, built on first use (so importing stays cheap)."""
    if kind not in _TUNED:
        fn = {"fwd": _attn_fwd_kernel, "dkdv": _attn_bwd_dkdv_kernel, "dq": _attn_bwd_dq_kernel}[kind]
        # T_BUCKET (next power of two of T) rather than T: RL batches change length every step and
        # must not trigger a fresh tuning run each time.
        _TUNED[kind] = triton.autotune(configs=_configs(kind), key=["T_BUCKET", "HEAD_DIM", "HAS_PAD"])(fn)
    return _TUNED[kind]


def _strides(x: torch.Tensor) -> tuple[int, int, int]:
    return x.stride(0), x.stride(1), x.stride(2)


def _last_dim_contig(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _attn_fwd(q, k, v, kpm, sm_scale):
    B, H, T, D = q.shape
    HK = k.shape[1]
    o_mem = torch.empty(B, T, H, D, dtype=q.dtype, device=q.device)  # Hugging Face's output layout
    o = o_mem.transpose(1, 2)  # (B, H, T, D) view
    lse = torch.empty(B, H, T, dtype=torch.float32, device=q.device)  # log2 units
    has_pad = kpm is not None
    kp = kpm if has_pad else lse  # unused pointer when there is no padding
    _tuned("fwd")[lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)](
        q, k, v, o, lse, kp,
        *_strides(q), *_strides(k), *_strides(v), *_strides(o), kpm.stride(0) if has_pad else 0,
        H, H // HK, T, triton.next_power_of_2(T), sm_scale * LOG2E,
        HEAD_DIM=D, HAS_PAD=has_pad, UPCAST=_interpreting() and q.dtype == torch.bfloat16,
    )  # fmt: skip
    return o, lse


def _attn_bwd(q, k, v, o, lse, do, kpm, sm_scale):
    B, H, T, D = q.shape
    HK = k.shape[1]
    do = _last_dim_contig(do)
    delta = torch.empty_like(lse)
    pre_m = 16 if _interpreting() else 128
    _attn_bwd_preprocess[(triton.cdiv(T, pre_m), B * H)](
        o, do, delta, *_strides(o), *_strides(do), H, T, HEAD_DIM=D, BLOCK_M=pre_m,
        num_warps=1 if _interpreting() else 4,
    )  # fmt: skip
    dq = torch.empty_like(q, memory_format=torch.contiguous_format)
    dk = torch.empty(k.shape, dtype=k.dtype, device=k.device)
    dv = torch.empty(v.shape, dtype=v.dtype, device=v.device)
    has_pad = kpm is not None
    kp = kpm if has_pad else lse
    kp_stride = kpm.stride(0) if has_pad else 0
    upcast = _interpreting() and q.dtype == torch.bfloat16
    qk_scale = sm_scale * LOG2E
    t_bucket = triton.next_power_of_2(T)
    _tuned("dkdv")[lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * HK)](
        q, k, v, do, lse, delta, kp, dk, dv,
        *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dk), *_strides(dv), kp_stride,
        H, HK, H // HK, T, t_bucket, qk_scale, sm_scale,
        HEAD_DIM=D, HAS_PAD=has_pad, UPCAST=upcast,
    )  # fmt: skip
    _tuned("dq")[lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H)](
        q, k, v, do, lse, delta, kp, dq,
        *_strides(q), *_strides(k), *_strides(v), *_strides(do), *_strides(dq), kp_stride,
        H, H // HK, T, t_bucket, qk_scale, sm_scale,
        HEAD_DIM=D, HAS_PAD=has_pad, UPCAST=upcast,
    )  # fmt: skip
    return dq, dk, dv


class FusedAttention(torch.autograd.Function):
    """Autograd wrapper of the Triton kernels; saves q, k, v, the output and the per-row lse."""

    @staticmethod
    def forward(ctx, q, k, v, key_padding_mask, sm_scale):
        q, k, v = _last_dim_contig(q), _last_dim_contig(k), _last_dim_contig(v)
        o, lse = _attn_fwd(q, k, v, key_padding_mask, sm_scale)
        ctx.save_for_backward(q, k, v, o, lse, key_padding_mask)
        ctx.sm_scale = sm_scale
        return o

    @staticmethod
    def backward(ctx, do):
        q, k, v, o, lse, kpm = ctx.saved_tensors
        dq, dk, dv = _attn_bwd(q, k, v, o, lse, do, kpm, ctx.sm_scale)
        return dq, dk, dv, None, None


def _normalise_padding(key_padding_mask: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor | None:
    if key_padding_mask is None:
        return None
    b, _, T, _ = q.shape
    if tuple(key_padding_mask.shape) != (b, T):
        raise InvalidInputError(f"key_padding_mask must be (b, T) = ({b}, {T}); got {tuple(key_padding_mask.shape)}")
    if key_padding_mask.device != q.device:
        raise InvalidInputError(f"key_padding_mask is on {key_padding_mask.device}, q on {q.device}")
    if key_padding_mask.dtype != torch.bool and key_padding_mask.dtype.is_floating_point:
        raise InvalidInputError("key_padding_mask must be bool or integer (True/1 = real token), not an additive float mask")
    if bool(key_padding_mask.all()):
        return None  # no padding: take the faster kernel variant
    return key_padding_mask.to(torch.int8).contiguous()


def fused_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Causal self-attention with grouped-query heads and an optional key padding mask.

    Dispatch rule: ``backend="auto"`` runs the Triton kernels on CUDA tensors that
    :func:`triton_supports` accepts (fp16/bf16, head dim 64/128, ``q_len == kv_len``) and
    :func:`reference_attention` otherwise, so the answer is always the causal-attention one.
    ``backend="triton"`` raises :class:`InvalidInputError` naming what is supported instead of
    falling back (on CPU tensors it runs the kernels under ``TRITON_INTERPRET=1``);
    ``backend="torch"`` always runs the reference.

    Notation:
        b: batch; h: query heads; hk: key/value heads (h % hk == 0); T: sequence; d: head dim.

    Args:
        q: Queries. Shape ``(b, h, T, d)``.
        k: Keys. Shape ``(b, hk, T, d)``.
        v: Values. Shape ``(b, hk, T, d)``.
        key_padding_mask: True/1 for real tokens, False/0 for padding. Shape ``(b, T)``.
        scale: Softmax scale; default ``d ** -0.5``.
        backend: ``"auto"``, ``"triton"`` or ``"torch"``.

    Returns:
        Output in ``q``'s dtype. Shape ``(b, h, T, d)``; from the kernels it is a transposed view
        of ``(b, T, h, d)`` memory, so ``out.transpose(1, 2)`` is contiguous for free. Query rows
        that can see no key (left padding) are 0.
    """
    if backend not in BACKENDS:
        raise InvalidInputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise InvalidInputError("q, k, v must be 4-D (b, heads, T, d)")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise InvalidInputError(f"incompatible shapes q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if q.shape[1] % k.shape[1] != 0:
        raise InvalidInputError(f"query heads ({q.shape[1]}) must be a multiple of key/value heads ({k.shape[1]})")
    if q.shape[2] != k.shape[2]:
        raise InvalidInputError(
            f"fused_attention is causal self-attention: q_len ({q.shape[2]}) must equal kv_len ({k.shape[2]})"
        )
    if not (q.dtype == k.dtype == v.dtype):
        raise InvalidInputError(f"q, k, v dtypes differ: {q.dtype}, {k.dtype}, {v.dtype}")
    kpm = _normalise_padding(key_padding_mask, q)
    sm_scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(sm_scale):
        raise InvalidInputError(f"scale must be finite, got {scale!r}")
    if backend == "torch":
        why_not = "backend='torch'"
    elif backend == "auto" and not q.is_cuda:
        why_not = "not a CUDA tensor"  # the interpreter runs only when asked for (backend="triton")
    else:
        why_not = triton_supports(q, k)
    if backend == "triton" and why_not is not None:
        raise InvalidInputError(f"backend='triton' cannot run: {why_not}")
    if why_not is not None:
        return reference_attention(q, k, v, key_padding_mask=kpm, scale=sm_scale)
    return FusedAttention.apply(q, k, v, kpm, sm_scale)
