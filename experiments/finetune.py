r"""Fine-tune a pretrained encoder on a GLUE task or your own files.

  python experiments/finetune.py --config=experiments/configs/glue.py:sst2 --workdir=DIR
  python experiments/finetune.py --config=experiments/configs/classify.py \
      --config.train_file=train.csv --config.eval_file=dev.csv --workdir=DIR

Rerunning a command on the same --workdir resumes it. Mistakes in data, flags or
folders end with one line naming what to fix (--verbose shows the traceback).
`--help` lists the fields of --config (add --config=FILE for that file's defaults).
"""

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file (Python).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where the run's records and checkpoints go.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks for errors in input.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process run; left out, "
    "JAX detects TPU pod slices, SLURM, Open MPI and Kubernetes itself.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
# Environment variables through which JAX's cluster auto-detection finds its peers.
_CLUSTER_ENV = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                "JOBSET_NAME")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fmt.train.cli import quiet_logging
    quiet_logging()
    from fmt import compile_cache
    compile_cache.enable(_CONFIG.value.compilation_cache)  # before anything compiles
    start_distributed()
    import jax
    if jax.process_index() != 0:
        logging.getLogger("fmt").setLevel(logging.WARNING)
    from fmt.errors import Preempted, UserError
    from fmt.train.loop import train_and_evaluate
    try:
        results = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except UserError as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except Preempted as stop:
        print(f"stopped: {stop}", file=sys.stderr)
        sys.exit(128 + stop.signum)
    if jax.process_index() == 0:
        print(json.dumps(results, sort_keys=True))


def start_distributed() -> None:
    """Join a multi-process run through JAX's own runtime (`jax.distributed`)."""
    import jax
    explicit = _COORDINATOR.value is not None
    if not explicit and not any(os.environ.get(k) for k in _CLUSTER_ENV):
        return
    # CPU processes reach each other through gloo (one mesh over 127.0.0.1); the
    # setting touches nothing on GPU or TPU, and must precede any backend start.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if explicit:
        jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    else:
        jax.distributed.initialize()


def parse_flags(argv):
    """absl's parser, with --help listing the config's fields (exit 0), a bad
    --config path or --config.X said in one line (exit 2), and tuple fields
    taking the comma form (--config.text_fields=title,body)."""
    # fmt (and with it JAX) is imported inside functions here, as in main.
    from fmt.train.cli import parse_flags as parse
    return parse(argv, "config")


if __name__ == "__main__":
    from fmt import huge_pages
    huge_pages.reexec()  # before JAX loads; fmt/huge_pages.py says why
    app.run(main, flags_parser=parse_flags)
