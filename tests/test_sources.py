"""Tests of the GLUE task table and the data readers, on real GLUE slices."""

import json
import pathlib

import pytest

from fmt.data import tfds_ready
from fmt.data.glue import TASKS, get_task
from fmt.data.sources import read_file, read_glue_dir, read_tfds
from conftest import user_error  # noqa: E402

GLUE_SLICES = pathlib.Path(__file__).parent / "data" / "glue"
FULL_GLUE = pathlib.Path("/work/shared/data/glue")


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return str(path)


# --- task table -------------------------------------------------------------


def test_task_table():
    assert set(TASKS) == {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"}
    assert get_task("stsb").is_regression and get_task("stsb").num_labels == 1
    assert get_task("mnli").num_labels == 3
    assert get_task("mnli").eval_splits == ("validation_matched", "validation_mismatched")
    assert get_task("mnli").file_name("validation_mismatched") == "dev_mismatched.tsv"
    assert get_task("wnli").label_names == ("not_entailment", "entailment")
    assert get_task("MRPC").metrics == ("f1", "accuracy")
    assert get_task("cola").metrics == ("mcc",)
    for spec in TASKS.values():
        assert spec.tfds_name == f"glue/{spec.name}"
        assert len(spec.text_fields) == len(spec.text_columns)


def test_unknown_task_and_split():
    user_error(lambda: get_task("sst3"), "sst3", "sst2", "wnli")
    user_error(lambda: get_task("sst2").file_name("test"), "test", "train, validation")


# --- real GLUE slices -------------------------------------------------------

SLICES = [
    ("sst2", "train", 4000),
    ("sst2", "validation", 872),
    ("cola", "train", 400),
    ("cola", "validation", 200),
    ("mrpc", "train", 400),
    ("mrpc", "validation", 200),
    ("rte", "train", 400),
    ("rte", "validation", 200),
    ("stsb", "train", 400),
    ("stsb", "validation", 200),
]


@pytest.mark.parametrize("task,split,count", SLICES)
def test_reads_real_slices(task, split, count):
    spec = get_task(task)
    records = read_glue_dir(spec, str(GLUE_SLICES), split)
    assert len(records) == count
    for record in records:
        assert set(record) == {*spec.text_fields, "label"}
        assert all(isinstance(record[f], str) and record[f] for f in spec.text_fields)
    labels = {record["label"] for record in records}
    if spec.is_regression:
        assert all(isinstance(label, float) and 0.0 <= label <= 5.0 for label in labels)
    else:
        assert labels == {0, 1}
        assert all(type(label) is int for label in labels)


def test_task_folder_works_as_data_dir():
    spec = get_task("rte")
    from_root = read_glue_dir(spec, str(GLUE_SLICES), "validation")
    assert read_glue_dir(spec, str(GLUE_SLICES / "RTE"), "validation") == from_root


def test_mrpc_bom_header_and_unbalanced_quotes():
    assert (GLUE_SLICES / "MRPC" / "dev.tsv").read_bytes().startswith(b"\xef\xbb\xbfQuality")
    records = read_glue_dir(get_task("mrpc"), str(GLUE_SLICES), "validation")
    # The quote opens a field and never closes: quoting on would merge rows.
    assert records[0]["sentence2"] == (
        '"The foodservice pie business does not fit our long-term growth strategy.'
    )
    assert records[0]["label"] == 1 and records[1]["label"] == 0


def test_cola_has_no_header():
    records = read_glue_dir(get_task("cola"), str(GLUE_SLICES), "train")
    assert records[0] == {
        "sentence": "Our friends won't buy this analysis, let alone the next one we propose.",
        "label": 1,
    }


def test_cola_without_final_newline(tmp_path):
    lines = (GLUE_SLICES / "CoLA" / "dev.tsv").read_bytes().splitlines()[:5]
    write(tmp_path / "dev.tsv", b"\n".join(lines))
    records = read_glue_dir(get_task("cola"), str(tmp_path), "validation")
    assert len(records) == 5
    assert not records[-1]["sentence"].endswith("\n")


def test_stsb_float_labels_and_rte_string_labels():
    stsb = read_glue_dir(get_task("stsb"), str(GLUE_SLICES), "train")
    assert [r["label"] for r in stsb[:2]] == [5.0, 3.8]
    rte = read_glue_dir(get_task("rte"), str(GLUE_SLICES), "train")
    assert rte[0]["label"] == get_task("rte").label_names.index("not_entailment")


@pytest.mark.skipif(not FULL_GLUE.is_dir(), reason="full glue_data copy not present")
@pytest.mark.parametrize("task,train,dev", [
    ("sst2", 67349, 872),
    ("cola", 8551, 1043),
    ("mrpc", 3668, 408),
    ("rte", 2490, 277),
    ("stsb", 5749, 1500),
    ("qnli", None, 5463),
])
def test_full_glue_row_counts(task, train, dev):
    spec = get_task(task)
    if train is not None:
        assert len(read_glue_dir(spec, str(FULL_GLUE), "train")) == train
    records = read_glue_dir(spec, str(FULL_GLUE), "validation")
    assert len(records) == dev
    if not spec.is_regression:
        assert {r["label"] for r in records} == set(range(spec.num_labels))


# --- glue_data errors -------------------------------------------------------


def test_glue_missing_folder_and_file(tmp_path):
    spec = get_task("rte")
    user_error(lambda: read_glue_dir(spec, str(tmp_path / "nope"), "train"), "nope", "data_dir")
    (tmp_path / "RTE").mkdir()
    user_error(lambda: read_glue_dir(spec, str(tmp_path), "train"),
               "RTE/train.tsv", "no such file")


def test_glue_row_errors(tmp_path):
    rte, stsb = get_task("rte"), get_task("stsb")
    header = "index\tsentence1\tsentence2\tlabel\n"
    good = "0\ta\tb\tentailment\n"
    path = write(tmp_path / "train.tsv", header + good + "1\ta\tb\textra\tentailment\n")
    user_error(lambda: read_glue_dir(rte, str(tmp_path), "train"),
               f"{path}:3:", "expected 4 tab-separated columns, found 5")
    write(tmp_path / "train.tsv", header + good + "1\ta\tb\tmaybe\n")
    user_error(lambda: read_glue_dir(rte, str(tmp_path), "train"),
               f"{path}:3:", "'maybe'", "entailment, not_entailment")
    write(tmp_path / "train.tsv", header)
    user_error(lambda: read_glue_dir(rte, str(tmp_path), "train"), path, "no data rows")
    scores = "index\tsentence1\tsentence2\tscore\n0\ta\tb\t4.2\n1\ta\tb\thigh\n"
    write(tmp_path / "train.tsv", scores)
    user_error(lambda: read_glue_dir(stsb, str(tmp_path), "train"),
               f"{path}:3:", "'high' is not a number")
    user_error(lambda: read_glue_dir(rte, str(tmp_path), "train"), path, "no column 'label'")


def test_glue_numeric_label_out_of_range(tmp_path):
    path = write(tmp_path / "dev.tsv", "sentence\tlabel\ngood\t1\nbad\t2\n")
    user_error(lambda: read_glue_dir(get_task("sst2"), str(tmp_path), "validation"),
               f"{path}:3:", "'2'", "negative, positive, 0, 1")


# --- users' own files -------------------------------------------------------


def test_read_file_csv_tsv_jsonl(tmp_path):
    rows = [("great fun, really", "pos"), ('he said "no"', "neg"), ("fine", "neu")]
    csv_path = write(tmp_path / "a.csv", "text,y\n" + "".join(
        f'"{t.replace(chr(34), chr(34) * 2)}",{y}\n' for t, y in rows))
    tsv_path = write(tmp_path / "a.tsv", "text\ty\n" + "".join(f"{t}\t{y}\r\n" for t, y in rows))
    jsonl_path = write(tmp_path / "a.jsonl", "".join(
        json.dumps({"text": t, "y": y, "id": i}) + "\n" for i, (t, y) in enumerate(rows)))
    expected = [{"text": t, "label": ["neg", "neu", "pos"].index(y)} for t, y in rows]
    for path in (csv_path, tsv_path, jsonl_path):
        records, names = read_file(path, ("text",), "y")
        assert names == ("neg", "neu", "pos")
        assert records == expected


def test_read_file_given_label_names_and_int_labels(tmp_path):
    # A blank line in between and no final newline.
    text = '{"a": "x", "b": "y", "l": 1}\n\n{"a": "x", "b": "z", "l": 0}'
    path = write(tmp_path / "dev.jsonl", text)
    records, names = read_file(path, ("a", "b"), "l", label_names=("0", "1"))
    assert names == ("0", "1")
    assert records == [{"a": "x", "b": "y", "label": 1}, {"a": "x", "b": "z", "label": 0}]
    user_error(lambda: read_file(path, ("a", "b"), "l", label_names=("1", "2")),
               f"{path}:3:", "'0'", "known labels: 1, 2")


def test_read_file_regression(tmp_path):
    path = write(tmp_path / "s.csv", "s1,s2,score\na,b,3.5\nc,d,1\n")
    records, names = read_file(path, ("s1", "s2"), "score", regression=True)
    assert names is None
    assert records == [{"s1": "a", "s2": "b", "label": 3.5}, {"s1": "c", "s2": "d", "label": 1.0}]
    write(tmp_path / "s.csv", "s1,s2,score\na,b,3.5\nc,d,nan\n")
    user_error(lambda: read_file(path, ("s1", "s2"), "score", regression=True),
               f"{path}:3:", "'nan'")


def test_read_file_errors(tmp_path):
    tsv = write(tmp_path / "train.tsv", "text\tlabel\nok\tpos\nbad\tpos\textra\n")
    user_error(lambda: read_file(tsv, ("text",), "label"),
               "train.tsv:3: expected 2 tab-separated columns, found 3")
    write(tmp_path / "train.tsv", "text\tlabel\nok\tpos\n \tneg\n")
    user_error(lambda: read_file(tsv, ("text",), "label"), "train.tsv:3:", "'text' is empty")
    user_error(lambda: read_file(tsv, ("sentence",), "label"),
               "train.tsv", "no column 'sentence'", "columns: text, label")
    write(tmp_path / "train.tsv", "")
    user_error(lambda: read_file(tsv, ("text",), "label"), "train.tsv", "empty")
    write(tmp_path / "train.tsv", b"text\tlabel\nok\tpos\ncaf\xe9\tneg\n")
    user_error(lambda: read_file(tsv, ("text",), "label"), "train.tsv:3:", "UTF-8")
    user_error(lambda: read_file(str(tmp_path / "gone.csv"), ("text",), "label"),
               "gone.csv", "no such file")
    user_error(lambda: read_file(write(tmp_path / "a.txt", "x"), ("text",), "label"),
               "a.txt", ".csv")

    csv_path = write(tmp_path / "train.csv", "text,label\nok,pos\nnot, quoted,neg\n")
    user_error(lambda: read_file(csv_path, ("text",), "label"),
               "train.csv:3: expected 2 comma-separated columns, found 3")

    jsonl = write(tmp_path / "train.jsonl", '{"text": "ok", "label": "pos"}\n{"text": "ok"}\n')
    user_error(lambda: read_file(jsonl, ("text",), "label"), "train.jsonl:2:", "'label'", "text")
    write(tmp_path / "train.jsonl", '{"text": "ok", "label": "pos"}\n{"text": "ok", \n')
    user_error(lambda: read_file(jsonl, ("text",), "label"), "train.jsonl:2:", "invalid JSON")
    write(tmp_path / "train.jsonl", '{"text": 3, "label": "pos"}\n')
    user_error(lambda: read_file(jsonl, ("text",), "label"), "train.jsonl:1:", "must be a string")
    write(tmp_path / "train.jsonl", '{"text": "ok", "label": 0.5}\n')
    user_error(lambda: read_file(jsonl, ("text",), "label"), "train.jsonl:1:", "0.5")


# --- TFDS -------------------------------------------------------------------


def test_read_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=8, policy=tfds.testing.MockPolicy.USE_CODE):
        records = read_tfds(get_task("sst2"), "train")
        scores = read_tfds(get_task("stsb"), "validation")
    assert len(records) == 8
    for record in records:
        assert set(record) == {"sentence", "label"}
        assert isinstance(record["sentence"], str)
        assert type(record["label"]) is int and 0 <= record["label"] < 2
    assert all(type(record["label"]) is float for record in scores)


def test_read_tfds_unavailable(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def missing(*args, **kwargs):
        raise AssertionError("Dataset glue: could not find data in /nowhere.\nMore text.")

    monkeypatch.setattr(tfds, "load", missing)
    # As if online: the download hosts answer, and tfds.load itself fails.
    monkeypatch.setattr(tfds_ready, "unreachable_host", lambda builder: None)
    message = user_error(lambda: read_tfds(get_task("rte"), "train", data_dir="/nowhere"),
                         "glue/rte", "could not find data", "--config.data_dir", "RTE")
    assert "More text" not in message
