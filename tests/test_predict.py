"""experiments/predict.py and fmt.predict: labelling csv/tsv/jsonl files and writing
GLUE submissions with tiny models that finetune.py trained for a few steps on the
shipped GLUE slices (tests/data/glue, test.tsv slices included)."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import GLUE, ROOT, run_finetune, user_error
from fmt.data.glue import get_task
from fmt.data.sources import read_glue_test
from fmt.predict import Classifier, glue_submission, label_file, load_classifier, \
    submission_paths

PREDICT = [sys.executable, str(ROOT / "experiments/predict.py"), "--progress_bar=false"]
ROWS = 24  # dev rows evaluated by the run and labelled here
MAX_LEN = 32  # one bucket: the runs compile little; predictions use the same length


def finetune(tmp_path_factory, tiny_model, task: str):
    """A workdir of 5 steps on the task's slice; its dev predictions cover ROWS rows."""
    workdir = tmp_path_factory.mktemp(task) / "run"
    run_finetune(f"--config=experiments/configs/glue.py:{task}", f"--workdir={workdir}",
                 f"--config.data_dir={GLUE}", f"--config.model={tiny_model}",
                 "--config.max_steps=5", "--config.max_train_examples=64",
                 f"--config.max_eval_examples={ROWS}", "--config.batch_size=8",
                 "--config.learning_rate=1e-2", "--config.warmup_steps=1",
                 f"--config.max_seq_length={MAX_LEN}", "--config.checkpoint_every_steps=1000")
    return workdir


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, tiny_model):
    return finetune(tmp_path_factory, tiny_model, "sst2")


@pytest.fixture(scope="module")
def stsb_run(tmp_path_factory, tiny_model):
    return finetune(tmp_path_factory, tiny_model, "stsb")


@pytest.fixture(scope="module")
def sst2(sst2_run) -> Classifier:
    return load_classifier(str(sst2_run / "model"), max_seq_length=MAX_LEN)


def run_predictions(workdir) -> list:
    lines = (workdir / "predictions_validation.jsonl").read_text().splitlines()
    return [json.loads(line)["prediction"] for line in lines]


def dev_rows(glue_dir: str, columns: list[str]) -> list[dict]:
    """The first ROWS dev rows of a slice: an id, the text columns and the gold label."""
    lines = (GLUE / glue_dir / "dev.tsv").read_text(encoding="utf-8-sig").splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in lines[1:ROWS + 1]]
    gold = "score" if "score" in header else "label"
    return [{"id": str(i), **{c: row[c] for c in columns}, "gold": row[gold]}
            for i, row in enumerate(rows)]


def write_table(path, rows: list[dict]) -> str:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".tsv":
        path.write_text("".join("\t".join(r) + "\n" for r in [list(rows[0]),
                                                              *map(dict.values, rows)]))
    else:
        with open(path, "w", newline="") as f:
            csv.writer(f).writerows([list(rows[0]), *map(dict.values, rows)])
    return str(path)


def read_table(path) -> tuple[list[str], list[dict]]:
    """(column names, rows) of a written csv/tsv/jsonl file."""
    text = path.read_text()
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        return list(rows[0]), rows
    if path.suffix == ".tsv":
        table = [line.split("\t") for line in text.splitlines()]
    else:
        table = list(csv.reader(text.splitlines()))
    return table[0], [dict(zip(table[0], cells)) for cells in table[1:]]


# --- labelling files ------------------------------------------------------------


@pytest.mark.parametrize("extension", [".csv", ".tsv", ".jsonl"])
def test_file_labels_are_the_runs_own_predictions(tmp_path, sst2, sst2_run, extension):
    rows = dev_rows("SST-2", ["sentence"])
    if extension == ".jsonl":  # JSON values keep their types
        rows = [dict(row, id=int(row["id"])) for row in rows]
    source = write_table(tmp_path / f"dev{extension}", rows)
    output = tmp_path / "out" / f"labelled{extension}"
    assert label_file(sst2, source, str(output), ["sentence"], progress=False) == ROWS
    columns, written = read_table(output)
    assert columns == ["id", "sentence", "gold", "label", "score"]
    assert [{k: row[k] for k in ("id", "sentence", "gold")} for row in written] == rows
    assert [row["label"] for row in written] == run_predictions(sst2_run)
    assert all(0.5 <= float(row["score"]) <= 1.0 for row in written)


