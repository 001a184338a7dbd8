"""The run report (alignfw.report and the built-in plugin alignfw.plugins.report): scales and
ticks, the SVG plots, loading metrics.jsonl, a real tiny run's report.html, and the command line."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from alignfw.exceptions import DataError
from alignfw.report import (
    PlotBox,
    Scale,
    Series,
    build_report,
    ema,
    chart_series,
    format_tick,
    group_series,
    line_plot_svg,
    load_metrics,
    nice_ticks,
    smoothing_weight,
    write_report,
)
from helpers import run_cli

SVG = "{http://www.w3.org/2000/svg}"
SMALL = ["run.steps=4", "run.batch_size=4", "run.eval_size=4", "run.eval_every=2", "rollout.max_new_tokens=8"]


def _series(name: str, values: list[float], start: int = 0) -> Series:
    return Series(name, tuple(range(start, start + len(values))), tuple(values))


def _points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.get("points", "").split()]  # type: ignore[misc]


def _plot_area(svg: ET.Element) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` of the plot area in pixels."""
    r = next(e for e in svg.iter(f"{SVG}rect") if e.get("class") == "plot-area")
    x, y, w, h = (float(r.get(k)) for k in ("x", "y", "width", "height"))  # type: ignore[arg-type]
    return x, y, x + w, y + h


def _raw_lines(svg: ET.Element, name: str) -> list[ET.Element]:
    return [e for e in svg.iter(f"{SVG}polyline") if e.get("data-series") == name and "raw" in e.get("class", "")]


# -- ticks, scales, smoothing --------------------------------------------------------------------


def test_nice_ticks_are_round_and_cover_the_data():
    assert nice_ticks(0.06, 0.33) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert nice_ticks(-0.35, 4.7) == [-2.0, 0.0, 2.0, 4.0, 6.0]
    assert nice_ticks(0, 12, 8, integer=True) == [0, 2, 4, 6, 8, 10, 12]
    assert nice_ticks(0, 3, 8, integer=True) == [0, 1, 2, 3]  # never a step of 0.5 on an integer axis


@given(
    st.floats(-1e9, 1e9, allow_nan=False), st.floats(1e-9, 1e9, allow_nan=False), st.integers(2, 10)
)
def test_nice_ticks_properties(lo, span, max_ticks):
    hi = lo + span
    t = nice_ticks(lo, hi, max_ticks)
    assert 2 <= len(t) <= max_ticks
    step = (t[-1] - t[0]) / (len(t) - 1)
    tol = 1e-9 * step + 8 * math.ulp(max(abs(t[0]), abs(t[-1])))  # float64 cannot do better far from 0
    assert t[0] <= lo + tol and t[-1] >= hi - tol
    assert all(abs((b - a) - step) <= tol for a, b in zip(t, t[1:]))  # evenly spaced
    scale = 10 ** math.floor(math.log10(step))
    assert min(abs(step - m * scale) for m in (1, 2, 5, 10)) <= tol  # 1, 2 or 5 times a power of ten


def test_nice_ticks_for_a_constant_pad_around_it():
    t = nice_ticks(0.1, 0.1)
    assert t[0] < 0.1 < t[-1] and len(t) >= 3
    assert nice_ticks(0.0, 0.0)[0] == -1.0 and nice_ticks(0.0, 0.0)[-1] == 1.0
    assert nice_ticks(-5.0, -5.0)[0] < -5.0 < nice_ticks(-5.0, -5.0)[-1]
    with pytest.raises(ValueError, match="finite"):
        nice_ticks(0.0, math.inf)


def test_scale_maps_domain_onto_range_and_survives_a_degenerate_domain():
    s = Scale(0.0, 10.0, 100.0, 300.0)
    assert (s(0), s(5), s(10)) == (100.0, 200.0, 300.0)
    inverted = Scale(-1.0, 1.0, 200.0, 0.0)  # y grows upwards on screen
    assert (inverted(-1), inverted(0), inverted(1)) == (200.0, 100.0, 0.0)
    assert Scale(3.0, 3.0, 0.0, 50.0)(3.0) == 25.0


