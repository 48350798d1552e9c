"""fmt.data.seq2seq: parallel text files, JSON lines and TFDS summarisation and
translation builders as {"source", "target"[, "references"]} records, and the
shipped Multi30k and SciTLDR slices."""

import json
import pathlib

import pytest

from fmt.data.seq2seq import SUMMARIZATION, read_files, read_jsonl, read_parallel, read_tfds
from conftest import user_error  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"
TRANSLATION, SUMMARIES = DATA / "translation", DATA / "summarization"


def write(path, data):
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


def jsonl(path, *rows):
    return write(path, "".join(json.dumps(row) + "\n" for row in rows))


def first_line(path) -> str:
    return pathlib.Path(path).read_text("utf-8").split("\n")[0]


# --- the shipped slices -----------------------------------------------------------


@pytest.mark.parametrize("prefix, count", [
    ("train", 2000), ("val", 200), ("test_2016_flickr", 200)])
def test_translation_slices(prefix, count):
    source, target = TRANSLATION / f"{prefix}.en", TRANSLATION / f"{prefix}.de"
    records = read_parallel(str(source), str(target))
    assert len(records) == count
    assert records[0] == {"source": first_line(source), "target": first_line(target)}
    assert set(records[-1]) == {"source", "target"}
    # read_files: the prefix, or either file of the pair, reads the same examples.
    for path in (prefix, f"{prefix}.en", f"{prefix}.de"):
        assert read_files(str(TRANSLATION / path)) == records
    # The other direction: the languages are the files' suffixes.
    reverse = read_files(str(TRANSLATION / prefix), source_lang="de", target_lang="en")
    assert reverse[0] == {"source": records[0]["target"], "target": records[0]["source"]}


def test_translation_slice_content():
    train = read_parallel(str(TRANSLATION / "train.en"), str(TRANSLATION / "train.de"))
    assert train[0] == {"source": "Two young, White males are outside near many bushes.",
                        "target": "Zwei junge weiße Männer sind im Freien in der Nähe vieler "
                                  "Büsche."}


@pytest.mark.parametrize("split, count, references", [
    ("train", 300, 300), ("validation", 60, 155), ("test", 60, 207)])
def test_summarization_slices(split, count, references):
    path = str(SUMMARIES / f"{split}.jsonl")
    records = read_jsonl(path, "document", "summary", "references")
    raw = [json.loads(line) for line in pathlib.Path(path).read_text("utf-8").splitlines()]
    assert len(records) == count
    assert sum(len(r["references"]) for r in records) == references
    assert records[0] == {"source": raw[0]["document"], "target": raw[0]["summary"],
                          "references": raw[0]["references"]}
    assert all(r["references"][0] == r["target"] for r in records)
    assert [r["target"] for r in records] == [row["summary"] for row in raw]
    plain = read_files(path, "document", "summary")
    assert plain == [{"source": r["source"], "target": r["target"]} for r in records]
    assert read_files(path, "document", "summary", "references") == records


def test_summarization_slice_test_split_has_several_references():
    records = read_jsonl(str(SUMMARIES / "test.jsonl"), "document", "summary", "references")
    assert min(len(r["references"]) for r in records) >= 2


# --- parallel files ---------------------------------------------------------------


def test_parallel_lines(tmp_path):
    # CRLF, a byte-order mark, and a missing final newline on one side.
    source = write(tmp_path / "a.en", "\ufeffOne.\r\nTwo.\r\n")
    target = write(tmp_path / "a.de", "Eins.\nZwei.")
    assert read_parallel(source, target) == [{"source": "One.", "target": "Eins."},
                                            {"source": "Two.", "target": "Zwei."}]


def test_parallel_line_count_mismatch(tmp_path):
    source = write(tmp_path / "a.en", "One.\nTwo.\nThree.\n")
    target = write(tmp_path / "a.de", "Eins.\nZwei.\n")
    user_error(lambda: read_parallel(source, target), f"{source} has 3 lines",
               f"{target} has 2", "same split")
    # A final blank line is a line: it is counted.
    write(tmp_path / "a.de", "Eins.\nZwei.\nDrei.\n\n")
    user_error(lambda: read_parallel(source, target), "has 3 lines", "has 4")


