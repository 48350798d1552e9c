"""One of two JAX processes (gloo over 127.0.0.1) restoring `directory`'s checkpoints,
for tests/test_restore.py: process 1 alone sees the fault it is told, as one host of a
pod whose read of a step fails while the other hosts' reads succeed.

    restore_two_processes.py DIRECTORY PORT PROCESS_ID FAULT

FAULT: `damaged` (process 1 reads step 2 as damaged data), `transient` (every read of
process 1 fails with a reset connection) or `none`. Prints one JSON line: the restored
step and whether this process's slice of the kernel holds the step's values, or the
one-line error (exit 2), as finetune.py does.
"""

import json
import pathlib
import sys

import jax
import numpy as np


def main(directory: str, port: str, process_id: str, fault: str) -> int:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(f"127.0.0.1:{port}", 2, int(process_id))
    import logging
    import orbax.checkpoint as ocp
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    from fmt.errors import UserError
    from fmt.train.checkpoint import Checkpoints
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")

    if jax.process_index() == 1 and fault != "none":
        read = ocp.StandardCheckpointHandler.restore

        def faulty(self, item, *args, **kwargs):
            if fault == "transient":
                raise ConnectionResetError(104, "Connection reset by peer")
            if pathlib.Path(str(item)).parent.name == "2":
                raise ValueError("DATA_LOSS: injected: the chunk of process 1 is cut short")
            return read(self, item, *args, **kwargs)
        ocp.StandardCheckpointHandler.restore = faulty

    # The tree tests/test_restore.py saves: the kernel split over both processes.
    mesh = Mesh(np.array(jax.devices()), ("data",))
    abstract = {"params": {"kernel": jax.ShapeDtypeStruct((8, 4), np.float32,
                                                          sharding=NamedSharding(mesh, P("data")))},
                "step": jax.ShapeDtypeStruct((), np.int32, sharding=NamedSharding(mesh, P()))}
    checkpoints = Checkpoints(pathlib.Path(directory), max_to_keep=5)
    try:
        restored = checkpoints.restore_latest(abstract)
    except UserError as error:
        print(json.dumps({"error": str(error)}), flush=True)
        return 2
    finally:
        checkpoints.close()
    step = int(restored["step"].addressable_data(0))
    kernel = np.asarray(restored["params"]["kernel"].addressable_data(0))
    print(json.dumps({"step": step, "kernel_holds_step": bool((kernel == step).all()),
                      "kernel_rows": kernel.shape[0]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
