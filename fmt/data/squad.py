"""Extractive question answering examples: SQuAD JSON (v1.1, v2.0), JSON lines,
and the TFDS `squad` builders.

Every reader gives records in the order of its source, each
`{"id", "question", "context", "answers": [{"text", "answer_start"}, ...]}`;
an empty `answers` list means the question has no answer (SQuAD v2's
unanswerable questions). Every answer is checked against its context here, once,
so that features can rely on `context[answer_start:][:len(text)] == text`: a
wrong offset would otherwise train on the wrong span without a word.
"""

import json
import os

from fmt.data.rows import JSON_KINDS, json_kind, json_object, numbered_lines, read_text
from fmt.errors import UserError

Record = dict[str, object]

SQUAD_FORMATS = (".json", ".jsonl")
NO_QUESTIONS = "no questions; it needs at least one"
SCHEMA = ('the official SQuAD schema {"data": [{"title", "paragraphs": [{"context", "qas": '
          '[{"id", "question", "answers": [{"text", "answer_start"}]}]}]}], "version"}')
JSONL_FIX = ('write one object per line with "question", "context" and "answers" '
             '([{"text", "answer_start"}] or {"text": [...], "answer_start": [...]})')
# The fix for a bad TFDS dataset: a file instead.
TFDS_FIX = "pass --config.train_file=<SQuAD .json or .jsonl file>"
_EXCERPT = 60  # characters of a text quoted in an error


