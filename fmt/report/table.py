"""Paper tables: rows of systems (mean ± std over seeds of the selected setting,
and the best seed), optional reference rows (published numbers, or another
folder of runs) with the difference to them, in Markdown and CSV.

GLUE tasks are laid out as the GLUE leaderboard does (CoLA MCC, SST-2 acc, MRPC
F1/acc, STS-B Pearson/Spearman, QQP F1/acc, MNLI-m/mm, QNLI, RTE, WNLI) with
the GLUE average: per task the mean of its numbers, then the mean over tasks.
Other tasks get a column for their main metric. Fractions show as percentages.
"""

import dataclasses
import math

from fmt.data import glue
from fmt.metrics import LOWER_IS_BETTER
from fmt.report.runs import Summary, setting_label

_SHORT = {"accuracy": "acc", "mcc": "MCC", "f1": "F1", "pearson": "Pearson",
          "spearman": "Spearman", "perplexity": "ppl", "precision": "P", "recall": "R"}
_SPLIT_SHORT = {"validation_matched": "-m", "validation_mismatched": "-mm"}
# The GLUE leaderboard's order of tasks.
GLUE_ORDER = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")


@dataclasses.dataclass(frozen=True)
class Column:
    task: str
    metric: str   # the results.json key: "f1", "validation_mismatched/accuracy"
    header: str


@dataclasses.dataclass
class Row:
    label: str
    cells: dict[tuple[str, str], tuple[float, float]]  # (task, metric) -> (value, std)
    kind: str = "mean"   # mean, best, reference or delta
    note: str = ""       # where a reference's numbers come from
    of: tuple["Row", "Row"] | None = None  # a delta's (row, reference)


def is_percent(metric: str) -> bool:
    """Fractions (accuracy, F1, correlations) show as percentages; losses and
    perplexities as they are."""
    return metric.rsplit("/", 1)[-1] not in LOWER_IS_BETTER


def columns(tasks: dict[str, tuple[str, ...]],
            extra_metrics: tuple[str, ...] = ()) -> list[Column]:
    """GLUE tasks in leaderboard order with all their numbers, then the other
    tasks' main metrics (and `extra_metrics` where they report them); `tasks`:
    task -> its metrics, the main one first (`task_metrics`)."""
    out = []
    for name in GLUE_ORDER:
        if name not in tasks:
            continue
        spec = glue.TASKS[name]
        for i, split in enumerate(spec.eval_splits):
            for metric in spec.metrics:
                key = metric if i == 0 else f"{split}/{metric}"
                out.append(Column(name, key, f"{spec.glue_dir}{_SPLIT_SHORT.get(split, '')} "
                                             f"{_SHORT.get(metric, metric)}"))
    for task, metrics in tasks.items():
        if task not in glue.TASKS:
            for metric in dict.fromkeys((metrics[0], *[m for m in extra_metrics
                                                       if m in metrics])):
                out.append(Column(task, metric, f"{task} {_SHORT.get(metric, metric)}"))
    return out


def task_metrics(summaries: list[dict[str, Summary]]) -> dict[str, tuple[str, ...]]:
    """Each task of any row -> its main metric first, then its other metrics."""
    out: dict[str, tuple[str, ...]] = {}
    for rows in summaries:
        for task, summary in rows.items():
            out.setdefault(task, (summary.main_metric,
                                  *[m for m in summary.mean if m != summary.main_metric]))
    return out


def system_rows(label: str, summaries: dict[str, Summary], best: bool = True) -> list[Row]:
    """The mean ± std row of a system, and its best-seed row."""
    rows = [Row(label, {(t, m): (s.mean[m], s.std[m]) for t, s in summaries.items()
                        for m in s.mean})]
    if best:
        rows.append(Row(f"{label} (best seed)",
                        {(t, m): (v, math.nan) for t, s in summaries.items()
                         for m, v in s.best.metrics.items()}, kind="best"))
    return rows


