"""The first train steps of one run config on several device meshes, in one process
(for tests/test_tensor_axis.py: compiling once per mesh is much cheaper than a
finetune.py process per mesh).

    XLA_FLAGS=--xla_force_host_platform_device_count=8 \
        python tests/tools/mesh_steps.py SPEC.json OUT_DIR

SPEC.json: {"config": "experiments/configs/clm.py", "set": {field: value, ...},
"meshes": ["one", "data=4,tensor=2", ...], "steps": 3}. "one" is a mesh of the
first device alone (the one-device reference); any other entry is a
`--config.mesh` value, made into a mesh by the loop's own `make_mesh`. Each mesh
starts from the same loaded model and takes the same batches (the first
`steps` of epoch 0's plan) through the loop's `compile_steps`, as finetune.py
does.

OUT_DIR/runs.json: per mesh, each step's loss and gradient norm, per param its
path, mesh spec and the shape of one device's shard, and the seconds taken
(compiling included; "load": loading the model and data). OUT_DIR/params.npz:
the params before training ("initial/PATH") and after each mesh's steps
("MESH/PATH").
"""

import json
import pathlib
import sys
import time

import jax
import numpy as np

from fmt import tasks
from fmt.data import batching, datasets
from fmt.train import cli, loop, sharding


def one_device_mesh():
    return jax.make_mesh((1,) * len(sharding.MESH_AXES), sharding.MESH_AXES,
                         devices=jax.devices()[:1],
                         axis_types=(jax.sharding.AxisType.Auto,) * len(sharding.MESH_AXES))


def flat(params: dict) -> dict[str, object]:
    return {"/".join(k.key for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def main(spec_path: str, out: str) -> None:
    started = time.perf_counter()
    spec = json.loads(pathlib.Path(spec_path).read_text())
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = cli.load_config(spec["config"])
    for name, value in spec["set"].items():
        config[name] = tuple(value) if isinstance(value, list) else value  # JSON has no tuples
    loop.validate(config)
    task = tasks.create(config)
    splits = datasets.limit(task.load(), config)
    model = loop.load_model(config, task, splits)
    train_data, eval_data = loop.featurize(task, model, splits)
    buckets = loop.choose_buckets(config, train_data, eval_data)
    view = task.train_view(train_data, 0)
    plan = batching.train_plan(view, config.batch_size, buckets, config.seed, 0)
    steps = spec["steps"]
    arrays = {f"initial/{k}": np.asarray(v) for k, v in flat(model.params).items()}
    runs = {"load": dict(seconds=time.perf_counter() - started)}
    for mesh_spec in spec["meshes"]:
        start = time.perf_counter()
        mesh = one_device_mesh() if mesh_spec == "one" else sharding.make_mesh(mesh_spec)
        state, compiled = loop.compile_steps(config, model, task, steps, mesh)
        losses, grad_norms = [], []
        for indices, length in plan[:steps]:
            state, metrics = compiled.train_step(state, compiled.train_feed(view, indices,
                                                                            length))
            losses.append(float(metrics["train_loss"]))
            grad_norms.append(float(metrics["l2_grads"]))
        params = flat(state["params"])
        runs[mesh_spec] = dict(
            mesh=dict(mesh.shape), losses=losses, grad_norms=grad_norms,
            params={k: dict(spec=[list(a) if isinstance(a, tuple) else a
                                  for a in v.sharding.spec],
                            shape=list(v.shape),
                            shard_shape=list(v.addressable_shards[0].data.shape))
                    for k, v in params.items()})
        arrays.update({f"{mesh_spec}/{k}": np.asarray(jax.device_get(v))
                       for k, v in params.items()})
        runs[mesh_spec]["seconds"] = time.perf_counter() - start
    np.savez(out_dir / "params.npz", **arrays)
    (out_dir / "runs.json").write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    cli.quiet_logging()
    main(*sys.argv[1:])
