"""fmt.data.squad: SQuAD JSON (v1.1, v2.0), JSON lines and TFDS squad, and the
checks on bad input (above all, answers that are not where answer_start says)."""

import json
import pathlib
import sys

import numpy as np
import pytest

from fmt.data.squad import read_squad, read_tfds_squad
from conftest import user_error  # noqa: E402

SQUAD = pathlib.Path(__file__).parent / "data" / "squad"
TRAIN, DEV = str(SQUAD / "train.json"), str(SQUAD / "dev.json")


def write(path, data):
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def squad_json(*articles, version="1.1"):
    """A SQuAD file: each article a list of (context, qas) paragraphs."""
    return json.dumps({"data": [{"title": f"a{i}", "paragraphs": [
        {"context": context, "qas": qas} for context, qas in article]}
        for i, article in enumerate(articles)], "version": version})


def qa(qid, question, *answers, **extra):
    return {"id": qid, "question": question,
            "answers": [{"text": t, "answer_start": s} for t, s in answers], **extra}


CONTEXT = "The cat sat on the mat. The dog sat on the rug."


# --- the shipped slices -----------------------------------------------------------


@pytest.mark.parametrize("path, articles, paragraphs, questions, answers", [
    (TRAIN, 2, 65, 399, 399), (DEV, 1, 8, 178, 534)])
def test_shipped_slices(path, articles, paragraphs, questions, answers):
    records = read_squad(path)
    raw = json.loads(pathlib.Path(path).read_text("utf-8"))["data"]
    assert len(raw) == articles and sum(len(a["paragraphs"]) for a in raw) == paragraphs
    assert len(records) == questions
    assert sum(len(r["answers"]) for r in records) == answers
    assert len({r["id"] for r in records}) == questions
    for record in records:
        assert set(record) == {"id", "question", "context", "answers"}
        assert record["answers"], record["id"]  # v1.1: every question has an answer
        for answer in record["answers"]:
            start, text = answer["answer_start"], answer["text"]
            assert record["context"][start:start + len(text)] == text
    # Unchanged and in file order: the records are the file's questions, one by one.
    expected = [(q["id"], q["question"], p["context"], q["answers"])
                for a in raw for p in a["paragraphs"] for q in p["qas"]]
    assert [(r["id"], r["question"], r["context"], r["answers"]) for r in records] == expected


def test_shipped_slices_first_questions():
    train, dev = read_squad(TRAIN), read_squad(DEV)
    assert train[0]["id"] == "5733be284776f41900661182"
    assert train[0]["answers"] == [{"text": "Saint Bernadette Soubirous", "answer_start": 515}]
    assert "Beyonc\u00e9" in train[-1]["context"]  # the \u escapes decode
    assert dev[0]["id"] == "56be4db0acb8001400a502ec"
    assert [a["text"] for a in dev[0]["answers"]] == ["Denver Broncos"] * 3


# --- SQuAD v2 and JSON lines ----------------------------------------------------------


def test_v2_impossible_question(tmp_path):
    path = write(tmp_path / "v2.json", squad_json([(CONTEXT, [
        qa("q1", "Where did the cat sit?", ("the mat", 15), is_impossible=False),
        # An unanswerable question: its plausible answers (even a wrong offset) are not gold.
        {"id": "q2", "question": "Where did the bird sit?", "answers": [],
         "plausible_answers": [{"text": "the rug", "answer_start": 3}], "is_impossible": True},
        # Converted files that copy the plausible answers into answers, or leave them out.
        qa("q3", "Where did the fish sit?", ("the rug", 39), is_impossible=True),
        {"id": "q4", "question": "Where did the cow sit?", "is_impossible": True},
    ])], version="v2.0"))
    records = read_squad(path)
    assert [r["id"] for r in records] == ["q1", "q2", "q3", "q4"]
    assert records[0]["answers"] == [{"text": "the mat", "answer_start": 15}]
    assert records[1]["answers"] == records[2]["answers"] == records[3]["answers"] == []
    assert records[1]["context"] == CONTEXT


