"""GAE: TRL's per-timestep torch loop vs alignfw's Rust ``gae`` vs a plain memory copy.

Run::

    python benchmarks/bench_gae.py            # the shapes in RESULTS.md
    python benchmarks/bench_gae.py --repeats 31 --shapes 256x1024 1024x2048
    python benchmarks/bench_gae.py --threads 1     # rayon and torch on one thread each

Timings per shape, float32 on CPU, taken in one run, round-robin (one call of each per round, so that
drifting machine load hits every implementation alike), each the median of ``--repeats`` calls:

* ``trl loop``: the loop from TRL's ``PPOTrainer`` (trl/trainer/ppo_trainer.py, "compute advantages and
  returns"), copied verbatim: vectorised over the batch, a Python loop over T, then ``torch.stack``.
* ``alignfw gae()``: the public API, ``alignfw.ops.gae.gae(rewards, values)``: the Python wrapper, two
  fresh output tensors, and the Rust kernel (``_native.gae_into``, GIL released, rayon over rows).
* ``alignfw gae(out=)``: the public op writing into preallocated outputs (how PPO calls it).
* ``memcpy``: the same bytes GAE must read (rewards, values) and write (advantages, returns), with no
  arithmetic, into preallocated outputs: ``adv.copy_(rewards); ret.copy_(values)`` (torch threads) and
  the same with ``np.copyto`` (one thread). Ratios use the faster of the two: on a small shared machine
  torch's two-thread copy sometimes waits milliseconds for its second thread, and dividing by a stalled
  copy would flatter GAE.
* ``clone``: ``rewards.clone(); values.clone()``: memcpy plus two fresh outputs, the floor for an API
  that returns new tensors as ``gae()`` does.

Fresh outputs cost first-touch page faults wherever the allocator hands back memory the OS reclaimed
(glibc trims freed 8 MiB blocks depending on what else ran); the table prints minor faults per call.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from alignfw.ops.gae import gae

GAMMA, LAM = 1.0, 0.95


def trl_loop(rewards: torch.Tensor, values: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL ``PPOTrainer``'s GAE, verbatim apart from ``self.args.`` -> arguments."""
    lastgaelam = 0
    advantages_reversed = []
    gen_length = rewards.shape[1]
    for t in reversed(range(gen_length)):
        nextvalues = values[:, t + 1] if t < gen_length - 1 else 0.0
        delta = rewards[:, t] + gamma * nextvalues - values[:, t]
        lastgaelam = delta + gamma * lam * lastgaelam
        advantages_reversed.append(lastgaelam)
    advantages = torch.stack(advantages_reversed[::-1], axis=1)
    returns = advantages + values
    return advantages, returns


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shapes", nargs="+", default=["256x1024", "1024x2048"], help="BATCHxT, float32")
    p.add_argument("--repeats", type=int, default=21, help="timed calls per implementation (median reported)")
    p.add_argument("--loop-repeats", type=int, default=5, help="timed calls of the slow TRL loop")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="threads for both rayon (RAYON_NUM_THREADS, read when its pool starts) and torch; default: all cores",
    )
    args = p.parse_args()
    if args.threads is not None:
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before the first native call starts the pool
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical cores, load average {load}; torch {torch.__version__}")
    print(
        f"threads: rayon = {os.environ.get('RAYON_NUM_THREADS', 'all cores (RAYON_NUM_THREADS unset)')}, "
        f"torch.get_num_threads() = {torch.get_num_threads()}"
    )
    print(
        "memcpy = adv.copy_(rewards); ret.copy_(values) into preallocated float32 tensors, or the same with "
        "np.copyto (1 thread),\n  whichever is faster: reads 2 and writes 2 (b, T) arrays, as GAE does. "
        "clone = rewards.clone(); values.clone()."
    )
    print(
        f"gamma={GAMMA}, lam={LAM}, no mask; median of {args.repeats} calls ({args.loop_repeats} for the loop), "
        "round-robin; faults = minor page faults per call (median)"
    )
    for shape in args.shapes:
        b, t = (int(x) for x in shape.split("x"))
        rewards = torch.randn(b, t)
        values = torch.randn(b, t)
        adv_out, ret_out = torch.empty_like(rewards), torch.empty_like(values)
        np_r, np_v, np_a, np_o = rewards.numpy(), values.numpy(), adv_out.numpy(), ret_out.numpy()

        # Same answer before timing anything.
        want_adv, want_ret = trl_loop(rewards, values, GAMMA, LAM)
        got_adv, got_ret = gae(rewards, values, gamma=GAMMA, lam=LAM)
        torch.testing.assert_close(got_adv, want_adv, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got_ret, want_ret, rtol=1e-4, atol=1e-3)

        impls: dict[str, Callable[[], object]] = {
            "trl loop": lambda: trl_loop(rewards, values, GAMMA, LAM),
            "alignfw gae()": lambda: gae(rewards, values, gamma=GAMMA, lam=LAM),
            "alignfw gae(out=)": lambda: gae(rewards, values, gamma=GAMMA, lam=LAM, out=(adv_out, ret_out)),
            "memcpy (torch copy_)": lambda: (adv_out.copy_(rewards), ret_out.copy_(values)),
            "memcpy (np.copyto)": lambda: (np.copyto(np_a, np_r), np.copyto(np_o, np_v)),
            "clone": lambda: (rewards.clone(), values.clone()),
        }
        for name, fn in impls.items():  # warm-up
            for _ in range(1 if name == "trl loop" else 3):
                fn()
        times: dict[str, list[float]] = {name: [] for name in impls}
        faults: dict[str, list[int]] = {name: [] for name in impls}
        for i in range(args.repeats):
            for name, fn in impls.items():
                if name == "trl loop" and i >= args.loop_repeats:
                    continue
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                times[name].append(timed(fn))
                faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
        med = {name: statistics.median(x) for name, x in times.items()}
        memcpy = min(med["memcpy (torch copy_)"], med["memcpy (np.copyto)"])
        print(f"\n{shape} float32 ({b * t * 4 / 2**20:.0f} MiB per array)")
        for name in impls:
            print(f"  {name:<22} {med[name] * 1e3:9.3f} ms   faults {statistics.median(faults[name]):6.0f}")
        print(
            f"  speedup vs trl loop:  gae() {med['trl loop'] / med['alignfw gae()']:.0f}x, "
            f"gae(out=) {med['trl loop'] / med['alignfw gae(out=)']:.0f}x"
        )
        print(
            f"  vs copying the bytes: gae(out=) / memcpy {med['alignfw gae(out=)'] / memcpy:.2f}x, "
            f"gae() / clone {med['alignfw gae()'] / med['clone']:.2f}x, gae() / memcpy {med['alignfw gae()'] / memcpy:.2f}x"
        )


if __name__ == "__main__":
    main()
