"""Folders that appear whole: written into a temporary sibling, then renamed.

A reader (or a run killed mid-write) never sees half of the new folder. Paths
go through `etils.epath`, so the folder may be local or on `gs://`. An object
store cannot rename a folder: there the folder is staged locally and uploaded
file by file, its config.json (what a loader opens first) removed first and
written last, so that no reader takes a half-written folder for a model.
"""

import contextlib
import os
import pathlib
import secrets
import shutil
import tempfile

from etils import epath

from fmt.files import is_local

COPY_CHUNK = 16 << 20  # bytes per read of a streamed upload


@contextlib.contextmanager
def staged_folder(folder):
    """Yields an empty sibling of `folder` (its parent made if missing) to fill;
    on success it replaces `folder`, on an error it is removed."""
    folder = epath.Path(folder)
    if not is_local(folder):
        with tempfile.TemporaryDirectory(prefix=f".{folder.name}.") as local:
            yield epath.Path(local)
            _upload(pathlib.Path(local), folder)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        yield staging
        _plain_modes(pathlib.Path(staging))
        _replace(staging, folder)
    finally:
        if staging.exists():
            staging.rmtree()


def _upload(local: pathlib.Path, folder: epath.Path) -> None:
    """Copy the files of `local` into `folder`, streaming, config.json last; files
    of an earlier folder there that the new one lacks are removed."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").unlink(missing_ok=True)
    files = sorted((p for p in local.rglob("*") if p.is_file()),
                   key=lambda p: (p.name == "config.json", str(p)))
    names = {str(p.relative_to(local)) for p in files}
    stale = [root / name for root, _, names_there in folder.walk() for name in names_there]
    for old in stale:
        if str(old.relative_to(folder)) not in names:
            old.unlink()
    for path in files:
        target = folder / str(path.relative_to(local))
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "rb") as source, target.open("wb") as sink:
            shutil.copyfileobj(source, sink, COPY_CHUNK)


def _replace(staging: epath.Path, folder: epath.Path) -> None:
    """Put `staging` where `folder` is: a rename cannot replace a folder that holds
    files, so an old one is renamed out of the way first and removed after."""
    if not folder.exists():
        staging.rename(folder)
        return
    old = folder.parent / f".{folder.name}.old"
    old.rmtree(missing_ok=True)
    folder.rename(old)
    staging.rename(folder)
    old.rmtree(missing_ok=True)


def _plain_modes(folder: pathlib.Path) -> None:
    """Give `folder` and all in it the modes that a plain mkdir or open would:
    a staging folder or file made private would carry its mode through the
    rename into a workdir that others share."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable read is a set and restore
    os.umask(mask)
    return mask

