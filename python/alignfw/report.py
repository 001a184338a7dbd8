"""The run report: one self-contained ``report.html`` with SVG line plots of a run's metrics.

The report reads only what every run directory holds: ``metrics.jsonl`` (one JSON object per
logged step, written by ``alignfw.plugins.loggers``), ``config.yaml`` and, once the run finished,
``summary.json``. It therefore works for every algorithm, third-party ones with their own metric
names included. Metrics are grouped by the prefix before the first ``/`` (``reward/*``, ``kl/*``,
``loss/*``, ``time/*`` …); a held-out metric ``eval/<g>`` is drawn in group ``<g>`` when the run
logs one (so ``eval/reward`` sits beside the training ``reward/mean``), the other ``eval/*`` form
their own group. When the run logged sample completions (``samples.jsonl``), the first and the last
evaluation's are shown side by side, prompt by prompt, with each reward and length. The plots are hand-written SVG (no matplotlib, no JavaScript, no network): nice
tick values (Heckbert, "Nice numbers for graph labels", Graphics Gems, 1990), a polyline per
series with gaps at NaN/inf, a marker for an isolated point, and for long noisy training series a
TensorBoard-style debiased EMA over the raw line.

The built-in plugin ``alignfw.plugins.report`` writes the report at the end of every run; for a
run that never reached its end (killed, crashed, still running), regenerate it with::

    python -m alignfw.report outputs/2026-11-23/10-00-00
"""

from __future__ import annotations

import argparse
import html
import json
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from alignfw.exceptions import AlignfwError, DataError

__all__ = [
    "PlotBox",
    "Scale",
    "Series",
    "build_report",
    "chart_series",
    "ema",
    "format_tick",
    "group_series",
    "line_plot_svg",
    "load_metrics",
    "load_samples",
    "main",
    "nice_ticks",
    "smoothing_weight",
    "write_report",
]

REPORT_NAME = "report.html"

