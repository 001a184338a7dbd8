"""Fused causal attention vs torch SDPA's flash backend: forward + backward throughput, one run.

Issue 4's target on an H100: at sequence lengths 2k-8k, head dim 128, bf16, forward+backward
reaches at least 0.9x the throughput of ``scaled_dot_product_attention`` with the FLASH_ATTENTION
backend. Inputs use Hugging Face's layout (``(b, T, h, d)`` memory viewed as ``(b, h, T, d)``).
A padded row (10 % left padding, boolean mask) compares against SDPA's best masked backend.

    PYTHONPATH=python python benchmarks/bench_attention.py                  # T 2k/4k/8k, 16 heads, d 128, bf16
    PYTHONPATH=python python benchmarks/bench_attention.py --kv-heads 4     # grouped-query attention
    PYTHONPATH=python python benchmarks/bench_attention.py --cpu-smoke      # CPU: checks the script only

TFLOP/s counts the causal half of ``4 b h T^2 d`` for forward and 2.5x that for backward
(FlashAttention's convention), so the ratio column is the throughput ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seqlens", default="2048,4096,8192")
    p.add_argument("--tokens", type=int, default=16384, help="batch = tokens // seqlen (default 16384)")
    p.add_argument("--heads", type=int, default=16)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads (MHA)")
    p.add_argument("--head-dim", type=int, default=128, choices=[64, 128])
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    return p.parse_args()


def main() -> int:
    args = _parse()
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        args.seqlens, args.tokens, args.heads, args.iters, args.warmup = "64", 64, 2, 1, 0
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("bench_attention: no CUDA device here, so there is nothing to measure. Run it on a GPU, "
              "or pass --cpu-smoke to check the script on CPU (timings meaningless).", file=sys.stderr)  # fmt: skip
        return 2

    from alignfw.kernels.fused_attention import fused_attention

    device = "cpu" if args.cpu_smoke else "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.cpu_smoke:
        dtype = torch.float32  # the interpreter's fastest path; the GPU kernels take only fp16/bf16
    H, D = args.heads, args.head_dim
    HK = args.kv_heads or H
    flash = [SDPBackend.FLASH_ATTENTION] if device == "cuda" else [SDPBackend.MATH]
    masked = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION] if device == "cuda" else [SDPBackend.MATH]

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def timed(fn, inputs, do):
        times, out = [], None
        for i in range(args.warmup + args.iters):
            leaves = [t.detach().requires_grad_() for t in inputs]
            sync()
            if device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            out = fn(*leaves)
            out.backward(do)
            if device == "cuda":
                end.record()
                sync()
                ms = start.elapsed_time(end)
            else:
                ms = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(ms)
        return statistics.median(times), out.detach()

    rows = []
    for T in [int(t) for t in args.seqlens.split(",")]:
        B = max(1, args.tokens // T)
        torch.manual_seed(T)
        # Hugging Face layout: (b, T, h, d) memory, viewed as (b, h, T, d).
        q = torch.randn(B, T, H, D, device=device, dtype=dtype).transpose(1, 2)
        k = torch.randn(B, T, HK, D, device=device, dtype=dtype).transpose(1, 2)
        v = torch.randn(B, T, HK, D, device=device, dtype=dtype).transpose(1, 2)
        do = torch.randn(B, H, T, D, device=device, dtype=dtype)
        flops = 4 * B * H * T * T * D / 2 * 3.5  # causal fwd + 2.5x for bwd

        def sdpa(q_, k_, v_, mask=None):
            if HK != H and not native_gqa:  # what Hugging Face does when SDPA cannot take GQA natively
                k_, v_ = k_.repeat_interleave(H // HK, 1), v_.repeat_interleave(H // HK, 1)
            kw = {"enable_gqa": True} if (HK != H and native_gqa) else {}
            if mask is None:
                with sdpa_kernel(flash):
                    return F.scaled_dot_product_attention(q_, k_, v_, is_causal=True, **kw)
            with sdpa_kernel(masked):
                return F.scaled_dot_product_attention(q_, k_, v_, attn_mask=mask, **kw)

        native_gqa = True
        if HK != H:
            try:
                with sdpa_kernel(flash):
                    probe = [t[:1, :, :128] for t in (q, k, v)]
                    F.scaled_dot_product_attention(*probe, is_causal=True, enable_gqa=True)
            except RuntimeError:
                native_gqa = False

        def ours(q_, k_, v_, kpm=None):
            return fused_attention(q_, k_, v_, key_padding_mask=kpm, backend="triton")

        cases = [("causal", sdpa, ours, {})]
        if T == 4096 or args.cpu_smoke:
            kpm = torch.ones(B, T, dtype=torch.bool, device=device)
            kpm[:, : T // 10] = False  # 10 % left padding in every row
            causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
            mask = causal.view(1, 1, T, T) & kpm.view(B, 1, 1, T)
            mask = mask | ~kpm.view(B, 1, T, 1)  # padded query rows attend to everything: no nan in SDPA
            cases.append((
                "causal + 10% left pad",
                lambda a, b_, c: sdpa(a, b_, c, mask),
                lambda a, b_, c: ours(a, b_, c, kpm),
                {"rows": kpm},
            ))  # fmt: skip
        for name, base_fn, our_fn, extra in cases:
            try:
                base_ms, base_out = timed(base_fn, (q, k, v), do)
            except RuntimeError as e:  # e.g. no flash kernel for this GPU / dtype
                print(f"SDPA baseline failed for T={T} {name}: {e}", file=sys.stderr)
                base_ms, base_out = float("nan"), None
            our_ms, our_out = timed(our_fn, (q, k, v), do)
            err = float("nan")
            if base_out is not None:
                sel = extra.get("rows")
                a, b_ = our_out.float(), base_out.float()
                if sel is not None:  # compare real query rows only
                    a, b_ = a.transpose(1, 2)[sel], b_.transpose(1, 2)[sel]
                err = (a - b_).abs().max().item()
            rows.append(dict(
                T=T, batch=B, case=name, sdpa_ms=base_ms, ours_ms=our_ms,
                sdpa_tflops=flops / base_ms / 1e9, ours_tflops=flops / our_ms / 1e9,
                ratio=base_ms / our_ms, max_abs_diff=err,
            ))  # fmt: skip

    import triton

    dev = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke: Triton interpreter, timings meaningless)"
    print(f"device: {dev}; torch {torch.__version__}, triton {triton.__version__}")
    print(f"heads={H} kv_heads={HK} head_dim={D} dtype={dtype} tokens/batch={args.tokens} iters={args.iters}")
    print(f"{'T':>6} {'b':>3} {'case':<22} {'SDPA ms':>9} {'ours ms':>9} {'SDPA TF/s':>10} {'ours TF/s':>10} "
          f"{'ratio':>6} {'max|diff|':>9}")  # fmt: skip
    for r in rows:
        print(f"{r['T']:>6} {r['batch']:>3} {r['case']:<22} {r['sdpa_ms']:>9.2f} {r['ours_ms']:>9.2f} "
              f"{r['sdpa_tflops']:>10.1f} {r['ours_tflops']:>10.1f} {r['ratio']:>5.2f}x {r['max_abs_diff']:>9.2e}")  # fmt: skip
    if device == "cuda":
        causal = [r for r in rows if r["case"] == "causal" and 2048 <= r["T"] <= 8192]
        ok = bool(causal) and all(r["ratio"] >= 0.9 for r in causal)
        print(f"target (>= 0.9x SDPA flash at 2k-8k, causal): {'MET' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=dev, args=vars(args), rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