def test_parallel_empty_lines(tmp_path):
    source = write(tmp_path / "a.en", "One.\nTwo.\nThree.\n")
    target = write(tmp_path / "a.de", "Eins.\n \nDrei.\n")
    user_error(lambda: read_parallel(source, target), f"{target}:2: empty line",
               f"line 2 of {source}", "delete line 2 from both files")
    write(tmp_path / "a.en", "One.\n\nThree.\n")
    user_error(lambda: read_parallel(source, target), f"{source}:2: empty line")
    write(tmp_path / "a.en", "")
    user_error(lambda: read_parallel(source, target), "a.en", "file is empty")
    user_error(lambda: read_parallel(str(tmp_path / "none.en"), target), "none.en",
               "no such file")
    write(tmp_path / "a.en", b"One.\n\xff\n")
    user_error(lambda: read_parallel(source, target), "a.en:2:", "UTF-8")


def test_read_files_paths(tmp_path):
    user_error(lambda: read_files(str(tmp_path / "train")), "no such files",
               f"tried {tmp_path}/train.en, {tmp_path}/train.de", ".jsonl")
    write(tmp_path / "train.en", "One.\n")
    user_error(lambda: read_files(str(tmp_path / "train")), f"found {tmp_path}/train.en",
               f"{tmp_path}/train.de", "source_lang")
    user_error(lambda: read_files(str(tmp_path / "train.en")), "found",
               f"{tmp_path}/train.en.de", f"{tmp_path}/train.de")
    path = write(tmp_path / "train.tsv", "source\ttarget\nOne.\tEins.\n")
    user_error(lambda: read_files(path), "train.tsv: unsupported file type .tsv",
               f"{tmp_path}/train.tsv.en", ".jsonl", "--config.source_lang")
    write(tmp_path / "train.fr", "Un.\n")
    assert read_files(str(tmp_path / "train"), target_lang="fr") == [
        {"source": "One.", "target": "Un."}]
    assert read_files(str(tmp_path / "train.fr"), target_lang="fr") == [
        {"source": "One.", "target": "Un."}]
    user_error(lambda: read_files(str(tmp_path / "train"), target_lang="en"),
               "both 'en'", "--config.target_lang")


# --- JSON lines ------------------------------------------------------------------


def test_jsonl_references(tmp_path):
    path = jsonl(tmp_path / "a.jsonl",
                 {"doc": "Text one.", "sum": "One.", "refs": ["One.", "1."]},
                 {"doc": "Text two.", "sum": "Two.", "refs": ["2.", "Two."]},  # moved first
                 {"doc": "Text three.", "sum": "Three.", "refs": ["3."]},  # added first
                 {"doc": "Text four.", "sum": "Four.", "refs": []})
    assert read_jsonl(path, "doc", "sum", "refs") == [
        {"source": "Text one.", "target": "One.", "references": ["One.", "1."]},
        {"source": "Text two.", "target": "Two.", "references": ["Two.", "2."]},
        {"source": "Text three.", "target": "Three.", "references": ["Three.", "3."]},
        {"source": "Text four.", "target": "Four.", "references": ["Four."]}]
    assert read_jsonl(path, "doc", "sum") == read_jsonl(path, "doc", "sum", "") == [
        {"source": f"Text {n}.", "target": f"{n.capitalize()}."}
        for n in ("one", "two", "three", "four")]
    # Blank lines are skipped; the line numbers stay the file's.
    path = write(tmp_path / "b.json", '\n{"source": "a", "target": "b"}\n\n')
    assert read_files(path) == [{"source": "a", "target": "b"}]


