"""fmt/report/plots.py on hand-made run folders: a sweep's 2x2 grid over two seeds,
a folder of runs without sweep.json, and experiments/table.py --plots."""

import dataclasses
import itertools
import json
import pathlib
import subprocess
import sys

import pytest

from fmt.report import plots, runs

pytest.importorskip("matplotlib")

ROOT = pathlib.Path(__file__).resolve().parents[1]
GRID = {"learning_rate": ["1e-4", "5e-5"], "batch_size": ["16", "32"]}
SEEDS = [0, 1]


def write_run(workdir: pathlib.Path, config: dict, accuracy: float, evaluated=True,
              logged=True) -> None:
    """A finished run's record: config.json, results.json and metrics.jsonl."""
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text(json.dumps({"task": "rte", **config}))
    (workdir / "results.json").write_text(json.dumps(
        {"accuracy": accuracy, "f1": accuracy - 0.02, "main_metric": "accuracy", "step": 40}))
    if not logged:
        return
    lines = [{"step": step, "train_loss": 0.7 / step ** 0.3, "learning_rate": 1e-4}
             for step in range(5, 45, 5)]
    if evaluated:
        lines += [{"step": step, "eval_accuracy": accuracy - 0.1 / step, "eval_f1": 0.5}
                  for step in (20, 40)]
    lines.sort(key=lambda line: line["step"])
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))


def write_sweep(folder: pathlib.Path, grid: dict[str, list[str]], evaluated=True) -> None:
    """The runs of a sweep over `grid` and SEEDS, and its sweep.json as fmt/sweep.py writes it."""
    from fmt.sweep import plan
    planned = plan(["rte"], grid, SEEDS, 0)
    for i, run in enumerate(planned):
        config = {k: float(v) for k, v in run.setting.items()} | {"seed": run.seed}
        write_run(folder / run.workdir, config, 0.6 + 0.01 * i, evaluated=evaluated)
        run.status, run.seconds = "done", 12.0
    described = {"config": "experiments/configs/glue.py", "tasks": ["rte"],
                 "grid": grid, "seeds": SEEDS, "folds": 0, "script": "experiments/finetune.py",
                 "overrides": [], "runs": [dataclasses.asdict(r) for r in planned]}
    (folder / "sweep.json").write_text(json.dumps(described, indent=2))


def systems_of(**folders: pathlib.Path) -> dict:
    return {label: runs.select(runs.collect(folder)) for label, folder in folders.items()}


def check_png(path: pathlib.Path) -> tuple[int, int]:
    """(height, width) of a valid PNG of some size."""
    from matplotlib import image
    assert path.is_file() and path.stat().st_size > 5_000, path
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert pixels.shape[0] >= 200 and pixels.shape[1] >= 200
    assert pixels.std() > 0.01   # not a blank canvas
    return pixels.shape[:2]


def test_two_systems(tmp_path):
    """A 2x2 sweep gets curves, a heatmap and the spread; beside it a folder of runs
    that varies one field and lacks one metrics.jsonl gets no heatmap."""
    write_sweep(tmp_path / "fmt", GRID)
    for lr, seed in itertools.product(["3e-5", "5e-5"], SEEDS):
        write_run(tmp_path / "torch" / f"lr={lr},seed={seed}",
                  {"learning_rate": float(lr), "seed": seed}, 0.65,
                  evaluated=False, logged=(lr, seed) != ("3e-5", 1))
    systems = systems_of(**{"fmt (JAX)": tmp_path / "fmt", "torch": tmp_path / "torch"})
    assert len(systems["fmt (JAX)"]["rte"].settings) == 4
    assert len(systems["torch"]["rte"].settings) == 2
    out = tmp_path / "plots"
    written = plots.write_all(systems, out)
    assert sorted(p.name for p in written) == ["curves_rte.png", "grid_fmt_JAX_rte.png",
                                               "spread_rte.png"]
    assert sorted(out.iterdir()) == sorted(written)
    for path in written:
        check_png(path)


def test_one_dim_grid_no_heatmap_and_no_dev_panel(tmp_path):
    """A 1-D sweep writes no heatmap; runs that never evaluated while training get
    the train loss panel alone (narrower than with the dev panel beside it)."""
    write_sweep(tmp_path / "lr", {"learning_rate": ["1e-4", "5e-5", "3e-5"]}, evaluated=False)
    write_sweep(tmp_path / "grid", GRID)
    written = plots.write_all(systems_of(lr=tmp_path / "lr"),
                              tmp_path / "lr_plots")
    assert sorted(p.name for p in written) == ["curves_rte.png", "spread_rte.png"]
    with_dev = plots.write_all(systems_of(grid=tmp_path / "grid"),
                               tmp_path / "grid_plots")
    (height, width), = [check_png(p) for p in written if p.name.startswith("curves")]
    (height_dev, width_dev), = [check_png(p) for p in with_dev if p.name.startswith("curves")]
    assert height == height_dev and width_dev > 1.5 * width


def test_grid_axes_sort_numerically_and_fields_vary():
    assert plots.sorted_values(["1e-4", "5e-5", "3e-4", "1e-4"]) == ["5e-5", "1e-4", "3e-4"]
    assert plots.sorted_values(["b", "10", "a", "9"]) == ["9", "10", "a", "b"]
    scores = [runs.SettingScore({"lr": lr, "bs": "16", "warmup": w}, [0.5], 0.5, 0.0)
              for lr, w in itertools.product(["1", "2"], ["0", "0.1"])]
    assert plots.varying_fields(scores) == ["lr", "warmup"]
    # The spread lines settings up by value: a sweep's 5e-5 is an inferred setting's 5e-05.
    assert plots._by_value({"lr": "5e-5", "bs": "16"}) == \
        plots._by_value({"bs": "16.0", "lr": "5e-05"})


def test_table_cli_plots(tmp_path):
    write_sweep(tmp_path / "sweep", GRID)
    result = subprocess.run([sys.executable, str(ROOT / "experiments/table.py"),
                             str(tmp_path / "sweep"), "--plots", f"--out={tmp_path / 'out'}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line, = [l for l in result.stdout.splitlines() if l.startswith("plots: ")]
    paths = [pathlib.Path(p) for p in line.removeprefix("plots: ").split(", ")]
    assert {p.name for p in paths} == {"curves_rte.png", "grid_sweep_rte.png", "spread_rte.png"}
    assert all(p.parent == tmp_path / "out" / "plots" for p in paths)
    for path in paths:
        check_png(path)
