"""Single-thread byte-level encode of one alignfw build against tiktoken, in one process: the loop of
``bench_bpe.py`` (one ``encode(doc)`` per document, results kept), best of 3 passes, for the GPT-2 and
Llama-3 vocabularies ``bench_bpe.py``'s training settings give. Run it alternately with two builds
installed in two venvs to compare them on a machine whose speed drifts (tiktoken, in the same
process, is the yardstick)::

    python benchmarks/make_corpus.py outputs/bench_bpe/corpus.txt --mb 24
    python benchmarks/bpe_ab.py outputs/bench_bpe/corpus.txt --label new   # writes the vocabularies once
    for i in 1 2 3; do old/bin/python benchmarks/bpe_ab.py outputs/bench_bpe/corpus.txt --label old
                       .venv/bin/python benchmarks/bpe_ab.py outputs/bench_bpe/corpus.txt --label new; done
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tiktoken
from alignfw.tokenizer import Tokenizer


def vocabulary(corpus: Path, text: str, pattern: str) -> Tokenizer:
    """The vocabulary of ``bench_bpe.py`` (32768 tokens, min frequency 2, the corpus' first 8 MiB),
    saved next to the corpus so that every build reads the same file."""
    path = corpus.parent / f"{pattern}.json"
    if not path.is_file():
        train = corpus.parent / "train8.txt"
        train.write_text(text[: 8 << 20], encoding="utf-8")
        Tokenizer.train([train], 32768, min_frequency=2, special_tokens=["<|endoftext|>"], pattern=pattern).save(path)
    return Tokenizer.from_file(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--label", default="alignfw")
    args = ap.parse_args()
    text = args.corpus.read_text(encoding="utf-8")
    docs = text.split("\n\n")
    mb = len(text.encode()) / 2**20
    out = []
    for pattern in ("gpt2", "llama3"):
        tok = vocabulary(args.corpus, text, pattern)
        native = tok._native
        enc = tiktoken.Encoding(
            name=pattern,
            pat_str=native.pattern,
            mergeable_ranks=dict(native.byte_vocab()),
            special_tokens={s: i for s, i, _ in native.added_tokens()},
        )
        [tok.encode(d) for d in docs], [enc.encode_ordinary(d) for d in docs]  # warm caches
        ours, theirs = [], []
        for _ in range(3):
            start = time.process_time()
            ids = [tok.encode(d) for d in docs]
            ours.append(time.process_time() - start)
            del ids
            start = time.process_time()
            ids = [enc.encode_ordinary(d) for d in docs]
            theirs.append(time.process_time() - start)
            del ids
        a, t = min(ours), min(theirs)
        out.append(f"{pattern}: alignfw {mb / a:6.1f} MiB/s  tiktoken {mb / t:5.1f}  ratio {t / a:5.2f}x")
    print(f"{args.label:8s}", " | ".join(out), flush=True)


if __name__ == "__main__":
    main()
