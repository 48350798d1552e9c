"""Decoders (GPT-2, Llama, Mistral, Qwen2) against PyTorch `transformers`.

Small random checkpoints, written by `transformers` with a GPT-2 style
byte-level BPE tokenizer (no pad token), are loaded only through
`fmt.from_pretrained`, as a user would load a hub checkpoint: causal-LM and
classification logits on right- and left-padded batches, grouped-query
attention, Llama-3 and linear RoPE scaling, Qwen2's biases, Mistral's and
Qwen2's sliding windows, tied and untied LM heads; exports that `transformers`
loads back with the same tensors; packed rows (segment ids); logical axis names.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
from conftest import user_error  # noqa: E402
from fmt.models import layers  # noqa: E402
from fmt.train import sharding  # noqa: E402
from test_parity import ATOL, max_diff  # noqa: E402

EOS = "<|endoftext|>"  # id 0: the tokenizer's only special token, as in GPT-2
TEXTS = ["the cat sat on the mat", "a dog ran fast", "big red dogs sat",
         "the small blue cat ran on and on to the mat"]
WIDTH = 12
SIZES = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)
LLAMA3_ROPE = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=16)


def save_tokenizer(folder):
    """A byte-level BPE tokenizer of ~300 ids whose only special token is EOS."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(TEXTS * 5, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=[EOS], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=EOS, eos_token=EOS, unk_token=EOS)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def torch_model(variant, vocab_size, num_labels=None):
    """A random `transformers` model of `variant`; a classifier given num_labels."""
    family, _, option = variant.partition("_")
    if family == "gpt2":
        config = transformers.GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32,
                                         n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    elif family == "llama" and option == "tied":
        # One key/value head, head_dim from the config (not 32 / 4), biases, linear RoPE.
        config = transformers.LlamaConfig(
            vocab_size=vocab_size, **{**SIZES, "num_key_value_heads": 1}, head_dim=16,
            tie_word_embeddings=True, attention_bias=True, mlp_bias=True,
            rope_scaling=dict(rope_type="linear", factor=2.0))
    elif family == "llama":
        config = transformers.LlamaConfig(vocab_size=vocab_size, **SIZES,
                                          rope_scaling=LLAMA3_ROPE, tie_word_embeddings=False)
    elif family == "qwen2":
        window = dict(use_sliding_window=True, sliding_window=4, max_window_layers=1)
        config = transformers.Qwen2Config(vocab_size=vocab_size, **SIZES,
                                          **(window if option == "window" else {}))
    else:
        config = transformers.MistralConfig(vocab_size=vocab_size, **SIZES, sliding_window=4)
    if num_labels:
        config.num_labels, config.pad_token_id = num_labels, 0
        model = transformers.AutoModelForSequenceClassification.from_config(config)
    else:
        model = transformers.AutoModelForCausalLM.from_config(config)
    generator = torch.Generator().manual_seed(len(variant) + (num_labels or 0))
    with torch.no_grad():  # every weight random, norms around 1: mapping mistakes show
        for name, param in model.named_parameters():
            norm = ("ln_" in name or "norm" in name) and name.endswith("weight")
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + float(norm))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """(variant, task) -> (folder, torch model, fmt model), built on first use."""
    cache = {}

    def get(variant, task="causal_lm"):
        if (variant, task) not in cache:
            folder = tmp_path_factory.mktemp(f"{variant}_{task}")
            tokenizer = save_tokenizer(folder)
            model = torch_model(variant, len(tokenizer), 3 if task == "classification" else None)
            model.save_pretrained(str(folder))
            cache[variant, task] = folder, model, fmt.from_pretrained(str(folder), task=task)
        return cache[variant, task]

    return get


def random_batch(vocab_size, seed=0):
    """Rows of 12, 8 and 5 real tokens (never EOS), right-padded."""
    ids = np.random.default_rng(seed).integers(1, vocab_size, (3, WIDTH))
    mask = (np.arange(WIDTH) < np.array([[12], [8], [5]])).astype(np.int64)
    return np.where(mask == 1, ids, 0), mask