def test_tick_labels_have_the_decimals_the_spacing_needs():
    assert [format_tick(t, [0.0, 0.05, 0.1]) for t in (0.0, 0.05, 0.1)] == ["0.00", "0.05", "0.10"]
    assert format_tick(-0.0, [-2.0, 0.0, 2.0]) == "0"
    assert format_tick(2e7, [0.0, 1e7, 2e7]) == "2e+07"
    assert format_tick(1e-6, [9e-7, 1e-6]) == "1e-06"


def test_ema_debiases_and_skips_non_finite_values():
    assert ema([1.0, 2.0, 3.0], 0.0) == [1.0, 2.0, 3.0]
    out = ema([4.0, math.nan, 4.0, math.inf, 4.0], 0.9)
    assert out[0] == pytest.approx(4.0) and out[2] == pytest.approx(4.0) and out[4] == pytest.approx(4.0)
    assert math.isnan(out[1]) and math.isnan(out[3])
    assert ema([0.0, 10.0], 0.5)[1] == pytest.approx(10.0 * 0.5 / (1 - 0.25))
    with pytest.raises(ValueError):
        ema([1.0], 1.0)


def test_only_long_noisy_series_are_smoothed():
    zigzag = [float(i % 2) for i in range(100)]
    assert 0 < smoothing_weight(zigzag) < 1
    assert smoothing_weight([float(i) for i in range(100)]) == 0.0  # monotone: an EMA would only lag
    assert smoothing_weight([1.0] * 100) == 0.0
    assert smoothing_weight(zigzag[:20]) == 0.0  # short: every point is worth seeing


# -- the SVG plot --------------------------------------------------------------------------------


def test_values_map_to_the_plot_area_corners():
    svg = ET.fromstring(line_plot_svg("t", [_series("loss/a", [0.0, 0.5, 1.0])]))  # ticks 0..1
    left, top, right, bottom = _plot_area(svg)
    (line,) = _raw_lines(svg, "loss/a")
    pts = _points(line)
    assert pts[0] == pytest.approx((left, bottom), abs=0.06)
    assert pts[1] == pytest.approx(((left + right) / 2, (top + bottom) / 2), abs=0.06)
    assert pts[2] == pytest.approx((right, top), abs=0.06)
    labels = [e.text for e in svg.iter(f"{SVG}text") if e.get("class") == "ytick"]
    assert labels[0] == "0.0" and labels[-1] == "1.0"
    assert [e.text for e in svg.iter(f"{SVG}text") if e.get("class") == "xtick"] == ["0", "1", "2"]


def test_non_finite_points_leave_a_gap():
    svg = ET.fromstring(line_plot_svg("t", [_series("kl/x", [1.0, 2.0, math.nan, 3.0, math.inf, 4.0, 5.0])]))
    lines = _raw_lines(svg, "kl/x")
    assert [len(_points(p)) for p in lines] == [2, 2]  # 1,2 | 3 alone | 4,5
    dots = [e for e in svg.iter(f"{SVG}circle") if e.get("data-series") == "kl/x"]
    assert len(dots) == 1  # the isolated 3.0 is a marker


def test_single_point_and_constant_series_draw_without_dividing_by_zero():
    svg = ET.fromstring(line_plot_svg("t", [Series("only", (7,), (3.0,))]))
    assert not _raw_lines(svg, "only")
    (dot,) = [e for e in svg.iter(f"{SVG}circle") if e.get("data-series") == "only"]
    left, top, right, bottom = _plot_area(svg)
    assert float(dot.get("cx")) == pytest.approx((left + right) / 2, abs=0.06)
    assert float(dot.get("cy")) == pytest.approx((top + bottom) / 2, abs=0.06)
    flat = ET.fromstring(line_plot_svg("t", [_series("lr", [1e-6] * 5)]))
    ys = {y for _, y in _points(_raw_lines(flat, "lr")[0])}
    assert len(ys) == 1 and top < ys.pop() < bottom


