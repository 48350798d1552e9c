"""Files that appear whole: written under a fresh name beside the target and
renamed over it, so a reader (or a run killed mid-write) never sees half a file."""

import os
import secrets


def write_text_atomic(path, text: str) -> None:
    """Write to a fresh name beside `path` and rename it over `path`, so a
    reader never sees half a file.

    os.open with mode 0o666 lets the umask set the permissions as for any new
    file (0o644 under umask 022); tempfile.mkstemp would leave 0o600.
    """
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="\n") as file:
            file.write(text)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
