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
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "algo=ppx is not installed: choose one of" in r.stderr and "ppo" in r.stderr


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


def test_version_names_alignfw_torch_and_transformers(tmp_path):
    import torch
    import transformers

    import alignfw

    r = run_cli("--version", cwd=tmp_path)
    assert r.returncode == 0
    assert r.stdout.startswith(f"alignfw {alignfw.__version__} (torch {torch.__version__.split('+')[0]}")
    assert f"transformers {transformers.__version__}" in r.stdout and "Hydra" not in r.stdout


def test_short_and_long_help_are_alignfws_page(tmp_path):
    short, long, late = (run_cli(*a, cwd=tmp_path) for a in (["-h"], ["--help"], ["+algo=ppo", "--help"]))
    assert short.returncode == long.returncode == late.returncode == 0
    assert short.stdout == long.stdout == late.stdout
    page = long.stdout
    for text in ("usage: python -m alignfw", "algorithms (+algo=NAME):", "  ppo ", "rewards (+reward=NAME):", "  bleu ",
                 "models (model=NAME):", "  tiny ", "data sources (data=NAME):", "  jsonl ", "python -m alignfw plugins", "--version"):
        assert text in page, text
    assert "_schema" not in page  # Hydra's generic page listed every *_schema node


@pytest.mark.parametrize("spelling", ["algo.lrr=1", "+algo.lrr=1"])
def test_misspelled_key_is_rejected_with_or_without_plus(tmp_path, spelling):
    r = run_cli("+reward=bleu", "+algo=grpo", spelling, *SMALL, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "unknown option 'algo.lrr' (did you mean algo.lr" in r.stderr and "GRPOConfig" in r.stderr
    assert not (tmp_path / "outputs").exists()  # rejected before anything ran


def test_option_paths_of_typed_nodes_lists_and_free_dicts():
    from omegaconf import OmegaConf

    from alignfw.cli import option_exists
    from alignfw.config import AlignfwConfig
    from alignfw.plugins.rewards.combine import CombineConfig, Component

    cfg = OmegaConf.structured(AlignfwConfig)
    cfg.reward = OmegaConf.structured(CombineConfig(components=[Component(name="bleu")]))
    assert option_exists(cfg, "run.steps") == (True, False) and option_exists(cfg, "run.stpes") == (False, False)
    assert option_exists(cfg, "reward.components") == (True, False) and option_exists(cfg, "reward.component") == (False, False)
    assert option_exists(cfg, "reward.components.0.weight") == (True, False) and option_exists(cfg, "reward.components.1.weight")[0] is False
    assert option_exists(cfg, "reward.components.0.options.max_order") == (True, True)  # a dict[str, Any]: any key
    assert option_exists(cfg, "run.steps.x") == (False, False) and option_exists(cfg, "algo.lr") == (False, False)  # no +algo=


@pytest.mark.slow
def test_a_saved_run_reruns_as_it_is(tmp_path):
    first = run_cli("+reward=bleu", "+algo=grpo", *SMALL, "hydra.run.dir=first", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli("rerun", "first", "hydra.run.dir=again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "again" / "config.yaml").read_text() == (tmp_path / "first" / "config.yaml").read_text()
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("first", "again"))
    assert a["final"] == b["final"] and a["start"] == b["start"]  # the same run, step for step
    # Hydra's own spelling works too, and a typo in a rerun's overrides is named as in a fresh run
    hydra_way = run_cli("--config-path", str(tmp_path / "first"), "--config-name", "config", "hydra.run.dir=h", "run.output_dir=null", cwd=tmp_path)
    assert hydra_way.returncode == 0, hydra_way.stderr[-2000:]
    typo = run_cli("rerun", "first", "+algo.lrr=1", cwd=tmp_path)
    assert typo.returncode == 2 and "unknown option 'algo.lrr'" in typo.stderr
    missing = run_cli("rerun", "nowhere", cwd=tmp_path)
    assert missing.returncode == 2 and "nowhere has no config.yaml" in missing.stderr