def test_jsonl_missing_and_wrong_fields(tmp_path):
    good = {"document": "Text.", "summary": "Sum.", "references": ["Sum."]}
    path = jsonl(tmp_path / "a.jsonl", good, {"document": "Text."})
    user_error(lambda: read_jsonl(path, "document", "summary"), "a.jsonl:2:",
               "no field 'summary'", "fields: document", "--config.target_field")
    user_error(lambda: read_jsonl(path, "text", "summary"), "a.jsonl:1:",
               "no field 'text'", "--config.source_field")
    path = jsonl(tmp_path / "a.jsonl", good, {"document": "Text.", "summary": "Sum."})
    user_error(lambda: read_jsonl(path, "document", "summary", "references"), "a.jsonl:2:",
               "no field 'references'", "--config.references_field")
    path = jsonl(tmp_path / "a.jsonl", {**good, "summary": ["Sum."]})
    user_error(lambda: read_jsonl(path, "document", "summary"), "a.jsonl:1:",
               "'summary' must be a string", "found a list", "--config.target_field")
    path = jsonl(tmp_path / "a.jsonl", {**good, "document": None})
    user_error(lambda: read_jsonl(path, "document", "summary"), "a.jsonl:1:",
               "'document' must be a string", "found null")
    path = jsonl(tmp_path / "a.jsonl", {**good, "references": "Sum."})
    user_error(lambda: read_jsonl(path, "document", "summary", "references"), "a.jsonl:1:",
               "'references' must be a list", "found a string")
    path = jsonl(tmp_path / "a.jsonl", {**good, "references": ["Sum.", 3]})
    user_error(lambda: read_jsonl(path, "document", "summary", "references"), "a.jsonl:1:",
               "references[1] must be a string", "found an integer")
    path = jsonl(tmp_path / "a.jsonl", {**good, "references": ["Sum.", " "]})
    user_error(lambda: read_jsonl(path, "document", "summary", "references"), "a.jsonl:1:",
               "references[1] is empty")


def test_jsonl_empty_texts(tmp_path):
    good = {"document": "Text.", "summary": "Sum."}
    path = jsonl(tmp_path / "a.jsonl", good, good, {"document": "Text.", "summary": "  "})
    user_error(lambda: read_jsonl(path, "document", "summary"), "a.jsonl:3:",
               "'summary' is empty", "target", "--config.target_field")
    path = jsonl(tmp_path / "a.jsonl", {"document": "", "summary": "Sum."})
    user_error(lambda: read_jsonl(path, "document", "summary"), "a.jsonl:1:",
               "'document' is empty", "source", "--config.source_field")


def test_jsonl_bad_files(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"source": "a", "target": "b"}\n{"source":\n')
    user_error(lambda: read_jsonl(path, "source", "target"), "a.jsonl:2:", "invalid JSON")
    path = write(tmp_path / "a.jsonl", "[1]\n")
    user_error(lambda: read_jsonl(path, "source", "target"), "a.jsonl:1:",
               "expected a JSON object, found a list")
    path = write(tmp_path / "a.jsonl", "\n \n")
    user_error(lambda: read_jsonl(path, "source", "target"), "a.jsonl", "file is empty")
    path = write(tmp_path / "a.csv", "source,target\n")
    user_error(lambda: read_jsonl(path, "source", "target"), "a.csv", "'.csv'", ".jsonl")
    user_error(lambda: read_files(str(tmp_path / "none.jsonl")), "none.jsonl", "no such file")


# --- TFDS ----------------------------------------------------------------------------


def tfds_mock(tfds, examples, fields):
    """`tfds.testing.mock_data` whose builders yield `examples` (string features
    `fields`, as bytes)."""
    import tensorflow as tf

    def as_dataset(self, split, **kwargs):
        del self, split, kwargs
        signature = {field: tf.TensorSpec((), tf.string) for field in fields}
        return tf.data.Dataset.from_generator(
            lambda: iter([{k: v.encode() for k, v in e.items()} for e in examples]),
            output_signature=signature)

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)


