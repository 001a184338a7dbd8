"""Step time and peak memory of PPO, GRPO and DPO on a real architecture, full fine-tuning vs LoRA,
side by side.

The model is a randomly initialised Qwen2 with Qwen2-0.5B's shape (hidden 896, 14 query / 2
key-value heads, MLP 4864, vocabulary 151,936, tied embeddings; 24 layers, fewer with
``--layers`` to fit a CPU run), saved once with ``save_pretrained`` and loaded through alignfw's
``hf_causal_lm`` plugin like any user model. Each (algorithm, mode) runs in its own process, so
its peak memory is its own: peak resident memory on CPU, ``torch.cuda.max_memory_allocated`` on
a GPU. The configurations run round-robin, ``--rounds`` times, and the median step time is kept:
the machine's noise hits every configuration alike.

    python benchmarks/bench_real_model.py                      # CPU: 4 layers, batch 4
    python benchmarks/bench_real_model.py --layers 24 --device cuda --batch 16 --precision bf16

Prints one line per configuration and the LoRA / full ratios of step time and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ALGOS = ("ppo", "grpo", "dpo")
MODES = ("full", "lora")


def make_model(out: Path, layers: int) -> None:
    """A random Qwen2-0.5B-shaped model and a byte-level tokenizer (the built-in one, its ids mapped
    into the big vocabulary's range)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from alignfw.models import resolve_model_path, save_tokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny"))
    cfg = Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1e6,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    save_tokenizer(tok, out)


def one(args: argparse.Namespace) -> None:
    """Child process: build the components for one configuration, time ``--steps`` steps after one warm-up."""
    import torch

    from alignfw.config import AlignfwConfig
    from alignfw._hydra import named_config
    from alignfw.pipeline import Trainer
    from alignfw.registry import get_registry

    reg = get_registry()
    cfg = AlignfwConfig(seed=0, device=args.device)
    model_opts = {"path": args.model, "precision": args.precision, "fast_tokenizer": True}
    if args.mode == "lora":
        model_opts["lora"] = {"enabled": True, "r": 16, "alpha": 32.0, "target_modules": "all-linear"}
    model_cls = named_config(reg.get("model", "hf_causal_lm").config, "hf_causal_lm")
    lora_cls = type(model_cls().lora)
    if "lora" in model_opts:
        model_opts["lora"] = lora_cls(**model_opts["lora"])
    cfg.model = model_cls(**model_opts)
    kind = "preference" if args.algo == "dpo" else "reference"
    cfg.data = named_config(reg.get("data", "tiny_task").config, "tiny_task")(kind=kind)
    if args.algo != "dpo":
        cfg.reward = named_config(reg.get("reward", "bleu").config, "bleu")()
    algo_opts = {"lr": 1e-6}
    if args.algo == "ppo":
        algo_opts.update(ppo_epochs=1, minibatch_size=args.batch)
    elif args.algo == "grpo":
        algo_opts.update(num_generations=2, minibatch_size=2 * args.batch)
    else:
        algo_opts.update(micro_batch_size=args.batch, warmup_steps=0)
    cfg.algo = named_config(reg.get("algorithm", args.algo).config, args.algo)(**algo_opts)
    cfg.rollout.max_new_tokens = args.new_tokens
    cfg.run.progress = False
    cfg.run.batch_size = args.batch
    trainer = Trainer(cfg, Path(tempfile.mkdtemp()))
    records = trainer.train_records
    times = []
    for s in range(args.steps + 1):
        batch = records[s * args.batch : (s + 1) * args.batch]
        if args.device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        trainer.algo.step(batch)
        if args.device == "cuda":
            torch.cuda.synchronize()
        if s:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    if args.device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    trainable = sum(p.numel() for p in trainer.model.trainable_parameters())
    print(json.dumps({"step_s": statistics.median(times), "peak_mib": peak, "trainable": trainable}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=4, help="Qwen2-0.5B has 24")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--batch", type=int, default=4, help="prompts (DPO: pairs) per step")
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=2, help="timed steps per process, after one warm-up")
    ap.add_argument("--rounds", type=int, default=2, help="round-robin passes over the configurations")
    ap.add_argument("--algos", nargs="*", default=list(ALGOS), choices=ALGOS)
    ap.add_argument("--child", nargs=3, metavar=("ALGO", "MODE", "MODEL"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.algo, args.mode, args.model = args.child
        one(args)
        return

    import torch

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "qwen2-0.5b-shape"
        make_model(model, args.layers)
        n = sum(p.numel() for p in __import__("safetensors.torch", fromlist=["load_file"]).load_file(str(model / "model.safetensors")).values())
        print(
            f"Qwen2-0.5B shape, {args.layers} layers, {n / 1e6:.0f}M parameters, random weights; device {args.device}, "
            f"precision {args.precision}, batch {args.batch}, {args.new_tokens} new tokens; torch {torch.__version__}, "
            f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
        )
        results: dict[tuple[str, str], list[dict]] = {}
        for _ in range(args.rounds):
            for algo in args.algos:
                for mode in MODES:
                    cmd = [sys.executable, __file__, "--child", algo, mode, str(model)]
                    cmd += ["--device", args.device, "--precision", args.precision, "--batch", str(args.batch)]
                    cmd += ["--new-tokens", str(args.new_tokens), "--steps", str(args.steps)]
                    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "ALIGNFW_REPORT": "0"})
                    if r.returncode:
                        sys.exit(f"{algo} {mode} failed:\n{r.stderr[-3000:]}")
                    results.setdefault((algo, mode), []).append(json.loads(r.stdout.strip().splitlines()[-1]))
        unit = "peak GPU MiB" if args.device == "cuda" else "peak RSS MiB"
        for algo in args.algos:
            row = {}
            for mode in MODES:
                rs = results[(algo, mode)]
                row[mode] = (statistics.median(r["step_s"] for r in rs), max(r["peak_mib"] for r in rs), rs[0]["trainable"])
                print(f"{algo:5s} {mode:5s}  step {row[mode][0]:7.2f} s   {unit} {row[mode][1]:8.0f}   trainable {row[mode][2] / 1e6:8.2f}M")
            (tf, mf, _), (tl, ml, _) = row["full"], row["lora"]
            print(f"{algo:5s} lora/full: step time {tl / tf:.2f}x, peak memory {ml / mf:.2f}x")


if __name__ == "__main__":
    main()
