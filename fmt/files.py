"""Paths and files of runs: one path type for every place a run may write.

A workdir, a model folder or an output file may be local or on any scheme that
`etils.epath` reaches (gs://, s3://, ...; object stores through fsspec, as
gcsfs reads STORAGE_EMULATOR_HOST). Files appear whole: locally they are
written under a fresh name beside the target and renamed over it, so a reader
(or a run killed mid-write) never sees half a file; an object store publishes
an object only once its upload is complete, so there it is written directly.
"""

import os
import secrets

from etils import epath


def as_path(path) -> epath.Path:
    """`path` (a string, pathlib or epath path; local or `scheme://`) as an epath.Path."""
    return epath.Path(path)


def is_local(path) -> bool:
    """Whether `path` is on this machine's file system (no `scheme://`)."""
    return "://" not in os.fspath(path)


def write_text_atomic(path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path, data: bytes) -> None:
    """Write `data` to `path` so that a reader never sees half a file.

    Locally: to a fresh name beside `path`, renamed over it. os.open with mode
    0o666 lets the umask set the permissions as for any new file (0o644 under
    umask 022); tempfile.mkstemp would leave 0o600.
    """
    if not is_local(path):
        as_path(path).write_bytes(data)
        return
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