def test_held_out_series_get_markers_and_long_noisy_ones_an_ema():
    noisy = _series("reward/mean", [float(i % 3) for i in range(100)])
    held = Series("eval/reward", (0, 50, 99), (0.0, 1.0, 2.0))
    svg = ET.fromstring(line_plot_svg("Reward", [noisy, held]))
    assert len([e for e in svg.iter(f"{SVG}circle") if e.get("data-series") == "eval/reward"]) == 3
    smooth = [e for e in svg.iter(f"{SVG}polyline") if e.get("class") == "series smooth"]
    assert [e.get("data-series") for e in smooth] == ["reward/mean"] and len(_points(smooth[0])) == 100
    legend = [e.get("data-series") for e in svg.iter(f"{SVG}g") if e.get("class") == "legend-entry"]
    assert legend == ["reward/mean", "eval/reward"]


def test_legend_wraps_and_the_svg_grows_to_hold_it():
    many = [_series(f"policy/metric_with_a_long_name_{i}", [1.0, 2.0]) for i in range(6)]
    one = ET.fromstring(line_plot_svg("t", many[:1]))
    six = ET.fromstring(line_plot_svg("t", many))
    assert float(six.get("height")) > float(one.get("height"))
    ys = {e.find(f"{SVG}text").get("y") for e in six.iter(f"{SVG}g") if e.get("class") == "legend-entry"}
    assert len(ys) > 1
    box = PlotBox()
    assert all(float(t.get("x")) < box.width for t in six.iter(f"{SVG}text"))


# -- loading and grouping ------------------------------------------------------------------------


def test_load_metrics_reads_nulls_as_gaps_and_keeps_the_last_value_of_a_step(tmp_path):
    f = tmp_path / "metrics.jsonl"
    rows = [{"step": 0, "eval/reward": 0.1}, {"step": 1, "loss/x": 2.0, "note": "text"}, {"step": 2, "loss/x": None},
            {"step": 2, "eval/reward": 0.3}, {"step": 1, "loss/x": 5.0}]
    f.write_text("\n".join(map(json.dumps, rows)) + "\n\n")
    m = load_metrics(f)
    assert set(m) == {"eval/reward", "loss/x"}  # "note" is not a number
    assert m["loss/x"].steps == (1, 2) and m["loss/x"].values[0] == 5.0 and math.isnan(m["loss/x"].values[1])
    assert m["eval/reward"].finite() == [(0, 0.1), (2, 0.3)]


@pytest.mark.parametrize(
    "bad, message",
    [('{"step": 1, "loss": 0.5', r"metrics\.jsonl, line 2: not valid JSON"),
     ('{"loss": 0.5}', r"metrics\.jsonl, line 2: expected a JSON object with an integer \"step\""),
     ('[1, 2]', r"metrics\.jsonl, line 2: expected a JSON object")],
)
def test_malformed_lines_are_named(tmp_path, bad, message):
    f = tmp_path / "metrics.jsonl"
    f.write_text('{"step": 0, "loss": 1.0}\n' + bad + "\n")
    with pytest.raises(DataError, match=message):
        load_metrics(f)


def test_groups_by_prefix_with_held_out_metrics_beside_their_training_twin():
    names = ["reward/mean", "reward/std", "eval/reward", "eval/length", "kl/seq", "loss/policy", "grad_norm",
             "time/elapsed_s", "policy/ratio", "zeta/x"]
    groups = group_series({n: _series(n, [1.0]) for n in names})
    assert [(g, [s.name for s in ms]) for g, ms in groups] == [
        ("reward", ["reward/mean", "reward/std", "eval/reward"]),
        ("kl", ["kl/seq"]),
        ("loss", ["loss/policy"]),
        ("eval", ["eval/length"]),
        ("grad_norm", ["grad_norm"]),
        ("policy", ["policy/ratio"]),
        ("zeta", ["zeta/x"]),
        ("time", ["time/elapsed_s"]),
    ]


# -- the report of a real run --------------------------------------------------------------------