def test_jsonl_both_answer_forms(tmp_path):
    rows = [
        {"id": "a", "question": "Where did the cat sit?", "context": CONTEXT,
         "answers": [{"text": "the mat", "answer_start": 15}, {"text": "mat", "answer_start": 19}]},
        {"question": "Where did the dog sit?", "context": CONTEXT,  # Hugging Face form, no id
         "answers": {"text": ["the rug"], "answer_start": [39]}},
        {"id": 7, "question": "Where did the bird sit?", "context": CONTEXT,
         "answers": {"text": [], "answer_start": []}},  # squad_v2's unanswerable form
        {"question": "Who sat?", "context": CONTEXT, "answers": [], "title": "extra fields ok"},
    ]
    lines = [json.dumps(r) for r in rows]
    path = write(tmp_path / "qa.jsonl", "\ufeff" + lines[0] + "\r\n\n" + "\n".join(lines[1:]))
    records = read_squad(path)
    assert [r["id"] for r in records] == ["a", "3", "7", "5"]  # default: the line number
    assert records[0]["answers"] == rows[0]["answers"]
    assert records[1]["answers"] == [{"text": "the rug", "answer_start": 39}]
    assert records[2]["answers"] == records[3]["answers"] == []
    assert all(r["context"] == CONTEXT for r in records)
    assert records[3] == {"id": "5", "question": "Who sat?", "context": CONTEXT, "answers": []}


# --- bad input -----------------------------------------------------------------------


def test_answer_start_mismatch(tmp_path):
    good = [(CONTEXT, [qa("q1", "Where did the cat sit?", ("the mat", 15))])]
    path = write(tmp_path / "a.json", squad_json(good, [
        (CONTEXT, [qa("q2", "Where did the dog sit?", ("the rug", 39), ("the rug", 38))])]))
    message = user_error(lambda: read_squad(path), "a.json: data[1].paragraphs[0].qas[0]",
                         "(id 'q2')", "answers[1]", "'the rug'", "answer_start 38",
                         "starts at 39", "set answer_start")
    assert "there: ' the ru'" in message
    # Several places: the nearest one is named.
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", "?", ("sat", 26))])]))
    user_error(lambda: read_squad(path), "answer_start 26", "starts at 32",
               "nearest of 2 places")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", "?", ("the cow", 15))])]))
    user_error(lambda: read_squad(path), "'the cow'", "nowhere in the context")
    for start, nearest in ((-1, 0), (200, 24)):  # never a slice from the end, nor past it
        path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", "?", ("T", start))])]))
        user_error(lambda: read_squad(path), f"answer_start {start}", "outside the context",
                   f"starts at {nearest}")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", "?", ("", 3))])]))
    user_error(lambda: read_squad(path), "qas[0]", "answer text is empty")
    jsonl = tmp_path / "a.jsonl"
    write(jsonl, json.dumps({"question": "?", "context": CONTEXT, "answers": [
        {"text": "the mat", "answer_start": 15}]}) + "\n" + json.dumps(
        {"question": "?", "context": CONTEXT, "answers": {"text": ["the rug"],
                                                         "answer_start": [3]}}) + "\n")
    user_error(lambda: read_squad(str(jsonl)), "a.jsonl:2: answers.text[0]", "'the rug'",
               "answer_start 3", "starts at 39")


def test_invalid_json(tmp_path):
    path = write(tmp_path / "a.json", '{"data": [\n{"title": "x",\n"paragraphs": [}]}')
    user_error(lambda: read_squad(path), "a.json:3:", "invalid JSON", "column")
    line = json.dumps({"question": "?", "context": CONTEXT, "answers": []})
    path = write(tmp_path / "lines.json", line + "\n" + line + "\n")
    user_error(lambda: read_squad(path), "lines.json:2:", "Extra data", ".jsonl")
    path = write(tmp_path / "a.jsonl", line + "\n" + '{"question": "?",' + "\n")
    user_error(lambda: read_squad(path), "a.jsonl:2:", "invalid JSON", "one object per line")
    pretty = json.dumps(json.loads(squad_json([(CONTEXT, [qa("q", "?")])])), indent=1)
    path = write(tmp_path / "squad.jsonl", pretty)
    user_error(lambda: read_squad(path), "squad.jsonl:1:", "invalid JSON", "name it .json")
    path = write(tmp_path / "squad.jsonl", squad_json([(CONTEXT, [qa("q", "?")])]))
    user_error(lambda: read_squad(path), "squad.jsonl:1:", "official SQuAD schema", ".json")
    path = write(tmp_path / "a.jsonl", "[1, 2]\n")
    user_error(lambda: read_squad(path), "a.jsonl:1:", "expected a JSON object, found a list")
    path = write(tmp_path / "a.json", b'{"data": [], "x": "\xff"}')
    user_error(lambda: read_squad(path), "a.json:1:", "UTF-8")


