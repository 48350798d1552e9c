"""Evaluation: every feature of a split through the jitted eval step, in batches
as training batches them, and the per-row outputs handed back in the data's order."""

import jax

from fmt.data import batching, packing
from fmt.data.features import Features
from fmt.errors import UserError
from fmt.train import sharding, step


def eval_plan(view: Features, feed: sharding.BatchFeeder, buckets: tuple[int, ...],
              pack: bool = False) -> batching.Plan:
    """Every feature once: in length-sorted buckets, or packed (kinds whose
    outputs are per example) into rows no longer than the longest bucket."""
    if not pack:
        return batching.eval_plan(view, feed.batch_size, buckets)
    shapes = packing.choose(view.lengths, feed.batch_size, buckets[-1], seed=0, epochs=1,
                            quantum=feed.devices)
    return packing.plan(view.lengths, feed.batch_size, shapes, seed=0, epoch=0)


def eval_outputs(eval_step, params, data: Features, task, feed: sharding.BatchFeeder,
                 buckets: tuple[int, ...], progress=None, pack: bool = False) -> dict[str, list]:
    """The task's small per-row (or, packed, per-slot) outputs, reduced on device by
    the eval step, for every feature, as lists in the data's order."""
    view = task.eval_view(data)
    pending = []
    for indices, length in eval_plan(view, feed, buckets, pack):
        pending.append((indices, eval_step(params, feed(view, indices, length))))
    outputs: dict[str, list] = {}
    for indices, device_outputs in pending:
        for name, values in sharding.to_host(device_outputs).items():
            column = outputs.setdefault(name, [None] * len(view))
            for row, index in enumerate(batching.examples_in(indices)):
                column[index] = values[row]
        if progress is not None:
            progress.update(1)
    return outputs


def evaluate(eval_step, params, data: Features, task, feed: sharding.BatchFeeder,
             buckets: tuple[int, ...], progress=None, pack: bool = False) -> tuple[dict, object]:
    """Metrics over every example, and the task's predictions, in the data's order:
    the task gathers the outputs back per example where one example has several
    features."""
    return task.evaluate(eval_outputs(eval_step, params, data, task, feed, buckets, progress,
                                      pack), data)


def model_outputs(model, task, features: Features, batch_size: int, buckets: tuple[int, ...],
                  progress: bool = True, desc: str = "") -> dict[str, list]:
    """`eval_outputs` of a loaded model (`fmt.from_pretrained`) over `features`, on
    every local device with the params replicated: what prediction scripts run."""
    from tqdm import tqdm
    mesh = sharding.make_mesh("data=-1")
    if batch_size <= 0 or batch_size % sharding.batch_devices(mesh):
        raise UserError(f"--batch_size={batch_size}: give a positive multiple of the "
                        f"{sharding.batch_devices(mesh)} devices")
    feed = sharding.BatchFeeder(mesh, batch_size)
    replicated = sharding.NamedSharding(mesh, sharding.P())
    eval_step = jax.jit(step.make_eval_step(model.module, task),
                        in_shardings=(replicated, feed.sharding), out_shardings=replicated)
    with tqdm(total=len(batching.eval_plan(features, batch_size, buckets)), unit="batch",
              desc=desc, disable=not progress) as bar:
        return eval_outputs(eval_step, jax.device_put(model.host_params(), replicated),
                            features, task, feed, buckets, bar)
