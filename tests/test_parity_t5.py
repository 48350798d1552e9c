"""T5 (v1.0 and v1.1 / gated-GELU) against PyTorch `transformers`.

Small random checkpoints with a word-level tokenizer (pad 0, EOS 1, unk 2, as
T5's) are loaded only through `fmt.from_pretrained(folder, task="seq2seq_lm")`:
logits of padded batches whose lengths pass `relative_attention_max_distance`
(so the position buckets saturate), tied and untied heads, a decoder deeper
than the encoder, checkpoints as `transformers` 4 wrote them (the stacks'
`embed_tokens` copies, a tied `lm_head`; `tie_word_embeddings: false`) and as
5 writes them (`scale_decoder_outputs`); exports that `transformers` loads
with no missing key; the decoder's KV cache, one token a call, against
teacher forcing; logical axis names.
"""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402

import fmt  # noqa: E402
from conftest import user_error  # noqa: E402
from fmt.generate import decoding_module  # noqa: E402
from fmt.models import t5  # noqa: E402
from test_parity import ATOL, max_diff  # noqa: E402
from test_parity_decoders import logical_specs_checked  # noqa: E402

TEXTS = ["the cat sat on the mat", "a dog ran fast", "big red dogs sat",
         "the small blue cat ran on and on to the mat", "translate english to german",
         "summarize the long story of a quick brown fox that jumps over lazy dogs"]
