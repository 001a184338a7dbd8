"""The multi-process path (DESIGN.md, "Scale"): two CPU processes on gloo.

The end-to-end tests launch the real command under torchrun
(``python -m torch.distributed.run --standalone --nproc_per_node=2 -m alignfw ...``); the helper
tests spawn two processes with ``torch.multiprocessing`` and compare collectives against the
single-process computation on the concatenated data.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_cli

TINY = ["run.progress=false", "run.eval_size=8", "rollout.max_new_tokens=8"]


def torchrun(*args: str, cwd: Path, nproc: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=nproc -m alignfw ARGS`` in ``cwd``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIGNFW_", "WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_"))}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "alignfw", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def ok(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 0, res.stderr[-4000:]


# -- (1) gradient sync: 2 ranks x half batch == 1 process x full batch ---------------------------


#: offline algorithm -> its options for the comparison (dropout off: a step is then a function of the batch)
OFFLINE = {
    "dpo": ["data.kind=preference"],
    "sft": ["data.kind=sft", "algo.disable_dropout=true"],
    "sft_ranking": ["data.kind=ranked", "algo.disable_dropout=true"],
    "reward_model": ["data.kind=preference"],
}


@pytest.mark.parametrize("algo", sorted(OFFLINE))
def test_offline_step_on_two_ranks_equals_one_process(tmp_path: Path, algo: str) -> None:
    """One step: each rank takes 4 of the 8 records and DDP averages the gradients; one process
    takes all 8 in two micro-batches of 4. The trained weights must agree."""
    common = [f"+algo={algo}", *OFFLINE[algo], "run.steps=1", "run.batch_size=8", "algo.micro_batch_size=4", "algo.warmup_steps=0"]
    common += ["algo.lr=1e-3", "run.eval_size=0", "run.progress=false"]
    one, two = tmp_path / "one", tmp_path / "two"
    ok(run_cli(*common, f"run.output_dir={one}", cwd=tmp_path))
    ok(torchrun(*common, f"run.output_dir={two}", cwd=tmp_path))
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    before = load_file(str(Path(__file__).resolve().parents[1] / "plugins" / "models" / "tiny" / "model.safetensors"))
    if algo != "reward_model":  # the reward model's head is new: every weight of it moved from nothing
        moved = max((w1[k] - before[k]).abs().max().item() for k in w1 if k in before)
        assert moved > 1e-4  # the step did change the weights, so equality below is not vacuous
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-5, atol=1e-6, msg=f"{k} differs between 1 and 2 processes")
    m1, m2 = metrics(one)[-1], metrics(two)[-1]
    assert m2["loss/total"] == pytest.approx(m1["loss/total"], rel=1e-5)
    assert m2["grad_norm"] == pytest.approx(m1["grad_norm"], rel=1e-4)


#: online algorithm -> (options of one process, options of each of two) at the same global batch:
#: one process accumulates the two minibatches each rank takes in one
ONLINE = {
    "ppo": (["algo.minibatch_size=4", "algo.grad_accum=2"], ["algo.minibatch_size=4", "algo.grad_accum=1"]),
    "grpo": (["algo.minibatch_size=8", "algo.grad_accum=2"], ["algo.minibatch_size=8", "algo.grad_accum=1"]),
    "rloo": (["algo.minibatch_size=8", "algo.grad_accum=2"], ["algo.minibatch_size=8", "algo.grad_accum=1"]),
    "reinforce": (["algo.minibatch_size=4"], ["algo.minibatch_size=4"]),
}


@pytest.mark.parametrize("algo", sorted(ONLINE))
def test_online_steps_on_two_ranks_equal_one_process(tmp_path: Path, algo: str) -> None:
    """Two steps of 8 prompts: each rank samples its 4 prompts with the seeds one process gives
    them (``alignfw.rollout.sampling_stream``: by step and global index), so both runs draw the
    same responses, the same rewards and, with global whitening, KL and loss normalisation, train
    the same weights; the held-out evaluations (sharded over ranks) agree too."""
    one_opts, two_opts = ONLINE[algo]
    # Adam's eps at 1e-4: the key bias has no gradient in exact arithmetic (softmax ignores a shift
    # shared by all keys), and with eps 1e-8 Adam turns its ~1e-10 rounding noise into lr-sized steps
    common = [f"+algo={algo}", "+reward=bleu", "run.steps=2", "run.batch_size=8", "algo.lr=1e-3", "algo.adam_eps=1e-4", *TINY]
    if algo in ("grpo", "rloo"):
        common.append("algo.num_generations=2")
    if algo in ("ppo", "grpo", "rloo"):
        common.append("algo.ppo_epochs=2")  # the second epoch scores with updated weights: ratios != 1
    one, two = tmp_path / "one", tmp_path / "two"
    ok(run_cli(*common, *one_opts, f"run.output_dir={one}", cwd=tmp_path))
    ok(torchrun(*common, *two_opts, f"run.output_dir={two}", cwd=tmp_path))
    m1, m2 = metrics(one), metrics(two)
    assert [r["step"] for r in m1] == [r["step"] for r in m2] == [0, 1, 2, 2]
    for a, b in zip(m1, m2):
        for k in ("reward/mean", "response/length", "eval/reward", "eval/length", "eval/kl", "kl/seq", "loss/total"):
            if k in a:
                assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), f"step {a['step']}: {k} differs"
    assert m1[1]["reward/mean"] != m1[2]["reward/mean"]  # each step drew new samples
    w1, w2 = weights(one), weights(two)
    before = load_file(str(Path(__file__).resolve().parents[1] / "plugins" / "models" / "tiny" / "model.safetensors"))
    assert max((w1[k] - before[k]).abs().max().item() for k in w1 if k in before) > 1e-4
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k} differs between 1 and 2 processes: {m}")


# -- (2) + (3) PPO end to end on 2 ranks; resume continues exactly (2 + 2 == 4) -----------------


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_ppo_two_ranks_outputs_and_exact_resume(tmp_path: Path, strategy: str) -> None:
    common = ["+reward=bleu", "+algo=ppo", "run.batch_size=8", "run.save_every=2", f"distributed.strategy={strategy}", *TINY]
    full = tmp_path / "full"
    res = torchrun(*common, "run.steps=4", f"run.output_dir={full}", cwd=tmp_path)
    ok(res)
    # rank 0 alone prints, logs and writes: one line per step, one start/final report
    assert res.stdout.count("[eval:start]") == 1 and res.stdout.count("outputs:") == 1
    rows = metrics(full)
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4, 4]
    assert {"reward/mean", "kl/seq", "loss/total"} <= rows[1].keys() and "eval/reward" in rows[-1]
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == ["latest", "step_00000002", "step_00000004"]
    state = json.loads((full / "checkpoints" / "step_00000002" / "state.json").read_text())
    assert "rng_ranks" in json.dumps(state)  # every rank's random stream is saved
    assert len(list((tmp_path / "outputs").glob("*/*"))) == 1  # Hydra's own files: rank 0's only

    resumed = tmp_path / "resumed"
    ok(torchrun(*common, "run.steps=4", f"run.resume={full / 'checkpoints' / 'step_00000002'}", f"run.output_dir={resumed}", cwd=tmp_path))
    w_full, w_res = weights(full), weights(resumed)
    for k in w_full:
        assert torch.equal(w_full[k], w_res[k]), f"{k}: the resumed run diverged from the uninterrupted one"
    after = {r["step"]: r for r in metrics(resumed) if "reward/mean" in r}
    before = {r["step"]: r for r in rows if "reward/mean" in r}
    assert sorted(after) == [3, 4]
    for s in (3, 4):
        assert after[s]["reward/mean"] == before[s]["reward/mean"] and after[s]["kl/coef"] == before[s]["kl/coef"]


def test_hydra_dirs_only_on_rank_zero(tmp_path: Path) -> None:
    """Without run.output_dir every rank composes a Hydra run directory; only rank 0's is used and kept."""
    ok(torchrun("+algo=sft", "run.steps=1", "run.batch_size=4", "run.eval_size=0", "run.progress=false", cwd=tmp_path))
    runs = [p for p in (tmp_path / "outputs").glob("*/*") if p.is_dir()]
    assert len(runs) == 1, runs
    assert (runs[0] / ".hydra").is_dir() and (runs[0] / "final" / "model.safetensors").exists()