def left_padded(ids, mask):
    """The same rows moved to the right end."""
    shifts = mask.shape[1] - mask.sum(1)
    return (np.stack([np.roll(row, s) for row, s in zip(ids, shifts)]),
            np.stack([np.roll(row, s) for row, s in zip(mask, shifts)]))


def hf_positions(mask):
    """What `generate` passes for padded rows: positions counted over real tokens."""
    return np.maximum(np.cumsum(mask, axis=1) - 1, 0)


def torch_logits(model, ids, mask, positions=None):
    kwargs = dict(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask))
    if positions is not None:
        kwargs["position_ids"] = torch.as_tensor(positions)
    with torch.no_grad():
        return model(**kwargs).logits.numpy()


CAUSAL = ["gpt2", "llama", "llama_tied", "qwen2", "qwen2_window", "mistral"]


# --- 1. causal-LM logits ------------------------------------------------------------

@pytest.mark.parametrize("variant", CAUSAL)
def test_causal_lm_logits_match(checkpoint, variant):
    _, hf_model, model = checkpoint(variant)
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    vocab = model.config.vocab_size
    right = random_batch(vocab)
    for ids, mask in (right, left_padded(*right)):
        want = torch_logits(hf_model, ids, mask, hf_positions(mask))
        got = np.asarray(model(ids, mask))
        real = mask.astype(bool)  # padded positions' outputs mean nothing on either side
        assert got.shape == (3, WIDTH, vocab) and got.dtype == np.float32
        assert np.abs(want[real]).max() > 0.5
        assert max_diff(got[real], want[real]) < ATOL, max_diff(got[real], want[real])


def test_gpt2_base_checkpoint_as_on_the_hub(checkpoint, tmp_path):
    """The hub's `gpt2` is a base model: names without `transformer.`, no lm_head
    (tied), and the causal-mask buffers `attn.bias`/`attn.masked_bias` of old
    `transformers`, which are not weights."""
    import shutil
    from safetensors.numpy import save_file
    folder, hf_model, model = checkpoint("gpt2")
    tensors = {k.removeprefix("transformer."): v.numpy()
               for k, v in hf_model.state_dict().items() if k.startswith("transformer.")}
    for i in range(2):
        tensors[f"h.{i}.attn.bias"] = np.tril(np.ones((1, 1, 64, 64), np.uint8))
        tensors[f"h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    base = tmp_path / "base"
    shutil.copytree(folder, base)
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    loaded = fmt.from_pretrained(str(base), task="causal_lm")
    assert loaded.loading_info == {"missing_keys": [], "unexpected_keys": []}
    ids, mask = random_batch(model.config.vocab_size)
    np.testing.assert_array_equal(np.asarray(loaded(ids, mask)), np.asarray(model(ids, mask)))


def test_token_type_ids_are_ignored(checkpoint):
    _, _, model = checkpoint("gpt2")
    ids, mask = random_batch(model.config.vocab_size)
    np.testing.assert_array_equal(np.asarray(model(ids, mask, np.ones_like(ids))),
                                  np.asarray(model(ids, mask)))


@pytest.mark.parametrize("variant", ["mistral", "qwen2_window"])
def test_sliding_window_changes_the_logits(checkpoint, variant):
    """The same weights without a window give other logits past the window, so
    the parity above would fail if fmt ignored it."""
    _, hf_model, model = checkpoint(variant)
    config = hf_model.config.to_dict()
    config.update(sliding_window=None, use_sliding_window=False)
    config.pop("layer_types", None)  # Qwen2 derives it again: every layer full
    unwindowed = type(hf_model)(type(hf_model.config).from_dict(config)).eval()
    unwindowed.load_state_dict(hf_model.state_dict())
    ids, mask = random_batch(model.config.vocab_size)
    got = np.asarray(model(ids, mask))[0, 4:]  # row 0: 12 real tokens, window 4
    assert max_diff(got, torch_logits(unwindowed, ids, mask)[0, 4:]) > 1e-2
    assert max_diff(got, torch_logits(hf_model, ids, mask)[0, 4:]) < ATOL


def test_rope_frequencies_match_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    llama31 = dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                   original_max_position_embeddings=8192)
    for scaling in (llama31, dict(rope_type="linear", factor=4.0)):
        config = transformers.LlamaConfig(hidden_size=4096, num_attention_heads=32,
                                          rope_theta=500000.0, rope_scaling=dict(scaling))
        want, _ = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](config)
        got = layers.rope_frequencies(128, 500000.0, scaling)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)


