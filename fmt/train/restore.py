"""Reading one checkpoint step so that a good checkpoint is never taken for a damaged one.

A read that fails means one of four things, and each asks for something else:
- the step is damaged (a file missing, truncated or garbled): it will never load, so
  it may be moved aside and the step before it tried;
- the step holds another train state (a code change renamed, added or reshaped a
  param): the user must choose, and every step stays where it is;
- the storage failed for a moment (a reset connection, a timeout): the read is tried
  again, and if it keeps failing that is reported, the step untouched;
- anything else (a bug, memory): raised as it is, the step untouched.

Every process reads the step itself (with orbax's handler, which holds no barrier that
a failing process would leave others waiting at), then all agree on the worst verdict
any of them reached before anyone acts on it.
"""

import enum
import errno
import json
import logging
import re
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

log = logging.getLogger("fmt")

# A transient error is tried again after each of these pauses, then reported.
RETRY_DELAYS_S = (0.5, 1.0, 2.0)
MISMATCHES_SHOWN = 4  # a renamed module shows its params under both names


class Verdict(enum.IntEnum):
    """What reading a step found; the larger wins when processes disagree, so the
    step is moved aside only when no process found a reason to leave it in place."""
    LOADED = 0
    DAMAGED = 1
    TRANSIENT = 2
    FAILED = 3
    MISMATCH = 4


# OSErrors of a storage that may answer on the next try (local disk, NFS, sockets).
TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ESTALE,
                    errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
                    errno.ECONNABORTED, errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET,
                    errno.EHOSTDOWN, errno.EHOSTUNREACH}
TRANSIENT_ERRORS = (ConnectionError, TimeoutError, BlockingIOError, InterruptedError)
# Files that are not where they must be: the step was never completely written.
MISSING_ERRORS = (FileNotFoundError, NotADirectoryError, IsADirectoryError)
# TensorStore reports its errors as ValueError("CODE: ..."), with absl status codes.
DAMAGE_CODES = {"DATA_LOSS", "NOT_FOUND", "OUT_OF_RANGE", "FAILED_PRECONDITION"}
TRANSIENT_CODES = {"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"}
# What TensorStore and orbax say, without a code, of bytes that do not decode.
DAMAGE_PHRASES = ("Data corruption", "Error decoding", "Found incomplete checkpoint")


def classify(error: BaseException) -> Verdict:
    """DAMAGED, TRANSIENT or FAILED (not known to be either), from the error or the
    first of its causes that says."""
    while error is not None:
        verdict = _classify_one(error)
        if verdict is not Verdict.FAILED:
            return verdict
        error = error.__cause__
    return Verdict.FAILED


def _classify_one(error: BaseException) -> Verdict:
    if isinstance(error, MISSING_ERRORS):
        return Verdict.DAMAGED
    if isinstance(error, TRANSIENT_ERRORS) or (
            isinstance(error, OSError) and error.errno in TRANSIENT_ERRNOS):
        return Verdict.TRANSIENT
    if isinstance(error, (json.JSONDecodeError, UnicodeDecodeError)):
        return Verdict.DAMAGED  # a metadata file of garbage, or cut short
    if isinstance(error, ValueError):
        message = str(error)
        code = re.match(r"([A-Z_]+): ", message)
        if code and code[1] in TRANSIENT_CODES:
            return Verdict.TRANSIENT
        if code and code[1] in DAMAGE_CODES:
            return Verdict.DAMAGED
        if not code and any(phrase in message for phrase in DAMAGE_PHRASES):
            return Verdict.DAMAGED
    return Verdict.FAILED


def describe(error: BaseException) -> str:
    """`Type: first line` of an error, short enough for a log or a one-line message."""
    text = str(error).splitlines()[0][:200] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def with_retries(read, what: str):
    """`read()`, tried again after a transient error while RETRY_DELAYS_S last."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return read()
        except Exception as error:
            if delay is None or classify(error) is not Verdict.TRANSIENT:
                raise
            log.warning("reading %s failed (%s); trying again in %.1f s", what,
                        describe(error), delay)
            time.sleep(delay)


def leaf_name(path) -> str:
    """`params/encoder/kernel` for a key path, whatever the containers: orbax's
    metadata turns optax's named tuples into dicts, which must compare equal."""
    def key(entry):
        for attribute in ("key", "name", "idx"):
            if hasattr(entry, attribute):
                return str(getattr(entry, attribute))
        return str(entry)
    return "/".join(key(entry) for entry in path)