# -- data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One metric over steps, sorted by step. ``values`` holds NaN where the logger wrote ``null``
    (a non-finite value) so that plots show a gap there."""

    name: str
    steps: tuple[int, ...]
    values: tuple[float, ...]

    def finite(self) -> list[tuple[int, float]]:
        """The ``(step, value)`` pairs a plot draws: NaN and ±inf left out."""
        return [(s, v) for s, v in zip(self.steps, self.values) if math.isfinite(v)]

    @property
    def held_out(self) -> bool:
        """Held-out evaluation (``eval/*``): a few points, drawn dashed with markers."""
        return self.name.startswith("eval/")


def load_metrics(path: str | Path) -> dict[str, Series]:
    """Read a ``metrics.jsonl`` into one :class:`Series` per metric name.

    Each line is ``{"step": int, "<metric>": number | null, ...}``. Non-numeric values are not
    metrics and are ignored. A step logged twice (the end-of-run evaluation shares the last
    training step's number; a run resumed into the same directory repeats steps) keeps the value
    logged last.

    Raises:
        DataError: the file is missing, or a line is not a JSON object with an integer ``step``
            (the message names the file and the line number).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist; is {path.parent} a run directory (outputs/<date>/<time>)?")
    points: dict[str, dict[int, float]] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            step, row = _parse_row(line, path, lineno)
            for name, value in row.items():
                if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
                    points.setdefault(name, {})[step] = math.nan if value is None else float(value)
    return {
        name: Series(name, tuple(sorted(by_step)), tuple(by_step[s] for s in sorted(by_step)))
        for name, by_step in sorted(points.items())
    }


def _parse_row(line: str, path: Path, lineno: int) -> tuple[int, dict[str, Any]]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {lineno}: not valid JSON ({e.msg} at column {e.colno}): {line.strip()[:80]!r}") from None
    step = row.get("step") if isinstance(row, dict) else None
    if not isinstance(step, int) or isinstance(step, bool):
        raise DataError(f"{path}, line {lineno}: expected a JSON object with an integer \"step\", got {line.strip()[:80]!r}")
    return step, {k: v for k, v in row.items() if k != "step"}


#: groups shown first, in this order; ``time`` comes last, every other group alphabetically between
_GROUP_ORDER = ("reward", "kl", "loss", "eval", "lr")
_TITLES = {
    "reward": "Reward", "kl": "KL", "loss": "Loss", "eval": "Held-out evaluation", "time": "Time", "lr": "Learning rate",
    "time/tokens_per_s": "Throughput (tokens/s)",
}  # fmt: skip


def group_series(series: Mapping[str, Series]) -> list[tuple[str, list[Series]]]:
    """Group metrics by the prefix before the first ``/`` (a name without ``/`` is its own group).

    ``eval/<g>`` joins group ``<g>`` when the run has training metrics there (``eval/reward`` is
    drawn with ``reward/mean``); the remaining ``eval/*`` form the ``eval`` group. Within a group the
    training series come first, then the held-out ones, each alphabetically.
    """
    groups: dict[str, list[Series]] = {}
    for name in sorted(series):
        groups.setdefault(name.split("/", 1)[0], []).append(series[name])
    for s in list(groups.get("eval", [])):
        target = s.name.split("/")[1] if s.name.count("/") else ""
        if target in groups and target != "eval":
            groups[target].append(s)
            groups["eval"].remove(s)
    groups = {g: members for g, members in groups.items() if members}

    def rank(g: str) -> tuple[int, str]:
        return (_GROUP_ORDER.index(g), g) if g in _GROUP_ORDER else ((len(_GROUP_ORDER) + 1, g) if g == "time" else (len(_GROUP_ORDER), g))

    return [(g, sorted(groups[g], key=lambda s: (s.held_out, s.name))) for g in sorted(groups, key=rank)]


#: the training series a group's held-out twin is drawn with, in order of preference
_TWIN_SUFFIXES = ("/mean", "/total", "/seq")


def chart_series(members: Sequence[Series]) -> list[list[Series]]:
    """The charts of one group: one per training series, each on its own scale (``kl/coef`` is not
    flattened under ``kl/seq``); the group's held-out series (``eval/reward``) share the chart of its
    main training series (``reward/mean``, else ``*/total``, ``*/seq``, else the first), whose
    quantity they measure; a group of held-out series only gets one chart per series."""
    train = [s for s in members if not s.held_out]
    held = [s for s in members if s.held_out]
    if not train:
        return [[s] for s in held]
    main = next((s for suffix in _TWIN_SUFFIXES for s in train if s.name.endswith(suffix)), train[0])
    return [[s, *held] if s is main else [s] for s in train]


def ema(values: Sequence[float], weight: float) -> list[float]:
    """TensorBoard's debiased exponential moving average; NaN/inf in, NaN out (and not averaged in).

    ``out[i] = (1 - weight) * sum_j weight**(i-j) * v[j] / (1 - weight**n_i)`` over the finite
    ``v[j]`` up to ``i``, so the first finite value is returned as is rather than pulled to 0.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"EMA weight must be in [0, 1), got {weight}")
    out: list[float] = []
    acc, n = 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(math.nan)
            continue
        acc, n = weight * acc + (1.0 - weight) * v, n + 1
        out.append(acc / (1.0 - weight**n))
    return out


def smoothing_weight(values: Sequence[float]) -> float:
    """EMA weight for a training series: a window of about 5 % of its points when it is noisy, else 0.

    Noisy means the path zig-zags: its total variation exceeds three times its range (a monotone
    or constant series has total variation equal to its range and is left unsmoothed, where an
    EMA would only add lag). Below 40 points every point is worth seeing, so no smoothing either.
    """
    finite = [v for v in values if math.isfinite(v)]
    window = len(finite) / 20
    if window < 2:
        return 0.0
    variation = sum(abs(b - a) for a, b in zip(finite, finite[1:]))
    return 1.0 - 1.0 / window if variation > 3 * (max(finite) - min(finite)) else 0.0


