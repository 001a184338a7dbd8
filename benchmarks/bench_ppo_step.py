"""A whole PPO step: alignfw's ``PPO.step`` vs Hugging Face TRL's ``PPOTrainer``, same tiny model, one run.

Run::

    python benchmarks/bench_ppo_step.py                       # the two settings in RESULTS.md
    python benchmarks/bench_ppo_step.py --steps 21 --warmup 3 --settings 64x16x16
    python benchmarks/bench_ppo_step.py --profile 5          # then profile alignfw (cProfile, torch.profiler)
    python benchmarks/bench_ppo_step.py --gelu-tanh          # both sides with a one-kernel GELU (same math)

Needs TRL with ``trl.experimental.ppo``: ``pip install "trl>=1.12,<1.13"`` (tested with 1.12.0, the last
release that ships PPO; 1.13 removed it). Exits 2 with one line if it is missing. Everything is local:
no hub access.

What runs, per setting ``BxMBxR`` (rollout batch, minibatch, max new tokens), float32 on CPU:

* **alignfw**: ``PPO`` built through the plugin registry's factories, as ``python -m alignfw model=tiny
  +algo=ppo +reward=reward_model`` builds it (the shipped tiny GPT-2, its tuned preset
  conf/preset/tiny_ppo.yaml: lr 5e-4, 4 epochs, kl_coef 0.1, vf_coef 0.1; ``reward.batch_size = B``),
  timed around ``algo.step(records)``. Its steps run in a worker thread of their own, as TRL's do, so
  each side allocates from its own glibc arena (the main thread's arena trims freed activations and
  page-faults them back in, which made alignfw's phases look slower in a first version).
* **TRL**: ``trl.experimental.ppo.PPOTrainer`` with the same policy, reference and reward model and
  the same hyper-parameters, driven by its public ``train()``. Its loop runs in a worker thread and a
  ``TrainerCallback`` holds it at ``on_step_end`` until the main thread lets one more step go, so the
  two frameworks alternate step by step (round-robin: the VM's noise hits both alike). A TRL step is
  timed from the release to its next ``on_step_end``: one whole iteration of its loop.
* Both score responses with one reward model (a ``GPT2ForSequenceClassification`` on the tiny model's
  trunk with a seeded random head, saved to a temp dir): alignfw loads it through its
  ``reward_model`` plugin, TRL gets it as ``reward_model``. Both see the same prompts at each step
  (the demo task's records, in ``batch_for_step`` order, TRL's shuffling dataloader replaced by a
  fixed-order one).

Matched: policy and reference (``from_pretrained(plugins/models/tiny)``), fp32, torch threads (one
process, ``--threads``, default 1 as alignfw picks for models under 10M parameters), sampling
(temperature 1, top-k 0, top-p 1, stop at EOS, responses truncated after the first EOS), batch,
minibatch (TRL: ``num_mini_batches = B / MB``, ``gradient_accumulation_steps = 1``, so both take one
optimizer step per minibatch), PPO epochs, clip ranges, k1 KL with a fixed coefficient, gamma, lambda,
advantage whitening, lr (TRL's scheduler set to constant), AdamW (TRL's ``optim`` set to ``adamw_torch``,
alignfw's optimizer; TRL's default on torch >= 2.8 is the fused one).

Not matched, by design of the two frameworks (each side runs its own recipe):

* value model: TRL trains a separate value network (``value_model``, here the tiny trunk with a
  one-output head), so every rollout and every minibatch runs two trunks forward (and backward);
  alignfw puts a value head on the policy's trunk (one trunk pass gives log-probs and values);
* reward input: alignfw's reward plugins take text (decode, re-tokenise prompt + response); TRL's
  reward model reads the token ids;
* TRL does not clip gradients in its PPO loop; alignfw clips to ``max_grad_norm`` 1.0;
* TRL logs stats, runs ``gc.collect()`` twice and computes a full-softmax entropy each minibatch;
  these are part of its step and are timed.

Phases (ms, median over timed steps): alignfw ``generate`` | ``reward`` (text reward model) |
``score`` (policy + value, reference) | ``gae+whiten`` | ``update`` (epochs x minibatches) | rest.
TRL ``generate`` | ``score`` (log-probs from generate's logits, reference, value model, reward model)
| ``gae+whiten`` (its Python GAE loop, plus the gc.collect() after scoring) | ``update`` (epochs,
plus stats and logging) | rest (data loading, cleanup) | gc.collect (TRL's two calls per step, already
counted in gae+whiten and rest). A full collection walks every live Python object: ~450k once
``trl.experimental.ppo`` is imported (torch alone: ~190k; alignfw adds ~3k), ~180 ms each on the 2-core
VM, so it is TRL's own cost; the TRL step is also shown without it, the compute-only comparison.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import cProfile
import gc
import importlib
import io
import os
import platform
import pstats
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

try:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    import trl
    from trl.experimental.ppo import PPOConfig as TRLPPOConfig
    from trl.experimental.ppo import PPOTrainer
except ImportError as e:  # TRL missing, or a TRL without PPO (>= 1.13)
    print(f"bench_ppo_step: needs TRL with trl.experimental.ppo (pip install 'trl>=1.12,<1.13'): {e}", file=sys.stderr)
    sys.exit(2)

import transformers
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback

from alignfw.config import RolloutConfig
from alignfw.pipeline import batch_for_step
from alignfw.plugins.algorithms.ppo import PPOConfig
from alignfw.plugins.data.tiny_task import TinyTask, TinyTaskConfig
from alignfw.plugins.models.hf import BUILTIN, HFModelConfig
from alignfw.plugins.rewards.reward_model import RewardModelConfig
from alignfw.registry import BuildContext, get_registry

TINY = BUILTIN["tiny"]
# conf/preset/tiny_ppo.yaml
LR, EPOCHS, KL_COEF, VF_COEF = 5e-4, 4, 0.1, 0.1
A_PHASES = ("generate", "reward", "score", "gae+whiten", "update", "rest")
T_PHASES = ("generate", "score", "gae+whiten", "update", "rest", "gc.collect")
_current = threading.local()  # .side: the AlignfwSide or TRLSide whose step runs in this thread


def minor_faults() -> int:
    """Minor page faults of the calling thread so far (first touches of freshly mapped memory)."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


