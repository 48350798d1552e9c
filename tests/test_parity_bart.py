"""BART (BartForConditionalGeneration) against PyTorch `transformers`.

Small random checkpoints, written by `transformers` with a byte-level BPE
tokenizer that numbers its special tokens as BART does (<s> 0, <pad> 1, </s> 2),
are loaded only through `fmt.from_pretrained(..., task="seq2seq_lm")`:
logits on right-padded sources and targets of different lengths, scaled
embeddings, unequal encoder and decoder depths, an untied head (separate
embeddings in `transformers` 5), a non-zero `final_logits_bias`; exports that
`transformers` loads back; a base `BartModel` checkpoint; the KV cache, one
decoder token per call; dropout and remat; refused configs; logical axis names.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
from conftest import user_error  # noqa: E402
from fmt.models import bart  # noqa: E402
from test_parity import ATOL, max_diff  # noqa: E402
from test_parity_decoders import logical_specs_checked  # noqa: E402

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]  # ids 0..3, as BART's
PAD, START = 1, 2
TEXTS = ["the cat sat on the mat", "a dog ran fast", "big red dogs sat",
         "the small blue cat ran on and on to the mat"]
SIZES = dict(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=48, decoder_ffn_dim=48,
             max_position_embeddings=64)
VARIANTS = {
    "base": {},
    # unequal depths, sqrt(d_model) embedding scale, another activation
    "scaled": dict(encoder_layers=3, decoder_layers=1, scale_embedding=True,
                   activation_function="relu"),
    # transformers 5 unties shared, both embed_tokens and lm_head alike
    "untied": dict(tie_word_embeddings=False),
}
SOURCE_LENGTHS, TARGET_LENGTHS = (10, 7, 4), (6, 3, 8)


def save_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(TEXTS * 5, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", pad_token="<pad>", eos_token="</s>",
        unk_token="<unk>")
    assert (tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def torch_model(variant, vocab_size):
    config = transformers.BartConfig(vocab_size=vocab_size, **{**SIZES, **VARIANTS[variant]},
                                     pad_token_id=PAD, bos_token_id=0, eos_token_id=2,
                                     decoder_start_token_id=START, forced_eos_token_id=2)
    model = transformers.BartForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(len(variant))
    with torch.no_grad():  # every weight random, norms around 1: mapping mistakes show
        for name, param in model.named_parameters():
            norm = "norm" in name and name.endswith("weight")
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + float(norm))
        model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape,
                                                  generator=generator))
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """variant -> (folder, torch model, fmt model), built on first use."""
    cache = {}

    def get(variant):
        if variant not in cache:
            folder = tmp_path_factory.mktemp(f"bart_{variant}")
            tokenizer = save_tokenizer(folder)
            model = torch_model(variant, len(tokenizer))
            model.save_pretrained(str(folder))
            cache[variant] = folder, model, fmt.from_pretrained(str(folder), task="seq2seq_lm")
        return cache[variant]

    return get


def padded(lengths, width, vocab_size, rng, start=None):
    """Right-padded rows of `lengths` random real tokens (no special ids but a
    leading `start`), and their mask."""
    ids = rng.integers(len(SPECIALS), vocab_size, (len(lengths), width))
    if start is not None:
        ids[:, 0] = start
    mask = (np.arange(width) < np.array(lengths)[:, None]).astype(np.int64)
    return np.where(mask == 1, ids, PAD), mask


def random_batch(vocab_size, seed=0):
    rng = np.random.default_rng(seed)
    source, source_mask = padded(SOURCE_LENGTHS, 12, vocab_size, rng)
    target, target_mask = padded(TARGET_LENGTHS, 9, vocab_size, rng, start=START)
    return source, source_mask, target, target_mask


def torch_logits(model, source, source_mask, target, target_mask):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(source),
                     attention_mask=torch.as_tensor(source_mask),
                     decoder_input_ids=torch.as_tensor(target),
                     decoder_attention_mask=torch.as_tensor(target_mask)).logits.numpy()


def fmt_logits(model, source, source_mask, target, target_mask):
    return np.asarray(model(source, source_mask, decoder_input_ids=target,
                            decoder_attention_mask=target_mask))


# --- 1. logits ----------------------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_seq2seq_logits_match(checkpoint, variant):
    _, hf_model, model = checkpoint(variant)
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert model.head.architecture == "BartForConditionalGeneration"
    vocab = model.config.vocab_size
    batch = random_batch(vocab)
    want, got = torch_logits(hf_model, *batch), fmt_logits(model, *batch)
    real = batch[3].astype(bool)  # padded targets' outputs mean nothing on either side
    assert got.shape == (3, 9, vocab) and got.dtype == np.float32
    assert np.abs(want[real]).max() > 0.5
    assert max_diff(got[real], want[real]) < ATOL, max_diff(got[real], want[real])


def test_final_logits_bias_and_token_types(checkpoint):
    """The bias is loaded (the parity above would hold with it only), and
    token_type_ids change nothing."""
    _, hf_model, model = checkpoint("base")
    bias = np.asarray(model.params["head"]["final_logits_bias"])
    np.testing.assert_array_equal(bias, hf_model.final_logits_bias.numpy())
    source, source_mask, target, target_mask = random_batch(model.config.vocab_size)
    with_types = np.asarray(model(source, source_mask, np.ones_like(source),
                                  decoder_input_ids=target, decoder_attention_mask=target_mask))
    np.testing.assert_array_equal(with_types, fmt_logits(model, source, source_mask, target,
                                                         target_mask))


def test_default_decoder_inputs_shift_the_source(checkpoint):
    """Without decoder_input_ids, BART's denoising default: the source shifted
    right after decoder_start_token_id, every target slot attended."""
    _, hf_model, model = checkpoint("base")
    source, source_mask, _, _ = random_batch(model.config.vocab_size)
    with torch.no_grad():
        want = hf_model(input_ids=torch.as_tensor(source),
                        attention_mask=torch.as_tensor(source_mask)).logits.numpy()
    got = np.asarray(model(source, source_mask))
    assert max_diff(got, want) < ATOL


def test_base_model_checkpoint_loads(checkpoint, tmp_path):
    """A `BartModel` checkpoint (names without `model.`, no final_logits_bias)
    loads into the seq2seq model: only the bias is new (zeros)."""
    import shutil
    folder, hf_model, model = checkpoint("base")
    base = tmp_path / "base"
    shutil.copytree(folder, base)
    (base / "model.safetensors").unlink()
    hf_model.model.save_pretrained(str(base))
    loaded = fmt.from_pretrained(str(base), task="seq2seq_lm")
    assert loaded.loading_info == {"missing_keys": ["final_logits_bias"], "unexpected_keys": []}
    batch = random_batch(model.config.vocab_size)
    bias = hf_model.final_logits_bias.numpy()[None]
    assert max_diff(fmt_logits(loaded, *batch), fmt_logits(model, *batch) - bias) < ATOL


# --- 2. export round trip ---------------------------------------------------------------

@pytest.mark.parametrize("variant", list(VARIANTS))
def test_export_round_trip(checkpoint, tmp_path, variant):
    _, original, model = checkpoint(variant)
    model.save_pretrained(tmp_path / "exported")
    exported, info = transformers.BartForConditionalGeneration.from_pretrained(
        str(tmp_path / "exported"), output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), (kind, info[kind])
    exported.eval()
    want, got = original.state_dict(), exported.state_dict()
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)
    for attr in ("tie_word_embeddings", "scale_embedding", "encoder_layers", "decoder_layers",
                 "decoder_start_token_id", "forced_eos_token_id", "activation_function"):
        assert getattr(exported.config, attr) == getattr(original.config, attr), attr
    batch = random_batch(model.config.vocab_size, seed=1)
    assert max_diff(torch_logits(exported, *batch), torch_logits(original, *batch)) < ATOL
    assert transformers.AutoTokenizer.from_pretrained(
        str(tmp_path / "exported")).pad_token_id == PAD


# --- 3. KV cache --------------------------------------------------------------------------

def _encode(module, ids, mask):
    return module.encoder.encode(ids, mask, True)


def _step(module, encoded, mask, token, decoder_mask):
    return module.head(module.encoder.decode_from(encoded, mask, token, decoder_mask, True), True)


@pytest.mark.parametrize("variant", ["base", "scaled"])
def test_cached_decoding_matches_teacher_forcing(checkpoint, variant):
    """One decoder token per call against the cache equals the full teacher-
    forced pass at every real target position; after the first call the
    encoder's states are not read again (cross-attention's cache)."""
    _, _, model = checkpoint(variant)
    source, source_mask, target, target_mask = random_batch(model.config.vocab_size, seed=2)
    full = fmt_logits(model, source, source_mask, target, target_mask)
    decoding = model.module.clone(encoder=model.module.encoder.clone(decode=True, remat=False))
    params = {"params": model.params}
    encoded = decoding.apply(params, jnp.asarray(source), jnp.asarray(source_mask),
                             method=_encode)
    step = jax.jit(lambda variables, encoded, token: decoding.apply(
        variables, encoded, jnp.asarray(source_mask), token, jnp.asarray(target_mask),
        method=_step, mutable=["cache"]))
    variables, steps = params, []
    for t in range(target.shape[1]):
        logits, cache = step(variables, encoded if t == 0 else jnp.zeros_like(encoded),
                             jnp.asarray(target[:, t:t + 1]))
        variables = {"params": model.params, **cache}
        steps.append(np.asarray(logits)[:, 0])
    assert int(cache["cache"]["encoder"]["decoder"]["index"]) == target.shape[1]
    cached = np.stack(steps, axis=1)
    real = target_mask.astype(bool)
    assert max_diff(cached[real], full[real]) < ATOL, max_diff(cached[real], full[real])


# --- 4. training paths -------------------------------------------------------------------

def test_dropout_and_remat(checkpoint):
    folder, _, model = checkpoint("scaled")
    source, source_mask, target, target_mask = random_batch(model.config.vocab_size)
    kwargs = dict(decoder_input_ids=jnp.asarray(target),
                  decoder_attention_mask=jnp.asarray(target_mask))
    dropped = fmt.from_pretrained(str(folder), task="seq2seq_lm", dropout=0.3, remat=True)
    assert (dropped.config.dropout, dropped.config.attention_dropout,
            dropped.config.activation_dropout) == (0.3, 0.3, 0.3)
    # Evaluation ignores dropout, and remat changes nothing in the values.
    assert max_diff(fmt_logits(dropped, source, source_mask, target, target_mask),
                    fmt_logits(model, source, source_mask, target, target_mask)) < 1e-5

    def loss(params, key):
        logits = dropped.module.apply({"params": params}, jnp.asarray(source),
                                      jnp.asarray(source_mask), None, False, **kwargs,
                                      rngs={"dropout": key})
        return jnp.mean(logits ** 2)

    grads = jax.jit(jax.grad(loss))(dropped.params, jax.random.key(0))
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
    layer = grads["encoder"]["decoder"]["layer_0"]
    assert np.abs(np.asarray(layer["cross_attention"]["key"]["kernel"])).max() > 0
    # final_logits_bias is a buffer in transformers: no gradient.
    assert not np.asarray(grads["head"]["final_logits_bias"]).any()
    a, b = (np.asarray(dropped.module.apply(
        {"params": dropped.params}, jnp.asarray(source), jnp.asarray(source_mask), None, False,
        **kwargs, rngs={"dropout": jax.random.key(seed)})) for seed in (0, 1))
    assert max_diff(a, b) > 1e-3


# --- 5. configs and heads -----------------------------------------------------------------

def test_unsupported_configs_and_heads_are_user_errors(checkpoint):
    base = dict(model_type="bart", **SIZES)
    for field, value in (("normalize_before", True), ("add_final_layer_norm", True),
                         ("static_position_embeddings", True)):
        user_error(lambda: bart.BartConfig.from_hf({**base, field: value}), field)
    user_error(lambda: bart.BartConfig.from_hf({**base, "activation_function": "mish"}),
               "'mish'")
    # Old configs spell plain BART's values out; those load.
    config = bart.BartConfig.from_hf({**base, "normalize_before": False,
                                      "add_final_layer_norm": False, "extra_pos_embeddings": 2,
                                      "eos_token_id": [2], "forced_bos_token_id": 0})
    assert config.eos_token_id == (2,) and hash(config)
    hf = config.to_hf()
    assert hf["eos_token_id"] == [2] and hf["forced_bos_token_id"] == 0
    assert "forced_bos_token_id" not in bart.BartConfig().to_hf()
    assert transformers.BartConfig.from_dict(hf).decoder_layers == 2
    folder, _, _ = checkpoint("base")
    user_error(lambda: fmt.from_pretrained(str(folder), task="classification"),
               "'bart'", "seq2seq_lm")


# --- 6. sharding names --------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["base", "untied"])
def test_every_param_has_logical_axis_names(checkpoint, variant):
    from jax.sharding import PartitionSpec
    _, _, model = checkpoint(variant)
    specs = logical_specs_checked(model)
    assert len(jax.tree.leaves(model.params)) == len(model.name_map())
    backbone = specs["encoder"]
    assert backbone["shared"]["embedding"] == PartitionSpec("vocab", "embed")
    decoder = backbone["decoder"]["layer_0"]
    assert decoder["cross_attention"]["key"]["kernel"] == PartitionSpec("embed", "heads")
    assert decoder["self_attention"]["out"]["kernel"] == PartitionSpec("heads", "embed")
    assert decoder["mlp"]["up"]["kernel"] == PartitionSpec("embed", "mlp")
    assert specs["head"]["final_logits_bias"] == PartitionSpec(None, "vocab")
    if variant == "untied":
        assert specs["head"]["lm_head"]["kernel"] == PartitionSpec("embed", "vocab")
        assert backbone["encoder"]["embed_tokens"]["embedding"] == PartitionSpec("vocab", "embed")


def test_lora_default_targets(checkpoint):
    """PEFT's default for BART: every q_proj and v_proj, cross-attention's too."""
    from fmt.models import lora
    _, _, model = checkpoint("base")
    spec = lora.plan(model.name_map(), model.params, 4, 8.0, (), "bart")
    modules = [t.module for t in spec.targets]
    assert len(modules) == 2 * 2 + 2 * 4
    assert "model.decoder.layers.1.encoder_attn.v_proj" in modules
    assert all(t.in_features == t.out_features == 32 and not t.conv1d for t in spec.targets)
