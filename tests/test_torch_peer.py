"""experiments/torch_peer.py writes metrics.jsonl as fmt's loop does, so that a
sweep's PyTorch side gets learning curves beside fmt's (table.py --plots)."""

import json
import math
import subprocess
import sys

from conftest import GLUE, ROOT, run_finetune
from fmt.report import plots, runs

TINY = ["--config=experiments/configs/glue.py:rte", f"--config.data_dir={GLUE}",
        "--config.max_steps=10", "--config.max_train_examples=64", "--config.max_eval_examples=16",
        "--config.batch_size=8", "--config.learning_rate=1e-2", "--config.warmup_steps=1",
        "--config.max_seq_length=64", "--config.log_every_steps=2",
        "--config.checkpoint_every_steps=1000"]


def lines(workdir, key):
    return {line["step"]: line[key] for line in map(json.loads, (workdir / "metrics.jsonl")
                                                  .read_text().splitlines()) if key in line}


def test_peer_writes_fmts_metric_lines_and_plots_beside_fmt(tmp_path, tiny_model):
    fmt_dir, torch_dir = tmp_path / "fmt/rte/seed=0", tmp_path / "torch/rte/seed=0"
    run_finetune(*TINY, f"--config.model={tiny_model}", f"--workdir={fmt_dir}")
    peer = subprocess.run([sys.executable, str(ROOT / "experiments/torch_peer.py"), *TINY,
                           f"--config.model={tiny_model}", f"--workdir={torch_dir}"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert peer.returncode == 0, peer.stderr[-3000:]
    assert (torch_dir / "results.json").is_file()

    # A line every 2 steps, each the window's mean loss.
    losses = lines(torch_dir, "train_loss")
    assert sorted(losses) == [2, 4, 6, 8, 10]
    assert all(math.isfinite(v) and v > 0 for v in losses.values())
    # The same schedule gives the same logged learning rates (each the window's
    # mean rate) and epochs as fmt's loop at the same steps.
    for key in ("learning_rate", "epoch"):
        ours, theirs = lines(fmt_dir, key), lines(torch_dir, key)
        assert set(theirs) == set(ours) == {2, 4, 6, 8, 10}
        for step in theirs:
            assert math.isclose(theirs[step], ours[step], rel_tol=1e-5, abs_tol=1e-9), \
                (key, step, theirs[step], ours[step])

    # table.py's curves now draw both systems.
    systems = {"fmt": runs.select(runs.collect(tmp_path / "fmt"))["rte"],
               "PyTorch": runs.select(runs.collect(tmp_path / "torch"))["rte"]}
    assert all(runs_.runs and plots.read_metrics(runs_.runs[0]) for runs_ in systems.values())
    written = plots.learning_curves(systems, tmp_path / "curves.png")
    assert written and written[0].stat().st_size > 0
