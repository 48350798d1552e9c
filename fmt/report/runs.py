"""Finished runs as records, and the protocol's selection rule over them.

A run is a workdir holding `results.json` (and the `config.json` it ran with).
Runs group by task; within a task, by setting (the swept fields' values: from
`sweep.json` where a sweep made the runs, else the config fields that differ
between the task's runs); a setting's runs differ only in seed and fold. The
rule papers follow: the setting with the best mean main metric on dev, then the
mean and standard deviation over its runs, and its best single run.
"""

import dataclasses
import json
import math
import pathlib

import numpy as np

from fmt.errors import UserError
from fmt.metrics import higher_is_better
from fmt.train.workdir import RECORDING_FIELDS

# Config fields that tell runs of one setting apart, or only where they ran.
_REPEAT_FIELDS = frozenset({"seed", "cv_fold"})
# results.json entries that are no metric.
_NOT_METRICS = frozenset({"step", "last_step", "train_seconds", "main_metric"})


@dataclasses.dataclass
class RunRecord:
    task: str                  # the task's name (GLUE task, data file or dataset)
    setting: dict[str, str]    # swept field -> value, as the sweep named it
    seed: int
    fold: int | None
    results: dict              # results.json: metric -> value (first split plain)
    workdir: pathlib.Path
    config: dict = dataclasses.field(default_factory=dict)  # config.json, as it ran

    @property
    def main_metric(self) -> str:
        return self.results.get("main_metric") or next(iter(self.metrics))

    @property
    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in self.results.items()
                if k not in _NOT_METRICS and isinstance(v, (int, float))}


def task_name(config: dict) -> str:
    """What a run's config trained on: the GLUE task, the TFDS dataset, or the
    training file's name (its folder's, for the usual train.* file names)."""
    if config.get("tfds_dataset"):
        return config["tfds_dataset"]
    path = config.get("train_file")
    if not path:
        return config.get("task", "")
    path = pathlib.PurePath(path)
    return path.parent.name if path.stem in ("train", "training") and path.parent.name \
        else path.stem


def read_run(workdir: pathlib.Path, task: str | None = None,
             setting: dict | None = None) -> RunRecord | None:
    """The record of a finished run (None without results.json); the task and
    setting are taken from its config.json unless given."""
    results_path = workdir / "results.json"
    if not results_path.is_file():
        return None
    results = json.loads(results_path.read_text(encoding="utf-8"))
    config_path = workdir / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    return RunRecord(task if task is not None else task_name(config), dict(setting or {}),
                     int(config.get("seed", 0)),
                     config.get("cv_fold") if config.get("cv_folds") else None,
                     results, workdir, config)


def collect(folder: str | pathlib.Path) -> list[RunRecord]:
    """The finished runs under `folder`: those its sweep.json lists, or else every
    workdir below it with a results.json."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder of runs; pass a sweep's --workdir or a "
                        f"run's workdir")
    sweep = folder / "sweep.json"
    if sweep.is_file():
        described = json.loads(sweep.read_text(encoding="utf-8"))
        records = [read_run(folder / run["workdir"], run["task"], run["setting"])
                   for run in described["runs"]]
        return [r for r in records if r is not None]
    records = [read_run(path.parent) for path in sorted(folder.rglob("results.json"))]
    records = [r for r in records if r is not None]
    _infer_settings(records)
    return records


def _infer_settings(records: list[RunRecord]) -> None:
    """Without a sweep.json: a task's setting is the config fields its runs differ in."""
    for task in {r.task for r in records}:
        runs = [r for r in records if r.task == task]
        configs = [r.config for r in runs]
        keys = sorted({k for c in configs for k in c} - _REPEAT_FIELDS - RECORDING_FIELDS)
        varying = [k for k in keys if len({json.dumps(c.get(k)) for c in configs}) > 1]
        for run, config in zip(runs, configs):
            run.setting = {k: _text(config.get(k)) for k in varying}


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def setting_label(setting: dict[str, str]) -> str:
    """`learning_rate=5e-5,batch_size=32`; `default` for the config as it is."""
    return ",".join(f"{k}={v}" for k, v in setting.items()) or "default"


@dataclasses.dataclass
class SettingScore:
    """One setting of a task: its runs' main metric values, their mean and std."""
    setting: dict[str, str]
    values: list[float]
    mean: float
    std: float


@dataclasses.dataclass
class Summary:
    """One task's result under the selection rule."""
    task: str
    main_metric: str
    setting: dict[str, str]              # the chosen setting
    runs: list[RunRecord]                # the chosen setting's runs (seeds, folds)
    mean: dict[str, float]               # metric -> mean over those runs
    std: dict[str, float]                # metric -> sample std (nan for one run)
    best: RunRecord                      # the best single run of the setting
    settings: dict[str, SettingScore]    # every setting's label -> its score


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; nan for a single value)."""
    values = np.asarray(values, float)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else math.nan


def select(records: list[RunRecord]) -> dict[str, Summary]:
    """Per task: the setting with the best mean main metric on dev, its mean ±
    std over seeds (and folds) for every metric, and its best run."""
    summaries = {}
    for task in dict.fromkeys(r.task for r in records):
        runs = [r for r in records if r.task == task]
        metric = runs[0].main_metric
        sign = 1 if higher_is_better(metric) else -1
        groups: dict[str, list[RunRecord]] = {}
        for run in runs:
            groups.setdefault(setting_label(run.setting), []).append(run)
        scores = {}
        for label, group in groups.items():
            values = [_value(r, metric) for r in group]
            scores[label] = SettingScore(group[0].setting, values, *mean_std(values))
        chosen = max(scores, key=lambda label: sign * scores[label].mean)
        group = sorted(groups[chosen], key=lambda r: (r.seed, r.fold or 0))
        names = [n for n in group[0].metrics if all(n in r.metrics for r in group)]
        stats = {n: mean_std([r.metrics[n] for r in group]) for n in names}
        summaries[task] = Summary(
            task, metric, group[0].setting, group,
            {n: s[0] for n, s in stats.items()}, {n: s[1] for n, s in stats.items()},
            max(group, key=lambda r: sign * _value(r, metric)), scores)
    return summaries


def _value(run: RunRecord, metric: str) -> float:
    if metric not in run.results:
        raise UserError(f"{run.workdir}/results.json has no {metric!r}, the main metric of "
                        f"task {run.task}'s other runs; rerun it, or leave it out")
    return float(run.results[metric])