# -- scales and ticks -------------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """A linear map from the data interval ``[d0, d1]`` onto the pixel interval ``[r0, r1]``.

    A degenerate domain (``d0 == d1``) maps every value onto the middle of the range instead of
    dividing by zero.
    """

    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0)


def nice_ticks(lo: float, hi: float, max_ticks: int = 6, *, integer: bool = False) -> list[float]:
    """At most ``max_ticks`` evenly spaced round numbers (steps 1, 2 or 5 times a power of ten)
    whose first is ``<= lo`` and whose last is ``>= hi``: the ticks, and the bounds, of an axis.

    A constant (``lo == hi``) is padded by 10 % of its size (by 1 around 0, or for ``integer``
    axes), so a flat line is drawn mid-plot with sensible labels. ``integer=True`` keeps the tick
    spacing a whole number (training steps).
    """
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"nice_ticks needs finite bounds, got {lo}, {hi}")
    if max_ticks < 2:
        raise ValueError(f"max_ticks must be at least 2, got {max_ticks}")
    lo, hi = min(lo, hi), max(lo, hi)
    if hi - lo <= 1e-12 * max(abs(lo), abs(hi)):
        pad = 1.0 if lo == 0 or integer else abs(lo) * 0.1
        lo, hi = lo - pad, hi + pad
    exp = math.floor(math.log10((hi - lo) / (max_ticks - 1)))
    while True:
        for mantissa in (1, 2, 5):
            step = mantissa * 10.0**exp
            if integer and step < 1:
                continue
            first, last = _snap(lo / step, math.floor), _snap(hi / step, math.ceil)
            last = max(last, first + 1)
            if last - first + 1 <= max_ticks:
                digits = max(0, -exp) + 1
                return [_clean(round(k * step, digits)) for k in range(first, last + 1)]
        exp += 1


def _snap(q: float, rounding: Callable[[float], int]) -> int:
    """``rounding(q)`` (floor or ceil), but a quotient within float error of an integer is that
    integer: 0.3 / 0.1 is 2.9999999999999996, and 0.3 must still get a tick of its own."""
    nearest = round(q)
    return int(nearest) if abs(q - nearest) <= 1e-12 * max(1.0, abs(q)) else int(rounding(q))


def _clean(v: float) -> float:
    return 0.0 if v == 0 else v  # no "-0" labels


def format_tick(v: float, ticks: Sequence[float]) -> str:
    """A tick label with as many decimals as the tick spacing needs (``0.05`` → 2, ``2`` → 0), so
    that neighbouring ticks never read the same (``0.69312``, ``0.69314``: not ``0.693`` twice);
    scientific notation, with the significant digits the spacing needs, for very large or very
    small values."""
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else abs(v) or 1.0
    top = max(abs(t) for t in ticks)
    if top >= 1e6 or top < 1e-3:
        digits = max(2, math.floor(math.log10(top)) - math.floor(math.log10(step) + 1e-9)) if top and step else 2
        return f"{v:.{digits + 1}g}"
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return f"{_clean(v):.{decimals}f}"


def _format_value(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:.4g}"


# -- SVG line plot ----------------------------------------------------------------------------

#: Tableau 10: distinct for colour-blind readers and on paper
PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac")
_FONT = "system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif"
_CHAR_W = 6.4  # average glyph width of the 11 px font, for layout without a font engine


@dataclass(frozen=True)
class PlotBox:
    """Pixel geometry of one plot: the SVG's size and the plot area inside the axes."""

    width: float = 520
    height: float = 270
    left: float = 56
    right: float = 14
    top: float = 30
    bottom: float = 38

    @property
    def x0(self) -> float:
        return self.left

    @property
    def x1(self) -> float:
        return self.width - self.right

    @property
    def y0(self) -> float:  # the bottom edge (value axis grows upwards)
        return self.height - self.bottom

    @property
    def y1(self) -> float:
        return self.top