def test_missing_field(tmp_path):
    path = write(tmp_path / "a.json", json.dumps({"version": "1.1", "articles": []}))
    user_error(lambda: read_squad(path), "a.json: top level", "no field 'data'",
               "version, articles", "official SQuAD schema")
    row = {"question": "?", "context": CONTEXT, "answers": []}
    path = write(tmp_path / "a.json", json.dumps(row))
    user_error(lambda: read_squad(path), "no field 'data'", "JSON lines belong in a .jsonl")
    path = write(tmp_path / "a.json", json.dumps({"data": [{"title": "t", "paragraphs": [
        {"qas": []}]}]}))
    user_error(lambda: read_squad(path), "a.json: data[0].paragraphs[0]:", "no field 'context'")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q1", "?"), {"question": "?",
                                                                             "answers": []}])]))
    user_error(lambda: read_squad(path), "a.json: data[0].paragraphs[0].qas[1]:",
               "no field 'id'", "question, answers")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [{"id": "q", "question": "?"}])]))
    user_error(lambda: read_squad(path), "qas[0] (id 'q')", "no field 'answers'",
               "an empty list for no answer")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [
        {"id": "q", "question": "?", "answers": [{"text": "The"}]}])]))
    user_error(lambda: read_squad(path), "qas[0] (id 'q'): answers[0]",
               "no field 'answer_start'")
    jsonl = tmp_path / "a.jsonl"
    for missing in ("question", "context", "answers"):
        row = {"question": "?", "context": CONTEXT, "answers": []}
        del row[missing]
        write(jsonl, json.dumps({"question": "?", "context": CONTEXT, "answers": []}) + "\n"
              + json.dumps(row) + "\n")
        user_error(lambda: read_squad(str(jsonl)), "a.jsonl:2:", f"no field {missing!r}")
    write(jsonl, json.dumps({"question": "?", "context": CONTEXT,
                             "answers": {"text": ["The", "cat"], "answer_start": [0]}}))
    user_error(lambda: read_squad(str(jsonl)), "a.jsonl:1:", "2 texts but 1 answer_start")
    write(jsonl, json.dumps({"question": "?", "context": CONTEXT, "answers": {"text": ["x"]}}))
    user_error(lambda: read_squad(str(jsonl)), "a.jsonl:1: answers", "no field 'answer_start'")


def test_duplicate_id(tmp_path):
    path = write(tmp_path / "a.json", squad_json(
        [(CONTEXT, [qa("q1", "?"), qa("q2", "?")]), (CONTEXT, [qa("q1", "?")])]))
    user_error(lambda: read_squad(path), "a.json: data[0].paragraphs[1].qas[0] (id 'q1')",
               "duplicate question id 'q1'", "first at data[0].paragraphs[0].qas[0]", "unique")
    row = {"question": "?", "context": CONTEXT, "answers": []}
    # An explicit id that equals another row's default id (its line number).
    path = write(tmp_path / "a.jsonl", json.dumps({**row, "id": "2"}) + "\n" + json.dumps(row))
    user_error(lambda: read_squad(path), "a.jsonl:2:", "duplicate question id '2'",
               "first at line 1")


def test_wrong_types(tmp_path):
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", 5)])]))
    user_error(lambda: read_squad(path), "qas[0] (id 'q')", "'question' must be a string",
               "found an integer")
    path = write(tmp_path / "a.json", squad_json([(None, [qa("q", "?")])]))
    user_error(lambda: read_squad(path), "a.json: data[0].paragraphs[0]:",
               "'context' must be a string", "found null")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa(True, "?")])]))
    user_error(lambda: read_squad(path), "qas[0]", "'id' must be", "found a boolean")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", "?", ("The", "0"))])]))
    user_error(lambda: read_squad(path), "answers[0]", "'answer_start' must be an integer",
               "found a string")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", "?", is_impossible=1)])]))
    user_error(lambda: read_squad(path), "'is_impossible' must be a boolean")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [qa("q", "  ")])]))
    user_error(lambda: read_squad(path), "(id 'q')", "question is empty")
    row = {"question": "?", "context": ["not", "a string"], "answers": []}
    path = write(tmp_path / "a.jsonl", json.dumps(row))
    user_error(lambda: read_squad(path), "a.jsonl:1:", "'context' must be a string",
               "found a list")
    path = write(tmp_path / "a.jsonl", json.dumps({**row, "context": " "}))
    user_error(lambda: read_squad(path), "a.jsonl:1:", "context is empty")
    path = write(tmp_path / "a.jsonl", json.dumps({**row, "context": CONTEXT, "answers": "x"}))
    user_error(lambda: read_squad(path), "a.jsonl:1:", "'answers' must be a list or an object")


def test_empty_and_unreadable_files(tmp_path):
    for name, content in (("a.json", ""), ("a.jsonl", "\n \r\n"), ("b.json", "\ufeff ")):
        path = write(tmp_path / name, content)
        user_error(lambda: read_squad(path), name, "file is empty", "at least one question")
    path = write(tmp_path / "a.json", json.dumps({"data": [], "version": "1.1"}))
    user_error(lambda: read_squad(path), "a.json", "no questions")
    path = write(tmp_path / "a.json", squad_json([(CONTEXT, [])]))
    user_error(lambda: read_squad(path), "a.json", "no questions")
    user_error(lambda: read_squad(str(tmp_path / "none.json")), "none.json", "no such file")
    path = write(tmp_path / "a.txt", "x")
    user_error(lambda: read_squad(path), "a.txt", "'.txt'", ".json", ".jsonl")


