"""The tracker plugins against the real libraries, each in its offline / local mode, read back with
that library's own reader: W&B's offline run file (its protobuf records), MLflow's ``MlflowClient``
on a local store, trackio's ``Api`` on its local database; TensorBoard's event file with
tensorboard's ``EventAccumulator``. One short GRPO run (in a subprocess, so that each library's
environment variables are read fresh) logs to every installed tracker at once."""

from __future__ import annotations

import importlib.util
import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TRACKERS = {name: importlib.util.find_spec(name) is not None for name in ("wandb", "mlflow", "trackio")}
STEPS = 3
#: a source checkout on PYTHONPATH stays on it in the subprocesses
_PYTHONPATH = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
LR = 2e-3


def need(name: str):
    return pytest.mark.skipif(not TRACKERS[name], reason=f"{name} is not installed (pip install 'alignfw[{name}]')")


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory) -> Path:
    """A GRPO run logged to TensorBoard and every installed tracker; returns its working directory."""
    work = tmp_path_factory.mktemp("trackers")
    trackers = ["tensorboard"] + [n for n, ok in TRACKERS.items() if ok]
    script = textwrap.dedent(
        f"""
        import alignfw
        alignfw.train("grpo", reward="bleu", output_dir="run", overrides={{
            "run.steps": {STEPS}, "run.batch_size": 4, "run.eval_size": 4, "run.eval_every": 2, "run.samples": 2, "run.progress": False,
            "rollout.max_new_tokens": 4, "algo.lr": {LR}, "run.trackers": {trackers!r}, "run.project": "alignfw-test"}})
        """
    )
    env = {
        **_PYTHONPATH, "PATH": "/usr/bin:/bin", "HOME": str(work), "OMP_NUM_THREADS": "2", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
        "MLFLOW_TRACKING_URI": f"file:{work / 'mlruns'}", "MLFLOW_ALLOW_FILE_STORE": "true", "TRACKIO_DIR": str(work / "trackio"),
    }  # fmt: skip
    r = subprocess.run([sys.executable, "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return work


def _read(work: Path, code: str) -> dict:
    """Run ``code`` (which prints one JSON line) in the tracked run's environment."""
    env = {**_PYTHONPATH, "PATH": "/usr/bin:/bin", "HOME": str(work), "TRACKIO_DIR": str(work / "trackio"), "MLFLOW_ALLOW_FILE_STORE": "true"}
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def _assert_steps(by_step: dict[int, dict], config_lr: float) -> None:
    assert config_lr == LR  # the hyper-parameters, logged once
    assert set(range(1, STEPS + 1)) <= set(by_step)
    for step in range(1, STEPS + 1):
        assert by_step[step]["lr"] == pytest.approx(LR) and "reward/mean" in by_step[step] and "loss/policy" in by_step[step]
    assert "eval/reward" in by_step[0] and "eval/reward" in by_step[2]  # start and the mid-run evaluation


def wandb_records(path: Path):
    """The protobuf records of a W&B run file (``run-<id>.wandb``: a ``:W&B`` header, then LevelDB
    log blocks of 32 KiB holding checksummed, possibly fragmented records)."""
    from wandb.proto import wandb_internal_pb2

    raw = path.read_bytes()
    assert raw[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(raw):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, n, kind = struct.unpack("<IHB", raw[pos : pos + 7])
        pending, pos = pending + raw[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # a full record, or the last fragment of one
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            pending = b""
            yield rec


@need("wandb")
def test_wandb_offline_run_holds_config_and_metrics(tracked_run):
    (path,) = (tracked_run / "run" / "wandb").glob("offline-run-*/run-*.wandb")
    by_step: dict[int, dict] = {}
    config: dict = {}
    for rec in wandb_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in rec.history.item}
            by_step.setdefault(row["_step"], {}).update(row)
        elif kind in ("run", "config"):
            items = rec.run.config.update if kind == "run" else rec.config.update
            config.update({i.key: json.loads(i.value_json) for i in items})
        if kind == "run":
            assert rec.run.project == "alignfw-test" and rec.run.display_name == "run"
    _assert_steps(by_step, config["algo"]["lr"])
    assert config["algo"]["_name_"] == "grpo" and config["run"]["steps"] == STEPS
    tables = {step: {k.split("/", 1)[1]: v for k, v in row.items() if k.startswith("samples/")} for step, row in by_step.items()}
    tables = {step: t for step, t in tables.items() if t}  # a table per evaluation
    assert sorted(tables) == [0, 2, STEPS] and all(t["_type"] == "table-file" and t["nrows"] == 2 for t in tables.values())
    table = json.loads((path.parent / "files" / tables[0]["path"]).read_text())
    assert table["columns"] == ["prompt", "response", "reward", "length"] and len(table["data"]) == 2


@need("mlflow")
def test_mlflow_local_store_holds_params_and_metrics(tracked_run):
    got = _read(
        tracked_run,
        """
        import json
        from mlflow.tracking import MlflowClient
        c = MlflowClient(tracking_uri="file:mlruns")
        (run,) = c.search_runs([c.get_experiment_by_name("alignfw-test").experiment_id])
        hist = {k: [(m.step, m.value) for m in c.get_metric_history(run.info.run_id, k)] for k in ("lr", "reward/mean", "loss/policy", "eval/reward")}
        config = json.loads(open(c.download_artifacts(run.info.run_id, "config.json", ".")).read())
        tables = {a.path: json.loads(open(c.download_artifacts(run.info.run_id, a.path, ".")).read()) for a in c.list_artifacts(run.info.run_id, "samples")}
        print(json.dumps({"params": run.data.params, "hist": hist, "name": run.info.run_name, "config": config, "tables": tables}))
        """,
    )
    by_step: dict[int, dict] = {}
    for key, points in got["hist"].items():
        for step, value in points:
            by_step.setdefault(step, {})[key] = value
    _assert_steps(by_step, float(got["params"]["algo.lr"]))
    assert got["name"] == "run" and got["params"]["algo._name_"] == "grpo" and got["config"]["run"]["steps"] == STEPS
    assert sorted(got["tables"]) == [f"samples/step_{s:06d}.json" for s in (0, 2, STEPS)]
    table = got["tables"]["samples/step_000000.json"]
    assert table["columns"] == ["prompt", "response", "reward", "length"] and len(table["data"]) == 2


@need("trackio")
def test_trackio_local_database_holds_config_and_metrics(tracked_run):
    got = _read(
        tracked_run,
        """
        import json, trackio
        (run,) = list(trackio.Api().runs("alignfw-test"))
        print(json.dumps({"name": run.name, "config": run.config, "logs": trackio.SQLiteStorage.get_logs("alignfw-test", run.name)}))
        """,
    )
    by_step: dict[int, dict] = {}
    for row in got["logs"]:
        by_step.setdefault(row["step"], {}).update(row)
    _assert_steps(by_step, got["config"]["algo"]["lr"])
    assert got["name"] == "run"
    assert sorted(step for step, row in by_step.items() if "samples" in row) == [0, 2, STEPS]


def test_tensorboard_gets_the_config_once_and_the_learning_rate(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked_run / "run" / "tensorboard"), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    assert [e.step for e in acc.Scalars("lr")] == list(range(1, STEPS + 1))
    assert all(e.value == pytest.approx(LR) for e in acc.Scalars("lr"))
    (text,) = acc.Tensors("config/text_summary")
    assert b"lr: 0.002" in text.tensor_proto.string_val[0] and b"_name_: grpo" in text.tensor_proto.string_val[0]


TINY = {"run.steps": 1, "run.batch_size": 4, "run.eval_size": 4, "run.eval_every": 0, "rollout.max_new_tokens": 4, "run.progress": False}


def test_unknown_tracker_is_named_with_the_known_ones(builtin_plugins, tmp_path):
    import alignfw
    from alignfw.exceptions import ConfigError

    with pytest.raises(ConfigError, match=r"run.trackers names 'wandbb'.*known trackers: mlflow, tensorboard, trackio, wandb\. Did you mean wandb\?"):
        alignfw.train("grpo", reward="bleu", overrides={**TINY, "run.trackers": ["tensorboard", "wandbb"]}, output_dir=tmp_path)


def test_a_selected_tracker_without_its_library_names_the_extra(builtin_plugins, tmp_path, monkeypatch):
    import alignfw
    from alignfw.exceptions import ConfigError

    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow now raises ImportError
    with pytest.raises(ConfigError, match=r"run.trackers selects 'mlflow' but mlflow is not installed.*pip install \"alignfw\[mlflow\]\""):
        alignfw.train("grpo", reward="bleu", overrides={**TINY, "run.trackers": ["mlflow"]}, output_dir=tmp_path)