def read_squad(path: str, answers: bool = True) -> list[Record]:
    """Questions of a SQuAD-format `.json` file (v1.1 or v2.0) or of a JSON lines
    file (`.jsonl`: "question", "context", "answers" and an optional "id" per
    line, the line number when absent). `answers=False` reads questions to be
    answered: a question without "answers" gets [] instead of an error."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in SQUAD_FORMATS:
        kind = repr(extension) if extension else "(no extension)"
        raise UserError(f"{path}: unsupported file type {kind} for question answering; use "
                        f".json (the official SQuAD schema) or .jsonl (one question per line)")
    text = read_text(path, empty="file is empty; it needs at least one question")
    read = _json_records if extension == ".json" else _jsonl_records
    records = read(path, text, answers)
    if not records:
        raise UserError(f"{path}: {NO_QUESTIONS}; check the file")
    return records


def read_tfds_squad(name: str, split: str, data_dir: str | None = None) -> list[Record]:
    """Questions of a split of a TFDS SQuAD builder (`squad/v1.1`, `squad/v2.0`:
    features id, title, context, question, answers {text, answer_start}, and for
    v2 is_impossible), strings decoded, in the order TFDS gives them."""
    from fmt.data import tfds_ready
    _, tfds, dataset = tfds_ready.load(name, split, data_dir, TFDS_FIX,
                                    "e.g. squad/v1.1 or squad/v2.0, splits train and validation")
    spec = dataset.element_spec
    fields = ", ".join(spec) if isinstance(spec, dict) else "none"
    answer_spec = spec.get("answers") if isinstance(spec, dict) else None
    if (not isinstance(answer_spec, dict) or {"text", "answer_start"} - set(answer_spec)
            or {"id", "question", "context"} - set(spec)):
        raise UserError(f"TFDS {name} is not a SQuAD-like dataset (fields: {fields}; needed: "
                        f"id, question, context, answers {{text, answer_start}}); use squad/v1.1 "
                        f"or squad/v2.0, or {TFDS_FIX}")
    kept = ("id", "question", "context", "answers") + (
        ("is_impossible",) if "is_impossible" in spec else ())
    dataset = dataset.map(lambda example: {field: example[field] for field in kept})
    records, seen = [], {}
    for number, example in enumerate(tfds.as_numpy(dataset)):
        qid = _decoded(example["id"])
        where = f"TFDS {name} split {split!r} example {number} (id {qid!r})"
        texts, starts = example["answers"]["text"], example["answers"]["answer_start"]
        if len(texts) != len(starts):
            raise UserError(f"{where}: answers has {len(texts)} texts but {len(starts)} "
                            f"answer_start values; check the dataset, or {TFDS_FIX}")
        pairs = [] if example.get("is_impossible", False) else [
            (f"{where}: answers[{i}]", _decoded(text), int(start))
            for i, (text, start) in enumerate(zip(texts, starts))]
        records.append(_record(where, qid, _decoded(example["question"]),
                               _decoded(example["context"]), pairs, seen, f"example {number}"))
    if not records:
        raise UserError(f"TFDS {name} split {split!r}: {NO_QUESTIONS}; check the split")
    return records


# --- SQuAD JSON ------------------------------------------------------------------


def _json_records(path: str, text: str, answers: bool = True) -> list[Record]:
    try:
        squad = json.loads(text)
    except json.JSONDecodeError as error:
        fix = ("the file holds more than one JSON value: JSON lines belong in a .jsonl file"
               if error.msg == "Extra data" else f"the file must be one JSON object in {SCHEMA}")
        raise UserError(f"{path}:{error.lineno}: invalid JSON ({error.msg}, column "
                        f"{error.colno}); {fix}") from None
    fix = f"use {SCHEMA}"
    if isinstance(squad, dict) and "data" not in squad and "question" in squad:
        fix = "this looks like one row of JSON lines: JSON lines belong in a .jsonl file"
    records, seen = [], {}
    for a, article in enumerate(_field(squad, "data", list, f"{path}: top level", fix)):
        article_where = f"{path}: data[{a}]"
        for p, paragraph in enumerate(_field(article, "paragraphs", list, article_where, fix)):
            paragraph_where = f"{article_where}.paragraphs[{p}]"
            context = _field(paragraph, "context", str, paragraph_where,
                             "write the context as a string")
            for q, qa in enumerate(_field(paragraph, "qas", list, paragraph_where, fix)):
                place = f"data[{a}].paragraphs[{p}].qas[{q}]"
                qid = _id(qa, f"{path}: {place}", "give every question a string id")
                records.append(_question(f"{path}: {place} (id {qid!r})", qid, qa, context,
                                         seen, place, answers))
    return records


# --- JSON lines ------------------------------------------------------------------


def _jsonl_records(path: str, text: str, answers: bool = True) -> list[Record]:
    records, seen = [], {}
    for number, line in numbered_lines(text):
        where = f"{path}:{number}"
        row = json_object(where, line, _jsonl_fix(text, number), JSONL_FIX)
        if "data" in row and "question" not in row:
            raise UserError(f"{where}: this object is in {SCHEMA}; name the file .json, "
                            f"or {JSONL_FIX}")
        qid = _id(row, where, "give every row a unique string id, or none (the line number)",
                  default=str(number))
        context = _field(row, "context", str, where, "write the context as a string")
        records.append(_question(where, qid, row, context, seen, f"line {number}", answers))
    return records


def _jsonl_fix(text: str, number: int) -> str:
    """How to fix a line that is not JSON: a whole SQuAD .json file named .jsonl
    (pretty-printed, so that its first line is not an object) says so."""
    if number == 1:
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict) and "data" in whole:
            return f"this file is one JSON object in {SCHEMA}: name it .json"
    return JSONL_FIX


# --- shared checks ---------------------------------------------------------------


def _question(where: str, qid: str, row: dict, context: str, seen: dict[str, str],
              place: str, required: bool = True) -> Record:
    """The checked record of one question object (a `qas` entry or a JSON line);
    `seen` maps each id so far to its place, for duplicates."""
    impossible = _impossible(row, where)
    question = _field(row, "question", str, where, "write the question as a string")
    # A v2 unanswerable question's answers are [] (its plausible_answers are
    # not gold answers), so they are not read.
    answers = [] if impossible or (not required and "answers" not in row) else _answers(_field(
        row, "answers", (list, dict), where,
        'give every question "answers" (an empty list for no answer)'), where)
    return _record(where, qid, question, context, answers, seen, place)


def _record(where: str, qid: str, question: str, context: str,
            answers: list[tuple[str, str, int]], seen: dict[str, str], place: str) -> Record:
    """The record, checked; `answers` holds (where, text, answer_start) triples."""
    if qid in seen:
        raise UserError(f"{where}: duplicate question id {qid!r} (first at {seen[qid]}); "
                        f"give every question a unique id")
    seen[qid] = place
    if not question.strip():
        raise UserError(f"{where}: the question is empty; write the question")
    if not context.strip():
        raise UserError(f"{where}: the context is empty; give the passage the answer is in")
    for answer_where, text, start in answers:
        _check_span(answer_where, context, text, start)
    return {"id": qid, "question": question, "context": context,
            "answers": [{"text": text, "answer_start": start} for _, text, start in answers]}


def _check_span(where: str, context: str, text: str, start: int) -> None:
    """Fail unless `text` is in `context` at character `start`."""
    if not text.strip():
        raise UserError(f"{where}: the answer text is empty; give the answer's text, or an "
                        f"empty answers list for a question with no answer")
    if 0 <= start and context[start:start + len(text)] == text:
        return
    found = [i for i in range(len(context)) if context.startswith(text, i)]
    there = repr(_excerpt(context[start:start + len(text)])) if 0 <= start < len(context) else (
        f"outside the context of {len(context)} characters")
    if found:
        nearest = min(found, key=lambda i: abs(i - start))
        of = f" (the nearest of {len(found)} places)" if len(found) > 1 else ""
        fix = (f"the text starts at {nearest}{of}: set answer_start to the character offset "
               f"where the answer starts")
    else:
        fix = "the text is nowhere in the context: correct the answer text or the context"
    raise UserError(f"{where}: answer {_excerpt(text)!r} does not match the context at "
                    f"answer_start {start} (there: {there}); {fix}")


def _answers(raw, where: str) -> list[tuple[str, str, int]]:
    """(where, text, answer_start) of each answer, from a list of
    {"text", "answer_start"} objects or the Hugging Face form
    {"text": [...], "answer_start": [...]}."""
    fix = 'write answers as [{"text", "answer_start"}] or {"text": [...], "answer_start": [...]}'
    if isinstance(raw, dict):
        texts = _field(raw, "text", list, f"{where}: answers", fix)
        starts = _field(raw, "answer_start", list, f"{where}: answers", fix)
        if len(texts) != len(starts):
            raise UserError(f"{where}: answers has {len(texts)} texts but {len(starts)} "
                            f"answer_start values; give one answer_start per text")
        items = [(f"{where}: answers.text[{i}]", {"text": t, "answer_start": s})
                 for i, (t, s) in enumerate(zip(texts, starts))]
    else:
        items = [(f"{where}: answers[{i}]", answer) for i, answer in enumerate(raw)]
    return [(at, _field(answer, "text", str, at, "write the answer text as a string"),
             _field(answer, "answer_start", int, at,
                    "give answer_start as the character offset of the answer in the context"))
            for at, answer in items]


def _field(value, key: str, kind, where: str, fix: str):
    """`value[key]`, which must be of `kind` (a type or tuple of types)."""
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a JSON object, found {json_kind(value)}; {fix}")
    if key not in value:
        raise UserError(f"{where}: no field {key!r} (fields: {', '.join(value) or 'none'}); "
                        f"{fix}")
    found = value[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(found, kinds) or (isinstance(found, bool) and bool not in kinds):
        wanted = " or ".join(JSON_KINDS[k] for k in kinds)
        raise UserError(f"{where}: field {key!r} must be {wanted}, found {json_kind(found)}; {fix}")
    return found


def _id(row, where: str, fix: str, default: str | None = None) -> str:
    """The question id as a string (integers allowed), or `default` when absent."""
    if not isinstance(row, dict):
        raise UserError(f"{where}: expected a JSON object, found {json_kind(row)}; {fix}")
    if default is not None and "id" not in row:
        return default
    value = _field(row, "id", (str, int), where, fix)
    return str(value)


def _impossible(row: dict, where: str) -> bool:
    if "is_impossible" not in row:
        return False
    return _field(row, "is_impossible", bool, where, "write is_impossible as true or false")


def _decoded(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[:_EXCERPT - 3] + "..."
