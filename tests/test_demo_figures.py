"""The demo's figures live in docs/demo_figures.json, written by scripts/demo_figures.py from what the
demo commands print; README quotes it through rendered blocks, config headers point to it."""

from __future__ import annotations

import importlib.util
import json
import re

from helpers import REPO


def _script():
    spec = importlib.util.spec_from_file_location("demo_figures", REPO / "scripts" / "demo_figures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_quotes_exactly_the_figures_file():
    s = _script()
    fig = json.loads(s.FIGURES.read_text())
    text = s.README.read_text()
    assert s.apply(text, s.render(fig)) == text, "run: python scripts/demo_figures.py --render"


def test_figures_file_covers_every_demo_command():
    s = _script()
    fig = json.loads(s.FIGURES.read_text())
    assert set(fig["runs"]) == set(s.RUNS)
    for name, run in fig["runs"].items():
        assert run["command"] == "python -m alignfw " + " ".join(s.RUNS[name])
        assert run["start"] and run["final"], name
    assert {"cpu", "cores", "torch_cpu_capability", "torch"} <= set(fig["machine"])


def test_rendering_changes_when_a_figure_changes():
    s = _script()
    fig = json.loads(s.FIGURES.read_text())
    before = s.render(fig)
    fig["runs"]["ppo"]["final"]["eval/reward"] += 0.1
    assert s.render(fig)["main"] != before["main"]


def test_config_headers_quote_no_figures_of_their_own():
    for p in sorted((REPO / "conf").rglob("*.yaml")):
        header = "".join(line for line in p.read_text().splitlines(keepends=True) if line.startswith("#"))
        for line in header.splitlines():
            if line.startswith("# Measured:"):
                assert "docs/demo_figures.json" in line, f"{p}: {line}"
        assert not re.search(r"\d\.\d+ -> \d\.\d+", header), f"{p} quotes a start -> end figure; point to docs/demo_figures.json"
