"""The demo's figures, in one place: run every algorithm's demo command, record what it prints,
and write the figures README quotes.

    python scripts/demo_figures.py            # run the demos (10-20 min on 2 cores), rewrite docs/demo_figures.json and README
    python scripts/demo_figures.py --render   # rewrite README's quoted blocks from docs/demo_figures.json only
    python scripts/demo_figures.py --check    # exit 1 if README's blocks differ from docs/demo_figures.json

``docs/demo_figures.json`` is the single source: README's blocks between ``<!-- demo:NAME -->``
and ``<!-- /demo:NAME -->`` are rendered from it (``tests/test_demo_figures.py`` checks they
match), and config headers point to it instead of quoting numbers. The figures depend on the
CPU (torch picks different kernels on AVX2 and AVX-512 machines, and sampling trajectories
diverge), so the file records the machine they came from.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = REPO / "docs" / "demo_figures.json"
README = REPO / "README.md"

#: name -> the demo command's arguments (after ``python -m alignfw``)
RUNS: dict[str, list[str]] = {
    "ppo": ["+reward=bleu", "+algo=ppo"],
    "ppo_seed1": ["+reward=bleu", "+algo=ppo", "seed=1"],
    "ppo_seed2": ["+reward=bleu", "+algo=ppo", "seed=2"],
    "grpo": ["+reward=bleu", "+algo=grpo"],
    "rloo": ["+reward=bleu", "+algo=rloo"],
    "reinforce": ["+reward=bleu", "+algo=reinforce"],
    "sft": ["+algo=sft", "data.kind=sft"],
    "sft_ranking": ["+algo=sft_ranking", "data.kind=ranked"],
    "dpo": ["+algo=dpo", "data.kind=preference"],
    "reward_model": ["+algo=reward_model", "data.kind=preference"],
}

#: algorithm -> (metric, label, format) of its README table cell
HEADLINE = {
    "ppo": ("eval/reward", "BLEU", "{:.3f}"),
    "grpo": ("eval/reward", "BLEU", "{:.3f}"),
    "rloo": ("eval/reward", "BLEU", "{:.3f}"),
    "reinforce": ("eval/reward", "BLEU", "{:.3f}"),
    "sft": ("eval/loss", "held-out NLL (nats/token)", "{:.3f}"),
    "sft_ranking": ("eval/top1", "best answer ranked first", "{:.2f}"),
    "dpo": ("eval/rewards/accuracies", "preference accuracy", "{:.2f}"),
    "reward_model": ("eval/accuracy", "pairwise accuracy", "{:.2f}"),
}


def machine() -> dict[str, str | int]:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def run_all(names: list[str]) -> dict:
    runs = {}
    for name in names:
        args = RUNS[name]
        with tempfile.TemporaryDirectory() as tmp:
            env = {**os.environ, "ALIGNFW_REPORT": "0"}
            load = os.getloadavg()[0]
            t0 = time.perf_counter()
            cmd = [sys.executable, "-m", "alignfw", *args, "run.progress=false", f"hydra.run.dir={tmp}/run"]
            r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if r.returncode:
                sys.exit(f"{name}: `python -m alignfw {' '.join(args)}` failed:\n{r.stderr[-3000:]}")
            summary = json.loads(Path(tmp, "run", "summary.json").read_text())
        runs[name] = {
            "command": "python -m alignfw " + " ".join(args),
            "start": summary["start"],
            "final": summary["final"],
            "wall_s": round(wall, 1),
            "load_before": round(load, 2),
        }
        print(f"{name}: {runs[name]['start']} -> {runs[name]['final']} ({wall:.0f} s)", flush=True)
    return {"date": datetime.date.today().isoformat(), "machine": machine(), "runs": runs}


# -- rendering ----------------------------------------------------------------------------------


def _change(run: dict, key: str, fmt: str) -> str:
    return f"{fmt.format(run['start'][key])} → {fmt.format(run['final'][key])}"


def render(fig: dict) -> dict[str, str]:
    """README's blocks, by name."""
    m, runs = fig["machine"], fig["runs"]
    where = f"{fig['date']}, {m['cores']}-core {m['cpu']}, torch {m['torch']}, CPU kernels {m['torch_cpu_capability']}"
    ppo = runs["ppo"]
    a, b = ppo["start"]["eval/reward"], ppo["final"]["eval/reward"]
    seeds = "; ".join(
        f"seed {s}: {_change(runs[f'ppo_seed{s}'], 'eval/reward', '{:.3f}')}, KL {runs[f'ppo_seed{s}']['final']['eval/kl']:.1f}"
        for s in (1, 2)
        if f"ppo_seed{s}" in runs
    )
    main = (
        f"Measured by `python scripts/demo_figures.py` ({where}; figures differ on other CPUs): held-out BLEU "
        f"{a:.3f} → {b:.3f} ({(b - a) / abs(a) * 100:+.0f} %), KL to the reference {ppo['final']['eval/kl']:.2f} nats per "
        f"response, response length {_change(ppo, 'eval/length', '{:.2f}')} tokens, {ppo['wall_s']:.0f} s wall with start-up "
        f"(load average {ppo['load_before']:.1f} before the run)"
        + (f". Other seeds ({seeds})." if seeds else ".")
    )
    rows = []
    for algo, (key, label, fmt) in HEADLINE.items():
        run = runs[algo]
        cell = f"{label} {_change(run, key, fmt)}" + (f", KL {run['final']['eval/kl']:.1f}" if "eval/kl" in run["final"] else "")
        rows.append(f"| `{algo}` | `{run['command'].removeprefix('python -m alignfw ')}` | {cell} |")
    table = (
        f"Held-out figures of each demo ({where}; `python scripts/demo_figures.py` regenerates them):\n\n"
        "| algorithm | command | start → end |\n|---|---|---|\n" + "\n".join(rows)
    )
    return {"main": main, "algorithms": table}


def _blocks(text: str) -> dict[str, tuple[int, int]]:
    return {mt.group(1): (mt.start(2), mt.end(2)) for mt in re.finditer(r"<!-- demo:(\w+) -->\n(.*?)\n?<!-- /demo:\1 -->", text, re.S)}


def apply(text: str, blocks: dict[str, str]) -> str:
    spans = _blocks(text)
    missing = set(blocks) - set(spans)
    if missing:
        sys.exit(f"README.md has no <!-- demo:NAME --> block for {sorted(missing)}")
    for name in sorted(blocks, key=lambda n: spans[n][0], reverse=True):
        s, e = spans[name]
        text = text[:s] + blocks[name] + "\n" + text[e:].lstrip("\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--render", action="store_true", help="rewrite README from docs/demo_figures.json only")
    g.add_argument("--check", action="store_true", help="exit 1 if README differs from docs/demo_figures.json")
    ap.add_argument("--only", nargs="*", choices=sorted(RUNS), help="re-run these demos only (others kept from the file)")
    args = ap.parse_args()
    if not (args.render or args.check):
        fig = run_all(args.only or list(RUNS))
        if args.only and FIGURES.exists():
            fig["runs"] = {**json.loads(FIGURES.read_text())["runs"], **fig["runs"]}
        FIGURES.write_text(json.dumps(fig, indent=2) + "\n")
    fig = json.loads(FIGURES.read_text())
    text = README.read_text()
    new = apply(text, render(fig))
    if args.check:
        if new != text:
            sys.exit("README.md's demo figures differ from docs/demo_figures.json: run python scripts/demo_figures.py --render")
        return
    README.write_text(new)


if __name__ == "__main__":
    main()
