"""table.py's selection and aggregation against tables computed by hand."""

import json
import math
import pathlib
import subprocess
import sys

import pytest

from conftest import ROOT, user_error
from fmt.data.datasets import k_fold
from fmt.report import runs, table


def make_run(folder: pathlib.Path, config: dict, results: dict) -> pathlib.Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "results.json").write_text(json.dumps({"step": 10, **results}))
    return folder


def make_sweep(root: pathlib.Path, runs_: list[tuple[str, dict, int, dict]]) -> pathlib.Path:
    """A sweep folder as fmt.sweep writes it: runs of (task, setting, seed, results)."""
    described = []
    for task, setting, seed, results in runs_:
        name = ",".join([*(f"{k}={v}" for k, v in setting.items()), f"seed={seed}"])
        make_run(root / task / name, {"task": task, "seed": seed, **setting}, results)
        described.append({"task": task, "setting": setting, "seed": seed, "fold": None,
                          "workdir": f"{task}/{name}", "status": "done"})
    (root / "sweep.json").write_text(json.dumps({"runs": described}))
    return root


def acc(value):
    return {"main_metric": "accuracy", "accuracy": value}


@pytest.fixture
def glue_sweep(tmp_path):
    return make_sweep(tmp_path / "fmt", [
        # RTE: lr=a has mean 0.70 (0.6, 0.7, 0.8); lr=b 0.66: a is chosen.
        ("rte", {"learning_rate": "a"}, 0, acc(0.6)),
        ("rte", {"learning_rate": "a"}, 1, acc(0.7)),
        ("rte", {"learning_rate": "a"}, 2, acc(0.8)),
        ("rte", {"learning_rate": "b"}, 0, acc(0.65)),
        ("rte", {"learning_rate": "b"}, 1, acc(0.66)),
        ("rte", {"learning_rate": "b"}, 2, acc(0.67)),
        # MRPC is judged by F1: lr=b (F1 0.9, 0.8) beats lr=a (0.7, 0.7) although
        # lr=a has the better accuracy.
        ("mrpc", {"learning_rate": "a"}, 0, {"main_metric": "f1", "f1": 0.7, "accuracy": 0.9}),
        ("mrpc", {"learning_rate": "a"}, 1, {"main_metric": "f1", "f1": 0.7, "accuracy": 0.9}),
        ("mrpc", {"learning_rate": "b"}, 0, {"main_metric": "f1", "f1": 0.9, "accuracy": 0.6}),
        ("mrpc", {"learning_rate": "b"}, 1, {"main_metric": "f1", "f1": 0.8, "accuracy": 0.8}),
    ])


def test_selection_mean_std_and_best_seed(glue_sweep):
    chosen = runs.select(runs.collect(glue_sweep))
    rte, mrpc = chosen["rte"], chosen["mrpc"]
    assert rte.setting == {"learning_rate": "a"} and rte.main_metric == "accuracy"
    assert rte.mean["accuracy"] == pytest.approx(0.7)
    assert rte.std["accuracy"] == pytest.approx(0.1)  # sample std of 0.6, 0.7, 0.8
    assert rte.best.seed == 2 and [r.seed for r in rte.runs] == [0, 1, 2]
    assert rte.settings["learning_rate=b"].mean == pytest.approx(0.66)
    assert mrpc.setting == {"learning_rate": "b"}
    assert (mrpc.mean["f1"], mrpc.mean["accuracy"]) == pytest.approx((0.85, 0.7))
    assert mrpc.std["f1"] == pytest.approx(math.sqrt(0.005))
    assert mrpc.best.seed == 0


def test_markdown_table_by_hand(glue_sweep):
    summaries = runs.select(runs.collect(glue_sweep))
    rows = table.system_rows("fmt", summaries)
    cols = table.columns(table.task_metrics([summaries]))
    assert [c.header for c in cols] == ["MRPC F1", "MRPC acc", "RTE acc"]  # leaderboard order
    # GLUE average: MRPC (85 + 70) / 2 = 77.5, RTE 70 -> 73.75; best seeds: MRPC
    # seed 0 (90, 60) -> 75, RTE seed 2: 80 -> 77.5.
    assert table.markdown(rows, cols).splitlines() == [
        "|  | MRPC F1 | MRPC acc | RTE acc | GLUE avg (2 tasks) |",
        "|---|---|---|---|---|",
        "| fmt | 85.00 ± 7.07 | 70.00 ± 14.14 | 70.00 ± 10.00 | 73.75 |",
        "| fmt (best seed) | 90.00 | 60.00 | 80.00 | 77.50 |",
    ]


