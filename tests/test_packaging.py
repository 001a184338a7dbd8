"""The wheel is self-contained: kernels, plugins and configs inside ``alignfw/``, nothing else at
the top level; installed into a fresh venv outside the repository it runs the main job, and a
third-party plugin installed with pip appears in the CLI with its own typed config.

Runs when ``ALIGNFW_WHEEL`` points at a freshly built wheel (``.ci/run`` sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import REPO, run_cli

WHEEL = os.environ.get("ALIGNFW_WHEEL")
pytestmark = pytest.mark.skipif(not WHEEL, reason="set ALIGNFW_WHEEL to a built wheel (.ci/run does)")
SMALL = ["run.steps=2", "run.batch_size=8", "run.eval_size=8", "run.eval_every=0", "rollout.max_new_tokens=8", "hydra.run.dir=out"]


def test_wheel_layout():
    names = set(zipfile.ZipFile(WHEEL).namelist())
    dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
    assert {
        "alignfw/kernels/__init__.py",
        "alignfw/plugins/__init__.py",
        "alignfw/plugins/algorithms/ppo.py",
        "alignfw/plugins/models/tiny/model.safetensors",
        "alignfw/conf/config.yaml",
        "alignfw/conf/preset/tiny_ppo.yaml",
        "alignfw/_native.pyi",
        "alignfw/py.typed",
    } <= names
    assert any(n.startswith("alignfw/_native") and n.endswith(".so") for n in names)
    assert {n.split("/")[0] for n in names} <= {"alignfw", dist_info}  # nothing else at site-packages' top
    assert not {"alignfw/kernels", "alignfw/plugins", "alignfw/conf"} & names  # a symlink stored as a file
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    eps = zipfile.ZipFile(WHEEL).read(f"{dist_info}/entry_points.txt").decode()
    assert "[alignfw]" in eps and "alignfw.plugins.algorithms.ppo" in eps


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run([str(py), "-m", "pip", "install", "-q", WHEEL], check=True, timeout=1500)
    return py


@pytest.mark.slow
def test_main_job_from_a_fresh_venv(fresh_venv, tmp_path):
    r = run_cli("+reward=bleu", "+algo=ppo", *SMALL, cwd=tmp_path, python=str(fresh_venv))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "held-out reward" in r.stdout
    assert (tmp_path / "out" / "final" / "model.safetensors").exists()
    # imported from the venv, not from the repository
    where = subprocess.run([str(fresh_venv), "-c", "import alignfw.plugins, sys; print(alignfw.plugins.__file__)"], cwd=tmp_path, capture_output=True, text=True)
    assert str(fresh_venv.parents[1]) in where.stdout and str(REPO) not in where.stdout


@pytest.mark.slow
def test_third_party_plugin_installs_and_runs(fresh_venv, tmp_path):
    plugin = REPO / "tests" / "fixtures" / "alignfw-example-plugin"
    subprocess.run([str(fresh_venv), "-m", "pip", "install", "-q", str(plugin)], check=True, timeout=600)
    listed = run_cli("plugins", cwd=tmp_path, python=str(fresh_venv))
    assert "brevity" in listed.stdout and "alignfw-example-plugin 0.1.0" in listed.stdout
    assert "reward.target_words: int = 3" in listed.stdout

    r = run_cli("+algo=ppo", "+reward=brevity", "reward.target_words=4", *SMALL, cwd=tmp_path, python=str(fresh_venv))
    assert r.returncode == 0, r.stderr[-3000:]
    note = json.loads((tmp_path / "out" / "example_plugin.json").read_text())
    assert "eval/reward" in note["seen_metrics"]
    assert "target_words: 4" in (tmp_path / "out" / "config.yaml").read_text()

    # its algorithm, written from alignfw's public modules only, with its own typed options
    algo = run_cli("+algo=best_of_n", "+reward=bleu", "algo.num_samples=2", *SMALL[:-1], "hydra.run.dir=out2", cwd=tmp_path, python=str(fresh_venv))
    assert algo.returncode == 0, algo.stderr[-3000:]
    assert "num_samples: 2" in (tmp_path / "out2" / "config.yaml").read_text()

    typo = run_cli("+algo=ppo", "+reward=brevity", "reward.target_wrds=4", *SMALL, cwd=tmp_path, python=str(fresh_venv))
    assert typo.returncode != 0 and "target_wrds" in typo.stderr and "BrevityConfig" in typo.stderr
