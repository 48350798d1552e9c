"""Record the train losses and dev metrics of two small fixed-seed runs
(SST-2 classification, STS-B regression) with the real all-MiniLM-L6-v2.

`tests/data/reference/classification.json` was written by this script at
commit 233423f, the last commit before classification moved onto the task
interface; `test_tasks.py::test_classification_matches_the_pre_task_code`
reruns the same configs and asserts the new code gives the same numbers.
Rerun it (python tests/tools/make_classification_reference.py) only to record
a deliberate change of numerics.
"""

import json
import pathlib
import subprocess
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/data/reference/classification.json"

# (name, config file, overrides): small enough to run in seconds.
RUNS = [
    ("sst2", "experiments/configs/glue.py:sst2",
     ["--config.max_train_examples=160", "--config.max_eval_examples=96",
      "--config.batch_size=16", "--config.max_seq_length=64", "--config.num_epochs=1",
      "--config.learning_rate=1e-4"]),
    ("stsb", "experiments/configs/glue.py:stsb",
     ["--config.max_train_examples=96", "--config.max_eval_examples=64",
      "--config.batch_size=16", "--config.max_seq_length=64", "--config.num_epochs=1",
      "--config.learning_rate=1e-4"]),
]


def run(name, config, overrides, workdir):
    args = [sys.executable, str(ROOT / "experiments/finetune.py"), f"--config={config}",
            f"--workdir={workdir}", f"--config.data_dir={ROOT / 'tests/data/glue'}",
            "--config.log_every_steps=1", "--config.progress_bar=false",
            "--config.export_model=false",
            # The reference predates --config.rng_impl: its dropout bits are threefry's.
            "--config.rng_impl=threefry2x32", *overrides]
    subprocess.run(args, check=True, cwd=ROOT, capture_output=True)
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [l["train_loss"] for l in lines if "train_loss" in l]
    results = json.loads((workdir / "results.json").read_text())
    return {"overrides": overrides, "config": config, "train_losses": losses,
            "results": results}


def main():
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, config, overrides in RUNS:
            out[name] = run(name, config, overrides, pathlib.Path(tmp) / name)
    out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                   capture_output=True, text=True).stdout.strip()
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(OUT.read_text()[:2000])


if __name__ == "__main__":
    main()