def leaves(tree) -> dict[str, tuple]:
    """name -> (shape, dtype name) of every array in `tree`: arrays, abstract arrays
    or orbax's metadata of them."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {leaf_name(path): (tuple(getattr(leaf, "shape", None) or ()),
                              str(getattr(leaf, "dtype", type(leaf).__name__)))
            for path, leaf in flat}


def mismatches(saved, wanted) -> list[str]:
    """Each array that differs between the checkpoint's tree and this code's, by name."""
    saved, wanted = leaves(saved), leaves(wanted)
    found = []
    for name in sorted(saved.keys() | wanted.keys()):
        if name not in wanted:
            found.append(f"{name}: in the checkpoint, not here")
        elif name not in saved:
            found.append(f"{name}: here, not in the checkpoint")
        elif saved[name] != wanted[name]:
            found.append(f"{name}: {_difference(saved[name], wanted[name])}")
    return found


def _difference(saved: tuple, wanted: tuple) -> str:
    (saved_shape, saved_dtype), (shape, dtype) = saved, wanted
    if saved_dtype == dtype:
        return f"shape {saved_shape} in the checkpoint, {shape} here"
    if saved_shape == shape:
        return f"dtype {saved_dtype} in the checkpoint, {dtype} here"
    return f"{saved_dtype} {saved_shape} in the checkpoint, {dtype} {shape} here"


def mismatch_message(step_directory, found: list[str]) -> str:
    shown = "; ".join(found[:MISMATCHES_SHOWN])
    more = f"; and {len(found) - MISMATCHES_SHOWN} more" if len(found) > MISMATCHES_SHOWN \
        else ""
    return (f"checkpoint {step_directory} holds another train state than this code makes "
            f"({shown}{more}); resume it with the code that wrote it, or pass another "
            "--workdir to start afresh (the checkpoint was left in place)")


def read_step(handler: ocp.StandardCheckpointHandler, step_directory, abstract_state):
    """(verdict, what it found) for one step read on this process alone: the state,
    the mismatched names, or the error. The tree is compared from the step's own
    metadata first, so a changed param is told apart from a damaged file and no
    array is read for nothing."""
    item = epath.Path(step_directory) / ocp.checkpoint_manager.DEFAULT_ITEM_NAME
    try:
        metadata = with_retries(lambda: handler.metadata(item), str(step_directory))
        found = mismatches(metadata.tree, abstract_state)
        if found:
            return Verdict.MISMATCH, found
        return Verdict.LOADED, with_retries(
            lambda: handler.restore(item, args=ocp.args.StandardRestore(abstract_state)),
            str(step_directory))
    except Exception as error:
        return classify(error), error


def gather(code: int) -> list[int]:
    """Every process's `code`, in process order, on every process."""
    if jax.process_count() == 1:
        return [int(code)]
    gathered = multihost_utils.process_allgather(np.int32(code))
    return [int(c) for c in np.asarray(gathered).reshape(-1)]


def agree(verdict: Verdict) -> list[Verdict]:
    """Every process's verdict on the step, on every process."""
    return [Verdict(code) for code in gather(verdict)]


def anyone(flag: bool) -> bool:
    """Whether `flag` holds on any process, on every process."""
    return any(gather(flag))


def newest_step_below(steps, below: int | None) -> int | None:
    """Process 0's newest step under `below`, on every process: all read the same step,
    the one that process 0 alone may move."""
    newest = max((s for s in steps if below is None or s < below), default=-1)
    if jax.process_count() > 1:
        newest = int(multihost_utils.broadcast_one_to_all(np.int32(newest)))
    return None if newest < 0 else newest
