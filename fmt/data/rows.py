"""Text files as numbered rows: the one place files are opened, decoded and
split, so every reader (GLUE folders, own csv/tsv/jsonl, CoNLL, texts) words a
bad file the same way: one `path:line: ...` line.
"""

import csv
import io
import json
import os
from collections.abc import Iterator

from fmt.errors import UserError

# (1-based line number, value per column name) for one data row.
Row = tuple[int, dict[str, object]]


def file_extension(path: str, formats: tuple[str, ...], what: str = "") -> str:
    """The lower-case extension of `path`, which must be one of `formats`;
    `what` names the data in the error ("tagged data")."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in formats:
        kind = repr(extension) if extension else "(no extension)"
        raise UserError(
            f"{path}: unsupported file type {kind}{f' for {what}' if what else ''}; "
            f"use one of {', '.join(formats)} (.json means one object per line)"
        )
    return extension


def read_text(path: str,
               empty: str = "file is empty; it needs at least one data row") -> str:
    """The file's text without a UTF-8 byte-order mark; never empty (`empty` says
    what is missing, in the reader's own words)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file; check the path") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read file ({error.strerror}); check the path") from None
    data = data.removeprefix(b"\xef\xbb\xbf")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        bad = data[error.start:error.start + 1].hex()
        raise UserError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{bad}); re-save the file as UTF-8"
        ) from None
    if not text.strip():
        raise UserError(f"{path}: {empty}")
    return text


def numbered_lines(text: str) -> Iterator[tuple[int, str]]:
    """Numbered non-blank lines, tolerating CRLF and a missing final newline."""
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.removesuffix("\r")
        if line.strip():
            yield number, line


def tsv_rows(
    path: str, text: str, names: tuple[str, ...] | None = None
) -> tuple[list[str], Iterator[Row]]:
    """Header and lazy rows of a tab-separated file, split on tabs, quoting off.

    `names` gives the columns of a file without a header row. Rows are lazy so
    that callers check the header before any row.
    """
    lines = numbered_lines(text)
    header = list(names) if names is not None else next(lines)[1].split("\t")

    def rows() -> Iterator[Row]:
        for number, line in lines:
            cells = line.split("\t")
            _check_width(path, number, len(header), len(cells), "tab-separated",
                         "text must not contain tab characters")
            yield number, dict(zip(header, cells))

    return header, rows()


def csv_rows(path: str, text: str) -> tuple[list[str], Iterator[Row]]:
    """Header and lazy rows of a comma-separated file, quoted fields allowed."""
    reader = csv.reader(io.StringIO(text, newline=""))

    def numbered() -> Iterator[tuple[int, list[str]]]:
        try:
            for cells in reader:
                if any(cell.strip() for cell in cells):
                    # line_num is where the row ends; a quoted field may span lines.
                    yield reader.line_num, cells
        except csv.Error as error:
            raise UserError(
                f"{path}:{reader.line_num}: malformed CSV ({error}); check the quotes"
            ) from None

    lines = numbered()
    header = next(lines, (0, None))[1]
    if header is None:
        raise UserError(f"{path}: file has only empty cells; it needs a header and data rows")

    def rows() -> Iterator[Row]:
        for number, cells in lines:
            _check_width(path, number, len(header), len(cells), "comma-separated",
                         "quote fields that contain commas and close every quote")
            yield number, dict(zip(header, cells))

    return header, rows()


def jsonl_rows(path: str, text: str) -> Iterator[Row]:
    """Rows of a JSON-lines file: one JSON object per line."""
    for number, line in numbered_lines(text):
        yield number, json_object(f"{path}:{number}", line)


ONE_OBJECT_PER_LINE = "write one JSON object per line"
JSON_KINDS: dict[type, str] = {dict: "an object", list: "a list", str: "a string",
                               int: "an integer", float: "a number", bool: "a boolean",
                               type(None): "null"}


def json_kind(value) -> str:
    """The JSON name of a value's type, as the user wrote it."""
    return JSON_KINDS.get(type(value), type(value).__name__)


def json_object(where: str, line: str, invalid_fix: str = ONE_OBJECT_PER_LINE,
                object_fix: str = ONE_OBJECT_PER_LINE) -> dict:
    """One line of a JSON-lines file as its object; `where` (file:line) and the
    fixes name the place and the remedy of a line that is not JSON, or not an object."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise UserError(f"{where}: invalid JSON ({error.msg}); {invalid_fix}") from None
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, found {json_kind(row)}; {object_fix}")
    return row


def _check_width(path: str, line: int, expected: int, found: int, kind: str, fix: str) -> None:
    """Fail on a row whose column count differs from the header's."""
    if found != expected:
        raise UserError(
            f"{path}:{line}: expected {expected} {kind} columns, found {found}; {fix}"
        )
