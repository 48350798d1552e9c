r"""Run a grid of fine-tuning settings over seeds: every combination in its own workdir.

  python experiments/sweep.py --config=experiments/configs/glue.py:rte \
      --sweep='learning_rate=1e-4,5e-5,3e-5;batch_size=16,32' --seeds=0,1,2 --workdir=DIR
  python experiments/sweep.py --config=experiments/configs/paper/minilm_cpu.py \
      --config.data_dir=../shared/data/glue --workdir=DIR       # the protocol's own grid
  python experiments/table.py DIR                                # the paper's table

Any --config.X=Y applies to every run. Runs go in DIR/<task>/<setting>,seed=<k>
(one after another, or --parallel=N at a time, each on its share of the
devices); rerunning the command skips finished runs and resumes interrupted
ones. A failing run is recorded with its error in DIR/sweep.json and the others
go on. --folds=K cross-validates on K folds of the training file instead of a dev
split. --script=experiments/torch_peer.py runs the same grid with the PyTorch
peer. A protocol config (experiments/configs/paper/) may give the grid, seeds and
tasks (SWEEP, SEEDS, TASKS); the flags override them.
"""

import pathlib
import sys

from absl import app, flags
from ml_collections import config_flags

HERE = pathlib.Path(__file__).resolve().parent
_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (Python).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the sweep: one workdir per run.")
_SWEEP = flags.DEFINE_string("sweep", None, "The grid: FIELD=V1,V2;FIELD=V1,... (default: "
                             "the config file's SWEEP, else the config as it is).")
_SEEDS = flags.DEFINE_list("seeds", None, "Seeds run for every setting (default: the config "
                           "file's SEEDS, else 0).")
_TASKS = flags.DEFINE_list("tasks", None, "Config arguments to sweep over, e.g. rte,mrpc "
                           "(default: the one in --config=FILE:TASK, else the file's TASKS).")
_FOLDS = flags.DEFINE_integer("folds", 0, "> 1: k-fold cross-validation on the train file; "
                              "every setting and seed runs once per fold.")
_PARALLEL = flags.DEFINE_integer("parallel", 1, "Runs at once, each on 1/N of the devices.")
_SCRIPT = flags.DEFINE_string("script", str(HERE / "finetune.py"),
                              "Training script: takes --config and --workdir, writes "
                              "results.json (finetune.py, torch_peer.py).")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks for errors in input.")
flags.mark_flags_as_required(["config", "workdir"])


def protocol_defaults(config_file: str) -> dict:
    """SWEEP, SEEDS and TASKS of a protocol config file, where it defines them."""
    from fmt.train.cli import config_module
    module = config_module(config_file)
    return {k: getattr(module, k) for k in ("SWEEP", "SEEDS", "TASKS") if hasattr(module, k)}


def config_overrides(argv: list[str]) -> list[str]:
    """The --config.X=Y arguments as given, for every run."""
    out = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config."):
            out.append(arg if "=" in arg or i + 1 == len(argv) else f"{arg}={argv[i + 1]}")
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fmt import sweep
    from fmt.errors import UserError
    try:
        spec = config_flags.get_config_filename(flags.FLAGS["config"])
        config_file, _, task = spec.partition(":")
        defaults = protocol_defaults(config_file)
        # --tasks, else the task named in --config (FILE:TASK), else the file's TASKS.
        tasks = _TASKS.value or ([task] if task else list(defaults.get("TASKS", [""])))
        grid = sweep.parse_grid(_SWEEP.value if _SWEEP.value is not None
                                else defaults.get("SWEEP", ""), _CONFIG.value)
        try:
            seeds = [int(s) for s in (_SEEDS.value or defaults.get("SEEDS", [0]))]
        except ValueError:
            raise UserError(f"--seeds={','.join(_SEEDS.value)}: give whole numbers, e.g. "
                            f"--seeds=0,1,2") from None
        if _FOLDS.value == 1 or _FOLDS.value < 0:
            raise UserError(f"--folds={_FOLDS.value}: give 2 or more folds (0 = none)")
        if _PARALLEL.value < 1:
            raise UserError(f"--parallel={_PARALLEL.value}: give 1 or more")
        if not pathlib.Path(_SCRIPT.value).is_file():
            raise UserError(f"--script={_SCRIPT.value}: no such file")
        folder = pathlib.Path(_WORKDIR.value)
        overrides = config_overrides(sys.argv[1:])
        runs = sweep.plan(tasks, grid, seeds, _FOLDS.value)
        describe = {"config": config_file, "tasks": tasks, "grid": grid, "seeds": seeds,
                    "folds": _FOLDS.value, "script": _SCRIPT.value, "overrides": overrides}
        args_of = lambda run: sweep.run_args(run, _SCRIPT.value, config_file, folder, overrides,
                                             _FOLDS.value)
        runner = sweep.Sweep(folder, runs, describe, args_of,
                             sweep.device_shares(_PARALLEL.value))
        finished = runner.run()
    except UserError as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    failed = [r for r in finished if r.status == "failed"]
    if runner.stopping:
        sys.exit(128 + runner.stopping)
    if failed:
        print(f"{len(failed)} of {len(finished)} runs failed; their errors are in "
              f"{folder}/sweep.json", file=sys.stderr)
        sys.exit(1)


def parse_flags(argv):
    from fmt.train.cli import parse_flags as parse
    return parse(argv, "config")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