def use_tanh_gelu(*models: torch.nn.Module) -> int:
    """``--gelu-tanh``: swap GPT-2's ``gelu_new`` (a Python chain of pow/mul/add/tanh, ~8 kernels and as
    many saved tensors) for ``nn.GELU(approximate="tanh")`` (the same formula in one kernel; max
    difference 2.4e-7 in fp32). Applied to every model on both sides. Returns the number swapped."""
    from transformers.activations import NewGELUActivation

    n = 0
    for model in models:
        for m in model.modules():
            if isinstance(getattr(m, "act", None), NewGELUActivation):
                m.act = torch.nn.GELU(approximate="tanh")
                n += 1
    return n


def make_reward_model(path: Path) -> None:
    """The tiny trunk with a seeded one-output head, saved with the tokenizer (both frameworks load it)."""
    torch.manual_seed(1234)
    rm = AutoModelForSequenceClassification.from_pretrained(TINY, num_labels=1, dtype=torch.float32)
    rm.config.pad_token_id = 1
    rm.save_pretrained(path)
    AutoTokenizer.from_pretrained(TINY).save_pretrained(path)


# -- alignfw --------------------------------------------------------------------------------------


class AlignfwSide:
    def __init__(self, b: int, mb: int, r: int, rm_dir: Path, run_dir: str, gelu_tanh: bool) -> None:
        reg = get_registry()
        ctx = BuildContext(reg, torch.device("cpu"), run_dir, seed=0, rollout=RolloutConfig(max_new_tokens=r, temperature=1.0, top_k=0, top_p=1.0))
        ctx.model = reg.get("model", "hf_causal_lm").build(HFModelConfig(path="builtin:tiny", dtype="float32"), ctx)
        # one reward-model forward per rollout, as TRL's local_rollout_forward_batch_size = B does
        rm_cfg = RewardModelConfig(path=str(rm_dir), batch_size=b, dtype="float32")
        ctx.reward = reg.get("reward", "reward_model").build(rm_cfg, ctx)
        cfg = PPOConfig(lr=LR, ppo_epochs=EPOCHS, minibatch_size=mb, kl_coef=KL_COEF, vf_coef=VF_COEF)
        self.algo = reg.get("algorithm", "ppo").build(cfg, ctx)
        if gelu_tanh:
            use_tanh_gelu(self.algo.model.lm, self.algo.ref, self.algo.reward.model)
        self.stamps: dict[str, float] = {}
        self.resp_len: list[float] = []
        self.width: list[int] = []
        self.faults: list[int] = []
        self._instrument()
        # steps run in a worker thread of their own, as TRL's do: each side then allocates from its
        # own glibc arena, and neither gets the main thread's (which trims and page-faults differently)
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)

    def _instrument(self) -> None:
        """Time stamps around the pieces ``PPO.step`` calls (wrappers only; library code unchanged)."""
        algo = self.algo

        def wrap(fn, start: str, end: str, after=None):
            def inner(*a, **k):
                st = _current.side.stamps  # the side whose step runs in this thread
                st[start] = time.perf_counter()
                out = fn(*a, **k)
                st[end] = time.perf_counter()
                if after is not None:
                    after(out)
                return out

            inner.__wrapped__ = fn
            return inner

        algo.model.generate = wrap(algo.model.generate, "gen0", "gen1", lambda g: self.width.append(g.response_mask.shape[1]))
        algo._optimize = wrap(algo._optimize, "upd0", "upd1")
        mod = sys.modules[type(algo).__module__]
        rollout_mod = sys.modules["alignfw.rollout"]
        if not hasattr(mod.gae, "__wrapped__"):  # module globals: once per process, for every side
            rollout_mod.compute_rewards = wrap(rollout_mod.compute_rewards, "rw0", "rw1")  # called by rollout()
            mod.gae = wrap(mod.gae, "gae0", "gae1")

    def step(self, records) -> tuple[float, dict[str, float]]:
        return self._pool.submit(self._step, records).result()

    def _step(self, records) -> tuple[float, dict[str, float]]:
        _current.side = self
        self.stamps.clear()
        f0 = minor_faults()
        t0 = time.perf_counter()
        stats = self.algo.step(records)
        t1 = time.perf_counter()
        self.faults.append(minor_faults() - f0)
        s = self.stamps
        self.resp_len.append(stats["response/length"])
        phases = {
            "generate": s["gen1"] - s["gen0"],
            "reward": s["rw1"] - s["rw0"],
            "score": s["gae0"] - s["rw1"],
            "gae+whiten": s["upd0"] - s["gae0"],
            "update": s["upd1"] - s["upd0"],
        }
        phases["rest"] = (t1 - t0) - sum(phases.values())
        return t1 - t0, phases


