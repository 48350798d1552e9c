"""Orbax checkpoints: the latest train states (`workdir/checkpoints`) and, apart
from them, the params with the best dev metric (`workdir/best`).

Orbax writes each step into a temporary folder and renames it when complete, so
a run killed mid-save (or a full disk) leaves the previous step loadable; a
step that is still damaged is moved aside for the one before it, with a
warning. Nothing else moves a step: `restore.py` tells damage from a changed
train state and from a storage that failed for a moment.

Directories are `pathlib.Path` or `etils.epath.Path` (gs:// and the like): only
what both offer is used here.
"""

import logging
import os

import jax
import orbax.checkpoint as ocp
from etils import epath

from fmt.errors import UserError
from fmt.train import restore
from fmt.train.restore import Verdict

log = logging.getLogger("fmt")


def absolute(directory):
    """Orbax wants absolute paths; a cloud path (gs://...) is one already."""
    text = str(directory)
    if "://" in text or os.path.isabs(text):
        return directory
    return type(directory)(os.path.abspath(text))


class Checkpoints:
    def __init__(self, directory, max_to_keep: int):
        self.directory = absolute(directory)
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))
        # Restores go through the handler, not the manager: the manager's restore ends
        # at a barrier that a process which failed to read would leave the others at.
        self._reader = ocp.StandardCheckpointHandler()

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: dict) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore_latest(self, abstract_state: dict) -> dict | None:
        """The newest loadable state placed like `abstract_state`, or None.

        A damaged step is moved aside to `checkpoints.corrupt/` (kept for a
        post-mortem, and out of the way of the step's next save) and the one before
        it is tried. A step written for another train state, or that the storage
        keeps failing to serve, is an error and every step stays in place. All
        processes act on the same verdict, whichever process reached it.
        """
        step = restore.newest_step_below(self._manager.all_steps(), None)
        while step is not None:
            verdict, found = restore.read_step(self._reader, self.directory / str(step),
                                               abstract_state)
            verdicts = restore.agree(verdict)
            worst = max(verdicts)
            if worst is Verdict.LOADED:
                return found
            if worst is not Verdict.DAMAGED:
                raise self._error(step, worst, verdict, found, verdicts)
            self._move_aside(step, restore.describe(found) if verdict is Verdict.DAMAGED
                             else f"process {verdicts.index(Verdict.DAMAGED)} found it damaged")
            step = restore.newest_step_below(self._manager.all_steps(), step)
        return None

    def _error(self, step: int, worst: Verdict, verdict: Verdict, found, verdicts):
        """The error for a step that must stay: this process's own if it reached the
        agreed verdict, else one that names the process that did."""
        where = self.directory / str(step)
        if verdict is not worst:
            return UserError(f"checkpoint {where}: process {verdicts.index(worst)} could not "
                             f"load it ({worst.name.lower()}; its log says why); it was left "
                             "in place")
        if worst is Verdict.MISMATCH:
            return UserError(restore.mismatch_message(where, found))
        if worst is Verdict.TRANSIENT:
            return UserError(f"checkpoint {where} could not be read in "
                             f"{len(restore.RETRY_DELAYS_S) + 1} tries "
                             f"({restore.describe(found)}); it was left in place: rerun the "
                             "same command once the storage answers")
        return found  # not known to be the step's fault: the error as it is

    def _move_aside(self, step: int, cause: str) -> None:
        """Process 0 renames the step into `checkpoints.corrupt/`; all processes
        learn whether it could before going on."""
        where = self.directory / str(step)
        aside = self.directory.parent / (self.directory.name + ".corrupt") / str(step)
        log.warning("checkpoint %s cannot be loaded (%s); moved it to %s and falling back "
                    "to the one before it", where, cause, aside)
        failure = None
        if jax.process_index() == 0:
            try:
                aside.parent.mkdir(parents=True, exist_ok=True)
                if aside.exists():
                    epath.Path(aside).rmtree()
                where.rename(aside)
            except OSError as error:
                failure = restore.describe(error)
        if restore.anyone(failure is not None):
            raise UserError(f"checkpoint {where} cannot be loaded, and process 0 could not "
                            f"move it to {aside} ({failure or 'its log says why'}); move or "
                            "delete it, then rerun")
        self._manager.reload()

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
        self._reader.close()


class BestParams:
    """The params of the best evaluation so far, with its step and metric value."""

    def __init__(self, directory, metric: str, higher_is_better: bool = True):
        self.metric = metric
        self.higher_is_better = higher_is_better
        self._manager = ocp.CheckpointManager(
            absolute(directory),
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
