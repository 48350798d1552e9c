"""Orbax checkpoints of the whole train state, kept under `workdir/checkpoints`."""

import pathlib

import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, directory: pathlib.Path, max_to_keep: int):
        self._manager = ocp.CheckpointManager(
            directory.absolute(),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: dict) -> None:
        self._manager.save(step, args=ocp.args.StandardSave(state))

    def restore(self, step: int, abstract_state: dict) -> dict:
        """The state saved at `step`, placed like `abstract_state` (shapes + shardings)."""
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