class _Page(HTMLParser):
    """Collects figure ids, every src/href and every tag name of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[str] = []
        self.links: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)
        d = dict(attrs)
        if tag == "figure":
            self.figures.append(d["id"])
        self.links += [v for k, v in attrs if k in ("src", "href", "xlink:href") and v]


def _svgs(page: str) -> dict[str, ET.Element]:
    out = {}
    for text in re.findall(r"<svg\b.*?</svg>", page, re.S):
        svg = ET.fromstring(text)
        out[svg.get("data-group")] = svg
    return out


def _assert_self_contained(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    assert not [u for u in p.links if re.match(r"(https?:)?//", u)], p.links
    assert not {"script", "link", "img", "iframe"} & p.tags
    assert "@import" not in page and "url(" not in page
    return p


@pytest.fixture(scope="module")
def ppo_run(tmp_path_factory):
    """``python -m alignfw`` for four PPO steps on the tiny model, evaluating at steps 0, 2 and 4;
    the report plugin is found through alignfw's entry points like every built-in."""
    cwd = tmp_path_factory.mktemp("report")
    r = run_cli("+reward=bleu", "+algo=ppo", *SMALL, "hydra.run.dir=out", cwd=cwd)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"report: {cwd / 'out' / 'report.html'}" in r.stdout
    return cwd / "out"


def _charts(page: str) -> dict[str, tuple[str, ET.Element]]:
    """Each chart's SVG by the id of its figure (``plot-<first series>``), with its group."""
    return {
        m.group(1): (m.group(2), ET.fromstring(m.group(3)))
        for m in re.finditer(r'<figure id="plot-(.*?)" data-group="(.*?)">\s*(<svg\b.*?</svg>)', page, re.S)
    }


def test_builtin_plugin_writes_a_report_with_one_chart_per_metric(ppo_run):
    page = (ppo_run / "report.html").read_text()
    p = _assert_self_contained(page)
    rows = [json.loads(line) for line in (ppo_run / "metrics.jsonl").read_text().splitlines()]
    groups = group_series(load_metrics(ppo_run / "metrics.jsonl"))
    charts = [(g, [s.name for s in chart]) for g, members in groups for chart in chart_series(members)]
    drawn = _charts(page)
    assert p.figures == [f"plot-{names[0]}" for _, names in charts] and list(drawn) == [names[0] for _, names in charts]
    assert {"reward", "kl", "loss", "eval", "time", "lr"} <= {g for g, _ in drawn.values()}
    for group, names in charts:
        svg_group, svg = drawn[names[0]]
        assert svg_group == group and {e.get("data-series") for e in svg.iter() if e.get("data-series")} == set(names)  # one scale each
        for name in names:
            finite = {r["step"]: r[name] for r in rows if isinstance(r.get(name), float)}  # last value per step
            assert sum(len(_points(line)) for line in _raw_lines(svg, name)) == len(finite), (group, name)
    # the held-out reward (steps 0, 2, 4) is drawn beside the training reward (steps 1-4); kl/coef has its own axis
    reward = drawn["reward/mean"][1]
    assert [len(_points(line)) for line in _raw_lines(reward, "reward/mean")] == [4]
    assert len([c for c in reward.iter(f"{SVG}circle") if c.get("data-series") == "eval/reward"]) == 3
    assert ["kl/coef"] in [names for _, names in charts] and "time/tokens_per_s" in drawn and "lr" in drawn


def test_small_multiples_give_each_training_series_its_own_chart():
    members = [_series(n, [1.0]) for n in ("kl/coef", "kl/seq", "eval/kl")]
    assert [[s.name for s in c] for c in chart_series(members)] == [["kl/coef"], ["kl/seq", "eval/kl"]]
    assert [[s.name for s in c] for c in chart_series([_series("eval/length", [1.0]), _series("eval/x", [2.0])])] == [["eval/length"], ["eval/x"]]


def test_narrow_ranges_get_distinct_tick_labels():
    ticks = nice_ticks(0.693120, 0.693155)
    labels = [format_tick(t, ticks) for t in ticks]
    assert len(set(labels)) == len(labels) and labels[0].startswith("0.6931")
    small = nice_ticks(1.001e-5, 1.004e-5)
    labels = [format_tick(t, small) for t in small]
    assert len(set(labels)) == len(labels), labels


def test_report_header_names_the_run_and_its_held_out_change(ppo_run):
    page = (ppo_run / "report.html").read_text()
    summary = json.loads((ppo_run / "summary.json").read_text())
    assert "alignfw run report: ppo" in page
    for text in ("hf_causal_lm", "tiny_task", "bleu", "4 of 4", "Wall time", "finished", "lr=", "config.yaml"):
        assert text in page, text
    table = re.search(r'<table class="held-out".*?</table>', page, re.S).group(0)
    start, final = summary["start"]["eval/reward"], summary["final"]["eval/reward"]
    assert f"{start:.4g}" in table and f"{final:.4g}" in table and "summary.json" in table


