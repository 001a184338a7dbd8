"""Single-thread byte-level encode of several builds of ``alignfw._native`` in one process, pass by pass
in turn: the fairest comparison on a machine whose speed drifts by 1.5x within minutes (runs of
``bpe_ab.py`` in separate processes only compare through tiktoken's figure). Each build is a compiled
extension (``cargo build --release -p alignfw-py`` gives ``target/release/lib_native.so``; an
installed wheel has ``alignfw/_native.abi3.so``); the first one named is the baseline::

    git worktree add /tmp/start 1861525 && (cd /tmp/start && cargo build --release -p alignfw-py)
    cargo build --release -p alignfw-py
    python benchmarks/bpe_builds.py outputs/bench_bpe/corpus.txt \\
        start=/tmp/start/target/release/lib_native.so now=target/release/lib_native.so --passes 7

Every build must give the same ids on every document (checked first). The loop is ``bpe_ab.py``'s
(one ``encode(doc)`` per document, results kept until the pass ends); each figure is the best pass,
in process CPU time, on the corpus' documents that fit in ``--mb`` MiB.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import sys
import time
from pathlib import Path

from bpe_ab import vocabulary


def load(path: str):
    """The extension at ``path``, loaded under its own name without replacing an installed one."""
    loader = importlib.machinery.ExtensionFileLoader("alignfw._native", path)
    spec = importlib.util.spec_from_file_location("alignfw._native", path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    saved = sys.modules.pop("alignfw._native", None)
    try:
        loader.exec_module(module)
    finally:
        if saved is not None:
            sys.modules["alignfw._native"] = saved
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("builds", nargs="+", metavar="LABEL=PATH")
    ap.add_argument("--passes", type=int, default=7)
    ap.add_argument("--mb", type=float, default=10.0)
    args = ap.parse_args()
    builds = {}
    for spec in args.builds:
        label, sep, path = spec.partition("=")
        if not sep or not Path(path).is_file():
            ap.error(f"{spec!r}: expected LABEL=PATH to a built extension")
        builds[label] = load(path)
    text = args.corpus.read_text(encoding="utf-8")
    docs, size = [], 0
    for doc in text.split("\n\n"):
        size += len(doc.encode()) + 2
        if size > args.mb * 2**20:
            break
        docs.append(doc)
    mb = sum(len(d.encode()) for d in docs) / 2**20
    print(f"{len(docs)} documents, {mb:.1f} MiB; best of {args.passes} passes, CPU time", flush=True)
    for pattern in ("gpt2", "llama3"):
        vocabulary(args.corpus, text, pattern)  # trains and saves it on the first run
        json = (args.corpus.parent / f"{pattern}.json").read_text(encoding="utf-8")
        toks = {label: m.BpeTokenizer.from_json(json) for label, m in builds.items()}
        first = None
        for label, tok in toks.items():  # also warms each build's piece cache
            ids = [tok.encode(d) for d in docs]
            if first is not None and ids != first:
                sys.exit(f"{label} gives other ids than {next(iter(toks))} ({pattern})")
            first = first or ids
        del first, ids
        best = dict.fromkeys(toks, float("inf"))
        for _ in range(args.passes):
            for label, tok in toks.items():
                encode = tok.encode
                start = time.process_time()
                ids = [encode(d) for d in docs]
                best[label] = min(best[label], time.process_time() - start)
                del ids
        base = best[next(iter(best))]
        row = "  ".join(f"{label} {mb / t:6.1f} MiB/s ({base / t:.2f}x)" for label, t in best.items())
        print(f"{pattern:7s} {row}", flush=True)


if __name__ == "__main__":
    main()