# --- TFDS ----------------------------------------------------------------------------


def tfds_mock(tfds, examples, v2=False):
    """`tfds.testing.mock_data` whose squad builder yields `examples` (its own
    features: strings as bytes, answers as parallel arrays)."""
    import tensorflow as tf

    def as_dataset(self, split, **kwargs):
        del self, split, kwargs
        string = tf.TensorSpec((), tf.string)
        spans = {"text": tf.TensorSpec((None,), tf.string),
                 "answer_start": tf.TensorSpec((None,), tf.int32)}
        signature = {"id": string, "title": string, "context": string, "question": string,
                     "answers": spans}
        if v2:
            signature |= {"is_impossible": tf.TensorSpec((), tf.bool), "plausible_answers": spans}
        return tf.data.Dataset.from_generator(lambda: iter(examples),
                                              output_signature=signature)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def tfds_example(record, title="t", **extra):
    answers = record["answers"]
    return {"id": record["id"].encode(), "title": title.encode(),
            "context": record["context"].encode(), "question": record["question"].encode(),
            "answers": {"text": np.array([a["text"].encode() for a in answers], object),
                        "answer_start": np.array([a["answer_start"] for a in answers],
                                                 np.int32)}, **extra}


def test_read_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    dev = read_squad(DEV)
    with tfds_mock(tfds, [tfds_example(r) for r in dev]):
        records = read_tfds_squad("squad/v1.1", "validation")
    assert records == dev  # decoded to str, every answer, in order
    assert all(isinstance(r["id"], str) and isinstance(r["context"], str) for r in records)
    assert all(type(a["answer_start"]) is int for r in records for a in r["answers"])

    none = {"text": np.array([], object), "answer_start": np.array([], np.int32)}
    answerable = tfds_example(dev[0], is_impossible=False, plausible_answers=none)
    unanswerable = tfds_example({**dev[1], "answers": []}, is_impossible=True,
                                plausible_answers=tfds_example(dev[1])["answers"])
    # Answers listed on an impossible question are not gold answers either.
    listed = tfds_example(dev[2], is_impossible=True, plausible_answers=none)
    with tfds_mock(tfds, [answerable, unanswerable, listed], v2=True):
        records = read_tfds_squad("squad/v2.0", "validation")
    assert records == [dev[0], {**dev[1], "answers": []}, {**dev[2], "answers": []}]

    wrong = tfds_example(dev[2])
    wrong["answers"]["answer_start"] += 1
    with tfds_mock(tfds, [tfds_example(dev[0]), wrong]):
        user_error(lambda: read_tfds_squad("squad/v1.1", "validation"),
                   "TFDS squad/v1.1 split 'validation' example 1", f"(id {dev[2]['id']!r})",
                   "answers[0]", "does not match the context")
    with tfds_mock(tfds, [tfds_example(dev[0]), tfds_example(dev[0])]):
        user_error(lambda: read_tfds_squad("squad/v1.1", "train"), "example 1",
                   "duplicate question id", "first at example 0")
    with tfds_mock(tfds, []):
        user_error(lambda: read_tfds_squad("squad/v1.1", "train"), "TFDS squad/v1.1",
                   "no questions")


def test_read_tfds_generated_data():
    """The real builders' features, as TFDS's own mock generates them."""
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        # Random strings: the answers are not in the contexts, which is caught.
        user_error(lambda: read_tfds_squad("squad/v1.1", "train"),
                   "TFDS squad/v1.1 split 'train' example 0 (id '")
        user_error(lambda: read_tfds_squad("imdb_reviews", "train"),
                   "TFDS imdb_reviews is not a SQuAD-like dataset", "text, label",
                   "squad/v1.1")


def test_read_tfds_unavailable(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def missing(*args, **kwargs):
        raise ValueError("Dataset squad/v3 not found.\nMore text.")

    monkeypatch.setattr(tfds, "load", missing)
    message = user_error(lambda: read_tfds_squad("squad/v3", "train"),
                         "TFDS squad/v3", "'train'", "not found", "squad/v2.0")
    assert "More text" not in message


def test_read_tfds_without_its_packages(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    user_error(lambda: read_tfds_squad("squad/v1.1", "train"), "TFDS squad/v1.1",
               "pip install", "--config.train_file=<SQuAD .json or .jsonl file>")