def test_report_of_a_run_without_summary_uses_the_logged_evaluations(tmp_path):
    rows = [{"step": 0, "eval/score": 1.0}, {"step": 1, "loss/x": 0.5}, {"step": 2, "loss/x": 0.4, "eval/score": 3.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_report(tmp_path)
    _assert_self_contained(page)
    assert "incomplete" in page and "no summary.json" in page
    table = re.search(r'<table class="held-out".*?</table>', page, re.S).group(0)
    assert "eval/score" in table and "+200.0 %" in table


def test_module_command_regenerates_the_report(ppo_run, tmp_path):
    (ppo_run / "report.html").unlink()
    r = _report_cli(str(ppo_run))
    assert r.returncode == 0, r.stderr
    assert (ppo_run / "report.html").exists() and str(ppo_run / "report.html") in r.stdout
    assert set(_svgs((ppo_run / "report.html").read_text())) >= {"reward", "kl", "loss"}
    r = _report_cli(str(ppo_run), "-o", str(tmp_path / "copy.html"))
    assert r.returncode == 0 and (tmp_path / "copy.html").exists()


def test_module_command_names_what_is_wrong(tmp_path):
    r = _report_cli(str(tmp_path / "nope"))
    assert r.returncode == 2 and "nope is not a directory" in r.stderr and "Traceback" not in r.stderr
    r = _report_cli(str(tmp_path))
    assert r.returncode == 2 and "has no metrics.jsonl" in r.stderr
    (tmp_path / "metrics.jsonl").write_text('{"step": 0, "x": 1}\n{"step": 1, "x": \n')
    r = _report_cli(str(tmp_path))
    assert r.returncode == 2 and f"{tmp_path / 'metrics.jsonl'}, line 2: not valid JSON" in r.stderr


def _report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "alignfw.report", *args], capture_output=True, text=True, timeout=120)


# -- the plugin ----------------------------------------------------------------------------------


def test_plugin_can_be_switched_off_and_never_fails_a_finished_run(tmp_path, monkeypatch, capsys):
    from alignfw.plugins import report as plugin

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss/x": 1.0}\n')
    monkeypatch.setenv("ALIGNFW_REPORT", "0")
    plugin.on_run_start(run_dir=str(tmp_path), config={})
    plugin.on_run_end(run_dir=str(tmp_path), metrics={})
    assert not (tmp_path / "report.html").exists()
    monkeypatch.setenv("ALIGNFW_REPORT", "1")
    plugin.on_run_end(run_dir=str(tmp_path), metrics={})
    assert (tmp_path / "report.html").exists() and "Wall time" not in (tmp_path / "report.html").read_text()
    (tmp_path / "metrics.jsonl").write_text("not json\n")
    plugin.on_run_end(run_dir=str(tmp_path), metrics={})  # a warning, not an exception
    assert "line 1: not valid JSON" in capsys.readouterr().err


def test_plugin_is_a_builtin_found_through_entry_points(monkeypatch):
    from alignfw.registry import plugin_manager

    monkeypatch.delenv("ALIGNFW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    monkeypatch.delenv("ALIGNFW_PLUGINS", raising=False)
    pm = plugin_manager()
    plugin = pm.get_plugin("report")
    assert plugin is not None and plugin.__name__ == "alignfw.plugins.report"
    assert pm.alignfw_origins["report"][0] == "alignfw"
    impl = next(i for i in pm.hook.on_run_end.get_hookimpls() if i.plugin_name == "report")
    assert impl.trylast  # runs after the loggers closed metrics.jsonl


def test_write_report_replaces_the_file_atomically(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss/x": 1.0}\n')
    (tmp_path / "report.html").write_text("old")
    path = write_report(tmp_path, wall_s=75.0)
    assert path == tmp_path / "report.html" and "1 min 15 s" in path.read_text()
    assert not list(tmp_path.glob("*.tmp"))
