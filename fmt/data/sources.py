"""Readers that turn data on disk into records.

A record is a dict holding each text field as `str` and "label" as an `int`
class id (classification) or a `float` (regression); rows read to be labelled
(`read_rows`, `read_glue_test`) have no "label". Three sources feed it:
the original `glue_data` folders, TFDS `glue/*`, and a user's own
csv/tsv/jsonl files. Every file reader goes through the same row checks, so a
bad row gets the same one-line `path:line: ...` error whatever its format.
"""

import math
import os
from collections.abc import Callable, Iterable

from fmt.data.rows import Row, csv_rows, file_extension, jsonl_rows, read_text, tsv_rows
from fmt.data.glue import TaskSpec
from fmt.errors import UserError

Record = dict[str, str | int | float]
_Row = Row

FILE_FORMATS = (".csv", ".tsv", ".jsonl", ".json")


def read_glue_dir(spec: TaskSpec, data_dir: str, split: str) -> list[Record]:
    """Read `split` of a GLUE task from an original glue_data folder.

    `data_dir` is either the glue_data root (holding e.g. SST-2/) or the task
    folder itself (holding train.tsv).
    """
    path = _glue_file(spec, data_dir, split)
    # GLUE text is raw: `"` is an ordinary character, so quoting stays off.
    header, rows = tsv_rows(path, read_text(path), spec.column_names)
    fields = dict(zip(spec.text_fields, spec.text_columns))
    glue_fix = f"is it the {spec.glue_dir} folder of the original glue_data?"
    _require_columns(path, header, [*fields.values(), spec.label_column], lambda _: glue_fix)
    # Official GLUE rows are kept as published, even with an empty text.
    examples = _examples(path, rows, fields, spec.label_column, allow_empty=True)
    if spec.is_regression:
        return _labelled(path, examples, _to_score)
    return _labelled(path, examples, _class_id(spec.label_names, glue_ids=True))


def read_glue_test(spec: TaskSpec, data_dir: str, split: str) -> tuple[str, list[Record]]:
    """(path, records) of an unlabelled GLUE test split from a glue_data folder:
    the text fields and "idx", the example's id in the file's index column."""
    path = _glue_file(spec, data_dir, split, spec.test_file(split)[0])
    # Test files always name their columns in a header row, CoLA's too.
    header, rows = tsv_rows(path, read_text(path))
    fields = dict(zip(spec.text_fields, spec.text_columns), idx=spec.index_column)
    glue_fix = f"is it the {spec.glue_dir} folder of the original glue_data?"
    _require_columns(path, header, list(fields.values()), lambda _: glue_fix)
    return path, [texts for _, texts, _ in _examples(path, rows, fields, None, allow_empty=True)]


def read_tfds(spec: TaskSpec, split: str, data_dir: str | None = None) -> list[Record]:
    """Read `split` of a GLUE task from TFDS (e.g. "train", "validation")."""
    from fmt.data import tfds_ready
    _, tfds = tfds_ready.import_tfds(
        spec.tfds_name, f"pass --config.data_dir=<folder> pointing to a local glue_data copy "
        f"(holding {spec.glue_dir}/)")

    # Before tfds.load, which offline retries for minutes and leaves partial folders.
    tfds_ready.check_available(
        tfds, spec.tfds_name, data_dir,
        f"pass --config.data_dir=<folder> pointing to a local glue_data copy (holding "
        f"{spec.glue_dir}/)")
    try:
        dataset = tfds.load(spec.tfds_name, split=split, data_dir=data_dir)
    except Exception as error:  # TFDS raises many types for "not available"
        # The first line whole: later lines are TFDS's tracebacks and retries.
        reason = (str(error).strip().splitlines() or [""])[0]
        raise UserError(
            f"TFDS {spec.tfds_name} split {split!r} could not be loaded "
            f"({type(error).__name__}: {reason}); pass --config.data_dir=<folder> "
            f"pointing to a local glue_data copy (holding {spec.glue_dir}/) instead"
        ) from error
    label_type = float if spec.is_regression else int
    records = []
    for example in tfds.as_numpy(dataset):
        record: Record = {f: example[f].decode("utf-8") for f in spec.text_fields}
        record["label"] = label_type(example["label"])
        records.append(record)
    # GLUE test labels are private; TFDS fills them with -1.
    if any(record["label"] == -1 for record in records):
        raise UserError(
            f"TFDS {spec.tfds_name} split {split!r} has no labels; "
            f"evaluate on {' or '.join(spec.eval_splits)} instead"
        )
    return records