# -- errors end every rank with one clear message -------------------------------------------------


def test_indivisible_batch_fails_clearly_on_every_rank(tmp_path: Path) -> None:
    res = torchrun("+algo=sft", "run.steps=1", "run.batch_size=7", "run.progress=false", f"run.output_dir={tmp_path / 'o'}", cwd=tmp_path)
    assert res.returncode != 0
    msg = "run.batch_size=7 is the global batch and must be divisible by the 2 processes"
    assert res.stderr.count(msg) == 2, res.stderr[-3000:]
    assert "(rank 1 of 2)" in res.stderr and "Traceback" not in res.stderr.split("alignfw: error")[0]


def test_nan_reward_on_one_rank_stops_all_ranks(tmp_path: Path) -> None:
    """A reward that returns NaN on rank 1 only: rank 1 stops with the reward's message, rank 0 stops
    instead of hanging in the next collective."""
    plugin = tmp_path / "nan_on_rank1.py"
    plugin.write_text(
        "import os\n"
        "from alignfw.hookspecs import hookimpl\n"
        "from dataclasses import dataclass\n"
        "@dataclass\nclass Cfg:\n    pass\n"
        "def build(cfg):\n"
        "    return lambda p, r, recs: [float('nan') if os.environ.get('RANK') == '1' else 0.5] * len(p)\n"
        "@hookimpl\ndef register_rewards(register):\n    register('nan_on_rank1', build, config=Cfg)\n"
    )
    conftest = tmp_path / "sitecustomize.py"  # registers the throwaway plugin in every rank
    conftest.write_text(
        "import alignfw.registry as r\n"
        "_orig = r.plugin_manager\n"
        "def _pm(*a, **k):\n"
        "    pm = _orig(*a, **k)\n"
        "    import nan_on_rank1\n"
        "    pm.register(nan_on_rank1)\n"
        "    return pm\n"
        "r.plugin_manager = _pm\n"
    )
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "alignfw",
         "+reward=nan_on_rank1", "+algo=reinforce", "run.steps=2", "run.batch_size=4", "run.eval_size=0", "run.progress=false",
         "distributed.timeout_s=60", f"run.output_dir={tmp_path / 'o'}"],
        cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=180,
    )
    assert res.returncode != 0
    assert "alignfw: error (rank 1 of 2): the reward returned nan" in res.stderr, res.stderr[-3000:]


