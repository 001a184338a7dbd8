"""Fused causal attention kernels against ``reference_attention`` (fp32 maths on the same inputs).

Tolerances (``torch.testing.assert_close``): fp32 ``atol=rtol=1e-4`` (different summation order
over at most a few hundred terms). fp16/bf16: the kernel rounds the probabilities to the input dtype
before ``P @ V`` and the gradient tiles before their matmuls (as FlashAttention does), the reference
stays in fp32, so the bound is a few ulps of the dtype at unit-scale values: fp16 ``atol=rtol=5e-3``
for the output and ``1e-2`` for gradients; bf16 ``atol=rtol=4e-2`` / ``6e-2``.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignfw.exceptions import InvalidInputError
from alignfw.kernels.fused_attention import fused_attention, reference_attention, triton_supports

TOL = {  # dtype -> (output tol, gradient tol)
    torch.float32: (1e-4, 1e-4),
    torch.float16: (5e-3, 1e-2),
    torch.bfloat16: (4e-2, 6e-2),
}
# The dtype of the dtype-agnostic tests: fp32 under the interpreter; the compiled GPU kernels
# take only fp16/bf16 (fp32 CUDA tensors are the reference's by the dispatch rule).
FP = torch.float16 if torch.cuda.is_available() else torch.float32


def _padding(kind: str, B: int, T: int, device) -> torch.Tensor | None:
    if kind == "none":
        return None
    keep = torch.ones(B, T, dtype=torch.bool)
    lengths = [max(1, T - 3 - 5 * i) for i in range(B)]  # ragged real lengths
    for i, n in enumerate(lengths):
        if kind == "left":
            keep[i, : T - n] = False
        elif kind == "right":
            keep[i, n:] = False
        elif kind == "holes":
            keep[i, 1::4] = False
    return keep.to(device)


def _run(q, k, v, kpm, backend="triton"):
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    out = fused_attention(*leaves, key_padding_mask=kpm, backend=backend)
    return leaves, out


def _check(dtype, B, H, HK, T, D, pad, device, seed=0):
    if dtype == torch.float32 and device == "cuda":
        pytest.skip("fp32 runs the kernels only under the interpreter; on CUDA it goes to the reference")
    torch.manual_seed(seed)
    q = torch.randn(B, H, T, D, device=device).to(dtype)
    k = torch.randn(B, HK, T, D, device=device).to(dtype)
    v = torch.randn(B, HK, T, D, device=device).to(dtype)
    kpm = _padding(pad, B, T, device)
    (qa, ka, va), out = _run(q, k, v, kpm)
    qr, kr, vr = [t.float().requires_grad_() for t in (q, k, v)]
    ref = reference_attention(qr, kr, vr, key_padding_mask=kpm)
    otol, gtol = TOL[dtype]
    assert out.dtype == dtype and out.shape == (B, H, T, D)
    assert out.transpose(1, 2).is_contiguous()  # written in Hugging Face's (b, T, h, d) layout
    torch.testing.assert_close(out.float(), ref, atol=otol, rtol=otol)
    do = torch.randn_like(out)
    (out.float() * do.float()).sum().backward()
    (ref * do.float()).sum().backward()
    for name, mine, theirs in (("dq", qa, qr), ("dk", ka, kr), ("dv", va, vr)):
        assert mine.grad.dtype == dtype, name
        assert torch.isfinite(mine.grad).all(), name
        torch.testing.assert_close(mine.grad.float(), theirs.grad, atol=gtol, rtol=gtol, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    ("B", "H", "HK", "T", "D", "pad"),
    [
        (2, 4, 2, 37, 64, "left"),  # GQA, ragged T, left padding
        (2, 2, 2, 50, 128, "right"),  # MHA, head dim 128, right padding
        (1, 3, 1, 33, 64, "none"),  # MQA, T one past a block boundary
    ],
)
def test_matches_reference(triton_ready, device, dtype, B, H, HK, T, D, pad):
    _check(dtype, B, H, HK, T, D, pad, device)


@pytest.mark.parametrize(("T", "pad"), [(1, "none"), (16, "holes"), (70, "left"), (45, "right")])
def test_sequence_lengths_and_masks(triton_ready, device, T, pad):
    _check(FP, 3 if pad != "none" else 1, 2, 1, T, 64, pad, device, seed=T)


def test_rows_that_see_no_key_are_zero(triton_ready, device):
    # Left padding: the first query rows can see only padding; softmax would give nan.
    torch.manual_seed(7)
    B, H, T, D = 1, 2, 20, 64
    q, k, v = (torch.randn(B, H, T, D, device=device, dtype=FP) for _ in range(3))
    kpm = torch.ones(B, T, dtype=torch.bool, device=device)
    kpm[0, :6] = False
    (qa, ka, va), out = _run(q, k, v, kpm)
    assert bool((out[:, :, :6] == 0).all())
    out.sum().backward()
    assert bool((qa.grad[:, :, :6] == 0).all())
    assert bool((ka.grad[:, :, :6] == 0).all()) and bool((va.grad[:, :, :6] == 0).all())


def test_hf_layout_views_are_read_in_place(triton_ready, device):
    # Hugging Face passes q, k, v as (b, T, h, d) memory viewed as (b, h, T, d).
    torch.manual_seed(8)
    B, T, H, HK, D = 2, 24, 4, 2, 64
    q = torch.randn(B, T, H, D, device=device, dtype=FP).transpose(1, 2)
    k = torch.randn(B, T, HK, D, device=device, dtype=FP).transpose(1, 2)
    v = torch.randn(B, T, HK, D, device=device, dtype=FP).transpose(1, 2)
    out = fused_attention(q, k, v, scale=0.1, backend="triton")
    ref = reference_attention(q, k, v, scale=0.1)
    tol = TOL[FP][0]
    torch.testing.assert_close(out, ref, atol=tol, rtol=tol)


def test_all_true_padding_mask_equals_no_mask(triton_ready, device):
    torch.manual_seed(9)
    q, k, v = (torch.randn(2, 2, 19, 64, device=device, dtype=FP) for _ in range(3))
    a = fused_attention(q, k, v, key_padding_mask=torch.ones(2, 19, dtype=torch.bool, device=device), backend="triton")
    b = fused_attention(q, k, v, backend="triton")
    torch.testing.assert_close(a, b, atol=0, rtol=0)


# ------------------------------------------------------------------------------------------ bad input


def test_unsupported_head_dim_refused_or_documented_fallback(triton_ready, device):
    q = torch.randn(1, 2, 9, 96, device=device, dtype=FP)
    with pytest.raises(InvalidInputError, match=r"head dim 96 is not supported.*\(64, 128\)"):
        fused_attention(q, q, q, backend="triton")
    # "auto" falls back to the reference: the same answer, never a wrong one.
    torch.testing.assert_close(fused_attention(q, q, q), reference_attention(q, q, q))


def test_unsupported_dtype_names_supported_ones(triton_ready, device):
    q = torch.randn(1, 2, 9, 64, device=device, dtype=torch.float64)
    with pytest.raises(InvalidInputError, match="float64 is not supported.*supported: "):
        fused_attention(q, q, q, backend="triton")


def test_gpu_rule_refuses_fp32_on_cuda():
    # The interpreter accepts fp32 (tests); compiled GPU kernels take only fp16/bf16.
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    q = torch.randn(1, 2, 9, 64, device="cuda")
    assert "float32 is not supported" in triton_supports(q, q)


@pytest.mark.parametrize(
    ("shapes", "match"),
    [
        (((1, 3, 8, 64), (1, 2, 8, 64)), "multiple of key/value heads"),
        (((1, 2, 4, 64), (1, 2, 8, 64)), "q_len"),
        (((1, 2, 8, 64), (1, 2, 8, 32)), "incompatible shapes"),
    ],
)
def test_bad_shapes(shapes, match):
    q, k = torch.randn(*shapes[0]), torch.randn(*shapes[1])
    with pytest.raises(InvalidInputError, match=match):
        fused_attention(q, k, k)


def test_float_additive_mask_refused():
    q = torch.randn(1, 2, 8, 64)
    with pytest.raises(InvalidInputError, match="not an additive float mask"):
        fused_attention(q, q, q, key_padding_mask=torch.zeros(1, 8))


# ------------------------------------------------------------------------------------------ GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(("D", "pad"), [(64, "left"), (128, "none"), (128, "right")])
def test_gpu_matches_reference(dtype, D, pad):
    _check(dtype, 2, 8, 2, 1000, D, pad, "cuda")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    B=st.integers(1, 2),
    group=st.sampled_from([1, 2]),
    T=st.integers(1, 40),
    pad_fraction=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**16),
)
def test_random_padding_property(triton_ready, device, B, group, T, pad_fraction, seed):
    # Arbitrary key padding patterns (not only left/right runs), GQA or not, any length.
    g = torch.Generator().manual_seed(seed)
    HK, D = 1, 64
    q = torch.randn(B, HK * group, T, D, generator=g).to(device, FP)
    k = torch.randn(B, HK, T, D, generator=g).to(device, FP)
    v = torch.randn(B, HK, T, D, generator=g).to(device, FP)
    kpm = (torch.rand(B, T, generator=g) >= pad_fraction).to(device)
    (qa, ka, va), out = _run(q, k, v, kpm)
    qr, kr, vr = [t.float().requires_grad_() for t in (q, k, v)]
    ref = reference_attention(qr, kr, vr, key_padding_mask=kpm)
    otol, gtol = TOL[FP]
    torch.testing.assert_close(out.float(), ref, atol=otol, rtol=otol)
    do = torch.randn(out.shape, generator=g).to(device)
    (out.float() * do).sum().backward()
    (ref * do).sum().backward()
    for mine, theirs in ((qa, qr), (ka, kr), (va, vr)):
        torch.testing.assert_close(mine.grad.float(), theirs.grad, atol=gtol, rtol=gtol)
