"""Seeded per-row sampling (``alignfw.models.sampling.SeededSampler``) against what
``transformers``' sampling does per token (``softmax`` + ``torch.multinomial`` on one generator),
side by side in one run, for vocabulary sizes of real models.

    python benchmarks/bench_sampling.py                 # CPU
    python benchmarks/bench_sampling.py --device cuda   # GPU

Both take float32 scores ``(b, V)`` after the warpers and return one token per row; the seeded
sampler also makes each row's token independent of the batch (the reason it exists), for the
cost printed here.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from alignfw.models.sampling import SeededSampler, mix


def timed(fn, repeat: int, sync) -> float:
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical cores, load {os.getloadavg()[0]:.1f}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {dev}; median of {args.repeat} calls per token step")  # fmt: skip
    print(f"{'rows x vocab':>16}  {'multinomial':>12}  {'seeded':>10}  {'multinomial / seeded':>21}")
    for b, V in [(16, 32_000), (16, 151_936), (64, 128_256), (256, 151_936)]:
        scores = torch.randn(b, V, device=dev)
        ids = torch.zeros(b, 8, dtype=torch.long, device=dev)
        sampler = SeededSampler([mix(0, i) for i in range(b)])

        def multinomial() -> torch.Tensor:
            return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1)

        def seeded() -> torch.Tensor:
            return sampler(ids, scores).argmax(-1)

        t_m, t_s = timed(multinomial, args.repeat, sync), timed(seeded, args.repeat, sync)
        print(f"{f'{b} x {V}':>16}  {t_m * 1e3:>9.2f} ms  {t_s * 1e3:>7.2f} ms  {t_m / t_s:>20.2f}x")


if __name__ == "__main__":
    main()
