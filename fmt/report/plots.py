"""Figures of the runs behind a table (`experiments/table.py --plots`), as PNG:
per task the learning curves of each system's chosen setting and the spread
over seeds of every setting, and per system a heatmap of the dev metric where
its settings form a 2-D grid.

matplotlib is imported inside the functions, so that a table alone never needs
it, and figures are drawn on Agg canvases: no display, and none of pyplot's
global state. Fractions show as percentages, as in the tables.
"""

import json
import math
import pathlib
import re

from fmt.metrics import higher_is_better
from fmt.report.runs import RunRecord, SettingScore, Summary
from fmt.report.table import is_percent

PANEL_INCHES = (5.0, 3.6)   # one panel's width and height
DPI = 100


def write_all(systems: dict[str, dict[str, Summary]],
              out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Every figure of `systems` (row label -> task -> Summary) into `out_dir`;
    the paths written (each run record knows its workdir and metrics.jsonl)."""
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in dict.fromkeys(t for summaries in systems.values() for t in summaries):
        of_task = {label: summaries[task] for label, summaries in systems.items()
                   if task in summaries}
        written += learning_curves(of_task, out_dir / _file_name("curves", task))
        for label, summary in of_task.items():
            written += grid_heatmap(summary, label, out_dir / _file_name("grid", label, task))
        written += seed_spread(of_task, out_dir / _file_name("spread", task))
    return written


# --- learning curves ----------------------------------------------------------

def read_metrics(run: RunRecord) -> list[dict]:
    """The lines of the run's metrics.jsonl ([] without one: a torch peer's run
    may have none); a line still being written is left out."""
    path = run.workdir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines(True)
            if line.endswith("\n") and line.strip()]


def learning_curves(summaries: dict[str, Summary], path: pathlib.Path) -> list[pathlib.Path]:
    """Train loss against step, a line per run of each system's chosen setting
    and a colour per system; beside it the dev main metric, where any run
    evaluated while training. Nothing when no run has a metrics.jsonl."""
    logs = {}   # label -> (summary, each run's metric lines)
    for label, summary in summaries.items():
        runs = [lines for lines in map(read_metrics, summary.runs) if lines]
        if runs:
            logs[label] = (summary, runs)
    if not logs:
        return []
    metric = next(iter(summaries.values())).main_metric
    with_eval = any(f"eval_{summary.main_metric}" in line
                    for summary, runs in logs.values() for lines in runs for line in lines)
    figure, axes = _figure(2 if with_eval else 1)
    colours = {label: f"C{i % 10}" for i, label in enumerate(summaries)}
    for label, (summary, runs) in logs.items():
        scale = _scale(summary.main_metric)
        for lines in runs:
            _curve(axes[0], lines, "train_loss", 1.0, colours[label], marker=None)
            if with_eval:
                _curve(axes[1], lines, f"eval_{summary.main_metric}", scale, colours[label],
                       marker="o")
    task = next(iter(summaries.values())).task
    _label(axes[0], "train loss", task)
    if with_eval:
        _label(axes[1], _dev_name(metric), task)
    _legend(axes[0], {label: colours[label] for label in logs})
    figure.savefig(path, format="png")
    return [path]


def _curve(axis, lines: list[dict], key: str, scale: float, colour: str, marker) -> None:
    points = [(line["step"], scale * line[key]) for line in lines
              if isinstance(line.get(key), (int, float))]
    if points:
        axis.plot(*zip(*points), color=colour, alpha=0.75, linewidth=1.2, marker=marker,
                  markersize=3)


def _label(axis, name: str, task: str) -> None:
    axis.set(xlabel="step", ylabel=name, title=f"{task}: {name}")
    axis.grid(alpha=0.3)


def _legend(axis, colours: dict[str, str]) -> None:
    # One entry per system, however many seeds it drew.
    from matplotlib.lines import Line2D
    axis.legend(handles=[Line2D([], [], color=c, label=label) for label, c in colours.items()],
                fontsize=8)


# --- heatmap of a 2-D grid ------------------------------------------------------

def varying_fields(scores: list[SettingScore]) -> list[str]:
    """The setting fields that take more than one value."""
    fields = dict.fromkeys(k for s in scores for k in s.setting)
    return [k for k in fields if len({s.setting.get(k) for s in scores}) > 1]


def sorted_values(values) -> list[str]:
    """Distinct values, numerically where they parse as numbers (5e-5 before 1e-4)."""
    return sorted(set(values), key=_value_key)


def _value_key(value) -> tuple:
    try:
        return (0, float(value), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(value))


def _by_value(setting: dict[str, str]) -> tuple:
    return tuple(sorted((field, _value_key(value)) for field, value in setting.items()))


def grid_heatmap(summary: Summary, system: str, path: pathlib.Path) -> list[pathlib.Path]:
    """Where the settings vary over exactly two fields: the mean main metric of
    each (row value, column value) cell, annotated, the chosen setting outlined;
    better is brighter whichever way the metric improves. Else nothing."""
    from matplotlib.patches import Rectangle
    scores = list(summary.settings.values())
    fields = varying_fields(scores)
    if len(fields) != 2:
        return []
    rows_field, cols_field = fields
    rows = sorted_values(s.setting.get(rows_field) for s in scores)
    cols = sorted_values(s.setting.get(cols_field) for s in scores)
    scale = _scale(summary.main_metric)
    means = [[math.nan] * len(cols) for _ in rows]
    for s in scores:
        means[rows.index(s.setting.get(rows_field))][cols.index(s.setting.get(cols_field))] = \
            scale * s.mean
    figure, (axis,) = _figure(1)
    image = axis.imshow(means, cmap="viridis" if higher_is_better(summary.main_metric)
                        else "viridis_r", aspect="auto", origin="lower")
    for i, row in enumerate(means):
        for j, value in enumerate(row):
            if not math.isnan(value):
                red, green, blue, _ = image.cmap(image.norm(value))
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
                axis.text(j, i, f"{value:.2f}", ha="center", va="center",
                          color="white" if dark else "black", fontsize=9)
    chosen = (rows.index(summary.setting.get(rows_field)),
              cols.index(summary.setting.get(cols_field)))
    axis.add_patch(Rectangle((chosen[1] - 0.5, chosen[0] - 0.5), 1, 1, fill=False,
                             edgecolor="red", linewidth=2.5))
    axis.set(xticks=range(len(cols)), xticklabels=cols, yticks=range(len(rows)),
             yticklabels=rows, xlabel=cols_field, ylabel=rows_field,
             title=f"{system} {summary.task}: mean dev {summary.main_metric} (chosen outlined)")
    figure.colorbar(image, ax=axis, label=_dev_name(summary.main_metric))
    figure.savefig(path, format="png")
    return [path]


# --- spread over seeds ----------------------------------------------------------

def seed_spread(summaries: dict[str, Summary], path: pathlib.Path) -> list[pathlib.Path]:
    """Mean ± std of the main metric per setting, a group per system side by
    side, each run's value as a dot; the chosen setting's mean drawn filled.
    Settings line up across systems by value (a sweep's `5e-5` is a config's `5e-05`)."""
    places = {}   # a setting by value -> its label, as the first system names it
    for summary in summaries.values():
        for label, score in summary.settings.items():
            places.setdefault(_by_value(score.setting), label)
    at = {key: x for x, key in enumerate(places)}
    labels = list(places.values())
    metric = next(iter(summaries.values())).main_metric
    figure, (axis,) = _figure(1, width=max(1.0, 0.35 * len(labels)))
    width = 0.8 / len(summaries)
    for i, summary in enumerate(summaries.values()):
        scale, colour = _scale(summary.main_metric), f"C{i % 10}"
        for score in summary.settings.values():
            where = at[_by_value(score.setting)] - 0.4 + width * (i + 0.5)
            chosen = _by_value(score.setting) == _by_value(summary.setting)
            axis.errorbar(where, scale * score.mean, yerr=0 if math.isnan(score.std)
                          else scale * score.std, color=colour, capsize=4, marker="s",
                          markerfacecolor=colour if chosen else "white")
            axis.scatter([where] * len(score.values), [scale * v for v in score.values],
                         color=colour, s=12, alpha=0.6, zorder=3)
    axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    axis.set(ylabel=_dev_name(metric),
             title=f"{next(iter(summaries.values())).task}: mean ± std over runs per setting")
    axis.grid(axis="y", alpha=0.3)
    _legend(axis, {system: f"C{i % 10}" for i, system in enumerate(summaries)})
    figure.savefig(path, format="png")
    return [path]


# --- shared ---------------------------------------------------------------------

def _scale(metric: str) -> float:
    return 100.0 if is_percent(metric) else 1.0


def _dev_name(metric: str) -> str:
    return f"dev {metric}" + (" (%)" if is_percent(metric) else "")


def _figure(panels: int, width: float = 1.0):
    """A figure of `panels` axes side by side on an Agg canvas; `width` scales each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(PANEL_INCHES[0] * width * panels, PANEL_INCHES[1]), dpi=DPI,
                    layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.subplots(1, panels, squeeze=False)[0]


def _file_name(kind: str, *names: str) -> str:
    """`grid_fmt_JAX_rte.png`: the names with anything but letters, digits, `.`,
    `-` and `_` made `_`; an empty name (a config without tasks) left out."""
    safe = [re.sub(r"[^A-Za-z0-9._-]+", "_", n).strip("_") for n in names]
    return "_".join([kind, *filter(None, safe)]) + ".png"
