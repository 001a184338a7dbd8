"""The real command line, end to end, in subprocesses with entry-point discovery on."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli

SMALL = ["run.steps=3", "run.batch_size=8", "run.eval_size=8", "run.eval_every=0", "rollout.max_new_tokens=8"]


@pytest.mark.slow
def test_main_job_few_steps_writes_outputs(tmp_path):
    r = run_cli("+reward=bleu", "+algo=ppo", *SMALL, "hydra.run.dir=out", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "out"
    assert "[eval:start]" in r.stdout and "[eval:final]" in r.stdout and "held-out reward" in r.stdout
    rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r_["step"] for r_ in rows if "reward/mean" in r_] == [1, 2, 3]
    assert "kl/seq" in rows[1] and "loss/policy" in rows[1]
    cfg = (out / "config.yaml").read_text()
    assert "_name_: ppo" in cfg and "steps: 3" in cfg
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["final"]) >= {"eval/reward", "eval/kl", "eval/length"}
    import torch
    import transformers

    import alignfw

    assert summary["versions"] == {**summary["versions"], "alignfw": alignfw.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
    assert summary["hardware"]["device"] in ("cpu", "cuda") and summary["hardware"]["processes"] == 1 and "git_commit" in summary
    assert summary["tokens_per_s"] > 0 and summary["wall_s"] > 0
    assert all(r_["time/tokens_per_s"] > 0 for r_ in rows if "reward/mean" in r_)
    # the console lines go through logging, so Hydra's job log holds them too (and the console is unchanged)
    (job_log,) = out.glob("*.log")
    logged = job_log.read_text()
    for line in r.stdout.splitlines():
        if line.startswith(("[eval:", "held-out reward", "outputs:")):
            assert f"[alignfw.run][INFO] - {line}" in logged, line
    # the final policy loads back in plain transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(out / "final")
    AutoTokenizer.from_pretrained(out / "final")
    assert (out / "final" / "model.safetensors").exists()


def test_plugins_command_lists_kinds_origins_options(tmp_path):
    r = run_cli("plugins", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for text in ("rewards  (+reward=<name>)", "bleu", "ppo", "hf_causal_lm", "tiny_task", "(built-in)", "algo.clip_range: float = 0.2"):
        assert text in r.stdout, text
    # plugins that only implement the run hooks are listed too, with the hooks they implement
    hooks = r.stdout.split("run hooks")[1]
    assert "loggers" in hooks and "on_step_end" in hooks
    assert "report" in hooks and "on_run_end" in hooks and "(built-in)" in hooks


def test_missing_algorithm_names_the_choices(tmp_path):
    r = run_cli("+reward=bleu", cwd=tmp_path)
    assert r.returncode == 2
    assert "choose an algorithm with +algo=<name>" in r.stderr and "ppo" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_algorithm_lists_what_exists(tmp_path):
    r = run_cli("+reward=bleu", "+algo=ppx", cwd=tmp_path)
    assert r.returncode != 0
    assert "algo/ppx" in r.stderr and "ppo" in r.stderr


def test_typo_in_option_is_named(tmp_path):
    r = run_cli("+reward=bleu", "+algo=ppo", "algo.clip_rnge=0.1", cwd=tmp_path)
    assert r.returncode != 0 and "clip_rnge" in r.stderr


def test_missing_model_path_names_the_fix(tmp_path):
    r = run_cli("+reward=bleu", "+algo=ppo", "model.path=./no/such/model", *SMALL, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "model.path='./no/such/model' does not exist" in r.stderr and "builtin:tiny" in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_required_option_is_named(tmp_path):
    r = run_cli("+reward=reward_model", "+algo=ppo", *SMALL, cwd=tmp_path)
    assert r.returncode == 2 and "missing required option reward.path: add reward.path=<value>" in r.stderr, r.stderr[-2000:]


def test_ppo_without_reward_names_the_rewards(tmp_path):
    r = run_cli("+algo=ppo", *SMALL, cwd=tmp_path)
    assert r.returncode == 2 and "PPO needs a reward" in r.stderr and "bleu" in r.stderr


def test_empty_data_file_names_the_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    r = run_cli("+reward=bleu", "+algo=ppo", "data=jsonl", f"data.path={tmp_path / 'empty.jsonl'}", *SMALL, cwd=tmp_path)
    assert r.returncode == 2, r.stderr[-2000:]
    assert "empty.jsonl" in r.stderr and "Traceback" not in r.stderr


def test_malformed_jsonl_row_names_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a", "references": ["b"]}\n{"prompt": "c", \n')
    r = run_cli("+reward=bleu", "+algo=ppo", "data=jsonl", f"data.path={tmp_path / 'bad.jsonl'}", *SMALL, cwd=tmp_path)
    assert r.returncode == 2 and "line 2" in r.stderr and "bad.jsonl" in r.stderr, r.stderr[-2000:]


@pytest.mark.slow
def test_multirun_sweeps(tmp_path):
    r = run_cli("--multirun", "+reward=bleu", "+algo=ppo", "seed=0,1", "run.steps=1", "run.batch_size=4", "run.eval_size=0", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "sweep" / "0" / "final" / "model.safetensors").exists()
    assert (tmp_path / "sweep" / "1" / "final" / "model.safetensors").exists()


def test_summary_line_of_a_zero_start_has_no_percentage(capsys):
    from alignfw.pipeline import _print_change, console_logging

    console_logging()
    _print_change({"eval/reward": 0.0}, {"eval/reward": 0.25})
    _print_change({"eval/reward": 0.5}, {"eval/reward": 0.25})
    assert capsys.readouterr().out == "held-out reward: 0.0000 -> 0.2500\nheld-out reward: 0.5000 -> 0.2500 (-50.0%)\n"