def test_scores_are_the_models_probabilities_in_any_batching(sst2):
    """Row by row, the bucketed scores are the softmax of the model's own call on
    the texts padded together, however the rows are batched (also 4 to a batch)."""
    from scipy.special import softmax
    texts = [row["sentence"] for row in dev_rows("SST-2", ["sentence"])]
    records = [{"sentence": text} for text in texts]
    predictions = sst2.predict(records, ["sentence"], "dev", progress=False)
    small = Classifier(sst2.model, batch_size=4, max_seq_length=MAX_LEN).predict(
        records, ["sentence"], "dev", progress=False)
    model = sst2.model
    batch = model.tokenizer(texts, truncation=True, max_length=MAX_LEN, padding=True,
                            return_tensors="np")
    probabilities = softmax(np.asarray(model(**batch), np.float64), axis=-1)
    assert predictions.labels == [model.label_names[i] for i in probabilities.argmax(-1)]
    np.testing.assert_allclose(predictions.scores, probabilities.max(-1), atol=1e-6)
    assert small.labels == predictions.labels
    np.testing.assert_allclose(small.scores, predictions.scores, atol=1e-6)


def test_regression_model_gives_floats(tmp_path, stsb_run):
    rows = dev_rows("STS-B", ["sentence1", "sentence2"])
    source = write_table(tmp_path / "pairs.jsonl", rows)
    output = tmp_path / "scored.jsonl"
    classifier = load_classifier(str(stsb_run / "model"), max_seq_length=MAX_LEN)
    label_file(classifier, source, str(output), ("sentence1", "sentence2"), progress=False)
    columns, written = read_table(output)
    assert columns == ["id", "sentence1", "sentence2", "gold", "label"]  # no score column
    assert [row["id"] for row in written] == [row["id"] for row in rows]
    assert all(isinstance(row["label"], float) for row in written)
    np.testing.assert_allclose([row["label"] for row in written], run_predictions(stsb_run),
                               atol=1e-5)

    [path] = glue_submission(classifier, "stsb", str(GLUE), str(tmp_path / "sub") + "/",
                             progress=False)
    assert path.endswith("STS-B.tsv")
    lines = open(path).read().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 21
    scores = [line.split("\t")[1] for line in lines[1:]]
    assert all("." in score and float(score) == float(score) for score in scores)


# --- GLUE submissions -------------------------------------------------------------