# -- TRL ------------------------------------------------------------------------------------------


class TRLSide:
    """TRL's PPOTrainer.train() in a worker thread, released one step at a time."""

    def __init__(self, b: int, mb: int, r: int, rm_dir: Path, out_dir: str, prompts: list[str], gelu_tanh: bool) -> None:
        tok = AutoTokenizer.from_pretrained(TINY)
        tok.padding_side = "left"
        policy = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
        ref = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
        torch.manual_seed(4321)
        value = AutoModelForSequenceClassification.from_pretrained(TINY, num_labels=1, dtype=torch.float32)
        value.config.pad_token_id = tok.pad_token_id
        reward = AutoModelForSequenceClassification.from_pretrained(rm_dir, dtype=torch.float32)
        if gelu_tanh:
            use_tanh_gelu(policy, ref, value, reward)
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        from datasets import Dataset

        ds = Dataset.from_dict({"input_ids": ids})
        n_steps = len(prompts) // b
        args = TRLPPOConfig(
            output_dir=out_dir,
            per_device_train_batch_size=b,
            gradient_accumulation_steps=1,
            num_mini_batches=b // mb,
            num_ppo_epochs=EPOCHS,
            learning_rate=LR,
            lr_scheduler_type="constant",
            optim="adamw_torch",
            weight_decay=0.0,
            adam_epsilon=1e-8,
            response_length=r,
            temperature=1.0,
            stop_token="eos",
            kl_coef=KL_COEF,
            kl_estimator="k1",
            vf_coef=VF_COEF,
            cliprange=0.2,
            cliprange_value=0.2,
            gamma=1.0,
            lam=0.95,
            whiten_rewards=False,
            missing_eos_penalty=None,
            local_rollout_forward_batch_size=b,
            total_episodes=b * n_steps,
            num_sample_generations=0,
            bf16=False,
            fp16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            logging_steps=10**9,
            seed=0,
        )
        self.trainer = PPOTrainer(
            args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
            train_dataset=ds, value_model=value, eval_dataset=ds.select(range(b)),
        )
        for cb in list(self.trainer.callback_handler.callbacks):  # console output is no part of a step
            if type(cb).__name__ in ("PrinterCallback", "ProgressCallback"):
                self.trainer.remove_callback(type(cb))
        # the prompts of step k are alignfw's prompts of step k: fixed order instead of shuffling
        self.trainer.dataloader = torch.utils.data.DataLoader(
            ds, batch_size=b, shuffle=False, collate_fn=self.trainer.data_collator, drop_last=True
        )
        self.mixed_precision = self.trainer.accelerator.mixed_precision
        opt = self.trainer.optimizer
        self.optimizer = type(getattr(opt, "optimizer", opt)).__name__  # inside accelerate's wrapper
        self.stamps: dict[str, float] = {}
        self.resp_len: list[float] = []
        self.width: list[int] = []
        self.faults: list[int] = []
        self._instrument()
        self._go = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self._error: BaseException | None = None
        side = self

        class Gate(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                _current.side = side  # this thread's side, for the module-level wrappers
                side._go.acquire()
                side._f0 = minor_faults()

            def on_step_end(self, args, state, control, **kw):
                side.stamps["end"] = time.perf_counter()
                side.faults.append(minor_faults() - side._f0)
                side._done.release()
                side._go.acquire()
                side._f0 = minor_faults()

        self.trainer.add_callback(Gate())
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.trainer.train()
        except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
            self._error = e
        finally:
            self._done.release()

    @staticmethod
    def _instrument() -> None:
        """Time stamps around the trainer module's helpers, once per process; each call writes to the
        TRLSide whose ``train()`` runs in the calling thread."""
        mod = importlib.import_module(PPOTrainer.__module__)
        if hasattr(mod.get_reward, "__wrapped__"):
            return
        bg, fwd, get_reward = mod.batch_generation, mod.forward, mod.get_reward

        def batch_generation(model, queries, *a, **k):
            side = _current.side
            side.stamps.setdefault("gen0", time.perf_counter())
            out = bg(model, queries, *a, **k)
            side.stamps["gen1"] = time.perf_counter()
            side.width.append(out[0].shape[1] - queries.shape[1])
            return out

        def forward(model, *a, **k):
            if isinstance(model, mod.PolicyAndValueWrapper):  # the first update forward
                _current.side.stamps.setdefault("upd0", time.perf_counter())
            return fwd(model, *a, **k)

        def reward(model, query_responses, pad_token_id, context_length):
            side = _current.side
            out = get_reward(model, query_responses, pad_token_id, context_length)
            side.stamps["score1"] = time.perf_counter()  # the last get_reward call ends scoring
            if model is side.trainer.reward_model:
                side.resp_len.append((query_responses[:, context_length:] != pad_token_id).sum(1).float().mean().item())
            return out

        class TimedGC:  # the trainer module's ``gc``: time its gc.collect() calls
            def __getattr__(self, name):
                return getattr(gc, name)

            @staticmethod
            def collect(*a):
                t0 = time.perf_counter()
                out = gc.collect(*a)
                st, dt = _current.side.stamps, time.perf_counter() - t0
                st["gc"] = st.get("gc", 0.0) + dt
                if "score1" in st and "upd0" not in st:  # the call between scoring and the update
                    st["gc_adv"] = st.get("gc_adv", 0.0) + dt
                return out

        reward.__wrapped__ = get_reward
        mod.batch_generation, mod.forward, mod.get_reward, mod.gc = batch_generation, forward, reward, TimedGC()

    def step(self) -> tuple[float, dict[str, float]]:
        self.stamps.clear()
        t0 = time.perf_counter()
        self._go.release()
        self._done.acquire()
        if self._error is not None:
            raise RuntimeError("TRL's train() failed") from self._error
        s = self.stamps
        t1 = s["end"]
        phases = {
            "generate": s["gen1"] - s["gen0"],
            "score": s["score1"] - s["gen1"],
            "gae+whiten": s["upd0"] - s["score1"],
            "update": t1 - s["upd0"],
        }
        phases["rest"] = (t1 - t0) - sum(phases.values())
        phases["gc.collect"] = s.get("gc", 0.0)  # inside gae+whiten and rest
        phases["gc_adv"] = s.get("gc_adv", 0.0)  # the part inside gae+whiten (not printed as a phase)
        return t1 - t0, phases

    def finish(self) -> None:
        self._go.release()
        self.thread.join(timeout=60)


# -- the run --------------------------------------------------------------------------------------


def run_setting(spec: str, args: argparse.Namespace, tmp: Path) -> None:
    b, mb, r = (int(x) for x in spec.split("x"))
    n_total = args.warmup + args.steps
    records = TinyTask(TinyTaskConfig()).records("train")
    batches = [[records[i] for i in batch_for_step(len(records), b, k, 0)] for k in range(n_total + 2 * args.profile)]
    rm_dir = tmp / f"rm_{spec}"
    make_reward_model(rm_dir)

    torch.manual_seed(0)
    a = AlignfwSide(b, mb, r, rm_dir, str(tmp / f"alignfw_{spec}"), args.gelu_tanh)
    prompts = [rec.prompt for batch in batches[:n_total] for rec in batch]
    t = TRLSide(b, mb, r, rm_dir, str(tmp / f"trl_{spec}"), prompts, args.gelu_tanh)
    # same prompt ids on both sides
    want, _ = a.algo.model.encode_prompts([rec.prompt for rec in batches[0]])
    got = t.trainer.data_collator([{"input_ids": x} for x in t.trainer.dataloader.dataset[:b]["input_ids"]])["input_ids"]
    assert torch.equal(want, got), "alignfw and TRL tokenise the prompts differently"
    torch.set_num_threads(args.threads)  # again, in case a library changed it

    nparams = sum(p.numel() for p in a.algo.model.lm.parameters())
    print(
        f"\n== setting {spec}: batch {b}, minibatch {mb} ({b // mb} optimizer steps per epoch), {EPOCHS} epochs, "
        f"max_new_tokens {r}; policy {nparams / 1e3:.0f}k params fp32"
        f"{', GELU: tanh (--gelu-tanh)' if args.gelu_tanh else ''} =="
    )
    print(f"TRL: accelerate mixed_precision={t.mixed_precision}, optimizer {t.optimizer}")

    times: dict[str, list[float]] = {"alignfw": [], "trl": []}
    phases: dict[str, list[dict[str, float]]] = {"alignfw": [], "trl": []}
    for k in range(n_total):
        order = ("alignfw", "trl") if k % 2 == 0 else ("trl", "alignfw")  # alternate who goes first
        for side in order:
            dt, ph = a.step(batches[k]) if side == "alignfw" else t.step()
            if k >= args.warmup:
                times[side].append(dt)
                phases[side].append(ph)
    t.finish()
    assert torch.get_num_threads() == args.threads, torch.get_num_threads()

    med = {s: statistics.median(v) for s, v in times.items()}
    timed = slice(args.warmup, None)
    print(f"median of {args.steps} steps after {args.warmup} warm-up, round-robin; torch threads {torch.get_num_threads()}")
    for s, name, names in (("alignfw", "alignfw PPO.step", A_PHASES), ("trl", "TRL PPOTrainer", T_PHASES)):
        lens = (a if s == "alignfw" else t).resp_len[timed]
        width = (a if s == "alignfw" else t).width[timed]
        spread = f"[{min(times[s]) * 1e3:.0f}-{max(times[s]) * 1e3:.0f}]"
        print(
            f"  {name:<17} {med[s] * 1e3:8.1f} ms/step {spread:<12} response length {statistics.mean(lens):5.1f} tokens "
            f"(generated width {statistics.mean(width):4.1f}), "
            f"{statistics.median((a if s == 'alignfw' else t).faults[timed]):.0f} page faults/step"
        )
        parts = "  ".join(f"{p} {statistics.median(x[p] for x in phases[s]) * 1e3:.1f}" for p in names)
        print(f"    phases ms: {parts}")
    ratio = med["alignfw"] / med["trl"]
    print(f"  ratio alignfw / TRL step time: {ratio:.2f}x  (TRL / alignfw: {1 / ratio:.2f}x)")
    no_gc = statistics.median(dt - ph["gc.collect"] for dt, ph in zip(times["trl"], phases["trl"]))
    print(
        f"  TRL step without its two gc.collect() calls: {no_gc * 1e3:.1f} ms; "
        f"alignfw / that: {med['alignfw'] / no_gc:.2f}x"
    )
    gen_pos = {  # generate time / generated width: generation stops when every row has ended, so
        s: statistics.median(ph["generate"] / w for ph, w in zip(phases[s], side.width[timed]))  # the width varies
        for s, side in (("alignfw", a), ("trl", t))
    }
    pa = {p: statistics.median(x[p] for x in phases["alignfw"]) for p in A_PHASES}
    pt = {p: statistics.median(x[p] for x in phases["trl"]) for p in T_PHASES}
    trl_gae = statistics.median(x["gae+whiten"] - x["gc_adv"] for x in phases["trl"])
    print(
        "  phase ratios alignfw / TRL: "
        f"generate {pa['generate'] / pt['generate']:.2f}x (per generated position {gen_pos['alignfw'] / gen_pos['trl']:.2f}x), "
        f"scoring (reward + score) {(pa['reward'] + pa['score']) / pt['score']:.2f}x, "
        f"gae+whiten {pa['gae+whiten'] / pt['gae+whiten']:.2f}x ({pa['gae+whiten'] / trl_gae:.2f}x of TRL's "
        f"{trl_gae * 1e3:.1f} ms without its gc.collect), update {pa['update'] / pt['update']:.2f}x"
    )

    if args.profile:
        profile_alignfw(a, batches[n_total:], spec, args.profile, args.profile_lines)


def profile_alignfw(a: AlignfwSide, batches: list, spec: str, n: int, lines: int) -> None:
    """``--profile N``: N more alignfw steps under cProfile (Python functions), then N under
    torch.profiler (aten ops, self CPU time), in alignfw's worker thread (both see only their thread)."""
    from torch.profiler import ProfilerActivity, profile

    prof = cProfile.Profile()

    def profiled():
        prof.enable()
        for k in range(n):
            a._step(batches[k])
        prof.disable()
        with profile(activities=[ProfilerActivity.CPU]) as tp:
            for k in range(n, 2 * n):
                a._step(batches[k])
        return tp

    tp = a._pool.submit(profiled).result()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(lines)
    print(f"\ncProfile of {n} more alignfw steps ({spec}), by own time:")
    print("\n".join(line for line in buf.getvalue().splitlines() if line.strip()))
    print(f"\ntorch.profiler over {n} more alignfw steps ({spec}), by self CPU time:")
    print(tp.key_averages().table(sort_by="self_cpu_time_total", row_limit=lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", nargs="+", default=["64x16x16", "256x64x40"], help="BATCHxMINIBATCHxMAX_NEW_TOKENS")
    p.add_argument("--steps", type=int, default=15, help="timed steps per framework (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per framework first")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for both (alignfw's choice for this model: 1)")
    p.add_argument(
        "--gelu-tanh", action="store_true", help="both sides: gelu_new -> nn.GELU(approximate='tanh') (same math, one kernel)"
    )
    p.add_argument("--profile", type=int, default=0, help="cProfile this many extra alignfw steps after timing")
    p.add_argument("--profile-lines", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} logical cores, load average {load}")
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
        f"trl {trl.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="bench_ppo_step_") as d:
        for spec in args.settings:
            run_setting(spec, args, Path(d))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nload average at the end: {load}; peak RSS of the process (both frameworks, not separable): {rss:.0f} MiB")


if __name__ == "__main__":
    main()