def line_plot_svg(title: str, series: Sequence[Series], *, box: PlotBox = PlotBox(), group: str = "") -> str:
    """One SVG line plot: ``step`` on x, every series in ``series`` on a shared y axis, a legend below.

    Training series are solid lines; when long enough (:func:`smoothing_weight`) the raw line is
    drawn faint under its EMA. Held-out series (``eval/*``) are dashed with a marker per point.
    NaN/inf points are skipped, leaving a gap; an isolated point is drawn as a marker. Presentation
    is in attributes, not CSS, so each ``<svg>`` also stands alone as a file.
    """
    pts = [p for s in series for p in s.finite()]
    y_ticks = nice_ticks(min(v for _, v in pts), max(v for _, v in pts)) if pts else [0.0, 1.0]
    labels = [format_tick(t, y_ticks) for t in y_ticks]
    box = PlotBox(box.width, box.height, max(box.left, 14 + _CHAR_W * max(map(len, labels))), box.right, box.top, box.bottom)
    x_lo, x_hi = _x_domain([s for s, _ in pts])
    x_ticks = [t for t in nice_ticks(x_lo, x_hi, 8, integer=True) if x_lo <= t <= x_hi]
    sx, sy = Scale(x_lo, x_hi, box.x0, box.x1), Scale(y_ticks[0], y_ticks[-1], box.y0, box.y1)
    legend, legend_h = _legend(series, box)
    height = box.height + legend_h
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{box.width:g}" height="{height:g}" '
        f'viewBox="0 0 {box.width:g} {height:g}" font-family="{_FONT}" font-size="11" role="img" '
        f'data-group="{_esc(group)}" aria-label="{_esc(title)}">',
        f'<rect width="{box.width:g}" height="{height:g}" fill="#ffffff"/>',
        f'<text x="{box.x0:g}" y="18" font-size="13" font-weight="600" fill="#222">{_esc(title)}</text>',
        *_axes(box, sx, sy, x_ticks, y_ticks, labels),
    ]
    for i, s in enumerate(series):
        out += _draw_series(s, PALETTE[i % len(PALETTE)], sx, sy)
    if not pts:
        out.append(f'<text x="{(box.x0 + box.x1) / 2:.1f}" y="{(box.y0 + box.y1) / 2:.1f}" text-anchor="middle" fill="#888">no finite values</text>')
    out += legend
    out.append("</svg>")
    return "\n".join(out)


def _x_domain(steps: Sequence[int]) -> tuple[float, float]:
    if not steps:
        return 0.0, 1.0
    lo, hi = min(steps), max(steps)
    if lo == hi:  # a single step: centred, except that no axis reaches below step 0
        return (0.0 if lo == 0 else lo - 1.0), hi + 1.0
    return float(lo), float(hi)


def _axes(box: PlotBox, sx: Scale, sy: Scale, x_ticks: Sequence[float], y_ticks: Sequence[float], y_labels: Sequence[str]) -> list[str]:
    out = [f'<rect class="plot-area" x="{box.x0:.1f}" y="{box.y1:.1f}" width="{box.x1 - box.x0:.1f}" height="{box.y0 - box.y1:.1f}" fill="#fafafa" stroke="none"/>']
    for t, label in zip(y_ticks, y_labels):
        y = sy(t)
        out.append(f'<line x1="{box.x0:.1f}" x2="{box.x1:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e3e3e3" stroke-width="1"/>')
        out.append(f'<text class="ytick" x="{box.x0 - 6:.1f}" y="{y + 3.5:.1f}" text-anchor="end" fill="#555">{_esc(label)}</text>')
    for t in x_ticks:
        x = sx(t)
        out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{box.y0:.1f}" y2="{box.y0 + 4:.1f}" stroke="#888" stroke-width="1"/>')
        out.append(f'<text class="xtick" x="{x:.1f}" y="{box.y0 + 16:.1f}" text-anchor="middle" fill="#555">{int(t)}</text>')
    out.append(f'<line x1="{box.x0:.1f}" x2="{box.x1:.1f}" y1="{box.y0:.1f}" y2="{box.y0:.1f}" stroke="#888" stroke-width="1"/>')
    out.append(f'<line x1="{box.x0:.1f}" x2="{box.x0:.1f}" y1="{box.y1:.1f}" y2="{box.y0:.1f}" stroke="#888" stroke-width="1"/>')
    out.append(f'<text x="{(box.x0 + box.x1) / 2:.1f}" y="{box.y0 + 31:.1f}" text-anchor="middle" fill="#555">step</text>')
    return out


