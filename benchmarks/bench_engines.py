"""Generation engines side by side (issue 13): rollout tokens/s and a whole GRPO step, ``hf`` (the
policy's ``transformers`` generate) vs ``vllm`` (colocated vLLM, weights synced in place), on a
randomly initialised Qwen2-0.5B-shaped policy (24 layers, hidden 896, 14 heads of 64, 2 KV heads,
MLP 4864, vocabulary 151,936, tied embeddings), fp32, in one process.

Random weights rarely emit EOS, so every response runs to ``--new-tokens``: both engines decode the
same number of tokens. The built-in tiny tokenizer stands in for Qwen2's (no hub here), reporting
Qwen2's 151,665 tokens so that both engines leave out the same 271 padded rows of the embedding as
for a real Qwen2 (sampled ids it does not know decode to nothing; the reward is irrelevant here). Each figure is the median of ``--repeat``
timed calls (rollouts after one warm-up call; GRPO steps after the warm rollouts); the vLLM
engine's start (building it from the policy, loading its weights) is printed separately. Runs in the venv that has vLLM (``bash scripts/vllm_venv.sh``)::

    .venv-vllm/bin/python benchmarks/bench_engines.py --group 2 --new-tokens 16 --repeat 1 --eager
    .venv-vllm/bin/python benchmarks/bench_engines.py --layers 4      # a quick look

The first (RESULTS.md's figures) takes ~15 minutes on 2 busy cores; the defaults, ~40.

On a GPU the same command measures the GPU (the policy goes to CUDA when one is there).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from alignfw.config import RolloutConfig
from alignfw.engines import engine_for
from alignfw.models import CausalLM, resolve_model_path
from alignfw.registry import BuildContext, get_registry
from alignfw.rollout import rollout
from alignfw.types import Record

QWEN2_TOKENS = 151665  # Qwen2's tokenizer; its embedding has 151,936 rows

PROMPTS = [
    "translate English to French: the cat sleeps on the warm red chair",
    "translate English to French: my brother eats bread with cheese every morning",
    "translate English to French: why is the sky blue in the afternoon",
    "translate English to French: three small birds sing in the garden",
]


def qwen2_half_b(layers: int, device: torch.device) -> CausalLM:
    """A random Qwen2-0.5B-shaped policy with the built-in tokenizer."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tok = AutoTokenizer.from_pretrained(resolve_model_path("builtin:tiny"))
    tok.__class__ = type("Qwen2SizedTokenizer", (type(tok),), {"__len__": lambda self: QWEN2_TOKENS})
    cfg = Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=layers, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, torch_dtype="float32",
    )  # fmt: skip
    torch.manual_seed(0)
    return CausalLM(Qwen2ForCausalLM(cfg).to(device), tok, device, max_length=512)


def median_time(fn, repeat: int, warmup: bool = True) -> tuple[float, object]:
    if warmup:
        fn()
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


@torch.no_grad()
def sync_time(model: CausalLM, rollout_cfg: RolloutConfig) -> float:
    """Seconds of one ``sync_weights`` after every weight changed (as after an optimizer step)."""
    for p in model.lm.parameters():
        p.mul_(1.0 + 1e-6)
    engine = engine_for(model, rollout_cfg)
    t = time.perf_counter()
    engine.sync_weights(model)
    return time.perf_counter() - t


def grpo_step_time(model: CausalLM, rollout_cfg: RolloutConfig, records: list[Record], group: int, repeat: int) -> float:
    """Seconds of one whole GRPO step (rollout, weight sync, scoring, update) with ``rollout_cfg``'s engine."""
    from alignfw.plugins.algorithms.grpo import GRPO, GRPOConfig

    ctx = BuildContext(get_registry(), device=model.device, rollout=rollout_cfg, model=model)
    ctx.reward = lambda p, r, recs: [sum(c in "aeiou" for c in x) / max(len(x), 1) for x in r]
    cfg = GRPOConfig(lr=1e-6, num_generations=group, minibatch_size=len(records) * group, beta=0.0)
    algo = GRPO(cfg, ctx)
    seconds, _ = median_time(lambda: algo.step(records), repeat, warmup=False)  # the engine is warm already
    del algo
    model.lm.zero_grad(set_to_none=True)  # the next engine's run starts with the same memory
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=24, help="decoder layers (Qwen2-0.5B: 24)")
    ap.add_argument("--group", type=int, default=4, help="samples per prompt (GRPO's G)")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--engines", default="hf,vllm")
    ap.add_argument("--eager", action="store_true", help="vLLM without torch.compile (rollout.engine.enforce_eager)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = qwen2_half_b(args.layers, device)
    n_params = sum(p.numel() for p in model.lm.parameters())
    records = [Record(prompt=p) for p in PROMPTS]
    b = len(records) * args.group
    print(f"policy: Qwen2-0.5B-shaped, {args.layers} layers, {n_params / 1e6:.0f}M parameters, fp32, {device}")
    print(f"rollout: {len(records)} prompts x {args.group} samples = {b} sequences x {args.new_tokens} new tokens, temperature 1.0")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    rows = []
    for name in args.engines.split(","):
        options = None
        if name == "vllm":
            from alignfw.plugins.engines.vllm import VLLMConfig

            options = VLLMConfig(kv_cache_gib=2.0, gpu_memory_utilization=0.3, enforce_eager=args.eager)
        cfg = RolloutConfig(engine=options, max_new_tokens=args.new_tokens, temperature=1.0)
        t = time.perf_counter()
        engine_for(model, cfg)
        start = time.perf_counter() - t
        seconds, ro = median_time(lambda: rollout(model, lambda p, r, recs: [0.0] * len(p), records, cfg, group_size=args.group), args.repeat)
        tokens = int(ro.mask.sum())
        sync = sync_time(model, cfg)
        step = grpo_step_time(model, cfg, records, args.group, args.repeat)
        rows.append((name, start, tokens, seconds, tokens / seconds, sync, step))
        print(f"  {name}: start {start:.1f} s, rollout {seconds:.2f} s for {tokens} tokens = {tokens / seconds:.1f} tokens/s, "
              f"weight sync {sync:.2f} s, GRPO step {step:.2f} s", flush=True)  # fmt: skip
    print()
    print("| engine | engine start (s) | rollout (s) | response tokens | tokens/s | weight sync (s) | GRPO step (s) |")
    print("|---|---|---|---|---|---|---|")
    for name, start, tokens, seconds, rate, sync, step in rows:
        print(f"| {name} | {start:.1f} | {seconds:.2f} | {tokens} | {rate:.1f} | {sync:.2f} | {step:.2f} |")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":  # vLLM's workers import the main module: keep the run behind this guard
    main()
