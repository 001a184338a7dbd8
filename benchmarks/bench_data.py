"""Preference data, end to end: alignfw's data path vs ``datasets.map`` with Hugging Face's tokenizer.

Generates (seeded) a JSONL preference dataset, ``--rows`` rows of ``prompt``/``chosen``/``rejected``
with lengths drawn from log-normal distributions (median 40 words of prompt and 60 of
response, long tails up to 1500 words), then tokenizes it, in one process, two ways:

- alignfw: the JSONL data source (``FileSource``, what ``data=jsonl`` reads into records), then
  prompts, chosen and rejected responses encoded as the DPO path encodes them
  (``alignfw.models.chat.encode_texts`` with alignfw's Rust tokenizer, the prompt prefix in front,
  EOS after each response: ``CausalLM.encode_pairs``' ids before padding), in chunks of ``--chunk`` rows;
- datasets: ``load_dataset("json", ...)`` then ``.map(fn, batched=True)`` where ``fn`` calls the
  Hugging Face fast tokenizer the same way (``add_special_tokens=False, split_special_tokens=True``,
  as TRL's DPO ``tokenize_row`` calls it), with ``num_proc`` 1 and 2 (``--procs``). Each run gets a
  fresh cache directory, so nothing is reused from an earlier run; the time includes the JSON to
  Arrow conversion and the Arrow writes that ``load_dataset`` and ``.map`` do (they are part of
  what they cost).

The ids of all three columns are checked identical between the two. Printed per run: wall time,
CPU time (this process and its children), CPU utilisation (CPU / wall; above 1 means threads or
processes ran in parallel), rows/s, and the time split between reading and tokenizing; the load
average at start and end says how busy the machine was. Usage::

    python benchmarks/bench_data.py                      # 100k rows, a byte-level BPE trained here
    python benchmarks/bench_data.py --tokenizer DIR      # any tokenizer alignfw implements

The default tokenizer is a 16384-token byte-level BPE with the Llama 3 pre-tokenizer, trained by
alignfw on the first 20000 generated rows and saved as a ``transformers`` tokenizer.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

_SYLLABLES = "ka to ri an el mo su ne vi ra lo tu pe sa mi do fe ga hi jo ku le ma no pa qu re si ta ve wo xa yu ze ch st th br pl gr".split()
#: what follows a word: mostly a space, sometimes punctuation, a line break, a number or non-ASCII text
_SEPS = [" "] * 80 + [", ", ". ", ".\n", "? ", "! ", ": ", "; ", " - ", " (", ") ", "'s ", "n't ", "\n\n", "\n- ", "  ", "\t"]
_SEPS += [" 1. ", " 2026 ", " 3.14 ", " 100% ", " e.g. ", " café ", " naïve ", " über ", " 日本語 ", " 🙂 ", "\n```\nx = f(1)\n```\n"]


def _vocabulary(rng: random.Random, n: int) -> tuple[list[str], list[float]]:
    """``n`` made-up words of 1-4 syllables (one in twelve capitalised) and Zipf weights (rank r: 1 / r)."""
    words = sorted({"".join(rng.choices(_SYLLABLES, k=rng.choice((1, 1, 2, 2, 2, 3, 3, 4)))) for _ in range(n * 2)})[:n]
    rng.shuffle(words)
    words = [w.capitalize() if i % 12 == 11 else w for i, w in enumerate(words)]
    return words, [1.0 / r for r in range(1, len(words) + 1)]


def _text(rng: random.Random, words: list[str], cum_weights: list[float], median: float) -> str:
    n = max(1, min(1500, round(rng.lognormvariate(math.log(median), 0.8))))
    seps = rng.choices(_SEPS, k=n - 1) + [""]
    return "".join(w + s for w, s in zip(rng.choices(words, cum_weights=cum_weights, k=n), seps))


def generate(path: Path, rows: int, seed: int) -> None:
    """Write ``rows`` seeded preference rows to ``path`` (JSONL)."""
    rng = random.Random(seed)
    words, weights = _vocabulary(rng, 30000)
    weights = list(itertools.accumulate(weights))
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for _ in range(rows):
            row = {"prompt": _text(rng, words, weights, 40), "chosen": _text(rng, words, weights, 60), "rejected": _text(rng, words, weights, 60)}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def default_tokenizer(data: Path, out: Path):
    """A byte-level BPE (Llama 3 pre-tokenizer, 16384 tokens) trained on the data's first 20000 rows."""
    from transformers import AutoTokenizer

    from alignfw.tokenizer import Tokenizer

    if not (out / "tokenizer.json").is_file():
        with open(data, encoding="utf-8") as f:
            texts = [t for _, line in zip(range(20000), f) for t in json.loads(line).values()]
        tok = Tokenizer.train_from_iterator(texts, 16384, special_tokens=["<|endoftext|>", "<|pad|>"], pattern="llama3")
        tok.to_hf(eos_token="<|endoftext|>", pad_token="<|pad|>").save_pretrained(str(out))
    return AutoTokenizer.from_pretrained(str(out))


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Clock:
    """Wall and CPU seconds since creation, with named splits."""

    def __init__(self) -> None:
        self.wall0, self.cpu0, self.splits = time.perf_counter(), cpu_seconds(), []

    def split(self, name: str) -> None:
        self.splits.append((name, time.perf_counter() - self.wall0, cpu_seconds() - self.cpu0))

    def total(self) -> tuple[float, float]:
        """Wall and CPU seconds up to the last split (what comes after it is not timed)."""
        return self.splits[-1][1], self.splits[-1][2]