def _draw_series(s: Series, color: str, sx: Scale, sy: Scale) -> list[str]:
    weight = _weight(s)
    name = _esc(s.name)
    dash = ' stroke-dasharray="5 3"' if s.held_out else ""
    raw_style = f'stroke="{color}" stroke-width="1" stroke-opacity="0.35"' if weight else f'stroke="{color}" stroke-width="1.8"{dash}'
    out = _polylines(s.steps, s.values, sx, sy, f'class="series raw" data-series="{name}" fill="none" {raw_style}', color, markers=s.held_out)
    if weight:
        smooth_attrs = f'class="series smooth" data-series="{name}" fill="none" stroke="{color}" stroke-width="2"'
        out += _polylines(s.steps, ema(s.values, weight), sx, sy, smooth_attrs, color, markers=False)
    return out


def _weight(s: Series) -> float:
    """Held-out series (few points) and clocks are never smoothed."""
    return 0.0 if s.held_out or s.name.startswith("time/") else smoothing_weight(s.values)


def _polylines(steps: Sequence[int], values: Sequence[float], sx: Scale, sy: Scale, attrs: str, color: str, *, markers: bool) -> list[str]:
    """One ``<polyline>`` per run of finite points; a run of one point, or every point when
    ``markers``, also gets a ``<circle>``."""
    runs: list[list[tuple[float, float]]] = [[]]
    for step, v in zip(steps, values):
        if math.isfinite(v):
            runs[-1].append((sx(step), sy(v)))
        elif runs[-1]:
            runs.append([])
    dot_attrs = attrs.replace('fill="none"', f'fill="{color}"')
    out = []
    for run in filter(None, runs):
        if len(run) > 1:
            points = " ".join(f"{x:.1f},{y:.1f}" for x, y in run)
            out.append(f'<polyline {attrs} stroke-linejoin="round" points="{points}"/>')
        if len(run) == 1 or markers:
            out += [f'<circle {dot_attrs} cx="{x:.1f}" cy="{y:.1f}" r="3"/>' for x, y in run]
    return out


def _legend(series: Sequence[Series], box: PlotBox) -> tuple[list[str], float]:
    """Legend entries flowed left to right under the x axis; returns the SVG and its height."""
    out: list[str] = []
    x, row, row_h = box.x0, 0, 16
    top = box.height + 8  # first baseline, under the x axis label
    for i, s in enumerate(series):
        label = s.name + (" (held-out)" if s.held_out else "")
        w = 26 + _CHAR_W * len(label) + 14
        if x + w > box.width - box.right and x > box.x0:
            x, row = box.x0, row + 1
        y = top + row * row_h
        color = PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if s.held_out else ""
        out.append(f'<g class="legend-entry" data-series="{_esc(s.name)}">')
        out.append(f'<line x1="{x:.1f}" x2="{x + 20:.1f}" y1="{y - 4:.1f}" y2="{y - 4:.1f}" stroke="{color}" stroke-width="2"{dash}/>')
        if s.held_out:
            out.append(f'<circle cx="{x + 10:.1f}" cy="{y - 4:.1f}" r="3" fill="{color}"/>')
        out.append(f'<text x="{x + 26:.1f}" y="{y:.1f}" fill="#333">{_esc(label)}</text></g>')
        x += w
    return out, (row + 1) * row_h + 2 if series else 0


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


# -- the report -------------------------------------------------------------------------------