# -- (4) global statistics equal single-process statistics on the concatenated data -------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _helpers_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    from alignfw import distributed as d

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 5, generator=g)  # the same full data on every rank; each takes its rows
        mask = (torch.rand(6, 5, generator=g) > 0.3).float()
        mine = slice(rank * 3, rank * 3 + 3)
        res = {
            "whiten": d.global_masked_whiten(x[mine], mask[mine]),
            "whiten_noshift": d.global_masked_whiten(x[mine], mask[mine], shift_mean=False),
            "masked_mean": d.global_masked_mean(x[mine], mask[mine]),
            "whiten_1d": d.global_masked_whiten(x[mine].flatten(), torch.ones(15)),  # RLOO's per-sequence advantages
            "shard": torch.tensor(d.shard(list(range(8)))),
            "metrics": torch.tensor(d.weighted_mean_metrics({"a": float(rank + 1)}, float(rank + 1))["a"]),
        }
        torch.save(res, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_global_statistics_equal_single_process(tmp_path: Path) -> None:
    from alignfw.objectives import masked_mean, masked_whiten

    torch.multiprocessing.spawn(_helpers_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 5, generator=g)
    mask = (torch.rand(6, 5, generator=g) > 0.3).float()
    torch.testing.assert_close(torch.cat([r0["whiten"], r1["whiten"]]), masked_whiten(x, mask))
    torch.testing.assert_close(torch.cat([r0["whiten_noshift"], r1["whiten_noshift"]]), masked_whiten(x, mask, shift_mean=False))
    torch.testing.assert_close(r0["masked_mean"], masked_mean(x, mask))
    torch.testing.assert_close(torch.cat([r0["whiten_1d"], r1["whiten_1d"]]), masked_whiten(x.flatten(), torch.ones(30)))
    assert r0["shard"].tolist() == [0, 1, 2, 3] and r1["shard"].tolist() == [4, 5, 6, 7]
    assert r0["metrics"].item() == r1["metrics"].item() == pytest.approx((1 * 1 + 2 * 2) / 3)


def test_helpers_are_identity_in_one_process() -> None:
    from alignfw import distributed as d
    from alignfw.objectives import masked_whiten

    x, mask = torch.randn(3, 4), torch.ones(3, 4)
    assert not d.is_distributed() and d.world_size() == 1 and d.is_main()
    assert torch.equal(d.global_masked_whiten(x, mask), masked_whiten(x, mask))
    assert d.shard([1, 2, 3]) == [1, 2, 3] and d.mean_metrics({"a": 1.0}) == {"a": 1.0}