SOURCE, TARGET = 26, 24  # past max_distance 20: the last buckets fill
SOURCE_LENGTHS, TARGET_LENGTHS = (26, 17, 9), (24, 13, 6)
SIZES = dict(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
             relative_attention_num_buckets=32, relative_attention_max_distance=20,
             decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
# variant -> (feed_forward_proj, tied, num_decoder_layers)
VARIANTS = {"v1_0": ("relu", True, 2), "v1_1": ("gated-gelu", False, 2),
            "v1_1_deep": ("gated-gelu", False, 3), "v1_0_silu_deep": ("gated-silu", True, 3)}


def save_tokenizer(folder):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    backend = Tokenizer(models.WordLevel(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.train_from_iterator(TEXTS, trainer=trainers.WordLevelTrainer(
        special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def write_checkpoint(folder, variant):
    """A random T5ForConditionalGeneration of `variant`, saved as `transformers` 4
    saved hub checkpoints: v1.0 with `lm_head` and both `embed_tokens` as copies of
    `shared` (and an unused cross-attention position table); v1.1 with its own
    `lm_head` and `tie_word_embeddings: false`."""
    from safetensors.torch import load_file, save_file
    proj, tied, decoder_layers = VARIANTS[variant]
    tokenizer = save_tokenizer(folder)
    config = transformers.T5Config(vocab_size=len(tokenizer), feed_forward_proj=proj,
                                   num_decoder_layers=decoder_layers, **SIZES)
    model = transformers.T5ForConditionalGeneration(config)
    generator = torch.Generator().manual_seed(len(variant))
    with torch.no_grad():  # every weight random, norms around 1: mapping mistakes show
        for name, param in model.named_parameters():
            norm = "layer_norm" in name
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2 + float(norm))
    model.save_pretrained(str(folder))
    weights = load_file(str(folder / "model.safetensors"))
    shared = weights["shared.weight"]
    if tied:
        weights.update({"encoder.embed_tokens.weight": shared.clone(),
                        "decoder.embed_tokens.weight": shared.clone(),
                        "lm_head.weight": shared.clone(),
                        "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight":
                        torch.randn(32, 4, generator=generator)})
    else:
        # Smaller than the rest: an untied head reads the unscaled hidden states, and
        # logits of +-20 would carry float32 rounding (torch's as much as fmt's) past ATOL.
        weights["lm_head.weight"] = torch.randn(shared.shape, generator=generator) * 0.05
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    hf_config = json.loads((folder / "config.json").read_text())
    hf_config.pop("scale_decoder_outputs", None)
    hf_config["tie_word_embeddings"] = tied
    (folder / "config.json").write_text(json.dumps(hf_config))


def hf_load(folder):
    model, info = transformers.T5ForConditionalGeneration.from_pretrained(
        str(folder), output_loading_info=True)
    return model.eval(), info


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """variant -> (folder, torch model, fmt model), built on first use."""
    cache = {}

    def get(variant):
        if variant not in cache:
            folder = tmp_path_factory.mktemp(variant)
            write_checkpoint(folder, variant)
            cache[variant] = (folder, hf_load(folder)[0],
                              fmt.from_pretrained(str(folder), task="seq2seq_lm"))
        return cache[variant]

    return get


def random_batch(vocab_size, seed=0):
    """(ids, mask, decoder ids, decoder mask): right-padded sources and targets of
    three lengths each; targets start with the decoder start id 0."""
    rng = np.random.default_rng(seed)
    mask = (np.arange(SOURCE) < np.array(SOURCE_LENGTHS)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(3, vocab_size, (3, SOURCE)), 0)
    decoder_mask = (np.arange(TARGET) < np.array(TARGET_LENGTHS)[:, None]).astype(np.int64)
    decoder_ids = np.where(decoder_mask == 1, rng.integers(3, vocab_size, (3, TARGET)), 0)
    decoder_ids[:, 0] = 0
    return ids, mask, decoder_ids, decoder_mask


def torch_logits(model, ids, mask, decoder_ids, decoder_mask):
    with torch.no_grad():
        return model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                     decoder_input_ids=torch.as_tensor(decoder_ids),
                     decoder_attention_mask=torch.as_tensor(decoder_mask)).logits.numpy()


def assert_logits_match(model, hf_model, batch):
    want = torch_logits(hf_model, *batch)
    got = np.asarray(model(batch[0], batch[1], decoder_input_ids=batch[2],
                           decoder_attention_mask=batch[3]))
    real = batch[3].astype(bool)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(want[real]).max() > 0.3
    assert max_diff(got[real], want[real]) < ATOL, max_diff(got[real], want[real])


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("buckets,distance", [(32, 128), (32, 20), (64, 256)])
def test_bucket_table_matches_transformers(bidirectional, buckets, distance):
    from transformers.models.t5.modeling_t5 import T5Attention
    span = 3000
    want = T5Attention._relative_position_bucket(
        torch.arange(-(span - 1), span), bidirectional=bidirectional, num_buckets=buckets,
        max_distance=distance).numpy()
    np.testing.assert_array_equal(t5.bucket_table(span, bidirectional, buckets, distance), want)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_seq2seq_logits_match(checkpoint, variant):
    _, hf_model, model = checkpoint(variant)
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert model.config.tie_word_embeddings == VARIANTS[variant][1]
    assert model.config.decoder_layers == VARIANTS[variant][2]
    assert_logits_match(model, hf_model, random_batch(model.config.vocab_size))


@pytest.mark.parametrize("variant", ["v1_0", "v1_1_deep"])
def test_export_round_trip(checkpoint, tmp_path, variant):
    from safetensors import safe_open
    _, hf_model, model = checkpoint(variant)
    model.save_pretrained(tmp_path / "exported")
    with safe_open(str(tmp_path / "exported" / "model.safetensors"), "np") as f:
        written = set(f.keys())
    assert not written & set(t5.TIED_COPIES)
    assert ("lm_head.weight" in written) == (not model.config.tie_word_embeddings)
    exported, info = hf_load(tmp_path / "exported")
    assert all(not keys for keys in info.values()), info
    assert exported.config.num_decoder_layers == VARIANTS[variant][2]
    want, got = hf_model.state_dict(), exported.state_dict()
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy(), err_msg=key)
    batch = random_batch(model.config.vocab_size, seed=1)
    np.testing.assert_allclose(torch_logits(exported, *batch), torch_logits(hf_model, *batch),
                               atol=1e-6)
    again = fmt.from_pretrained(str(tmp_path / "exported"), task="seq2seq_lm")
    assert again.config == model.config


def test_checkpoint_written_by_transformers_5(checkpoint, tmp_path):
    """transformers 5 writes `tie_word_embeddings: true` for every T5 and the
    checkpoint's own value as `scale_decoder_outputs`; an untied lm_head stays untied."""
    folder, hf_model, _ = checkpoint("v1_1")
    hf_model.save_pretrained(str(tmp_path))
    save_tokenizer(tmp_path)
    hf_config = json.loads((tmp_path / "config.json").read_text())
    if "scale_decoder_outputs" not in hf_config:
        pytest.skip("this transformers writes T5 configs as version 4 did")
    assert hf_config["scale_decoder_outputs"] is False
    model = fmt.from_pretrained(str(tmp_path), task="seq2seq_lm")
    assert not model.config.tie_word_embeddings
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert_logits_match(model, hf_model, random_batch(model.config.vocab_size, seed=2))


def test_base_t5model_checkpoint_loads(checkpoint, tmp_path):
    """A base `T5Model` checkpoint (no lm_head): a tied head loses nothing."""
    _, hf_model, _ = checkpoint("v1_0")
    base = transformers.T5Model(hf_model.config)
    base.load_state_dict(hf_model.state_dict(), strict=False)
    base.save_pretrained(str(tmp_path))
    save_tokenizer(tmp_path)
    model = fmt.from_pretrained(str(tmp_path), task="seq2seq_lm")
    assert model.loading_info == {"missing_keys": [], "unexpected_keys": []}
    assert_logits_match(model, hf_model, random_batch(model.config.vocab_size, seed=3))


@pytest.mark.parametrize("variant", ["v1_0", "v1_1_deep"])
def test_kv_cache_matches_teacher_forcing(checkpoint, variant):
    """The decoder in `decode` mode, one token a call against a cache of every
    target slot (cross-attention keys projected on the first call), gives each
    step the logits that teacher forcing gives that position."""
    _, _, model = checkpoint(variant)
    ids, mask, decoder_ids, decoder_mask = random_batch(model.config.vocab_size, seed=4)
    full = np.asarray(model(ids, mask, decoder_input_ids=decoder_ids,
                            decoder_attention_mask=decoder_mask))
    module = decoding_module(model.module)
    params = model.params
    encoded = jax.jit(lambda p, i, m: module.apply(
        {"params": p}, i, m, method=lambda self, i, m: self.encoder.encode(i, m)))(
        params, ids, mask)

    def step(self, encoded, mask, token, slots):
        return self.head(self.encoder.decode_from(encoded, mask, token, slots), True)

    @jax.jit
    def one_token(variables, token):
        return module.apply(variables, encoded, mask, token, np.ones_like(decoder_mask),
                            method=step, mutable=["cache"])

    variables, steps = {"params": params}, []
    for t in range(TARGET):
        logits, updated = one_token(variables, decoder_ids[:, t:t + 1])
        variables = {"params": params, "cache": updated["cache"]}
        steps.append(np.asarray(logits)[:, 0])
    cached = np.stack(steps, axis=1)
    real = decoder_mask.astype(bool)
    assert max_diff(cached[real], full[real]) < ATOL, max_diff(cached[real], full[real])
    assert int(variables["cache"]["encoder"]["decoder"]["index"]) == TARGET


def test_remat_and_dropout(checkpoint):
    folder, _, model = checkpoint("v1_1")
    batch = random_batch(model.config.vocab_size, seed=5)
    remat = fmt.from_pretrained(str(folder), task="seq2seq_lm", remat=True, dropout=0.3)
    assert remat.config.dropout_rate == 0.3
    kwargs = dict(decoder_input_ids=batch[2], decoder_attention_mask=batch[3])
    np.testing.assert_allclose(np.asarray(remat(batch[0], batch[1], **kwargs)),
                               np.asarray(model(batch[0], batch[1], **kwargs)), atol=1e-5)
    train = remat.module.apply({"params": remat.params}, batch[0], batch[1], None, False,
                               rngs={"dropout": jax.random.key(0)}, **kwargs)
    assert np.isfinite(np.asarray(train)).all()
    assert max_diff(np.asarray(train), np.asarray(model(batch[0], batch[1], **kwargs))) > 1e-2


def test_every_param_has_logical_axis_names(checkpoint):
    from jax.sharding import PartitionSpec
    _, _, model = checkpoint("v1_1")
    specs = logical_specs_checked(model)
    backbone = specs["encoder"]
    assert backbone["shared"]["embedding"] == PartitionSpec("vocab", "embed")
    assert backbone["encoder"]["relative_attention_bias"]["embedding"] == PartitionSpec(
        None, "heads")
    layer = backbone["decoder"]["layer_0"]
    assert layer["cross_attention"]["key"]["kernel"] == PartitionSpec("embed", "heads")
    assert layer["mlp"]["down"]["kernel"] == PartitionSpec("mlp", "embed")
    assert specs["head"]["lm_head"]["kernel"] == PartitionSpec("embed", "vocab")


def test_unsupported_configs_are_user_errors(checkpoint):
    folder, _, _ = checkpoint("v1_0")
    user_error(lambda: t5.T5Config.from_hf({"feed_forward_proj": "gated-gelu-x"}),
               "feed_forward_proj")
    user_error(lambda: t5.T5Config.from_hf({"feed_forward_proj": "swiglu-relu"}),
               "feed_forward_proj")
    user_error(lambda: t5.T5Config.from_hf({"feed_forward_proj": "gated-mish"}), "mish")
    user_error(lambda: fmt.from_pretrained(str(folder), task="causal_lm"), "seq2seq_lm")
    config = t5.T5Config.from_hf({"feed_forward_proj": "gated-gelu", "num_layers": 3})
    assert (config.activation, config.gated, config.decoder_layers) == ("gelu_new", True, 3)


def test_lora_default_targets_are_peft_s(checkpoint):
    """PEFT's default for T5: every attention's `q` and `v`, cross-attention's too."""
    from fmt.models import lora
    _, _, model = checkpoint("v1_0")
    spec = lora.plan(model.name_map(), model.params, 4, 8.0, (), "t5")
    names = {".".join(target.module.split(".")[-2:]) for target in spec.targets}
    assert names == {"SelfAttention.q", "SelfAttention.v", "EncDecAttention.q",
                     "EncDecAttention.v"}
    assert len(spec.targets) == 2 * 2 + 2 * 4
