"""The workdir of a run: its resolved config, and whether it may be resumed.

A workdir is bound to a config only once it holds something to resume (a
checkpoint or results): a run that failed before its first checkpoint (a
mistyped file name, a missing column) leaves a workdir that the corrected
command takes as new.
"""

import json

import jax
from etils import epath

from fmt.errors import UserError
from fmt.files import as_path
from fmt.train.writers import write_json_atomic

# Fields that only change how a run is recorded or watched, or how much memory
# it takes, not what it computes: a resumed run may change them.
RECORDING_FIELDS = frozenset({
    "remat", "progress_bar", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "export_model", "eval_batch_size", "max_eval_examples",
    "compilation_cache",
})
# Fields added or renamed since older workdirs were recorded, with what runs did
# before them: an older run resumes when the new value does the same (an older
# run resumes bit-exactly with --config.rng_impl=threefry2x32).
FORMER_DEFAULTS = {"rng_impl": "threefry2x32", "packing": False, "pack": False}
SHOWN_DIFFERENCES = 3  # differing fields named in a refusal


def holds_a_run(path: epath.Path) -> bool:
    """Whether the workdir has anything to resume or report: checkpoints or results."""
    checkpoints = path / "checkpoints"
    return (path / "results.json").is_file() or (
        checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir()))


def check_workdir(workdir: str, config) -> epath.Path:
    """The workdir as a path of any file system (local, gs://, ...); refuse one
    that holds a different run (naming the differences)."""
    path = as_path(workdir)
    saved = path / "config.json"
    if saved.is_file() and holds_a_run(path):
        old = json.loads(saved.read_text(encoding="utf-8"))
        new = json.loads(config.to_json())
        old, new = ({**FORMER_DEFAULTS, **record} for record in (old, new))
        changed = sorted(k for k in old.keys() | new.keys()
                         if k not in RECORDING_FIELDS and old.get(k) != new.get(k))
        if changed:
            shown = "; ".join(f"{k}={old.get(k)!r} there, {k}={new.get(k)!r} here"
                              for k in changed[:SHOWN_DIFFERENCES])
            more = len(changed) - SHOWN_DIFFERENCES
            shown += f"; and {more} more" if more > 0 else ""
            raise UserError(
                f"--workdir={workdir} holds a run with a different config ({shown}); pass "
                "another --workdir, or delete this one to start fresh")
    if path.exists() and not path.is_dir():
        raise UserError(f"--workdir={workdir} is a file; pass a folder")
    return path


def save_config(path: epath.Path, config) -> None:
    """Create the workdir and record the config: once the run has really started."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if jax.process_index() == 0:
            write_json_atomic(path / "config.json", json.loads(config.to_json()))
    except OSError as e:
        raise UserError(f"--workdir={path}: cannot write there ({e.strerror or e})") from None


def read_results(workdir: epath.Path) -> dict | None:
    """The results of a finished run in this workdir, or None."""
    path = workdir / "results.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