def test_config_spellings():
    """transformers 4's `rope_theta`/`rope_scaling` (with "type"), defaults a
    config.json may leave out, Qwen2 windows by `max_window_layers`; and what
    fmt writes back, transformers reads as the same RoPE."""
    from fmt.models.llama import LlamaConfig
    config = LlamaConfig.from_hf(dict(
        model_type="llama", hidden_size=32, num_attention_heads=4, num_hidden_layers=2,
        max_position_embeddings=64, rope_theta=500000.0,
        rope_scaling={"type": "linear", "factor": 2.0}))
    assert config.rope_theta == 500000.0 and config.num_key_value_heads == 4
    assert dict(config.rope_scaling) == {"rope_type": "linear", "factor": 2.0}
    read = transformers.LlamaConfig.from_dict(config.to_hf())
    assert read.rope_parameters == {"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}
    qwen2 = LlamaConfig.from_hf(dict(model_type="qwen2", num_hidden_layers=4,
                                     num_attention_heads=4, use_sliding_window=True,
                                     max_window_layers=2))
    assert [qwen2.layer_window(i) for i in range(4)] == [None, None, 4096, 4096]
    assert LlamaConfig.from_hf(dict(model_type="mistral", num_attention_heads=4)).layer_window(0) \
        == 4096
    user_error(lambda: LlamaConfig.from_hf(dict(model_type="llama", num_attention_heads=4,
                                                rope_scaling={"rope_type": "yarn", "factor": 4.0})),
               "'yarn'", "llama3")


# --- 2. sequence classification ---------------------------------------------------------

@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_sequence_classification_logits_match(checkpoint, variant):
    _, hf_model, model = checkpoint(variant, "classification")
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert model.label_names == ("LABEL_0", "LABEL_1", "LABEL_2")
    tokenizer = model.tokenizer
    assert tokenizer.pad_token == EOS  # fmt gave the GPT-2 style tokenizer one
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batch = tokenizer(TEXTS, padding="max_length", max_length=WIDTH, return_tensors="np")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        assert (mask == 0).any() and (ids[mask == 1] != 0).all()
        want = torch_logits(hf_model, ids, mask, hf_positions(mask))
        got = np.asarray(model(ids, mask))
        assert got.shape == (len(TEXTS), 3) and np.abs(want).max() > 0.1
        assert max_diff(got, want) < ATOL, max_diff(got, want)
    tokenizer.padding_side = "right"


def test_unknown_head_is_a_user_error(checkpoint):
    folder, _, _ = checkpoint("gpt2")
    user_error(lambda: fmt.from_pretrained(str(folder), task="token_classification"),
               "'gpt2'", "token_classification", "causal_lm")


# --- 3. export round trips -----------------------------------------------------------

def hf_load(folder, task):
    auto = (transformers.AutoModelForSequenceClassification if task == "classification"
            else transformers.AutoModelForCausalLM)
    model, info = auto.from_pretrained(str(folder), output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), (kind, info[kind])
    return model.eval()


@pytest.mark.parametrize("variant,task", [(v, "causal_lm") for v in CAUSAL]
                         + [("gpt2", "classification"), ("llama", "classification")])
def test_export_round_trip(checkpoint, tmp_path, variant, task):
    _, original, model = checkpoint(variant, task)
    model.save_pretrained(tmp_path / "exported")
    exported = hf_load(tmp_path / "exported", task)
    assert type(exported) is type(original)
    # Every tensor back bit for bit (GPT-2's c_attn joined from its three parts).
    want, got = original.state_dict(), exported.state_dict()
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)
    # The checkpoint had no pad_token_id: the export names the tokenizer's (EOS),
    # without which HF's classifiers refuse batches of more than one.
    assert exported.config.pad_token_id == 0
    assert transformers.AutoTokenizer.from_pretrained(str(tmp_path / "exported")).pad_token == EOS
    for attr in ("sliding_window", "tie_word_embeddings", "num_key_value_heads"):
        assert getattr(exported.config, attr, None) == getattr(original.config, attr, None)
    ids, mask = random_batch(model.config.vocab_size, seed=1)
    assert max_diff(torch_logits(exported, ids, mask), torch_logits(original, ids, mask)) < ATOL


