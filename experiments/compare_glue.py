"""fmt vs the PyTorch `transformers` peer on real GLUE dev sets, same settings.

Runs experiments/finetune.py and experiments/torch_peer.py one after the other
(never at once: the machine's cores are shared) for each task, then prints a
Markdown table of dev metrics and writes it to OUT/table.md.

  python experiments/compare_glue.py --data_dir=../shared/data/glue --out=runs/glue
"""

import json
import pathlib
import subprocess
import sys

from absl import app, flags

_DATA_DIR = flags.DEFINE_string("data_dir", None, "glue_data folder.", required=True)
_OUT = flags.DEFINE_string("out", "runs/glue", "Workdirs and the table go here.")
_TASKS = flags.DEFINE_list("tasks", ["rte", "mrpc", "stsb", "cola", "sst2"], "GLUE tasks.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for both frameworks.")
_OVERRIDES = flags.DEFINE_multi_string("override", [], "Extra --config.X=Y for both runs.")

# The protocol: 3 epochs on the small tasks, 1 on SST-2.
EPOCHS = {"sst2": 1}
HERE = pathlib.Path(__file__).resolve().parent


def _run(script: str, task: str, workdir: pathlib.Path) -> dict:
    if (workdir / "results.json").exists():
        return json.loads((workdir / "results.json").read_text())
    args = [sys.executable, str(HERE / script), f"--config={HERE}/configs/glue.py:{task}",
            f"--workdir={workdir}", f"--config.data_dir={_DATA_DIR.value}",
            f"--config.num_epochs={EPOCHS.get(task, 3)}", f"--config.seed={_SEED.value}",
            "--config.progress_bar=false", *[f"--config.{o}" for o in _OVERRIDES.value]]
    if script == "finetune.py":
        args.append("--config.export_model=false")
    subprocess.run(args, check=True)
    return json.loads((workdir / "results.json").read_text())


def main(argv):
    del argv
    out = pathlib.Path(_OUT.value)
    rows = ["| task | metric | fmt | PyTorch | fmt - PyTorch |", "|---|---|---|---|---|"]
    for task in _TASKS.value:
        ours = _run("finetune.py", task, out / f"{task}-fmt-s{_SEED.value}")
        peer = _run("torch_peer.py", task, out / f"{task}-torch-s{_SEED.value}")
        for name in ours:
            if name in ("step", "train_seconds") or name not in peer:
                continue
            rows.append(f"| {task} | {name} | {100 * ours[name]:.2f} | {100 * peer[name]:.2f} "
                        f"| {100 * (ours[name] - peer[name]):+.2f} |")
        table = "\n".join(rows)
        (out / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    app.run(main)
