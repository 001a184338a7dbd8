"""Build the built-in tiny model (``plugins/models/tiny/``) from scratch on this machine's CPU.

    python scripts/build_tiny_model.py            # ~1 minute on 2 cores

1. Trains a byte-level BPE vocabulary on the demo task's text with alignfw's own Rust trainer
   (``alignfw.tokenizer``; the same merges as Hugging Face's ``BpeTrainer`` at these settings).
2. Pre-trains a 2-layer GPT-2 (about 0.1 M parameters) on *noisy* translations of the built-in
   task (``alignfw.plugins.data.tiny_task``): each word is translated correctly with probability
   ``--p-correct`` and by the decoy dictionary otherwise, so the model starts as a plausible but
   mostly wrong policy that reinforcement learning from a BLEU reward can improve.
3. Saves it in Hugging Face format (safetensors) with its tokenizer.

Everything is seeded; the committed files are this script's output with the default arguments.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
from pathlib import Path

import torch

from alignfw.models import save_tokenizer
from alignfw.plugins.data.tiny_task import CORRECT, DECOY, SOURCE, TinyTask, TinyTaskConfig, prompt_of, translate

OUT = Path(__file__).resolve().parents[1] / "plugins" / "models" / "tiny"
EOS, PAD = "<|endoftext|>", "<|pad|>"


def noisy_translation(words: list[str], rng: random.Random, p_correct: float) -> str:
    return " " + " ".join(CORRECT[w] if rng.random() < p_correct else DECOY[w] for w in words)


def corpus(task: TinyTask, n: int, rng: random.Random, p_correct: float) -> list[tuple[str, str]]:
    seqs = task.sequences("train", n)
    return [(prompt_of(w), noisy_translation(w, rng, p_correct)) for w in seqs]


def train_tokenizer(texts: list[str], vocab_size: int, out: Path):
    """GPT-2 pre-tokenizer, 256 byte-level symbols, two special tokens (ids 0 and 1)."""
    from alignfw.tokenizer import Tokenizer

    tok = Tokenizer.train_from_iterator(texts, vocab_size, special_tokens=[EOS, PAD], pattern="gpt2")
    fast = tok.to_hf(eos_token=EOS, bos_token=EOS, pad_token=PAD, padding_side="left")
    save_tokenizer(fast, out)
    return fast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--p-correct", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--vocab-size", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    task = TinyTask(TinyTaskConfig(seed=args.seed))
    pairs = corpus(task, 20000, rng, args.p_correct)
    tmp = Path(tempfile.mkdtemp())
    # the vocabulary sees every word in both dictionaries
    vocab_text = [p + r + EOS for p, r in pairs] + [prompt_of(SOURCE) + translate(SOURCE) + translate(SOURCE, DECOY)]
    tok = train_tokenizer(vocab_text, args.vocab_size, tmp)

    cfg = GPT2Config(
        vocab_size=len(tok), n_positions=64, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    model.train()
    for step in range(args.steps):
        batch = [pairs[rng.randrange(len(pairs))] for _ in range(args.batch_size)]
        prompts = [p for p, _ in batch]
        full = [p + r + EOS for p, r in batch]
        enc = tok(full, return_tensors="pt", padding=True)
        ids, mask = enc["input_ids"], enc["attention_mask"]
        labels = ids.masked_fill(mask == 0, -100)
        # learn only the response: mask the prompt tokens (left padding shifts them)
        plen = [len(tok(p)["input_ids"]) for p in prompts]
        pad = (mask == 0).sum(1)
        for i in range(len(batch)):
            labels[i, : pad[i] + plen[i]] = -100
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        loss = model(input_ids=ids, attention_mask=mask, position_ids=pos, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 250 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.4f}")

    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    model.generation_config.pad_token_id = tok.pad_token_id
    # Trained with GPT-2's gelu_new; gelu_pytorch_tanh is the same tanh approximation (largest difference
    # 2.4e-7) in one kernel instead of five elementwise ops: ~10% of a CPU PPO step on this model.
    model.config.activation_function = "gelu_pytorch_tanh"
    model.save_pretrained(args.out, safe_serialization=True)
    save_tokenizer(tok, args.out)
    (args.out / "alignfw_tiny.json").write_text(json.dumps({k: getattr(args, k) for k in ("p_correct", "steps", "batch_size", "lr", "vocab_size", "seed")}, indent=2) + "\n")
    shutil.rmtree(tmp)
    print(f"saved to {args.out} ({sum(p.numel() for p in model.parameters())} parameters)")


if __name__ == "__main__":
    main()