def test_read_tfds_cnn_dailymail(caplog):
    tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS readers need "
                               "tensorflow_datasets (pip install -e '.[tfds]')")
    fields = ("article", "highlights", "publisher", "id")
    examples = [{"article": "The cat sat.", "highlights": "Cat sat.\nOn mat.",
                 "publisher": "cnn", "id": "a"},
                {"article": "No summary.", "highlights": " ", "publisher": "cnn", "id": "b"},
                {"article": "The dog ran.", "highlights": "Dog ran.", "publisher": "dm",
                 "id": "c"}]
    with tfds_mock(tfds, examples, fields):
        records = read_tfds("cnn_dailymail", "validation")
        versioned = read_tfds("cnn_dailymail:3.4.0", "test")
    assert records == versioned == [{"source": "The cat sat.", "target": "Cat sat.\nOn mat."},
                                    {"source": "The dog ran.", "target": "Dog ran."}]
    assert "left out 1 example(s)" in caplog.text
    with tfds_mock(tfds, [{**examples[1]}], fields):
        user_error(lambda: read_tfds("cnn_dailymail", "train"), "TFDS cnn_dailymail",
                   "no example with both 'article' and 'highlights'")
    with tfds_mock(tfds, [{"document": "x", "summary": "y"}], ("document", "summary")):
        user_error(lambda: read_tfds("cnn_dailymail", "train"),
                   "no string feature 'article'", "features: document, summary")


def test_read_tfds_wmt():
    tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS readers need "
                               "tensorflow_datasets (pip install -e '.[tfds]')")
    examples = [{"de": "Hallo Welt.", "en": "Hello world."}, {"de": "Danke.", "en": "Thanks."}]
    with tfds_mock(tfds, examples, ("de", "en")):
        assert read_tfds("wmt14_translate/de-en", "train") == [
            {"source": "Hello world.", "target": "Hallo Welt."},
            {"source": "Thanks.", "target": "Danke."}]
        assert read_tfds("wmt16_translate/de-en", "validation", source_lang="de",
                         target_lang="en") == [
            {"source": "Hallo Welt.", "target": "Hello world."},
            {"source": "Danke.", "target": "Thanks."}]
        user_error(lambda: read_tfds("wmt14_translate/de-en", "train", target_lang="fr"),
                   "TFDS wmt14_translate/de-en holds the languages de, en", "en -> fr",
                   "--config.source_lang", "--config.target_lang")


def test_read_tfds_generated_data():
    """The real builders' features, as TFDS's own mock generates them."""
    tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS readers need "
                               "tensorflow_datasets (pip install -e '.[tfds]')")
    with tfds.testing.mock_data(num_examples=3, policy=tfds.testing.MockPolicy.USE_CODE):
        for name, languages in (("cnn_dailymail", {}), ("xsum", {}),
                                ("wmt19_translate/de-en", {}),
                                ("ted_hrlr_translate/pt_to_en",
                                 {"source_lang": "pt", "target_lang": "en"})):
            records = read_tfds(name, "train", **languages)
            assert 0 < len(records) <= 3, name
            assert all(set(r) == {"source", "target"} and isinstance(r["source"], str)
                       and isinstance(r["target"], str) for r in records), name
        user_error(lambda: read_tfds("imdb_reviews", "train"),
                   "TFDS imdb_reviews is not a supported seq2seq builder",
                   "cnn_dailymail, xsum", "wmt14_translate/<pair>", "--config.train_file")
        user_error(lambda: read_tfds("ted_multi_translate", "train"),
                   "not a supported seq2seq builder")
        user_error(lambda: read_tfds("no_such_builder_xyz", "train"), "unknown to TFDS",
                   "cnn_dailymail")


def test_summarization_table_matches_tfds():
    """Every summarisation builder named has the (source, target) features said."""
    tfds = pytest.importorskip("tensorflow_datasets", reason="TFDS readers need "
                               "tensorflow_datasets (pip install -e '.[tfds]')")
    for name, fields in SUMMARIZATION.items():
        info = tfds.builder(name).info
        assert set(fields) <= set(info.features), (name, list(info.features))
        assert info.supervised_keys == fields, (name, info.supervised_keys)
