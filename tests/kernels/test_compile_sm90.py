"""The kernels compile, ahead of time, to H100 (sm_90) machine code — no GPU needed.

The interpreter checks the kernels' arithmetic but not what only the compiler sees (types carried
through loops, constexpr branches, shared-memory use of the tile configs). Triton compiles for a
named target without a device, down to a cubin through the ``ptxas`` it ships, so this runs in CPU
CI. It needs a fresh process: in this one the kernels were built for the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from alignfw.kernels import fused_attention as A, fused_logprob as L

    TARGET = GPUTarget("cuda", 90, 32)  # H100
    SMEM_LIMIT = 227 * 1024

    def kind(n, ptrs, floats, consts):
        if n in consts:
            return "constexpr"
        if n in ptrs:
            return ptrs[n]
        if n.endswith("_ptr") or n in ("LSE", "DELTA"):  # other pointers: per-row fp32 statistics
            return "*fp32"
        return "fp32" if n in floats else "i32"  # strides, sizes, ignore_index

    def build(fn, ptrs, floats, consts, warps, stages):
        sig = {n: kind(n, ptrs, floats, consts) for n in fn.arg_names}
        k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts), target=TARGET,
                           options={"num_warps": warps, "num_stages": stages})
        assert k.metadata.shared <= SMEM_LIMIT, (fn.__name__, consts, k.metadata.shared)
        assert k.asm.get("cubin"), fn.__name__
        print("ok", fn.__name__, consts, k.metadata.shared)

    for dt in ("bf16", "fp16"):
        lp = {"logits_ptr": f"*{dt}", "grad_ptr": f"*{dt}", "targets_ptr": "*i64"}
        build(L._logprob_fwd_kernel, lp, {"inv_temp"}, {"BLOCK_V": 4096, "WITH_ENTROPY": True}, 8, 1)
        build(L._logprob_bwd_kernel, lp, {"inv_temp"}, {"BLOCK_V": 4096, "HAS_GRAD_LP": True, "HAS_GRAD_ENT": True}, 8, 1)
    at = {n: "*bf16" for n in ("Q", "K", "V", "O", "DO", "DQ", "DK", "DV")} | {"KPM": "*i8"}
    flags = {"HEAD_DIM": 128, "HAS_PAD": True, "UPCAST": False}
    build(A._attn_fwd_kernel, at, {"qk_scale"}, flags | {"BLOCK_M": 128, "BLOCK_N": 64}, 8, 3)
    build(A._attn_bwd_preprocess, at, set(), {"HEAD_DIM": 128, "BLOCK_M": 128}, 4, 1)
    build(A._attn_bwd_dkdv_kernel, at, {"qk_scale", "sm_scale"}, flags | {"BLOCK_M": 32, "BLOCK_N": 128}, 4, 5)
    build(A._attn_bwd_dq_kernel, at, {"qk_scale", "sm_scale"}, flags | {"BLOCK_M": 128, "BLOCK_N": 32}, 4, 5)
    print("ALL OK")
    """
)


def test_kernels_compile_for_h100():
    try:
        import triton.backends.nvidia  # noqa: F401
    except ImportError:
        pytest.skip("this triton build has no NVIDIA backend")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silence 3.9's default-change warning
    res = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "ALL OK" in res.stdout, res.stdout[-3000:] + res.stderr[-3000:]
