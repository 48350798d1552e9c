"""The workdir of a run: its resolved config, and whether it may be resumed."""

import json
import pathlib

import jax

from fmt.errors import UserError
from fmt.train.writers import write_json_atomic

# Fields that only change how a run is recorded or watched, or how much memory
# it takes, not what it computes: a resumed run may change them.
RECORDING_FIELDS = frozenset({
    "remat", "progress_bar", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "export_model", "eval_batch_size", "max_eval_examples",
})


def prepare_workdir(workdir: str, config) -> pathlib.Path:
    """Create the workdir, refuse one that holds a different run, save the config."""
    path = pathlib.Path(workdir)
    saved = path / "config.json"
    new = json.loads(config.to_json())
    if saved.is_file():
        old = json.loads(saved.read_text(encoding="utf-8"))
        changed = sorted(k for k in old.keys() | new.keys()
                         if k not in RECORDING_FIELDS and old.get(k) != new.get(k))
        if changed:
            k = changed[0]
            raise UserError(
                f"--workdir={workdir} holds a run with {k}={old.get(k)!r}, but this command "
                f"has {k}={new.get(k)!r} (and {len(changed) - 1} more differences); pass "
                "another --workdir, or delete this one to start fresh")
    try:
        path.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:
            write_json_atomic(saved, new)
    except OSError as e:
        raise UserError(f"--workdir={workdir}: cannot write there ({e.strerror})") from None
    return path


def read_results(workdir: pathlib.Path) -> dict | None:
    """The results of a finished run in this workdir, or None."""
    path = workdir / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
