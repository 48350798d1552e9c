"""Token/tag data for token classification (NER): read CoNLL columns or JSON
lines, check the tags, write predictions back as CoNLL columns.

A record is {"tokens": [str], "tags": [str], "line": int}, with "line" the
1-based line of the sentence's first token so that checks made long after
reading (unknown tags, overlong sentences) can still point into the file.
"""

import re
from collections.abc import Iterator, Sequence

from fmt.data.rows import file_extension, jsonl_rows, read_text
from fmt.errors import UserError
from fmt.files import write_text_atomic

TaggedRecord = dict[str, list[str] | int]

CONLL_FORMATS = (".conll", ".txt", ".tsv", ".iob", ".bio")
JSON_FORMATS = (".jsonl", ".json")
FORMATS = CONLL_FORMATS + JSON_FORMATS

# conlleval splits columns on ASCII whitespace only; str.split() would also
# split on e.g. a no-break space, which some corpora keep as a token.
_COLUMN_SEPARATOR = re.compile(r"[ \t\r\f\v]+")
# O, or B/I/E/S, a dash and a type; a type that starts or ends with a dash
# would be read differently by seqeval's two modes, so it is refused.
_TAG = re.compile(r"O|[BIES]-[^\s-](?:\S*[^\s-])?")
_ALLOWED_TAGS = ("O, B-TYPE and I-TYPE (IOB1/IOB2), plus E-TYPE and S-TYPE for IOBES, "
                 "with TYPE the entity type (e.g. B-PER)")


def read_tagged(
    path: str, tokens_field: str = "tokens", tags_field: str = "tags"
) -> list[TaggedRecord]:
    """Sentences of a CoNLL file (.conll .txt .tsv .iob .bio) or of JSON lines
    (.jsonl .json) holding a list of tokens and a list of tags per object.

    CoNLL files hold one token per line, the token in the first column and
    its tag in the last, columns split by tabs or spaces; blank lines end
    sentences and -DOCSTART- lines are skipped.
    """
    extension = file_extension(path, FORMATS, "tagged data")
    text = read_text(path)
    if extension in JSON_FORMATS:
        records = list(_json_records(path, text, tokens_field, tags_field))
    else:
        records = list(_conll_records(path, text))
    if not records:
        raise UserError(
            f"{path}: no sentences (only -DOCSTART- lines); "
            f"it needs lines of 'token ... tag' with a blank line after each sentence"
        )
    return records


def label_names(records: Sequence[TaggedRecord], path: str) -> tuple[str, ...]:
    """The sorted tags of the training data, "O" first, after checking that
    each is O or a B/I/E/S prefix, a dash and an entity type."""
    names = set()
    for record in records:
        for position, tag in enumerate(record["tags"], start=1):
            if tag in names:
                continue
            if not _TAG.fullmatch(tag):
                raise UserError(
                    f"{path}:{record['line']}: tag {tag!r} (token {position} of the sentence) "
                    f"is not in a tagging scheme; use {_ALLOWED_TAGS}"
                )
            names.add(tag)
    return tuple(sorted(names, key=lambda name: (name != "O", name)))


def tag_scheme(names: Sequence[str]) -> str:
    """"IOBES" when any tag is E- or S-, else "IOB2", the scheme name that
    fmt.metrics.entity_scores takes for strict scoring."""
    return "IOBES" if any(name[:2] in ("E-", "S-") for name in names) else "IOB2"


def check_known(records: Sequence[TaggedRecord], names: Sequence[str], path: str) -> None:
    """Fail on the first tag of an eval/test file that training never saw: the
    model has no output for it."""
    known = set(names)
    for record in records:
        for position, tag in enumerate(record["tags"], start=1):
            if tag not in known:
                raise UserError(
                    f"{path}:{record['line']}: tag {tag!r} (token {position} of the sentence) "
                    f"is not among the training tags ({', '.join(names)}); "
                    f"add it to the training data or map it to one of those"
                )


def write_conll(
    path: str,
    tokens: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]] | None,
    predicted: Sequence[Sequence[str]],
) -> None:
    """Write "token [gold] predicted" per line and a blank line after each
    sentence, the input conlleval reads, replacing the file atomically."""
    columns = [tokens, predicted] if gold is None else [tokens, gold, predicted]
    shapes = [[len(sentence) for sentence in column] for column in columns]
    if any(shape != shapes[0] for shape in shapes):
        raise ValueError(f"tokens, gold and predicted differ in sentences or lengths: {shapes}")
    lines = []
    for sentence in zip(*columns):
        for token, *tags in zip(*sentence):
            lines.append(" ".join([_as_column(token), *tags]) + "\n")
        lines.append("\n")
    write_text_atomic(path, "".join(lines))


def _conll_records(path: str, text: str) -> Iterator[TaggedRecord]:
    tokens, tags, first_line = [], [], 0
    for number, line in enumerate(text.split("\n"), start=1):
        cells = _COLUMN_SEPARATOR.split(line.strip(" \t\r\f\v"))
        if cells == [""] or cells[0] == "-DOCSTART-":
            if tokens:
                yield {"tokens": tokens, "tags": tags, "line": first_line}
            tokens, tags = [], []
            continue
        if len(cells) == 1:
            raise UserError(
                f"{path}:{number}: only one column ({cells[0]!r}), so no tag; "
                f"write the token first and its tag last, separated by a tab or a space"
            )
        if not tokens:
            first_line = number
        tokens.append(cells[0])
        tags.append(cells[-1])
    if tokens:
        yield {"tokens": tokens, "tags": tags, "line": first_line}


def _json_records(
    path: str, text: str, tokens_field: str, tags_field: str
) -> Iterator[TaggedRecord]:
    for number, row in jsonl_rows(path, text):
        tokens = _string_list(path, number, row, tokens_field)
        tags = _string_list(path, number, row, tags_field)
        if len(tokens) != len(tags):
            raise UserError(
                f"{path}:{number}: {len(tokens)} items in {tokens_field!r} but {len(tags)} "
                f"in {tags_field!r}; give every token exactly one tag"
            )
        if not tokens:
            raise UserError(
                f"{path}:{number}: {tokens_field!r} is empty; delete the row or give it tokens"
            )
        for position, token in enumerate(tokens, start=1):
            if not token.strip():
                raise UserError(
                    f"{path}:{number}: token {position} is {token!r}; every token needs "
                    f"a visible character (delete it and its tag)"
                )
        yield {"tokens": tokens, "tags": tags, "line": number}


def _string_list(path: str, line: int, row: dict, field: str) -> list[str]:
    if field not in row:
        raise UserError(
            f"{path}:{line}: no field {field!r} (fields: {', '.join(row)}); "
            f"give every row a {field!r} list or name the field that holds it"
        )
    value = row[field]
    if not isinstance(value, list):
        raise UserError(
            f"{path}:{line}: field {field!r} must be a list of strings, "
            f"found {type(value).__name__}; write it as a JSON list"
        )
    for position, item in enumerate(value, start=1):
        if not isinstance(item, str):
            # Hugging Face datasets store tags as class ids ("ner_tags": [3, 0]).
            raise UserError(
                f"{path}:{line}: item {position} of {field!r} is {type(item).__name__} "
                f"{item!r}, not a string; write tokens and tags as strings "
                f"(tag names such as 'B-PER', not class ids)"
            )
    return value


def _as_column(token: str) -> str:
    """A token that cannot break the columns: JSON-lines tokens may hold spaces."""
    return re.sub(r"\s+", "_", token) or "_"