def run_alignfw(data: Path, hf, native, chunk: int) -> tuple[dict[str, list[list[int]]], Clock]:
    from alignfw.models import chat
    from alignfw.plugins.data.sources import FileSource, JsonlConfig

    clock = Clock()
    records = FileSource(JsonlConfig(path=str(data), kind="preference")).records("train")
    clock.split("read (FileSource -> records)")
    prefix, eos = chat.prompt_prefix(hf), hf.eos_token_id
    out: dict[str, list[list[int]]] = {"prompt": [], "chosen": [], "rejected": []}
    for i in range(0, len(records), chunk):
        batch = records[i : i + chunk]
        prompts = [r.prompt for r in batch]
        out["prompt"] += [prefix + ids for ids in chat.encode_texts(prompts, hf, native)]
        for key in ("chosen", "rejected"):
            texts = [getattr(r, key) for r in batch]
            out[key] += [chat.response_ids(ids, t, eos) for ids, t in zip(chat.encode_texts(texts, hf, native), texts)]
    clock.split("tokenize (encode_texts, prefix, EOS)")
    return out, clock


def run_datasets(data: Path, hf, num_proc: int, cache: Path) -> tuple[dict[str, list[list[int]]], Clock]:
    import datasets

    from alignfw.models import chat

    prefix, eos = chat.prompt_prefix(hf), hf.eos_token_id

    def fn(batch):
        enc = lambda texts: hf(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]  # noqa: E731
        return {
            "prompt_input_ids": [prefix + ids for ids in enc(batch["prompt"])],
            "chosen_input_ids": [ids + [eos] for ids in enc(batch["chosen"])],
            "rejected_input_ids": [ids + [eos] for ids in enc(batch["rejected"])],
        }

    clock = Clock()
    ds = datasets.load_dataset("json", data_files=str(data), split="train", cache_dir=str(cache))
    clock.split("read (load_dataset json -> arrow)")
    ds = ds.map(fn, batched=True, num_proc=num_proc if num_proc > 1 else None, desc=None)
    clock.split(f"tokenize (.map, num_proc={num_proc}, arrow write)")
    table = ds.data  # outside the timing: the ids as Python lists, to compare
    out = {k: table.column(f"{k}_input_ids").to_pylist() for k in ("prompt", "chosen", "rejected")}
    return out, clock


def report(name: str, rows: int, clock: Clock, base: tuple[float, float] | None) -> tuple[float, float]:
    """Print one run's line and its splits; ``base``: alignfw's (wall, CPU), the ratios' denominators."""
    wall, cpu = clock.total()
    bw, bc = base or (wall, cpu)
    print(f"{name:<28} {wall:8.2f} s {cpu:8.2f} s {cpu / wall:8.2f} {rows / wall:9,.0f} {wall / bw:8.2f}x {cpu / bc:8.2f}x")
    last_w = last_c = 0.0
    for split, w, c in clock.splits:
        print(f"    {split:<44} {w - last_w:7.2f} s wall {c - last_c:7.2f} s CPU")
        last_w, last_c = w, c
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("outputs/bench_data"))
    ap.add_argument("--tokenizer", type=Path, help="a tokenizer directory (default: a byte-level BPE trained on the data)")
    ap.add_argument("--procs", default="1,2", help="num_proc values for datasets.map")
    ap.add_argument("--chunk", type=int, default=4096, help="rows per alignfw encode call")
    args = ap.parse_args()

    import datasets
    import tokenizers
    import transformers

    datasets.disable_progress_bars()

    from alignfw.models import native_tokenizer

    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"preference_{args.rows}_{args.seed}.jsonl"
    if not data.is_file():
        t = time.perf_counter()
        generate(data, args.rows, args.seed)
        print(f"generated {data} in {time.perf_counter() - t:.1f} s")
    hf = transformers.AutoTokenizer.from_pretrained(str(args.tokenizer)) if args.tokenizer else default_tokenizer(data, args.out / "tokenizer")
    native = native_tokenizer(hf)
    if native is None:
        sys.exit(f"{args.tokenizer}: alignfw does not implement this tokenizer's family; pick a byte-level BPE, WordPiece, SentencePiece or Unigram one")

    size = data.stat().st_size / 2**20
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} logical cores, load {os.getloadavg()[0]:.2f} at start; "
        f"datasets {datasets.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, "
        f"TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', '(unset)')}"
    )
    print(f"data: {args.rows:,} rows, {size:.1f} MiB JSONL; tokenizer: {native.family}, {len(hf):,} tokens ({args.tokenizer or 'trained here'})")
    print(f"{'':<28} {'wall':>10} {'CPU':>10} {'CPU/wall':>8} {'rows/s':>9} {'wall/af':>9} {'CPU/af':>9}   (af: alignfw's)")

    ids, clock = run_alignfw(data, hf, native, args.chunk)
    base = report("alignfw (Rust tokenizer)", args.rows, clock, None)
    n_tokens = sum(len(x) for col in ids.values() for x in col)
    for procs in [int(p) for p in args.procs.split(",") if p]:
        gc.collect()
        cache = Path(tempfile.mkdtemp(prefix="hfcache_", dir=args.out))
        try:
            got, clock = run_datasets(data, hf, procs, cache)
            report(f"datasets.map num_proc={procs}", args.rows, clock, base)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        for key in ids:
            bad = next((i for i, (a, b) in enumerate(zip(ids[key], got[key])) if a != b), None)
            if bad is not None or len(ids[key]) != len(got[key]):
                sys.exit(f"MISMATCH in {key} at row {bad}: alignfw {ids[key][bad][:20]} vs datasets {got[key][bad][:20]}")
        del got
    print(f"ids identical in all {3 * args.rows:,} fields ({n_tokens:,} tokens); load {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