def published_row(label: str, scores: dict[str, dict[str, float]], note: str) -> Row:
    """A reference row from published numbers given in percent (as papers print them)."""
    cells = {(task, metric): (value / 100 if is_percent(metric) else value, math.nan)
             for task, values in scores.items() for metric, value in values.items()}
    return Row(label, cells, kind="reference", note=note)


def delta_row(row: Row, reference: Row) -> Row:
    cells = {key: (value - reference.cells[key][0], math.nan)
             for key, (value, _) in row.cells.items() if key in reference.cells}
    return Row(f"{row.label} − {reference.label}", cells, kind="delta", of=(row, reference))


def glue_average(row: Row, cols: list[Column]) -> float | None:
    """GLUE's score over the GLUE columns present: per task the mean of its
    numbers, then the mean over tasks; None unless every GLUE column has a value
    and there are two tasks or more. A delta's: the difference of the two."""
    if row.of is not None:
        left, right = (glue_average(r, cols) for r in row.of)
        return None if left is None or right is None else left - right
    per_task: dict[str, list[float]] = {}
    for col in cols:
        if col.task in glue.TASKS:
            if (col.task, col.metric) not in row.cells:
                return None
            per_task.setdefault(col.task, []).append(row.cells[(col.task, col.metric)][0])
    if len(per_task) < 2:
        return None
    return sum(sum(v) / len(v) for v in per_task.values()) / len(per_task)


def _number(value: float, metric: str, signed: bool = False) -> str:
    value = 100 * value if is_percent(metric) else value
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def cell_text(row: Row, col: Column) -> str:
    if (col.task, col.metric) not in row.cells:
        return "—"
    value, std = row.cells[(col.task, col.metric)]
    text = _number(value, col.metric, signed=row.kind == "delta")
    if not math.isnan(std):
        text += f" ± {_number(std, col.metric)}"
    return text


def markdown(rows: list[Row], cols: list[Column]) -> str:
    averages = [glue_average(r, cols) for r in rows]
    with_average = any(a is not None for a in averages)
    tasks = len({c.task for c in cols if c.task in glue.TASKS})
    header = ["", *[c.header for c in cols], *([f"GLUE avg ({tasks} tasks)"] if with_average
                                               else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, average in zip(rows, averages):
        cells = [row.label, *[cell_text(row, c) for c in cols]]
        if with_average:
            cells.append("—" if average is None else
                         f"{100 * average:+.2f}" if row.kind == "delta" else f"{100 * average:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def selection_lines(label: str, summaries: dict[str, Summary]) -> list[str]:
    """What the rule chose per task: the setting, its runs, the best seed."""
    out = []
    for task, s in summaries.items():
        seeds = ", ".join(f"{r.seed}" + (f"/fold {r.fold}" if r.fold is not None else "")
                          for r in s.runs)
        out.append(f"- {label} {task}: {setting_label(s.setting)} (best of {len(s.settings)} "
                   f"setting(s) by dev {s.main_metric}; runs: seeds {seeds}; best seed "
                   f"{s.best.seed})")
    return out


def settings_lines(label: str, summaries: dict[str, Summary]) -> list[str]:
    """Every setting of every task: the main metric's mean ± std over its runs."""
    out = []
    for task, s in summaries.items():
        if len(s.settings) < 2:
            continue
        scores = [f"{name} {_number(score.mean, s.main_metric)}"
                  + ("" if math.isnan(score.std) else f" ± {_number(score.std, s.main_metric)}")
                  + f" ({len(score.values)})" for name, score in s.settings.items()]
        out.append(f"- {label} {task} ({s.main_metric}): " + "; ".join(scores))
    return out


def csv_rows(rows: list[Row], cols: list[Column]) -> list[list[str]]:
    """Long form: one line per row and column, values as fractions (as results.json)."""
    out = [["row", "kind", "task", "metric", "value", "std"]]
    for row in rows:
        for col in cols:
            if (col.task, col.metric) in row.cells:
                value, std = row.cells[(col.task, col.metric)]
                out.append([row.label, row.kind, col.task, col.metric, repr(value),
                            "" if math.isnan(std) else repr(std)])
    return out
