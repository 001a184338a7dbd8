"""Smoke test of an installed alignfw wheel, run by the interpreter that has it installed.

Not a pytest module: ``tests/test_packaging.py`` runs it in fresh venvs (oldest and newest supported
Python), under qemu for the aarch64 wheel, and the release workflow runs it on every platform it
builds for. It must run from outside the repository so that ``alignfw`` comes from the wheel.

Checks, each failing with a message:
  1. ``alignfw._native`` (the abi3 extension) loads, and ``import alignfw.tokenizer`` imports no torch.
  2. The Rust BPE trains a vocabulary, round-trips text (Unicode, a special token's spelling kept as
     plain text unless allowed), saves and reloads ``tokenizer.json``, and encodes a batch on threads
     exactly as one by one; the tokenizer shipped with the built-in tiny model loads and encodes.
  3. The Rust GAE equals a NumPy loop of the same recursion (Schulman et al. 2015, eq. 11-16).
  4. With torch installed: ``alignfw.ops.gae`` (masked) equals ``alignfw.ops.reference_gae``.
  5. ``--main-job DIR``: ``python -m alignfw +reward=bleu +algo=ppo`` runs a few steps in DIR and
     writes a final model.

Usage: ``python wheel_smoke.py [--main-job DIR]``; prints one ``ok`` line per check.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

# Few, small steps: this proves the installed wheel runs the job, not that PPO learns.
MAIN_JOB = [
    "+reward=bleu", "+algo=ppo", "run.steps=2", "run.batch_size=8", "run.eval_size=8", "run.eval_every=0",
    "rollout.max_new_tokens=8", "hydra.run.dir=out",
]


def check(cond: bool, what: str) -> None:
    if not cond:
        raise SystemExit(f"FAIL: {what}")


def native_and_imports() -> None:
    import alignfw._native as native

    check(hasattr(native, "BpeTokenizer") and hasattr(native, "gae_into"), "alignfw._native lacks its API")
    import alignfw.tokenizer  # noqa: F401

    check("torch" not in sys.modules, "import alignfw.tokenizer imported torch")
    where = f"{platform.machine()} Python {platform.python_version()}"
    print(f"ok: alignfw._native loads from {native.__file__} on {where}; no torch imported")


def tokenizer() -> None:
    from alignfw.tokenizer import Tokenizer

    corpus = [
        "the quick brown fox jumps over the lazy dog",
        "naïve café, 你好世界, emoji 😀 and tabs\tand\r\nnewlines",
        "translate: big cat sees the fish = grosse katze sieht den fisch",
    ] * 20
    tok = Tokenizer.train_from_iterator(corpus, vocab_size=300, special_tokens=["<|endoftext|>"])
    check(len(tok) == 300, f"trained vocabulary has {len(tok)} tokens, not 300")
    eot = tok.special_token_id("<|endoftext|>")
    text = "the lazy café 😀 sees <|endoftext|>"
    ids = tok.encode(text)
    check(tok.decode(ids) == text, "decode(encode(text)) != text")
    check(eot not in ids, "a special token's spelling in plain text became the special token")
    check(tok.encode(text, allowed_special="all")[-1] == eot, "allowed_special='all' did not produce the special id")
    check(len(ids) < len(text.encode()), "training merged nothing")
    with tempfile.TemporaryDirectory() as d:
        again = Tokenizer.from_file(tok.save(d))
    check(again.encode(text) == ids, "tokenizer.json did not reload to the same ids")
    texts = [t + str(i) for i, t in enumerate(corpus)]
    check(tok.encode_batch(texts, num_threads=2) == [tok.encode(t) for t in texts], "encode_batch != encode")

    shipped = importlib.resources.files("alignfw.plugins.models") / "tiny" / "tokenizer.json"
    with importlib.resources.as_file(shipped) as path:
        tiny = Tokenizer.from_file(path)
    prompt = "translate: big cat sees the fish ="
    check(tiny.decode(tiny.encode(prompt)) == prompt, "the tiny model's tokenizer does not round-trip its prompt")
    print(f"ok: BPE train/encode/decode/save/batch; shipped tiny tokenizer ({len(tiny)} tokens) loads")


def numpy_gae(rewards, values, gamma: float, lam: float):
    import numpy as np

    adv = np.zeros_like(rewards)
    last = np.zeros(rewards.shape[0], dtype=rewards.dtype)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else 0.0
        last = rewards[:, t] + gamma * next_value - values[:, t] + gamma * lam * last
        adv[:, t] = last
    return adv, adv + values


def gae() -> None:
    import numpy as np

    from alignfw import _native

    rng = np.random.default_rng(0)
    rewards = rng.standard_normal((5, 33)).astype(np.float32)
    values = rng.standard_normal((5, 33)).astype(np.float32)
    adv, ret = _native.gae(rewards, values, None, gamma=0.99, lam=0.95)
    want_adv, want_ret = numpy_gae(rewards.astype(np.float64), values.astype(np.float64), 0.99, 0.95)
    check(np.allclose(adv, want_adv, rtol=1e-5, atol=1e-5), "Rust GAE advantages differ from the NumPy loop")
    check(np.allclose(ret, want_ret, rtol=1e-5, atol=1e-5), "Rust GAE returns differ from the NumPy loop")
    print("ok: Rust GAE == NumPy reference")

    try:
        import torch
    except ImportError:
        print("ok: torch not installed; alignfw.ops skipped")
        return
    from alignfw.ops import gae as ops_gae
    from alignfw.ops import reference_gae

    r, v = torch.from_numpy(rewards), torch.from_numpy(values)
    mask = torch.ones_like(r)
    mask[1, 20:] = 0  # right padding
    mask[3, 5:9] = 0  # a hole (tool output inside a response)
    for got, want in zip(ops_gae(r, v, mask, gamma=0.99, lam=0.95), reference_gae(r, v, mask, gamma=0.99, lam=0.95)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    print(f"ok: alignfw.ops.gae == reference_gae with masks (torch {torch.__version__})")


def main_job(run_dir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNFW_")}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2"})
    run_dir.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        [sys.executable, "-m", "alignfw", *MAIN_JOB], cwd=run_dir, env=env, capture_output=True, text=True, timeout=900
    )
    check(r.returncode == 0, f"the main job exited {r.returncode}:\n{r.stderr[-3000:]}")
    check("held-out reward" in r.stdout, f"the main job printed no held-out reward:\n{r.stdout[-2000:]}")
    check((run_dir / "out" / "final" / "model.safetensors").is_file(), "the main job wrote no final model")
    line = next(s for s in r.stdout.splitlines() if "held-out reward" in s)
    print(f"ok: main job ({line.strip()})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--main-job", type=Path, metavar="DIR", help="also run the PPO main job in DIR")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    import alignfw

    check(here not in Path(alignfw.__file__).resolve().parents, f"alignfw imported from the repository ({alignfw.__file__})")
    native_and_imports()
    tokenizer()
    gae()
    if args.main_job:
        main_job(args.main_job)


if __name__ == "__main__":
    main()
