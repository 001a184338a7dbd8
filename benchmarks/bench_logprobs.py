"""Fused log-probs vs ``log_softmax().gather()``: forward + backward time and peak memory, one run.

Issue 4's target on an H100: at vocabulary 128k the fused op uses at most a quarter of the
baseline's peak memory and is at least 1.5x faster. Prints one table (and ``--json`` writes it).

    PYTHONPATH=python python benchmarks/bench_logprobs.py                 # 8192 tokens, H 4096, V 128256, bf16
    PYTHONPATH=python python benchmarks/bench_logprobs.py --hidden 896 --vocab 151936   # Qwen2-0.5B head
    PYTHONPATH=python python benchmarks/bench_logprobs.py --cpu-smoke     # CPU: checks the script only

Peak memory is measured above what the inputs already hold (``max_memory_allocated`` minus the
allocation before the call). Times are medians of CUDA-event timings after warm-up.
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
    p.add_argument("--tokens", type=int, default=8192, help="batch x sequence (default 8192)")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--entropy", action="store_true", help="also compute (and backprop) the entropy")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", help="write the results here as JSON")
    p.add_argument("--cpu-smoke", action="store_true", help="tiny shapes on CPU under TRITON_INTERPRET=1")
    return p.parse_args()


def main() -> int:
    args = _parse()
    if args.cpu_smoke:
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported
        args.tokens, args.hidden, args.vocab, args.iters, args.warmup = 48, 32, 1000, 2, 1
    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("bench_logprobs: no CUDA device here, so there is nothing to measure. Run it on a GPU, "
              "or pass --cpu-smoke to check the script on CPU (timings meaningless).", file=sys.stderr)  # fmt: skip
        return 2

    from alignfw.ops.logprobs import logprobs_from_hidden, logprobs_from_logits

    device = "cpu" if args.cpu_smoke else "cuda"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    backend = "triton"  # on CPU this is the interpreter; "auto" would pick torch there
    N, H, V, temp = args.tokens, args.hidden, args.vocab, args.temperature
    torch.manual_seed(0)
    hidden0 = torch.randn(N, H, device=device, dtype=dtype)
    weight0 = (torch.randn(V, H, device=device) * H**-0.5).to(dtype)
    targets = torch.randint(0, V, (N,), device=device)
    targets[::17] = -100
    keep = targets != -100
    g_up = torch.randn(N, device=device)

    def baseline_from_hidden(h, w):
        logits = h @ w.t()  # (N, V)
        logp = (logits.float() / temp).log_softmax(-1)  # (N, V) fp32
        lp = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * keep
        if args.entropy:
            return lp, -(logp.exp() * logp).sum(-1) * keep
        return lp, None

    def fused_from_hidden(recompute):
        def run(h, w):
            out = logprobs_from_hidden(
                h, w, targets, temperature=temp, return_entropy=args.entropy, recompute=recompute, backend=backend
            )
            return out if args.entropy else (out, None)

        return run

    def baseline_from_logits(x):
        logp = (x.float() / temp).log_softmax(-1)
        lp = logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1) * keep
        if args.entropy:
            return lp, -(logp.exp() * logp).sum(-1) * keep
        return lp, None

    def fused_from_logits(x):
        out = logprobs_from_logits(x, targets, temperature=temp, return_entropy=args.entropy, backend=backend)
        return out if args.entropy else (out, None)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    def measure(fn, make_inputs):
        """fwd+bwd of fn: (median ms, peak bytes above the inputs, log-probs of the last run)."""
        times, peak, lp_out = [], 0, None
        for i in range(args.warmup + args.iters):
            inputs = make_inputs()
            sync()
            if device == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            lp, ent = fn(*inputs)
            loss = (lp * g_up).sum() + (ent.sum() if ent is not None else 0)
            loss.backward()
            if device == "cuda":
                end.record()
                sync()
                ms = start.elapsed_time(end)
                peak = max(peak, torch.cuda.max_memory_allocated() - base)
            else:
                ms = (time.perf_counter() - t0) * 1e3
            if i >= args.warmup:
                times.append(ms)
            lp_out = lp.detach()
            del inputs, lp, ent, loss
        return statistics.median(times), peak, lp_out

    def hw():
        return hidden0.clone().requires_grad_(), weight0.clone().requires_grad_()

    logits0 = (hidden0 @ weight0.t()).detach()

    def lg():
        return (logits0.clone().requires_grad_(),)

    rows = []
    for group, cases, make in [
        ("from hidden (h @ W^T inside)", [("log_softmax().gather()", baseline_from_hidden),
                                          ("fused, recompute=False", fused_from_hidden(False)),
                                          ("fused, recompute=True", fused_from_hidden(True))], hw),
        ("from logits", [("log_softmax().gather()", baseline_from_logits), ("fused", fused_from_logits)], lg),
    ]:  # fmt: skip
        ref_ms = ref_peak = ref_lp = None
        for name, fn, in cases:
            ms, peak, lp = measure(fn, make)
            if ref_ms is None:
                ref_ms, ref_peak, ref_lp = ms, peak, lp
            err = (lp.float() - ref_lp.float()).abs().max().item()
            rows.append(dict(
                group=group, impl=name, ms=ms, peak_mib=peak / 2**20,
                speedup=ref_ms / ms, mem_ratio=(peak / ref_peak) if ref_peak else float("nan"), max_abs_diff=err,
            ))  # fmt: skip

    dev = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke: Triton interpreter, timings meaningless)"
    import triton

    print(f"device: {dev}; torch {torch.__version__}, triton {triton.__version__}")
    print(f"tokens={N} hidden={H} vocab={V} dtype={args.dtype} entropy={args.entropy} iters={args.iters}")
    print(f"{'case':<30} {'impl':<24} {'fwd+bwd ms':>11} {'peak MiB':>10} {'speedup':>8} {'mem ratio':>9} {'max|dlp|':>9}")
    for r in rows:
        print(f"{r['group']:<30} {r['impl']:<24} {r['ms']:>11.2f} {r['peak_mib']:>10.1f} "
              f"{r['speedup']:>7.2f}x {r['mem_ratio']:>9.3f} {r['max_abs_diff']:>9.2e}")  # fmt: skip
    if device == "cuda":
        for r in rows:
            if r["impl"].startswith("fused"):
                ok = r["mem_ratio"] <= 0.25 and r["speedup"] >= 1.5
                print(f"target (<= 0.25x memory and >= 1.5x speed) {r['group']} / {r['impl']}: {'MET' if ok else 'NOT met'}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(device=dev, args=vars(args), rows=rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