def read_file(
    path: str,
    text_fields: tuple[str, ...],
    label_field: str,
    label_names: tuple[str, ...] | None = None,
    regression: bool = False,
) -> tuple[list[Record], tuple[str, ...] | None]:
    """Read a user's .csv, .tsv or .jsonl/.json (JSON lines) file.

    csv/tsv files name their columns in a header row. For classification the
    labels are strings (or integers) mapped to ids by their index in
    `label_names`; when it is None the names are the sorted distinct labels of
    this file, so pass the training file's names when reading an eval file.

    Returns the records, keyed by `text_fields` and "label", and the label
    names used (None for regression).
    """
    fields = {field: field for field in text_fields}
    fix = _flag_fix(text_fields, label_field)
    _, rows = _table(path, [*text_fields, label_field], fix)
    examples = _examples(path, rows, fields, label_field, allow_empty=False, fix=fix)
    if regression:
        return _labelled(path, examples, _to_score), None
    if label_names is None:
        keyed = _labelled(path, examples, _label_key)
        label_names = tuple(sorted({record["label"] for record in keyed}))
    return _labelled(path, examples, _class_id(label_names)), label_names


def read_rows(path: str, text_fields: tuple[str, ...], fix: Callable[[str], str]
              ) -> tuple[list[str] | None, list[dict], list[Record]]:
    """Read a user's .csv, .tsv or .jsonl/.json file of texts to label.

    Returns the header (None for JSON lines), every row as read (all its
    columns, to be written back) and the records of their `text_fields`; `fix`
    says, for a text column the file lacks, what to change.
    """
    header, rows = _table(path, list(text_fields), fix)
    rows = list(rows)
    examples = _examples(path, rows, {f: f for f in text_fields}, None, allow_empty=False,
                         fix=fix)
    return header, [row for _, row in rows], [texts for _, texts, _ in examples]


def _table(path: str, needed: list[str], fix: Callable[[str], str]
           ) -> tuple[list[str] | None, Iterable[_Row]]:
    """The header (None for JSON lines) and rows of a user's file, by its
    extension; a csv/tsv header must name the `needed` columns."""
    extension = file_extension(path, FILE_FORMATS)
    text = read_text(path)
    if extension in (".jsonl", ".json"):
        return None, jsonl_rows(path, text)
    reader = tsv_rows if extension == ".tsv" else csv_rows
    header, rows = reader(path, text)
    _require_columns(path, header, needed, fix)
    return header, rows


def _flag_fix(text_fields: tuple[str, ...], label_field: str) -> Callable[[str], str]:
    """Advice for a column that a user's file lacks: the flag that names it."""
    def fix(column: str) -> str:
        if column == label_field:
            return "set --config.label_field to the column holding the labels"
        given = ",".join(text_fields)
        return (f"set --config.text_fields to the text column, or two for a pair "
                f"(now --config.text_fields={given})")
    return fix


def _glue_file(spec: TaskSpec, data_dir: str, split: str, file_name: str | None = None) -> str:
    """Path of `split`'s file (`file_name`, by default the labelled split's), with
    `data_dir` the glue_data root or task folder."""
    file_name = file_name or spec.file_name(split)
    if not os.path.isdir(data_dir):
        raise UserError(
            f"{data_dir}: no such folder; set --config.data_dir to the glue_data "
            f"folder (holding {spec.glue_dir}/) or to the {spec.glue_dir} folder itself"
        )
    task_dir = os.path.join(data_dir, spec.glue_dir)
    path = os.path.join(task_dir if os.path.isdir(task_dir) else data_dir, file_name)
    if not os.path.isfile(path):
        raise UserError(
            f"{path}: no such file; {spec.name} {split} needs {spec.glue_dir}/{file_name} "
            f"as in the original glue_data"
        )
    return path


