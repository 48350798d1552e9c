"""fmt.data.conll: reading CoNLL columns and JSON lines, tag checks, writing."""

import json
import os
import stat

import pytest

from fmt.data.conll import check_known, label_names, read_tagged, tag_scheme, write_conll
from conftest import user_error  # noqa: E402

CONLL_2003 = """\
-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
"""


def write(path, text):
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return str(path)


def sentences(records):
    return [(r["tokens"], r["tags"], r["line"]) for r in records]


# --- CoNLL columns -------------------------------------------------------------


def test_conll_2003_columns_and_docstart(tmp_path):
    records = read_tagged(write(tmp_path / "train.conll", CONLL_2003))
    assert sentences(records) == [
        (["EU", "rejects", "German"], ["B-ORG", "O", "B-MISC"], 3),
        (["Peter", "Blackburn"], ["B-PER", "I-PER"], 7),
        (["BRUSSELS"], ["B-LOC"], 12),
    ]


@pytest.mark.parametrize("extension", [".conll", ".txt", ".tsv", ".iob", ".bio", ".CoNLL"])
def test_every_conll_extension(tmp_path, extension):
    path = write(tmp_path / f"data{extension}", "Paris\tB-LOC\nis\tO\n")
    assert sentences(read_tagged(path)) == [(["Paris", "is"], ["B-LOC", "O"], 1)]


def test_tabs_spaces_crlf_bom_and_blank_runs(tmp_path):
    text = ("\ufeffJohn \t NNP  B-PER\r\n"
            "lives\tO\r\n"
            "\r\n"
            "  \t \r\n"
            "\r\n"
            "in O\r\n"
            "Rome B-LOC")  # no final newline
    records = read_tagged(write(tmp_path / "a.txt", text))
    assert sentences(records) == [
        (["John", "lives"], ["B-PER", "O"], 1),
        (["in", "Rome"], ["O", "B-LOC"], 6),
    ]


def test_docstart_ends_a_sentence_without_a_blank_line(tmp_path):
    text = "a O\nb B-PER\n-DOCSTART- O\nc O\n-DOCSTART-\n-DOCSTART-\n"
    records = read_tagged(write(tmp_path / "a.conll", text))
    assert sentences(records) == [(["a", "b"], ["O", "B-PER"], 1), (["c"], ["O"], 4)]


def test_no_break_space_is_a_token_not_a_separator(tmp_path):
    records = read_tagged(write(tmp_path / "a.conll", "x\u00a0y O\n\u00a0 O\n"))
    assert records[0]["tokens"] == ["x\u00a0y", "\u00a0"]


def test_conll_errors(tmp_path):
    path = write(tmp_path / "one.conll", "EU B-ORG\nrejects\nGerman B-MISC\n")
    user_error(lambda: read_tagged(path), f"{path}:2:", "'rejects'", "no tag", "tab or a space")
    path = write(tmp_path / "docstart.conll", "-DOCSTART- -X- O\n\n-DOCSTART- -X- O\n")
    user_error(lambda: read_tagged(path), f"{path}:", "no sentences")
    path = write(tmp_path / "empty.conll", " \n\n")
    user_error(lambda: read_tagged(path), f"{path}:", "empty")
    path = write(tmp_path / "latin1.conll", "Z\u00fcrich B-LOC\n".encode("latin-1"))
    user_error(lambda: read_tagged(path), f"{path}:1:", "UTF-8")
    path = write(tmp_path / "late.conll", "a O\n\nb O\n\xe9 O\n".encode("latin-1"))
    user_error(lambda: read_tagged(path), f"{path}:4:", "UTF-8")
    missing = str(tmp_path / "missing.conll")
    user_error(lambda: read_tagged(missing), missing, "no such file")
    path = write(tmp_path / "data.csv", "a,O\n")
    user_error(lambda: read_tagged(path), path, "'.csv'", ".conll", ".jsonl")


# --- JSON lines ------------------------------------------------------------------


def test_jsonl_rows_and_custom_fields(tmp_path):
    rows = [{"words": ["EU", "rejects"], "ner": ["B-ORG", "O"], "id": 7},
            {"words": ["Rome"], "ner": ["B-LOC"]}]
    text = json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\r\n"
    for name in ("a.jsonl", "a.json"):
        records = read_tagged(write(tmp_path / name, text), tokens_field="words",
                              tags_field="ner")
        assert sentences(records) == [(["EU", "rejects"], ["B-ORG", "O"], 1),
                                      (["Rome"], ["B-LOC"], 3)]


