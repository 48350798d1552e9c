"""Evaluation: every feature of a split through the jitted eval step, in batches
as training batches them, and the per-row outputs handed back in the data's order."""

from fmt.data import batching
from fmt.data.features import Features
from fmt.train import sharding


def eval_outputs(eval_step, params, data: Features, task, feed: sharding.BatchFeeder,
                 buckets: tuple[int, ...], progress=None) -> dict[str, list]:
    """The task's small per-row outputs (reduced on device by the eval step) for
    every feature, as lists in the data's order."""
    view = task.eval_view(data)
    pending = []
    for indices, length in batching.eval_plan(view, feed.batch_size, buckets):
        pending.append((indices, eval_step(params, feed(view, indices, length))))
    outputs: dict[str, list] = {}
    for indices, device_outputs in pending:
        for name, values in sharding.to_host(device_outputs).items():
            column = outputs.setdefault(name, [None] * len(view))
            for row, index in enumerate(indices):
                column[index] = values[row]
        if progress is not None:
            progress.update(1)
    return outputs


def evaluate(eval_step, params, data: Features, task, feed: sharding.BatchFeeder,
             buckets: tuple[int, ...], progress=None) -> tuple[dict, object]:
    """Metrics over every example, and the task's predictions, in the data's order:
    the task gathers the outputs back per example where one example has several
    features."""
    return task.evaluate(eval_outputs(eval_step, params, data, task, feed, buckets, progress),
                         data)