def build_report(run_dir: str | Path, *, wall_s: float | None = None) -> str:
    """The report of the run in ``run_dir`` as one self-contained HTML page.

    Args:
        run_dir: a run directory holding ``metrics.jsonl`` (and normally ``config.yaml`` and,
            once the run finished, ``summary.json``).
        wall_s: the run's wall time, when the caller measured it (the report plugin does); else
            the report shows the training loop's own ``time/elapsed_s``.

    Raises:
        DataError: ``run_dir`` is not a directory, has no ``metrics.jsonl``, or one of its files is malformed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"{run_dir} is not a directory; give a run directory (outputs/<date>/<time>) holding metrics.jsonl")
    if not (run_dir / "metrics.jsonl").is_file():
        raise DataError(f"{run_dir} has no metrics.jsonl, so it is not an alignfw run directory (outputs/<date>/<time>)")
    series = load_metrics(run_dir / "metrics.jsonl")
    config = _load_config(run_dir / "config.yaml")
    summary = _load_json(run_dir / "summary.json")
    groups = group_series(series)
    name = _component(config, "algo") or "run"
    figures = "\n".join(_group_figures(g, members) for g, members in groups) or "<p>metrics.jsonl holds no numeric metrics yet.</p>"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(name)} — alignfw run report</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>alignfw run report: {_esc(name)}</h1>
<p class="run-dir">{_esc(run_dir.resolve())}</p>
</header>
{_overview(config, summary, series, wall_s)}
{_held_out_table(summary, series)}
{_samples_section(run_dir / "samples.jsonl")}
<h2>Metrics over steps</h2>
{figures}
{_config_details(run_dir / "config.yaml")}
<footer>Written by alignfw {_esc(_version())} on {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")} from metrics.jsonl;
regenerate with <code>python -m alignfw.report {_esc(run_dir)}</code>.</footer>
</body>
</html>
"""


def write_report(run_dir: str | Path, *, wall_s: float | None = None, out: str | Path | None = None) -> Path:
    """Build the report of ``run_dir`` and write it atomically to ``out`` (default ``run_dir/report.html``)."""
    page = build_report(run_dir, wall_s=wall_s)
    target = Path(out) if out is not None else Path(run_dir) / REPORT_NAME
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(target)
    return target


_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; color: #222;
       margin: 24px auto; max-width: 1120px; padding: 0 16px; line-height: 1.4; }
