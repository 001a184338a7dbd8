"""The declared transformers range is the tested range: the lowest version pyproject.toml allows
runs the main job and the model tests too (installed beside the venv's newer one and put first
on the path), and the shipped tiny model's tokenizer loads with it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib

import pytest
from helpers import REPO, run_cli


def floor() -> str:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    spec = next(d for d in deps if re.match(r"transformers\b", d))
    m = re.search(r">=\s*([\d.]+)", spec)
    assert m, f"transformers needs a lower bound in pyproject.toml: {spec}"
    return m.group(1)


@pytest.fixture(scope="module")
def lowest(tmp_path_factory):
    target = tmp_path_factory.mktemp("transformers-floor")
    version = floor()
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), f"transformers=={version}", "huggingface-hub<1.0"],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    env = {"PYTHONPATH": str(target)}
    check = subprocess.run([sys.executable, "-c", "import transformers; print(transformers.__version__)"], env={**os.environ, **env}, capture_output=True, text=True)
    assert check.stdout.strip() == version, check.stderr[-2000:]
    return env


@pytest.mark.slow
def test_main_job_runs_on_the_lowest_transformers(lowest, tmp_path):
    small = ["run.steps=2", "run.batch_size=8", "run.eval_size=8", "run.eval_every=0", "hydra.run.dir=out"]
    r = run_cli("+reward=bleu", "+algo=ppo", *small, cwd=tmp_path, env=lowest)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "held-out reward" in r.stdout
    # what it saved loads back with the same old version
    load = "from transformers import AutoModelForCausalLM, AutoTokenizer; AutoTokenizer.from_pretrained('out/final'); AutoModelForCausalLM.from_pretrained('out/final')"
    back = subprocess.run([sys.executable, "-c", load], cwd=tmp_path, env={**os.environ, **lowest}, capture_output=True, text=True)
    assert back.returncode == 0, back.stderr[-2000:]


@pytest.mark.slow
def test_model_tests_pass_on_the_lowest_transformers(lowest):
    tests = ["tests/test_models.py", "tests/models", "tests/plugins/models"]
    r = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], cwd=REPO,
        env={**os.environ, **lowest}, capture_output=True, text=True, timeout=1200,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:]
