"""Masked-LM, token-classification and question-answering heads against PyTorch `transformers`:
random checkpoints of both families, round trips through `save_pretrained`,
and the exported folders in `transformers` pipelines."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
from test_parity import (ATOL, MINILM_HUB_ID, max_diff, randomize_, save_tiny_tokenizer,  # noqa: E402
                         tiny_batch, tiny_config)

CLASSES = {
    ("bert", "masked_lm"): "BertForMaskedLM",
    ("roberta", "masked_lm"): "RobertaForMaskedLM",
    ("bert", "token_classification"): "BertForTokenClassification",
    ("roberta", "token_classification"): "RobertaForTokenClassification",
    ("bert", "question_answering"): "BertForQuestionAnswering",
    ("roberta", "question_answering"): "RobertaForQuestionAnswering",
}
AUTO = {"masked_lm": "AutoModelForMaskedLM", "token_classification":
        "AutoModelForTokenClassification", "question_answering": "AutoModelForQuestionAnswering"}
TAGS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
# The outputs' last dimension: the tiny vocabulary, the tags, or start and end.
WIDTH = {"masked_lm": 100, "token_classification": len(TAGS), "question_answering": 2}


def hf_load(folder, task):
    auto = getattr(transformers, AUTO[task])
    model, info = auto.from_pretrained(str(folder), output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), (kind, info[kind])
    return model.eval()


def outputs(model, ids, mask, types):
    with torch.no_grad():
        kwargs = dict(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask))
        if types is not None:
            kwargs["token_type_ids"] = torch.as_tensor(types)
        out = model(**kwargs)
    if hasattr(out, "start_logits"):  # question answering: [batch, seq, (start, end)]
        return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], axis=-1)
    return out.logits.numpy()


def fmt_outputs(model, ids, mask, types):
    """fmt's outputs as `outputs` gives transformers': QA's (start, end) stacked last."""
    got = model(ids, mask, types)
    return np.stack([np.asarray(x) for x in got], axis=-1) if isinstance(got, tuple) \
        else np.asarray(got)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(family, task) -> (folder, torch model, fmt model), built on first use."""
    cache = {}

    def get(family, task):
        if (family, task) not in cache:
            torch.manual_seed(0)
            config = tiny_config(family, 2 if task == "question_answering" else len(TAGS))
            if task == "token_classification":
                config.id2label = dict(enumerate(TAGS))
                config.label2id = {t: i for i, t in enumerate(TAGS)}
            torch_model = getattr(transformers, CLASSES[family, task])(config)
            randomize_(torch_model, seed=len(cache) + 11)
            torch_model.eval()
            folder = tmp_path_factory.mktemp(f"{family}_{task}")
            torch_model.save_pretrained(str(folder))
            save_tiny_tokenizer(folder)
            cache[family, task] = folder, torch_model, fmt.from_pretrained(str(folder), task=task)
        return cache[family, task]

    return get


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("task", ["masked_lm", "token_classification", "question_answering"])
def test_random_checkpoint_outputs_match(tiny, family, task):
    _, torch_model, model = tiny(family, task)
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    ids, mask, types = tiny_batch(family)
    types = types if family == "bert" else None
    want = outputs(torch_model, ids, mask, types)
    got = fmt_outputs(model, ids, mask, types)
    assert got.shape == (3, ids.shape[1], WIDTH[task]) and got.dtype == np.float32
    real = mask.astype(bool)  # padded positions' outputs are meaningless on both sides
    assert np.abs(want[real]).max() > 0.1
    assert max_diff(got[real], want[real]) < ATOL, max_diff(got[real], want[real])
    if task == "token_classification":
        assert model.label_names == TAGS


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("task", ["masked_lm", "token_classification", "question_answering"])
def test_round_trip(tiny, family, task, tmp_path):
    _, torch_model, model = tiny(family, task)
    folder = tmp_path / "exported"
    model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == [CLASSES[family, task]]
    exported = hf_load(folder, task)
    ids, mask, types = tiny_batch(family)
    types = types if family == "bert" else None
    real = mask.astype(bool)
    want = outputs(torch_model, ids, mask, types)
    assert max_diff(outputs(exported, ids, mask, types)[real], want[real]) < ATOL
    reloaded = fmt.from_pretrained(str(folder), task=task)
    assert reloaded.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert max_diff(fmt_outputs(reloaded, ids, mask, types)[real], want[real]) < ATOL
    if task == "token_classification":
        assert exported.config.id2label == dict(enumerate(TAGS))
        assert reloaded.label_names == TAGS


def test_minilm_gets_a_new_mlm_head_and_fills_masks(tmp_path):
    """The base MiniLM has no MLM head: a fresh one, reported; the export runs in
    the fill-mask pipeline with the same scores as fmt."""
    model = fmt.from_pretrained(MINILM_HUB_ID, task="masked_lm")
    assert sorted(model.loading_info["missing_keys"]) == sorted([
        "cls.predictions.transform.dense.weight", "cls.predictions.transform.dense.bias",
        "cls.predictions.transform.LayerNorm.weight", "cls.predictions.transform.LayerNorm.bias",
        "cls.predictions.bias"])
    assert model.loading_info["unexpected_keys"] == ["pooler.dense.bias", "pooler.dense.weight"]
    folder = tmp_path / "mlm"
    model.save_pretrained(folder)
    fill = transformers.pipeline("fill-mask", model=str(folder), top_k=3)
    text = "the capital of france is [MASK]."
    predictions = fill(text)
    assert len(predictions) == 3 and all("[MASK]" not in p["sequence"] for p in predictions)
    encoded = model.tokenizer([text], return_tensors="np")
    logits = np.asarray(model(encoded["input_ids"], encoded["attention_mask"],
                              encoded.get("token_type_ids")))[0]
    position = list(encoded["input_ids"][0]).index(model.tokenizer.mask_token_id)
    probabilities = np.exp(logits[position] - logits[position].max())
    probabilities /= probabilities.sum()
    best = np.argsort(-probabilities)[:3]
    assert [p["token"] for p in predictions] == list(best)
    np.testing.assert_allclose([p["score"] for p in predictions], probabilities[best], atol=1e-4)


def test_token_classification_export_in_the_pipeline(tmp_path):
    model = fmt.from_pretrained(MINILM_HUB_ID, task="token_classification", label_names=TAGS)
    folder = tmp_path / "ner"
    model.save_pretrained(folder)
    tagger = transformers.pipeline("token-classification", model=str(folder))
    tagged = tagger("John lives in Berlin")
    assert tagged and {t["entity"] for t in tagged} <= set(TAGS[1:])
    assert tagger.model.config.id2label == dict(enumerate(TAGS))


def test_question_answering_export_opens_in_transformers(tmp_path):
    """transformers 5 removed its question-answering pipeline: the export opens in
    AutoModelForQuestionAnswering with its AutoTokenizer, whose start and end logits
    are fmt's, so the same span wins."""
    from fmt.tasks import spans
    model = fmt.from_pretrained(MINILM_HUB_ID, task="question_answering")
    assert sorted(model.loading_info["missing_keys"]) == ["qa_outputs.bias", "qa_outputs.weight"]
    folder = tmp_path / "qa"
    model.save_pretrained(folder)
    exported = hf_load(folder, "question_answering")
    assert type(exported).__name__ == "BertForQuestionAnswering"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    question, context = "Where does John live?", "John lives in Berlin, a city in Germany."
    encoded = tokenizer([question], [context], return_tensors="np")
    ids, mask, types = encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]
    want = outputs(exported, ids, mask, types)
    got = fmt_outputs(model, ids, mask, types)
    assert max_diff(got, want) < ATOL
    record = {"id": "q", "question": question, "context": context, "answers": []}
    windows = spans.cut_windows(model.tokenizer, [record], 64, 16, "test")
    assert (windows.input_ids[0] == ids[0]).all()
    answer = lambda logits: spans.best_answers([record], windows, [logits[0, :, 0]],
                                               [logits[0, :, 1]], 20, 30, False, 0.0)[0]["q"]
    assert answer(got) == answer(want) != ""