def test_glue_submission_for_sst2(tmp_path, sst2, sst2_run):
    """The CLI on the shipped test.tsv slice (20 rows): the leaderboard's header and
    one 0/1 row per test example, in the file's order, as fmt.predict labels them."""
    result = subprocess.run([*PREDICT, f"--model={sst2_run / 'model'}", "--glue_task=sst2",
                             f"--data_dir={GLUE}", f"--output={tmp_path / 'submission'}/",
                             f"--max_seq_length={MAX_LEN}", "--batch_size=8"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    output = tmp_path / "submission" / "SST-2.tsv"
    assert result.stdout.split() == [str(output)]
    lines = output.read_text().splitlines()
    test_lines = (GLUE / "SST-2" / "test.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction"
    assert len(lines) == len(test_lines) == 21
    indices, labels = zip(*(line.split("\t") for line in lines[1:]))
    assert list(indices) == [line.split("\t")[0] for line in test_lines[1:]]
    assert set(labels) <= {"0", "1"}
    _, records = read_glue_test(get_task("sst2"), str(GLUE), "test")
    expected = sst2.predict(records, ["sentence"], "test", allow_empty=True, progress=False)
    assert list(labels) == [str(sst2.model.label_names.index(name))
                            for name in expected.labels]


def test_glue_test_files_and_leaderboard_labels(tmp_path):
    cola = get_task("cola")  # train/dev have no header; test.tsv has one
    path, records = read_glue_test(cola, str(GLUE), "test")
    assert path.endswith("CoLA/test.tsv") and len(records) == 20
    assert records[0] == {"sentence": "Bill whistled past the house.", "idx": "0"}
    assert get_task("qqp").index_column == "id"
    mnli = get_task("mnli")
    assert mnli.test_splits == ("test_matched", "test_mismatched")
    assert submission_paths(mnli, str(tmp_path)) == [
        ("test_matched", str(tmp_path / "MNLI-m.tsv")),
        ("test_mismatched", str(tmp_path / "MNLI-mm.tsv"))]
    assert submission_paths(get_task("rte"), "rte.tsv") == [("test", "rte.tsv")]
    assert get_task("rte").submission_label("not_entailment") == "not_entailment"
    assert get_task("mnli").submission_label("2") == "contradiction"
    assert get_task("sst2").submission_label("positive") == "1"
    assert get_task("wnli").submission_label("entailment") == "1"
    assert get_task("sst2").submission_label("maybe") is None


# --- bad input: one line naming the file or flag ----------------------------------------


def test_bad_files_and_flags(tmp_path, sst2, sst2_run):
    good = write_table(tmp_path / "in.csv", [{"id": "1", "sentence": "a fine film"}])
    out = str(tmp_path / "out.csv")
    label = lambda source, output=out, fields=("sentence",), **kw: label_file(
        sst2, source, output, fields, progress=False, **kw)
    user_error(lambda: label(str(tmp_path / "missing.csv")), "missing.csv: no such file")
    (tmp_path / "in.txt").write_text("a fine film\n")
    user_error(lambda: label(str(tmp_path / "in.txt")), "in.txt", "unsupported file type",
               ".csv, .tsv, .jsonl")
    other = write_table(tmp_path / "text.csv", [{"id": "1", "text": "a fine film"}])
    user_error(lambda: label(other), "text.csv: no column 'sentence' (columns: id, text)",
               "--text_fields")
    lines = write_table(tmp_path / "in.jsonl", [{"sentence": "fine"}, {"text": "film"}])
    user_error(lambda: label(lines, str(tmp_path / "out.jsonl")), "in.jsonl:2",
               "no field 'sentence'", "--text_fields")
    user_error(lambda: label(good, fields=("sentence", "a", "b")),
               "--text_fields=sentence,a,b")
    user_error(lambda: label(good, good), "--output", "input file")
    user_error(lambda: label(good, str(tmp_path / "out.tsv")), "--output", ".csv")
    labelled = write_table(tmp_path / "gold.csv", [{"sentence": "fine", "label": "1"}])
    user_error(lambda: label(labelled), "gold.csv", "'label'", "--label_column")
    assert label(labelled, label_column="predicted") == 1

    user_error(lambda: load_classifier(str(tmp_path / "nowhere")), "--model=", "no such folder")
    user_error(lambda: load_classifier(str(sst2_run)), "workdir", str(sst2_run / "model"))
    user_error(lambda: Classifier(sst2.model, max_seq_length=4096), "--max_seq_length=4096")
    user_error(lambda: Classifier(sst2.model, batch_size=0), "--batch_size=0")

    user_error(lambda: glue_submission(sst2, "stsb", str(GLUE), out), "--glue_task=stsb",
               "score (regression)")
    user_error(lambda: glue_submission(sst2, "rte", str(GLUE), out), "--glue_task=rte",
               "negative, positive")
    user_error(lambda: glue_submission(sst2, "sst2", str(tmp_path), out), "test.tsv",
               "no such file")
    user_error(lambda: submission_paths(get_task("mnli"), str(tmp_path / "m.tsv")),
               "--output=", "DIR/", "MNLI-m.tsv and MNLI-mm.tsv")


def test_a_base_model_is_not_a_classifier(tiny_model):
    user_error(lambda: load_classifier(str(tiny_model)), "not a fine-tuned sequence "
               "classification model", "BertModel")


@pytest.mark.parametrize("args,fragment", [
    (["--input=IN"], "text.csv: no column 'sentence'"),
    ([], "pass either --input=FILE"),
])
def test_cli_errors_are_one_line(tmp_path, sst2_run, args, fragment):
    source = write_table(tmp_path / "text.csv", [{"text": "a fine film"}])
    args = [arg.replace("IN", source) for arg in args]
    result = subprocess.run([*PREDICT, f"--model={sst2_run / 'model'}",
                             f"--output={tmp_path / 'out.csv'}", *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], result.stderr[-3000:]