h1 { font-size: 22px; margin: 0 0 2px; } h2 { font-size: 16px; margin: 24px 0 8px; } h3 { font-size: 14px; margin: 16px 0 6px; color: #444; }
.run-dir { color: #666; font-family: ui-monospace, monospace; font-size: 12px; margin: 0; }
table { border-collapse: collapse; font-size: 13px; }
td, th { padding: 3px 12px 3px 0; text-align: left; vertical-align: top; }
th { color: #555; font-weight: 600; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.options { font-size: 12px; color: #444; font-family: ui-monospace, monospace; }
.plots { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; border: 1px solid #e6e6e6; border-radius: 6px; padding: 4px; background: #fff; }
figure svg { display: block; max-width: 100%; height: auto; }
figcaption { font-size: 11px; color: #777; padding: 0 6px 4px; }
pre { background: #f6f6f6; padding: 8px; font-size: 12px; overflow-x: auto; }
table.samples td { max-width: 360px; } pre.sample { margin: 0 0 2px; padding: 4px 6px; white-space: pre-wrap; word-break: break-word; }
.scores { font-size: 11px; color: #666; }
footer { margin-top: 24px; font-size: 11px; color: #888; }
"""


#: the size of one chart of the small multiples
_CHART = PlotBox(width=360, height=220)


def _group_figures(group: str, members: list[Series]) -> str:
    """A group's heading and its charts (:func:`chart_series`), side by side."""
    title = _TITLES.get(group) or (f"{group}/*" if any("/" in s.name for s in members) else group)
    figures = "\n".join(_figure(group, chart) for chart in chart_series(members))
    return f'<section class="group" id="group-{_esc(group)}">\n<h3>{_esc(title)}</h3>\n<div class="plots">\n{figures}\n</div>\n</section>'


def _figure(group: str, members: list[Series]) -> str:
    name = members[0].name
    svg = line_plot_svg(_TITLES.get(name) or name, members, group=group, box=_CHART)
    smoothed = [s.name for s in members if _weight(s)]
    caption = "<figcaption>Faint: raw values; solid: EMA over about 5 % of the steps.</figcaption>" if smoothed else ""
    return f'<figure id="plot-{_esc(name)}" data-group="{_esc(group)}">\n{svg}\n{caption}</figure>'


def _overview(config: dict[str, Any], summary: dict[str, Any] | None, series: Mapping[str, Series], wall_s: float | None) -> str:
    run = _node(config, "run")
    steps_done = summary.get("steps") if summary else max((s.steps[-1] for s in series.values()), default=0)
    planned = run.get("steps")
    elapsed = series.get("time/elapsed_s")
    loop_s = max((v for _, v in elapsed.finite()), default=None) if elapsed else None
    rows = [
        ("Algorithm", _component(config, "algo")),
        ("Model", _component(config, "model", "path")),
        ("Reward", _component(config, "reward")),
        ("Data", _component(config, "data", "path", "kind")),
        ("Steps", f"{steps_done} of {planned}" if planned is not None else str(steps_done)),
        ("Batch size", run.get("batch_size")),
        ("Seed / device", f"{config.get('seed', '–')} / {config.get('device', '–')}" if config else None),
        ("Wall time", _duration(wall_s) + " (run start to end, after set-up)" if wall_s is not None else None),
        ("Training loop", _duration(loop_s) + " (time/elapsed_s)" if loop_s is not None else None),
        ("Status", "finished" if summary else "incomplete: no summary.json (the run was stopped, failed or is still running)"),
        ("Best model", _best(summary)),
    ]
    body = "\n".join(f"<tr><th>{k}</th><td>{_esc(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    options = " · ".join(f"{k}={v}" for k, v in _node(config, "algo").items() if k != "_name_")
    opts = f'\n<p class="options">algo: {_esc(options)}</p>' if options else ""
    return f'<section class="overview">\n<table>\n{body}\n</table>{opts}\n</section>'


def _best(summary: dict[str, Any] | None) -> str | None:
    """``step 80 (eval/reward 0.8412) in best/`` when the run kept its best model (run.keep_best)."""
    best = (summary or {}).get("best")
    if not isinstance(best, dict):
        return None
    return f"step {best.get('step')} ({best.get('metric')} {_format_value(best.get('value'))}) in best/"


def _component(config: dict[str, Any], key: str, *details: str) -> str | None:
    """``ppo``, or ``hf_causal_lm (path=builtin:tiny)`` for a config group with ``_name_``."""
    node = _node(config, key)
    if not node:
        return None
    extra = ", ".join(f"{d}={node[d]}" for d in details if node.get(d) not in (None, ""))
    return str(node.get("_name_", "?")) + (f" ({extra})" if extra else "")


def _node(config: dict[str, Any], key: str) -> dict[str, Any]:
    """The config group ``key`` as a dict; empty when absent or null (no reward for SFT)."""
    node = config.get(key)
    return node if isinstance(node, dict) else {}


def _held_out_table(summary: dict[str, Any] | None, series: Mapping[str, Series]) -> str:
    """Start → final held-out values: from summary.json, else the first and last logged ``eval/*``."""
    if summary and (summary.get("start") or summary.get("final")):
        start, final, source = summary.get("start") or {}, summary.get("final") or {}, "summary.json"
    else:
        evals = {n: s.finite() for n, s in series.items() if s.held_out and s.finite()}
        start = {n: p[0][1] for n, p in evals.items() if p[0][0] == 0}
        final = {n: p[-1][1] for n, p in evals.items()}
        source = "metrics.jsonl (no summary.json yet)"
    names = sorted(set(start) | set(final))
    if not names:
        return ""
    rows = []
    for n in names:
        a, b = start.get(n), final.get(n)
        change = ""
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isfinite(a) and math.isfinite(b):
            rel = f" ({(b - a) / abs(a) * 100:+.1f} %)" if a else ""
            change = f'<td class="num">{b - a:+.4g}{rel}</td>'
        rows.append(f"<tr><td>{_esc(n)}</td><td class=\"num\">{_format_value(a)}</td><td class=\"num\">{_format_value(b)}</td>{change or '<td></td>'}</tr>")
    head = "<tr><th>held-out metric</th><th>start</th><th>final</th><th>change</th></tr>"
    return f'<h2>Held-out evaluation</h2>\n<table class="held-out" data-source="{_esc(source)}">\n{head}\n' + "\n".join(rows) + f"\n</table>\n<p class=\"options\">from {_esc(source)}</p>"


def load_samples(path: Path) -> dict[int, list[dict[str, Any]]]:
    """``samples.jsonl`` grouped by step (in file order; a resumed run's repeated step keeps its last)."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    if not path.is_file():
        return by_step
    last: dict[int, int] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            step = int(row["step"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise DataError(f"{path}, line {lineno}: not a sample (a JSON object with step, prompt, response)") from None
        if last.get(step, lineno - 1) != lineno - 1:  # the same step logged again later (a resumed run): restart it
            by_step[step] = []
        by_step.setdefault(step, []).append(row)
        last[step] = lineno
    return by_step


def _sample_cell(sample: dict[str, Any] | None) -> str:
    if sample is None:
        return "<td></td>"
    scores = []
    if isinstance(sample.get("reward"), (int, float)):
        scores.append(f"reward {_format_value(sample['reward'])}")
    scores += [f"{_esc(k)} {_format_value(v)}" for k, v in (sample.get("rewards") or {}).items() if isinstance(v, (int, float))]
    scores.append(f"{sample.get('length', '?')} tokens")
    return f'<td><pre class="sample">{_esc(sample.get("response", ""))}</pre><span class="scores">{" · ".join(scores)}</span></td>'


def _samples_section(path: Path) -> str:
    """The first and the last evaluation's sample completions side by side, prompt by prompt."""
    by_step = load_samples(path)
    if not by_step:
        return ""
    first, last = min(by_step), max(by_step)
    start = {s.get("prompt"): s for s in by_step[first]}
    final = {s.get("prompt"): s for s in by_step[last]}
    prompts = list(dict.fromkeys([*start, *final]))
    head = f"<tr><th>prompt</th><th>step {first}</th>" + (f"<th>step {last}</th>" if last != first else "") + "</tr>"
    rows = [
        f'<tr><td><pre class="sample">{_esc(p)}</pre></td>{_sample_cell(start.get(p))}' + (_sample_cell(final.get(p)) if last != first else "") + "</tr>"
        for p in prompts
    ]
    return '<h2>Sample completions</h2>\n<table class="samples">\n' + head + "\n" + "\n".join(rows) + "\n</table>"


def _config_details(path: Path) -> str:
    if not path.is_file():
        return ""
    return f"<details><summary>config.yaml</summary>\n<pre>{_esc(path.read_text(encoding='utf-8'))}</pre>\n</details>"


def _load_config(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise DataError(f"{path}: not valid YAML ({e})") from None
    return data if isinstance(data, dict) else {}


def _load_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
    return data if isinstance(data, dict) else None


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min" if hours else f"{m} min {s:02d} s"


def _version() -> str:
    from alignfw import __version__

    return __version__


# -- command line -----------------------------------------------------------------------------


def main(argv: Iterable[str] | None = None) -> None:
    """``python -m alignfw.report RUN_DIR [-o FILE]``: (re)write the report of an existing run."""
    parser = argparse.ArgumentParser(
        prog="python -m alignfw.report",
        description="Write report.html (plots of every metric over steps) for an alignfw run directory, "
        "e.g. one stopped before the end.",
    )
    parser.add_argument("run_dir", help="the run directory (outputs/<date>/<time>) holding metrics.jsonl")
    parser.add_argument("-o", "--output", help="where to write the page (default: RUN_DIR/report.html)")
    args = parser.parse_args(None if argv is None else list(argv))
    try:
        path = write_report(args.run_dir, out=args.output)
    except (AlignfwError, OSError) as e:
        print(f"alignfw.report: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"report: {path}")


if __name__ == "__main__":
    main()