def test_published_reference_and_delta(glue_sweep):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import table as table_script
    finally:
        sys.path.pop(0)
    reference = table_script.published("flax_glue")
    assert reference.cells[("rte", "accuracy")][0] == pytest.approx(0.6476)
    summaries = runs.select(runs.collect(glue_sweep))
    mean = table.system_rows("fmt", summaries, best=False)[0]
    delta = table.delta_row(mean, reference)
    cols = table.columns(table.task_metrics([summaries]))
    # RTE 70.00 - 64.76; MRPC F1 85.00 - 88.97, acc 70.00 - 84.36; averages
    # 73.75 and ((88.97 + 84.36) / 2 + 64.76) / 2 = 75.7125.
    assert table.markdown([reference, delta], cols).splitlines()[2:] == [
        "| Flax example (published, dev) | 88.97 | 84.36 | 64.76 | 75.71 |",
        "| fmt − Flax example (published, dev) | -3.97 | -14.36 | +5.24 | -1.96 |",
    ]
    user_error(lambda: table_script.published("flax_glue:nope"), "flax_glue:bert_base_cased")
    user_error(lambda: table_script.published("nope"), "minilm_cpu", "bert")


def test_lower_is_better_and_inferred_settings(tmp_path):
    """Without sweep.json, a task's setting is what its runs' configs differ in;
    perplexity picks the smallest."""
    for lr, seed, ppl in [("1e-4", 0, 30.0), ("1e-4", 1, 34.0), ("5e-5", 0, 20.0),
                          ("5e-5", 1, 26.0)]:
        make_run(tmp_path / f"{lr}-{seed}",
                 {"train_file": "corpus/train.txt", "learning_rate": float(lr), "seed": seed,
                  "progress_bar": False},
                 {"main_metric": "perplexity", "perplexity": ppl, "loss": math.log(ppl)})
    summary = runs.select(runs.collect(tmp_path))["corpus"]
    assert summary.setting == {"learning_rate": "5e-05"}
    assert summary.mean["perplexity"] == pytest.approx(23.0) and summary.best.seed == 0
    cols = table.columns(table.task_metrics([{"corpus": summary}]))
    row = table.system_rows("x", {"corpus": summary}, best=False)[0]
    assert table.cell_text(row, cols[0]) == "23.00 ± 4.24"  # not a percentage


def test_table_script_writes_md_and_csv(glue_sweep, tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "experiments/table.py"), str(glue_sweep),
         f"--reference={glue_sweep}", "--labels=fmt,again"],
        capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "| fmt − again | +0.00 | +0.00 | +0.00 | +0.00 |" in result.stdout
    assert (glue_sweep / "table.md").read_text() == result.stdout
    lines = (glue_sweep / "table.csv").read_text().splitlines()
    assert lines[0] == "row,kind,task,metric,value,std"
    cells = {tuple(line.split(",")[:4]): line.split(",")[4:] for line in lines[1:]}
    value, std = map(float, cells[("fmt", "mean", "rte", "accuracy")])
    assert (value, std) == pytest.approx((0.7, 0.1))
    assert cells[("fmt (best seed)", "best", "rte", "accuracy")] == ["0.8", ""]
    empty = tmp_path / "empty"
    empty.mkdir()
    failed = subprocess.run([sys.executable, str(ROOT / "experiments/table.py"), str(empty)],
                            capture_output=True, text=True, cwd=ROOT)
    assert failed.returncode == 2 and failed.stderr.count("\n") == 1, failed.stderr
    assert "no finished runs" in failed.stderr


@pytest.mark.parametrize("count,folds", [(10, 3), (7, 7), (100, 5)])
def test_k_fold_covers_train_once(count, folds):
    records = list(range(count))
    held = [k_fold(records, folds, i)[1] for i in range(folds)]
    assert sorted(sum(held, [])) == records                      # each exactly once
    assert max(map(len, held)) - min(map(len, held)) <= 1        # balanced
    for i in range(folds):
        train, out = k_fold(records, folds, i)
        assert sorted(train + out) == records and not set(train) & set(out)
        assert train == sorted(train)                            # order kept
    assert k_fold(records, folds, 0) == k_fold(records, folds, 0)  # same for every run


def test_k_fold_errors():
    user_error(lambda: k_fold([1, 2, 3], 1, 0), "--config.cv_folds=1", "at least 2")
    user_error(lambda: k_fold([1, 2, 3], 3, 3), "--config.cv_fold=3")
    user_error(lambda: k_fold([1, 2], 3, 0), "2 training records", "fewer folds")
