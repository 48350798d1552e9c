"""experiments/sweep.py: the grid, skipping and resuming, a failing run, --parallel, folds.

The sweep's own logic runs against a stand-in training script (fast, and it
records what it was asked); one test sweeps the real finetune.py end to end,
and one stops a sweep mid-run and resumes it.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import GLUE, ROOT
from fmt.data.datasets import validation_split
from fmt.train.config import default_config
from fmt.report import runs

SWEEP = [sys.executable, str(ROOT / "experiments/sweep.py")]
CONFIG = "--config=experiments/configs/glue.py:rte"

# A training script: writes config.json and results.json (accuracy from the
# learning rate and seed), fails on learning_rate=0 as finetune.py does (one
# `error:` line, exit 2), logs each start, its CPU cores and times.
STAND_IN = textwrap.dedent('''
    import json, os, pathlib, sys, time
    args = dict(a.split("=", 1) for a in sys.argv[1:] if "=" in a)
    workdir = pathlib.Path(args["--workdir"])
    lr = float(args.get("--config.learning_rate", "5e-5"))
    seed = int(args["--config.seed"])
    started = time.time()
    with open(os.environ["STARTS"], "a") as log:
        log.write(json.dumps({"workdir": str(workdir), "cpus": sorted(os.sched_getaffinity(0)),
                              "args": sys.argv[1:]}) + "\\n")
    if lr == 0:
        print("error: --config.learning_rate=0 trains nothing", file=sys.stderr)
        sys.exit(2)
    time.sleep(float(os.environ.get("SLEEP", "0")))
    workdir.mkdir(parents=True, exist_ok=True)
    config = {k.removeprefix("--config."): v for k, v in args.items() if k.startswith("--config.")}
    (workdir / "config.json").write_text(json.dumps({"task": "rte", **config}))
    (workdir / "results.json").write_text(json.dumps(
        {"main_metric": "accuracy", "accuracy": lr * 1000 + seed / 100,
         "started": started, "ended": time.time()}))
''')


@pytest.fixture
def stand_in(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(STAND_IN)
    return script


def sweep(*args, starts: pathlib.Path, sleep: float = 0, check=None):
    env = {**os.environ, "STARTS": str(starts), "SLEEP": str(sleep)}
    result = subprocess.run([*SWEEP, CONFIG, *args], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=600)
    if check is not None:
        assert result.returncode == check, result.stdout + result.stderr
    return result


def starts(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_grid_runs_every_combination_and_skips_finished(tmp_path, stand_in):
    log, out = tmp_path / "starts.jsonl", tmp_path / "sweep"
    args = [f"--script={stand_in}", f"--workdir={out}", "--sweep=learning_rate=1e-4,5e-5;"
            "batch_size=16,32", "--seeds=0,1", "--config.max_seq_length=64"]
    result = sweep(*args, starts=log, check=0)
    described = json.loads((out / "sweep.json").read_text())
    assert described["grid"] == {"learning_rate": ["1e-4", "5e-5"], "batch_size": ["16", "32"]}
    assert len(described["runs"]) == 8 and {r["status"] for r in described["runs"]} == {"done"}
    assert (out / "rte/learning_rate=5e-5,batch_size=32,seed=1/results.json").is_file()
    calls = starts(log)
    assert len(calls) == 8
    # Every run gets the sweep's overrides, then its own setting and seed.
    first = calls[0]["args"]
    assert "--config.max_seq_length=64" in first and "--config.learning_rate=1e-4" in first
    assert first.index("--config.max_seq_length=64") < first.index("--config.learning_rate=1e-4")
    assert "best so far: rte accuracy" in result.stdout
    # The same command again: nothing is rerun.
    again = sweep(*args, starts=log, check=0)
    assert len(starts(log)) == 8 and "8 already finished" in again.stdout
    # ...and sweep.json keeps the times of the runs that the first sweep made.
    kept = json.loads((out / "sweep.json").read_text())["runs"]
    assert [r["seconds"] for r in kept] == [r["seconds"] for r in described["runs"]]
    assert all(r["seconds"] > 0 for r in kept)
    best = runs.select(runs.collect(out))["rte"]
    assert best.setting == {"learning_rate": "1e-4", "batch_size": "16"}


def test_failing_run_is_recorded_and_the_others_go_on(tmp_path, stand_in):
    log, out = tmp_path / "starts.jsonl", tmp_path / "sweep"
    args = [f"--script={stand_in}", f"--workdir={out}", "--sweep=learning_rate=1e-4,0,5e-5"]
    result = sweep(*args, starts=log, check=1)
    described = {r["workdir"]: r for r in json.loads((out / "sweep.json").read_text())["runs"]}
    failed = described["rte/learning_rate=0,seed=0"]
    assert failed["status"] == "failed"
    assert failed["error"] == "error: --config.learning_rate=0 trains nothing"
    assert described["rte/learning_rate=5e-5,seed=0"]["status"] == "done"  # ran after it
    assert "1 of 3 runs failed" in result.stderr
    # Rerunning retries the failed run only.
    sweep(*args, starts=log, check=1)
    assert [c["workdir"].rsplit("/", 1)[-1] for c in starts(log)][3:] == ["learning_rate=0,seed=0"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPU cores")
def test_parallel_runs_on_disjoint_cores_at_once(tmp_path, stand_in):
    log, out = tmp_path / "starts.jsonl", tmp_path / "sweep"
    sweep(f"--script={stand_in}", f"--workdir={out}", "--sweep=learning_rate=1e-4,5e-5",
          "--parallel=2", starts=log, sleep=2, check=0)
    cores = [set(c["cpus"]) for c in starts(log)]
    assert len(cores) == 2 and not cores[0] & cores[1]
    results = [json.loads(p.read_text()) for p in out.rglob("results.json")]
    (a, b) = sorted(results, key=lambda r: r["started"])
    assert b["started"] < a["ended"], "the two runs did not overlap"
    too_many = sweep(f"--script={stand_in}", f"--workdir={out}",
                     f"--parallel={len(os.sched_getaffinity(0)) + 1}", starts=log, check=2)
    assert too_many.stderr.startswith("error: --parallel=") and "CPU cores" in too_many.stderr


def test_folds_make_runs_per_fold_and_cover_train_once(tmp_path, stand_in):
    log, out = tmp_path / "starts.jsonl", tmp_path / "sweep"
    sweep(f"--script={stand_in}", f"--workdir={out}", "--folds=3", "--seeds=0,1",
          starts=log, check=0)
    folds = [[a for a in c["args"] if a.startswith("--config.cv_")] for c in starts(log)]
    assert folds[:3] == [["--config.cv_folds=3", f"--config.cv_fold={i}"] for i in range(3)]
    assert len(folds) == 6
    # What a run with those flags evaluates on: its fold of the training rows.
    config = default_config()
    config.cv_folds = 3
    rows = [{"sentence": str(i)} for i in range(20)]
    held = []
    for fold in range(3):
        config.cv_fold = fold
        train, evals, origin = validation_split(config, rows, "train.csv", None, "rows")
        assert origin == f"train.csv (fold {fold} of 3)" and len(train) + len(evals) == 20
        held += evals
    assert sorted(r["sentence"] for r in held) == sorted(r["sentence"] for r in rows)


@pytest.mark.parametrize("args,fragment", [
    (["--sweep=learning_rat=1e-4"], "'learning_rat' is no field"),
    (["--sweep=learning_rate=fast"], "learning_rate=fast is not a number"),
    (["--sweep=seed=1,2"], "--seeds"),
    (["--sweep=learning_rate"], "FIELD=VALUE"),
    (["--folds=1"], "--folds=1"),
    (["--script=nowhere.py"], "--script=nowhere.py"),
])
def test_bad_flags_say_one_line(tmp_path, args, fragment):
    result = sweep(f"--workdir={tmp_path}/s", *args, starts=tmp_path / "x", check=2)
    assert result.stderr.count("\n") == 1 and fragment in result.stderr, result.stderr


def finetune_args(tiny_model, out):
    return [f"--workdir={out}", f"--config.model={tiny_model}", f"--config.data_dir={GLUE}",
            "--config.max_eval_examples=40", "--config.export_model=false"]


@pytest.mark.slow
def test_real_sweep_and_table(tmp_path, tiny_model):
    """finetune.py itself under the sweep: 2 settings x 2 seeds, then the table."""
    out = tmp_path / "sweep"
    result = subprocess.run(
        [*SWEEP, CONFIG, *finetune_args(tiny_model, out), "--sweep=learning_rate=1e-3,1e-4",
         "--seeds=0,1", "--config.max_steps=3"],
        capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    finished = runs.collect(out)
    assert len(finished) == 4
    # Each run is a finetune.py workdir with its own settings.
    config = json.loads((out / "rte/learning_rate=1e-4,seed=1/config.json").read_text())
    assert (config["learning_rate"], config["seed"], config["max_steps"]) == (1e-4, 1, 3)
    table = subprocess.run([sys.executable, str(ROOT / "experiments/table.py"), str(out)],
                           capture_output=True, text=True, cwd=ROOT)
    assert table.returncode == 0, table.stderr
    summary = runs.select(finished)["rte"]
    values = summary.settings[runs.setting_label(summary.setting)].values
    assert f"| {100 * sum(values) / 2:.2f} ± " in table.stdout


def test_stopped_sweep_resumes_its_interrupted_run(tmp_path, tiny_model):
    """SIGTERM to the sweep: the running finetune.py checkpoints and stops; the
    same command again resumes it from that checkpoint."""
    out = tmp_path / "sweep"
    command = [*SWEEP, CONFIG, *finetune_args(tiny_model, out), "--config.max_steps=300",
               "--config.checkpoint_every_steps=1000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT)
    log = out / "rte/seed=0/metrics.jsonl"
    deadline = time.time() + 300
    while not (log.exists() and log.read_text().strip()) and time.time() < deadline:
        time.sleep(0.5)  # training has started once the first train metrics are logged
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, stdout + stderr
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["status"] == "interrupted"
    assert "rerun the same command" in stdout
    steps = [p.name for p in (out / "rte/seed=0/checkpoints").iterdir() if p.name.isdigit()]
    assert steps and int(steps[0]) < 300
    again = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"resumed from the checkpoint at step {steps[0]}" in \
        (out / "rte/seed=0/sweep.log").read_text()
    assert json.loads((out / "rte/seed=0/results.json").read_text())["step"] == 300


def test_device_shares_split_gpus_and_tpu_chips(monkeypatch):
    from fmt import sweep as sweep_lib
    from conftest import user_error
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    shares = sweep_lib.device_shares(2)
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in shares] == ["0,1", "2,3"]
    user_error(lambda: sweep_lib.device_shares(8), "--parallel=8", "4 GPUs")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(sweep_lib, "_gpus", lambda: [])
    monkeypatch.setattr(sweep_lib, "_tpu_chips", lambda: ["0", "1", "2", "3"])
    tpu = sweep_lib.device_shares(4)
    assert [s.env["TPU_VISIBLE_CHIPS"] for s in tpu] == ["0", "1", "2", "3"]
    assert {s.env["TPU_CHIPS_PER_PROCESS_BOUNDS"] for s in tpu} == {"1,1,1"}
    assert len({s.env["TPU_MESH_CONTROLLER_PORT"] for s in tpu}) == 4  # one port each
    assert sweep_lib.device_shares(2)[1].env["TPU_CHIPS_PER_PROCESS_BOUNDS"] == "1,2,1"
    assert len(sweep_lib.device_shares(3)) == 3  # a chip each; the fourth idles
    monkeypatch.setattr(sweep_lib, "_tpu_chips", lambda: [str(i) for i in range(6)])
    user_error(lambda: sweep_lib.device_shares(2), "--parallel=2", "1, 2 or 4 chips")
    assert sweep_lib.device_shares(1)[0].env == {}  # one at a time: every device


def test_protocol_file_gives_grid_seeds_and_tasks(tmp_path, stand_in):
    protocol = tmp_path / "protocol.py"
    protocol.write_text(textwrap.dedent('''
        from fmt.train.config import default_config
        TASKS = ("rte", "mrpc")
        SEEDS = (3,)
        SWEEP = "learning_rate=1e-4,2e-4"
        def get_config(task="rte"):
            config = default_config()
            config.task = task
            return config
    '''))
    log = tmp_path / "starts.jsonl"
    env = {**os.environ, "STARTS": str(log)}
    run = lambda config, out: subprocess.run(
        [*SWEEP, f"--config={config}", f"--script={stand_in}", f"--workdir={out}"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert run(protocol, tmp_path / "all").returncode == 0
    described = json.loads((tmp_path / "all/sweep.json").read_text())
    assert (described["tasks"], described["seeds"]) == (["rte", "mrpc"], [3])
    assert [r["workdir"] for r in described["runs"]][:2] == [
        "rte/learning_rate=1e-4,seed=3", "rte/learning_rate=2e-4,seed=3"]
    assert f"--config={protocol}:mrpc" in starts(log)[-1]["args"]
    # A task named in --config wins over the file's TASKS.
    assert run(f"{protocol}:mrpc", tmp_path / "one").returncode == 0
    assert json.loads((tmp_path / "one/sweep.json").read_text())["tasks"] == ["mrpc"]