def _require_columns(
    path: str, header: list[str], needed: list[str], fix: Callable[[str], str]
) -> None:
    """Fail on the first needed column that the header does not name; `fix`
    says, for that column, what to change."""
    for column in needed:
        if column not in header:
            raise UserError(
                f"{path}: no column {column!r} (columns: {', '.join(header)}); {fix(column)}"
            )


def _examples(
    path: str,
    rows: Iterable[_Row],
    fields: dict[str, str],
    label_column: str | None,
    allow_empty: bool,
    fix: Callable[[str], str] | None = None,
) -> list[tuple[int, dict[str, str], object]]:
    """(line, text per field, raw label) for each row, after checking its cells.

    `fields` maps each record field to the column holding it; `fix` advises on
    a field that a row lacks, besides giving it to the row. Without a
    `label_column` (rows to be labelled) the raw label is None.
    """
    examples = []
    for number, row in rows:
        for column in [*fields.values(), *([label_column] if label_column else [])]:
            if column not in row:
                advice = f" or {fix(column)}" if fix is not None else ""
                raise UserError(
                    f"{path}:{number}: no field {column!r} (fields: {', '.join(row)}); "
                    f"give every row a {column!r}{advice}"
                )
        texts = {
            field: _text(path, number, column, row[column], allow_empty)
            for field, column in fields.items()
        }
        examples.append((number, texts, row[label_column] if label_column else None))
    if not examples:
        raise UserError(f"{path}: no data rows; the file needs at least one example")
    return examples


def _text(path: str, line: int, column: str, value: object, allow_empty: bool) -> str:
    """One text cell, checked to be a (non-empty unless allowed) string."""
    if not isinstance(value, str):
        raise UserError(
            f"{path}:{line}: field {column!r} must be a string, "
            f"found {type(value).__name__}; write the text as a string"
        )
    if not allow_empty and not value.strip():
        raise UserError(
            f"{path}:{line}: field {column!r} is empty; fill it in or delete the row"
        )
    return value


def _labelled(
    path: str,
    examples: list[tuple[int, dict[str, str], object]],
    to_label: Callable[[object], int | float | str],
) -> list[Record]:
    """Records with labels converted by `to_label`, whose ValueError names the row."""
    records = []
    for number, texts, raw in examples:
        try:
            label = to_label(raw)
        except ValueError as error:
            raise UserError(f"{path}:{number}: {error}") from None
        records.append({**texts, "label": label})
    return records


def _label_key(raw: object) -> str:
    """A class label as text, so that 1 and "1" name the same class."""
    if isinstance(raw, str):
        return raw.strip()
    if isinstance(raw, int) and not isinstance(raw, bool):
        return str(raw)
    raise ValueError(f"label {raw!r} must be a string or an integer")


def _class_id(
    label_names: tuple[str, ...], glue_ids: bool = False
) -> Callable[[object], int]:
    """Converter from a class label to its index in `label_names`.

    With `glue_ids`, a decimal label is taken as the id itself, as glue_data
    files store e.g. SST-2's "negative"/"positive" as 0/1.
    """
    ids = {name: index for index, name in enumerate(label_names)}
    if glue_ids:
        ids.update({str(index): index for index in range(len(label_names))})

    def convert(raw: object) -> int:
        key = _label_key(raw)
        if key not in ids:
            known = ", ".join(ids)
            raise ValueError(f"unknown label {key!r}; use one of the known labels: {known}")
        return ids[key]

    return convert


def _to_score(raw: object) -> float:
    """A regression label as a finite float."""
    score = None
    if isinstance(raw, (int, float, str)) and not isinstance(raw, bool):
        try:
            score = float(raw)
        except ValueError:
            pass
    if score is None or not math.isfinite(score):
        raise ValueError(
            f"label {raw!r} is not a number; regression labels must be finite numbers"
        )
    return score