@pytest.mark.parametrize("row,fragments", [
    ({"tokens": ["a"]}, ["no field 'tags'", "fields: tokens"]),
    ({"tags": ["O"]}, ["no field 'tokens'"]),
    ({"tokens": ["a", "b"], "tags": ["O"]}, ["2 items in 'tokens' but 1 in 'tags'"]),
    ({"tokens": "a b", "tags": ["O", "O"]}, ["'tokens' must be a list", "found str"]),
    ({"tokens": ["a", 1], "tags": ["O", "O"]}, ["item 2 of 'tokens' is int 1"]),
    ({"tokens": ["a"], "tags": [3]}, ["item 1 of 'tags' is int 3", "not class ids"]),
    ({"tokens": ["a"], "tags": [None]}, ["item 1 of 'tags' is NoneType"]),
    ({"tokens": [], "tags": []}, ["'tokens' is empty"]),
    ({"tokens": ["a", " "], "tags": ["O", "O"]}, ["token 2 is ' '"]),
    ([["a"], ["O"]], ["expected a JSON object"]),
])
def test_jsonl_row_errors(tmp_path, row, fragments):
    good = json.dumps({"tokens": ["ok"], "tags": ["O"]})
    path = write(tmp_path / "bad.jsonl", f"{good}\n\n{json.dumps(row)}\n{good}\n")
    user_error(lambda: read_tagged(path), f"{path}:3:", *fragments)


def test_jsonl_invalid_json(tmp_path):
    path = write(tmp_path / "bad.jsonl", '{"tokens": ["a"], "tags": ["O"]}\n{"tokens": [\n')
    user_error(lambda: read_tagged(path), f"{path}:2:", "invalid JSON")


# --- tag checks ------------------------------------------------------------------


def test_label_names_sorted_with_o_first_and_scheme():
    records = [{"tokens": ["a"] * 3, "tags": ["I-PER", "O", "B-LOC"], "line": 1},
               {"tokens": ["a"] * 2, "tags": ["B-PER", "I-PER"], "line": 5}]
    names = label_names(records, "train.conll")
    assert names == ("O", "B-LOC", "B-PER", "I-PER")
    assert tag_scheme(names) == "IOB2"
    assert label_names([{"tokens": ["a"], "tags": ["B-X"], "line": 1}], "t") == ("B-X",)
    iobes = label_names([{"tokens": ["a"] * 4, "tags": ["S-PER", "B-ORG", "E-ORG", "O"],
                          "line": 1}], "t")
    assert iobes == ("O", "B-ORG", "E-ORG", "S-PER") and tag_scheme(iobes) == "IOBES"
    assert tag_scheme(("O", "B-ORG-SUB", "I-ORG-SUB")) == "IOB2"


@pytest.mark.parametrize("tag", ["PER", "X-PER", "B-", "b-PER", "B_PER", "BPER", "U-PER",
                                 "L-PER", "B-PER-", "B--PER", "B-NEW YORK", "o"])
def test_label_names_rejects_tags_outside_the_scheme(tmp_path, tag):
    # Read from a file, so the line in the message is the one the reader gave.
    rows = [{"tokens": ["a", "b"], "tags": ["O", "B-PER"]},
            {"tokens": ["c", "d", "e"], "tags": ["O", "O", tag]}]
    path = write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in rows))
    records = read_tagged(path)
    user_error(lambda: label_names(records, path), f"{path}:2:", repr(tag), "token 3",
               "O, B-TYPE and I-TYPE", "E-TYPE and S-TYPE")


def test_label_names_points_at_the_conll_sentence(tmp_path):
    path = write(tmp_path / "train.conll", "a O\n\nb O\nc PER\n")
    records = read_tagged(path)
    user_error(lambda: label_names(records, path), f"{path}:3:", "'PER'", "token 2")


def test_check_known(tmp_path):
    path = write(tmp_path / "dev.conll", "a O\nb B-PER\n\nc O\nd B-MISC\n")
    records = read_tagged(path)
    check_known(records, ("O", "B-MISC", "B-PER"), path)
    user_error(lambda: check_known(records, ("O", "B-PER", "I-PER"), path),
               f"{path}:4:", "'B-MISC'", "token 2", "O, B-PER, I-PER")


# --- writing ---------------------------------------------------------------------


def test_write_conll_round_trip_and_mode(tmp_path):
    tokens = [["EU", "rejects", "German"], ["Peter"]]
    gold = [["B-ORG", "O", "B-MISC"], ["B-PER"]]
    predicted = [["B-ORG", "O", "O"], ["B-LOC"]]
    path = str(tmp_path / "dev_predictions.conll")
    old_umask = os.umask(0o022)
    try:
        write_conll(path, tokens, gold, predicted)
    finally:
        os.umask(old_umask)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    assert text == ("EU B-ORG B-ORG\nrejects O O\nGerman B-MISC O\n\n"
                    "Peter B-PER B-LOC\n\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["dev_predictions.conll"]
    # The predicted tag is the last column, so reading the file back gives it.
    records = read_tagged(path)
    assert [r["tokens"] for r in records] == tokens
    assert [r["tags"] for r in records] == predicted

    # Without gold, over the old file; whitespace inside a token cannot split columns.
    write_conll(path, [["New York", "is"]], None, [["B-LOC", "O"]])
    with open(path, encoding="utf-8") as f:
        assert f.read() == "New_York B-LOC\nis O\n\n"
    assert os.listdir(tmp_path) == ["dev_predictions.conll"]


def test_write_conll_mismatch_leaves_no_file(tmp_path):
    path = str(tmp_path / "out.conll")
    with pytest.raises(ValueError, match="differ"):
        write_conll(path, [["a", "b"]], [["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="differ"):
        write_conll(path, [["a"]], None, [["O"], ["O"]])
    assert os.listdir(tmp_path) == []
