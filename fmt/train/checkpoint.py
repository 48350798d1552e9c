"""Orbax checkpoints: the latest train states (`workdir/checkpoints`) and, apart
from them, the params with the best dev metric (`workdir/best`).

Orbax writes each step into a temporary folder and renames it when complete, so
a run killed mid-save (or a full disk) leaves the previous step loadable; a
step that still fails to load is skipped for the one before it, with a warning.
"""

import logging
import pathlib
import shutil

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger("fmt")


class Checkpoints:
    def __init__(self, directory: pathlib.Path, max_to_keep: int):
        self.directory = directory.absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: dict) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore_latest(self, abstract_state: dict) -> dict | None:
        """The newest loadable state placed like `abstract_state`, or None.

        A step that fails to load is moved aside to `checkpoints.corrupt/`
        (kept for a post-mortem, and out of the way of the step's next save).
        """
        for step in sorted(self._manager.all_steps(), reverse=True):
            try:
                return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
            except Exception as error:  # A damaged step: any error orbax or the disk raises.
                aside = self.directory.with_name(self.directory.name + ".corrupt") / str(step)
                log.warning("checkpoint %s/%d cannot be loaded (%s: %s); moved it to %s and "
                            "falling back to the one before it", self.directory, step,
                            type(error).__name__,
                            str(error).splitlines()[0][:200] if str(error) else "", aside)
                if jax.process_index() == 0:
                    aside.parent.mkdir(exist_ok=True)
                    shutil.rmtree(aside, ignore_errors=True)
                    (self.directory / str(step)).rename(aside)
                multihost_utils.sync_global_devices("fmt-checkpoint-aside")
                self._manager.reload()
        return None

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


class BestParams:
    """The params of the best evaluation so far, with its step and metric value."""

    def __init__(self, directory: pathlib.Path, metric: str, higher_is_better: bool = True):
        self.metric = metric
        self.higher_is_better = higher_is_better
        self._manager = ocp.CheckpointManager(
            directory.absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, best_fn=lambda metrics: metrics[metric],
                best_mode="max" if higher_is_better else "min", create=True))
        # Orbax records the metric when a save is complete, so the value of a
        # save in flight is kept here.
        step = self._manager.best_step()
        self._best = None if step is None else (step, float(self._manager.metrics(step)[metric]))

    def best(self) -> tuple[int, float] | None:
        """(step, value) of the kept evaluation, or None before the first one."""
        return self._best

    def offer(self, step: int, params: dict, value: float) -> bool:
        """Keep `params` if `value` beats the best so far; True if it did."""
        current = self.best()
        if current is not None and (value <= current[1] if self.higher_is_better
                                    else value >= current[1]):
            return False
        self._manager.save(step, args=ocp.args.StandardSave(params),
                           metrics={self.metric: value}, force=True)
        self._best = (step, value)
        return True

    def restore(self, abstract_params: dict) -> dict:
        self._manager.wait_until_finished()
        step = self._best[0]
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_params))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
