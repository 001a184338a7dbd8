"""The error boundary, end to end: every expected failure class ends in one message and exit status 2
(130 / 143 for SIGINT / SIGTERM), without a traceback on the console; the traceback is in the log.

Each test drives the real command line (``python -m alignfw``) in a subprocess; the table of
failure classes and messages these tests pin is docs/errors.md.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, run_cli

SMALL = ["run.batch_size=8", "run.eval_size=8", "run.eval_every=0", "rollout.max_new_tokens=8", "run.progress=false"]
TINY_MODEL = REPO / "plugins" / "models" / "tiny"


def one_error(r: subprocess.CompletedProcess, *needles: str, code: int = 2) -> str:
    """The run failed with ``code`` and one ``alignfw: error: ...`` line holding every needle."""
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.startswith("alignfw: error")]
    assert len(lines) == 1, r.stderr[-3000:]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def train(tmp_path: Path, out: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_cli("+reward=bleu", "+algo=ppo", *SMALL, f"run.output_dir={tmp_path / out}", "hydra.run.dir=hydra", *args, cwd=tmp_path, env=env)


# -- option ranges ---------------------------------------------------------------------------------


def test_out_of_range_options_fail_before_any_model_loads(tmp_path):
    # model.path does not exist: the range check must fire first (nothing is loaded before it)
    r = train(tmp_path, "o", "run.steps=-3", "algo.minibatch_size=0", "rollout.max_new_tokens=0", "model.path=./no/such/model")
    line = one_error(r, "run.steps=-3 is out of range: must be >= 1", "algo.minibatch_size=0 is out of range: must be >= 1",
                     "rollout.max_new_tokens=0 is out of range")  # fmt: skip
    assert "no/such/model" not in line
    log = Path(re.search(r"traceback in (\S+)\)", line).group(1))
    assert log.exists() and "Traceback" in log.read_text() and "ConfigError" in log.read_text()
    assert not (tmp_path / "o").exists()  # refused before the run directory is touched
    r = run_cli("+reward=bleu", "+algo=grpo", "algo.loss_aggregation=tokens", *SMALL, cwd=tmp_path)
    one_error(r, "algo.loss_aggregation='tokens' is not a valid choice: must be one of 'token', 'sequence'")


def test_debug_prints_the_traceback(tmp_path):
    r = train(tmp_path, "o", "run.batch_size=0", env={"ALIGNFW_DEBUG": "1"})
    assert r.returncode == 2 and "Traceback" in r.stderr and "ConfigError" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("alignfw: error: run.batch_size=0 is out of range")


def test_plugins_command_shows_ranges(tmp_path):
    r = run_cli("plugins", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for text in ("run.steps: int = 120  (>= 1)", "rollout.top_p: float = 1.0  (> 0 and <= 1)", "algo.clip_range: float = 0.2  (> 0)",
                 "algo.loss_type: str = 'sigmoid'  (one of 'sigmoid', 'ipo')", "model.lora.r: int = 8  (>= 1)",
                 "data.eval_fraction: float = 0.0  (>= 0 and < 1)", "reward.max_order: int = 4  (>= 1)"):  # fmt: skip
        assert text in r.stdout, text


# -- weights and checkpoints -----------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_model_weights_name_the_file(tmp_path, damage):
    model = tmp_path / "model"
    shutil.copytree(TINY_MODEL, model)
    weights = model / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"not a tensor file " * 50, "empty": b""}[damage])
    r = train(tmp_path, "o", "run.steps=1", f"model.path={model}")
    one_error(r, f"{weights} is not a readable safetensors file", "model.path=")


def _checkpointed_run(tmp_path: Path, out: str = "first") -> Path:
    r = train(tmp_path, out, "run.steps=2", "run.save_every=1")
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp_path / out


def test_damaged_checkpoint_and_another_algorithm_are_named(tmp_path):
    run = _checkpointed_run(tmp_path)
    ck = run / "checkpoints" / "step_00000002"
    from alignfw.checkpoint import load_state

    state = load_state(ck)
    assert state["algorithm"] == "ppo" and state["model"] == "hf_causal_lm" and state["model_path"] == "builtin:tiny"
    # another algorithm: said before any optimizer state is touched
    r = run_cli("+reward=bleu", "+algo=reinforce", *SMALL, "run.steps=3", f"run.resume={run}", f"run.output_dir={tmp_path / 'b'}", cwd=tmp_path)
    one_error(r, "was written by algorithm 'ppo' and this run uses 'reinforce'", "+algo=ppo")
    # a garbage state file, then a truncated weights file: each named
    (ck / "state.safetensors").write_bytes(b"\x00" * 10)
    r = train(tmp_path, "c", "run.steps=3", f"run.resume={run}")
    one_error(r, f"{ck / 'state.safetensors'} is not a readable safetensors file", "resume from an earlier one")
    weights = run / "checkpoints" / "step_00000001" / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    r = train(tmp_path, "d", "run.steps=3", f"run.resume={run / 'checkpoints' / 'step_00000001'}")
    one_error(r, f"{weights} is not a readable safetensors file")


def test_a_failing_checkpoint_write_keeps_the_previous_one(tmp_path):
    import errno

    import torch

    from alignfw.checkpoint import find_checkpoint, save_checkpoint

    class Model:
        def __init__(self, fail: bool) -> None:
            self.fail = fail

        def save_pretrained(self, path: str) -> None:
            Path(path).mkdir()
            (Path(path) / "model.safetensors").write_bytes(b"half")
            if self.fail:
                raise OSError(errno.ENOSPC, "No space left on device", path)

    good = save_checkpoint(tmp_path, 1, Model(False), {"step": 1, "w": torch.ones(3)})
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(tmp_path, 2, Model(True), {"step": 2, "w": torch.zeros(3)})
    assert find_checkpoint(tmp_path) == good
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step_00000001"]  # no half-written leftovers
    mode = 0o666 & ~_umask()
    assert all((p.stat().st_mode & 0o777) == mode for p in good.rglob("*") if p.is_file())


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


# -- the file system and run directories ----------------------------------------------------------


def test_output_path_that_is_a_file_or_unwritable(tmp_path):
    (tmp_path / "afile").write_text("x")
    one_error(train(tmp_path, "afile", "run.steps=1"), f"{tmp_path / 'afile'} is a file, not a directory", "run.output_dir")
    one_error(train(tmp_path, "afile/sub", "run.steps=1"), f"{tmp_path / 'afile'} is a file", "run.output_dir")
    r = run_cli("+reward=bleu", "+algo=ppo", "run.steps=1", "hydra.run.dir=afile", cwd=tmp_path)  # Hydra's own directory
    one_error(r, "the run directory afile is a file, not a directory; set hydra.run.dir")
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o555)
        one_error(train(tmp_path, "ro/run", "run.steps=1"), "is not writable", "run.output_dir")
    if sys.platform.startswith("linux"):  # /proc refuses new entries, even to root
        r = run_cli("+reward=bleu", "+algo=ppo", *SMALL, "run.steps=1", "run.output_dir=/proc/alignfw-run", cwd=tmp_path)
        one_error(r, "/proc/alignfw-run", "run.output_dir")


def test_a_finished_run_is_never_replaced_unless_overwrite(tmp_path):
    run = tmp_path / "o"
    assert train(tmp_path, "o", "run.steps=1").returncode == 0
    final = run / "final" / "model.safetensors"
    assert (final.stat().st_mode & 0o777) == 0o666 & ~_umask()  # as readable as every other output
    before = (final.stat().st_mtime_ns, (run / "metrics.jsonl").read_text())
    r = train(tmp_path, "o", "run.steps=1")
    one_error(r, f"the run directory {run} holds a finished run", "run.overwrite=true")
    assert (final.stat().st_mtime_ns, (run / "metrics.jsonl").read_text()) == before
    # a live run's lock (this test's own pid: alive, same host) is refused even with overwrite
    import socket

    (run / ".alignfw.lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}))
    one_error(train(tmp_path, "o", "run.steps=1", "run.overwrite=true"), "in use by a live run", f"pid {os.getpid()}")
    # a dead process's lock is taken over; overwrite deletes the old run's outputs first
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    (run / ".alignfw.lock").write_text(json.dumps({"pid": int(dead), "host": socket.gethostname()}))
    r = train(tmp_path, "o", "run.steps=2", "run.overwrite=true")
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows.count(1) == 1 and max(rows) == 2 and not (run / ".alignfw.lock").exists()


# -- plugin calls and data ------------------------------------------------------------------------

BAD_REWARDS = '''
from dataclasses import dataclass
from alignfw.hookspecs import hookimpl

@dataclass
class Cfg:
    pass

def raises(cfg):
    def reward(prompts, responses, records):
        raise ZeroDivisionError("division by zero in my scorer")
    return reward

def returns_none(cfg):
    return lambda prompts, responses, records: None

def too_short(cfg):
    return lambda prompts, responses, records: [0.0]

def build_fails(cfg):
    return {}["weights"]

@hookimpl
def register_rewards(register):
    register("raises", raises, config=Cfg)
    register("returns_none", returns_none, config=Cfg)
    register("too_short", too_short, config=Cfg)
    register("build_fails", build_fails, config=Cfg)
'''
SITE = '''
import alignfw.registry as r
_orig = r.plugin_manager
def _pm(*a, **k):
    pm = _orig(*a, **k)
    import bad_rewards
    pm.register(bad_rewards)
    return pm
r.plugin_manager = _pm
'''


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("raises", "raised ZeroDivisionError: division by zero in my scorer"),
        ("returns_none", "returned None for 8 responses"),
        ("too_short", "returned 1 scores for 8 responses"),
        ("build_fails", "failed to build: KeyError: 'weights'"),
    ],
)
def test_a_failing_reward_plugin_is_named(tmp_path, name, message):
    (tmp_path / "bad_rewards.py").write_text(BAD_REWARDS)
    (tmp_path / "sitecustomize.py").write_text(SITE)
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)}
    r = run_cli(f"+reward={name}", "+algo=ppo", *SMALL, "run.steps=1", "run.samples=0", "hydra.run.dir=h", cwd=tmp_path, env=env)
    one_error(r, f"reward {name!r} (plugin 'bad_rewards' from bad_rewards, factory bad_rewards.{name}", message)


def test_non_utf8_data_names_the_line(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_bytes(b'{"prompt": "a", "response": "b"}\n{"prompt": "c", "response": "d"}\n{"prompt": "caf\xe9", "response": "x"}\n')
    r = run_cli("+algo=sft", "data=jsonl", f"data.path={data}", *SMALL, "run.steps=1", "hydra.run.dir=h", cwd=tmp_path)
    one_error(r, "d.jsonl: not UTF-8 text (line 3, byte 16 of the line: invalid continuation byte")


# -- interrupts and resuming ----------------------------------------------------------------------


def _start(tmp_path: Path, out: str, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNFW_")}
    env.update({"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"})
    cmd = [sys.executable, "-m", "alignfw", "+reward=bleu", "+algo=ppo", *SMALL, f"run.output_dir={tmp_path / out}", "hydra.run.dir=h", *args]
    return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run: Path, proc: subprocess.Popen, step: int, timeout: float = 300) -> None:
    metrics, end = run / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < end:
        if metrics.exists() and any(json.loads(l).get("step") == step for l in metrics.read_text().splitlines() if l.strip()):
            return
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.05)
    raise AssertionError(f"step {step} never logged")


def _train_rows(run: Path) -> list[int]:
    """The steps of the training rows of metrics.jsonl (evaluation rows have no loss)."""
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "loss/total" in r]


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_stops_at_a_step_with_a_checkpoint_and_the_resume_command(tmp_path, sig, code):
    run = tmp_path / "o"
    proc = _start(tmp_path, "o", "run.steps=40", "run.save_every=50")
    _wait_for_step(run, proc, 1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    m = re.search(rf"alignfw: stopped by {signal.Signals(sig).name} after step (\d+) of 40; checkpoint (\S+)", err)
    assert m, err[-3000:]
    step, ck = int(m.group(1)), Path(m.group(2))
    assert ck == run / "checkpoints" / f"step_{step:08d}" and (ck / "state.json").exists()
    assert not (run / ".alignfw.lock").exists()
    command = shlex.split(err.split("resume with: ")[1].splitlines()[0])
    assert command[:3] == ["python", "-m", "alignfw"] and f"run.resume={run}" in command and f"run.output_dir={run}" in command
    # the printed command continues the run in its own directory; every step is logged once
    r = subprocess.run([sys.executable, *command[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"resumed from {ck} at step {step}" in r.stderr
    assert _train_rows(run) == list(range(1, 41))


def test_sigterm_to_torchrun_stops_every_rank_at_the_same_step(tmp_path):
    """torchrun forwards SIGTERM to its workers; they agree on the step (one all-reduce per step),
    rank 0 writes the checkpoint and prints the resume command, and nothing hangs."""
    run = tmp_path / "o"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIGNFW_")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "alignfw", "+reward=bleu",
           "+algo=ppo", *SMALL, "run.steps=200", "run.save_every=500", "distributed.timeout_s=60", f"run.output_dir={run}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=tmp_path, env={**env, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_step(run, proc, 2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    m = re.findall(r"alignfw: stopped by SIGTERM after step (\d+) of 200; checkpoint (\S+)", err)
    assert len(m) == 1, err[-3000:]  # rank 0 alone reports
    step = int(m[0][0])
    assert Path(m[0][1]) == run / "checkpoints" / f"step_{step:08d}" and (Path(m[0][1]) / "state.json").exists()
    assert "resume with: torchrun --nproc_per_node=2 -m alignfw" in err and not (run / ".alignfw.lock").exists()


def test_sigkill_then_resume_logs_each_step_once(tmp_path):
    run = tmp_path / "o"
    proc = _start(tmp_path, "o", "run.steps=12", "run.save_every=2")
    _wait_for_step(run, proc, 3)  # step 3 is logged after the step-2 checkpoint
    proc.kill()
    proc.communicate(timeout=60)
    assert (run / ".alignfw.lock").exists()  # a SIGKILL leaves its lock: the next run takes it over
    r = train(tmp_path, "o", "run.steps=12", "run.save_every=2", f"run.resume={run}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert _train_rows(run) == list(range(1, 13))


@pytest.mark.parametrize(
    "args, message",
    [
        (["+algo=ppp"], "algo=ppp is not installed: choose one of dpo, grpo, ppo, reinforce, reward_model, rloo, sft, sft_ranking"),
        (["+reward=bleuu", "+algo=ppo"], "reward=bleuu is not installed: choose one of bleu, combine"),
        (["+reward=bleu", "+algo=ppo", "model=tinyy"], "model=tinyy is not installed: choose one of hf_causal_lm, tiny"),
        (["+reward=bleu", "+algo=ppo", "run.steps=abc"], "run.steps=abc: Value 'abc' of type 'str' could not be converted to Integer"),
        (["+reward=bleu", "+algo=ppo", "algo.lr=x"], "algo.lr=x: Value 'x' of type 'str' could not be converted to Float"),
    ],
)
def test_hydra_composition_errors_are_one_line_with_exit_2(tmp_path, args, message):
    """Unknown plugin names and values of the wrong type: one alignfw line (exit 2), not Hydra's report (exit 1)."""
    res = run_cli(*args, f"run.output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"alignfw: error: {message}"), res.stderr
    assert "Traceback" not in res.stderr and "HYDRA_FULL_ERROR" not in res.stderr and not (tmp_path / "run").exists()