# --- 4. packed rows --------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_segments_attend_only_within_themselves(checkpoint, variant):
    """Row 0 packs A (5 tokens) and B (6), positions restarting at B; row 1 is B
    alone. B's logits are the same in both, and those of `transformers` on B."""
    _, hf_model, model = checkpoint(variant)
    rng = np.random.default_rng(3)
    a, b = rng.integers(1, model.config.vocab_size, 5), rng.integers(1, model.config.vocab_size, 6)
    ids = np.zeros((2, WIDTH), np.int64)
    ids[0, :11], ids[1, :6] = np.concatenate([a, b]), b
    mask = (ids != 0).astype(np.int64)
    segments = np.array([[1] * 5 + [2] * 6 + [0], [1] * 6 + [0] * 6])
    positions = np.array([list(range(5)) + list(range(6)) + [0], list(range(6)) + [0] * 6])
    got = np.asarray(model(ids, mask, positions=positions, segment_ids=segments))
    want = torch_logits(hf_model, b[None], np.ones((1, 6), np.int64))[0]
    assert max_diff(got[0, 5:11], got[1, :6]) < 1e-5
    assert max_diff(got[0, 5:11], want) < ATOL
    unpacked = np.asarray(model(ids, mask))  # without segments B would read A
    assert max_diff(unpacked[0, 5:11], want) > 1e-2


# --- 5. sharding names -----------------------------------------------------------------

def logical_specs_checked(model) -> dict:
    """The model's logical specs, after checking that every param has one of the
    sharding rules' names on each axis (at least one named)."""
    import jax
    from jax.sharding import PartitionSpec
    specs = model.logical_specs
    flat_specs = jax.tree_util.tree_flatten_with_path(
        specs, is_leaf=lambda x: isinstance(x, PartitionSpec))[0]
    params = jax.tree.leaves(model.params)
    assert len(flat_specs) == len(params)
    known = {name for name, _ in sharding.LOGICAL_RULES}
    for (path, spec), param in zip(flat_specs, params):
        assert len(spec) == param.ndim, (path, spec)
        assert any(spec) and set(filter(None, spec)) <= known, (path, spec)
    return specs


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_every_param_has_logical_axis_names(checkpoint, variant):
    from jax.sharding import PartitionSpec
    _, _, model = checkpoint(variant)
    specs = logical_specs_checked(model)
    encoder = specs["encoder"]
    assert encoder["word"]["embedding"] == PartitionSpec("vocab", "embed")
    assert encoder["layer_0"]["attention"]["key"]["kernel"] == PartitionSpec("embed", "heads")
    assert encoder["layer_1"]["mlp"]["down"]["kernel"] == PartitionSpec("mlp", "embed")
    if variant == "llama":
        assert specs["head"]["lm_head"]["kernel"] == PartitionSpec("embed", "vocab")
