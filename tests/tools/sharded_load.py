"""Load checkpoints onto a mesh and export them again, as a run does, from one
process of several (`--process_id` of `--num_processes`, gloo collectives through
`--coordinator` on 127.0.0.1) or alone.

Each model is loaded lazily (`fmt.from_pretrained(..., lazy=True)`), placed with
the run's param shardings (`sharding.param_shardings` and `sharding.place`, as
`loop.compile_steps` places them) and saved by every process together
(`Model.save_pretrained`, as `loop._finish` exports). One JSON line per model
says how many checkpoint bytes this process read to place it.
tests/test_sharded_io.py starts it as two processes.

  python tests/tools/sharded_load.py --mesh=fsdp=2 --max_shard_size=100KB \\
      --models='[["FOLDER", "classification", "OUT"]]' [--coordinator=127.0.0.1:PORT \\
      --num_processes=2 --process_id=0]
"""

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True,
                        help="JSON list of [checkpoint folder, task kind, export folder]")
    parser.add_argument("--mesh", default="fsdp=-1")
    parser.add_argument("--max_shard_size", default="5GB")
    parser.add_argument("--coordinator")
    parser.add_argument("--num_processes", type=int, default=1)
    parser.add_argument("--process_id", type=int, default=0)
    args = parser.parse_args()
    import jax
    if args.coordinator:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(args.coordinator, args.num_processes, args.process_id)
    import fmt
    from fmt import safetensors_io
    from fmt.train import sharding
    mesh = sharding.make_mesh(args.mesh)
    for folder, task, out in json.loads(args.models):
        before = safetensors_io.READS.bytes
        model = fmt.from_pretrained(folder, task=task, lazy=True)
        shardings = sharding.param_shardings(mesh, model.logical_specs, model.params)
        model.params = sharding.place(model.params, shardings)
        jax.block_until_ready(model.params)
        read = safetensors_io.READS.bytes - before
        model.save_pretrained(out, max_shard_size=args.max_shard_size)
        print(json.dumps({"process": jax.process_index(), "folder": folder, "bytes_read": read}),
              flush=True)


if __name__ == "__main__":
    main()
