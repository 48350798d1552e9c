"""BART: an encoder-decoder with learned positions, post-LayerNorm layers and an
LM head tied to the shared word embeddings; its config, head and Hugging Face
names.

The backbone follows the encoder-decoder contract of fmt/models/encdec.py
(`encode`, `decode_from`, a KV cache with `decode=True`) and uses its
`Attention` (biases, scale head_dim ** -0.5). What is BART's own:

- word embeddings times sqrt(d_model) with `scale_embedding`; positions from a
  table of `max_position_embeddings + 2` rows, read at position + 2 (fairseq's
  offset), then `layernorm_embedding`;
- tying as `transformers` 5 has it: with `tie_word_embeddings` (every hub
  checkpoint) `model.shared`, both stacks' `embed_tokens` and `lm_head` are
  one tensor, so only `model.shared.weight` is read and written; without it
  the four are separate tensors and `model.shared` feeds nothing;
- `final_logits_bias` `[1, vocab]` added to the logits (a buffer in
  `transformers`, so no gradient here either).

The pre-LN variants (mBART's `normalize_before`, `add_final_layer_norm`) have
their own model types; a BART config asking for them is refused.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmt.errors import UserError
from fmt.models import encdec, heads, layers

Dtype = Any
WeightName = heads.WeightName
POSITION_OFFSET = 2  # fairseq's learned positions start after two padding rows
LAYER_NORM_EPS = 1e-5  # torch's LayerNorm default, which BART uses
# Fields of older BART configs that ask for an architecture this file lacks,
# with the value that plain BART has.
_PLAIN_BART = {"normalize_before": False, "add_final_layer_norm": False,
               "add_bias_logits": False, "static_position_embeddings": False,
               "normalize_embedding": True, "extra_pos_embeddings": POSITION_OFFSET}


@dataclasses.dataclass(frozen=True)
class BartConfig:
    """Architecture fields, named as in Hugging Face's `config.json` (hashable:
    a list of eos ids is kept as a tuple)."""
    model_type: str = "bart"
    vocab_size: int = 50265
    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_position_embeddings: int = 1024
    init_std: float = 0.02
    scale_embedding: bool = False
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 2
    decoder_start_token_id: int | None = 2
    forced_bos_token_id: int | None = None  # kept for export and generation
    forced_eos_token_id: int | tuple[int, ...] | None = 2
    tie_word_embeddings: bool = True
    is_encoder_decoder: bool = True

    @classmethod
    def from_hf(cls, hf_config: dict) -> "BartConfig":
        for name, plain in _PLAIN_BART.items():
            if name in hf_config and hf_config[name] != plain:
                raise UserError(f"BART config with {name}={hf_config[name]!r} is not supported "
                                f"(plain BART has {plain!r}); fmt's bart family is post-LN "
                                "BART with learned positions")
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: tuple(v) if isinstance(v, list) else v
                  for k, v in hf_config.items() if k in names}
        config = cls(**values)
        if config.activation_function not in layers.ACTIVATIONS:
            raise UserError(f"BART activation_function {config.activation_function!r} is not "
                            f"supported; known: {sorted(layers.ACTIVATIONS)}")
        for heads_name in ("encoder_attention_heads", "decoder_attention_heads"):
            if config.d_model % getattr(config, heads_name):
                raise UserError(f"BART d_model={config.d_model} is not a multiple of "
                                f"{heads_name}={getattr(config, heads_name)}")
        return config

    def to_hf(self) -> dict:
        config = {k: list(v) if isinstance(v, tuple) else v
                  for k, v in dataclasses.asdict(self).items()}
        for name in ("forced_bos_token_id", "forced_eos_token_id"):  # not written as null
            if config[name] is None:
                del config[name]
        return config

    @property
    def embed_scale(self) -> float:
        return self.d_model ** 0.5 if self.scale_embedding else 1.0


class FeedForward(nn.Module):
    """fc1, activation, activation dropout, fc2."""
    ffn_dim: int
    activation: str
    dropout_rate: float
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.dense(self.ffn_dim, ("embed", "mlp"), name="up", **kw)(x)
        h = nn.Dropout(self.dropout_rate)(layers.activation(self.activation)(h),
                                          deterministic=deterministic)
        return layers.dense(x.shape[-1], ("mlp", "embed"), name="down", **kw)(h)


class BartLayer(nn.Module):
    """One post-LN layer: self-attention, (decoder) cross-attention over the
    encoder's states, feed-forward; each one dropout, residual, LayerNorm."""
    config: BartConfig
    is_decoder: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    decode: bool = False

    @nn.compact
    def __call__(self, x, mask, deterministic: bool, encoded=None, cross_mask=None,
                 cache_index=None):
        cfg = self.config
        num_heads = cfg.decoder_attention_heads if self.is_decoder else cfg.encoder_attention_heads
        ffn_dim = cfg.decoder_ffn_dim if self.is_decoder else cfg.encoder_ffn_dim
        head_dim = cfg.d_model // num_heads
        kw = dict(init_std=cfg.init_std, dtype=self.dtype, param_dtype=self.param_dtype)

        def attention(name):
            return encdec.Attention(num_heads, head_dim, use_bias=True, scale=head_dim ** -0.5,
                                    dropout_rate=cfg.attention_dropout, name=name, **kw)

        def residual(x, h, name):
            h = nn.Dropout(cfg.dropout)(h, deterministic=deterministic)
            return layers.layer_norm(LAYER_NORM_EPS, dtype=self.dtype,
                                     param_dtype=self.param_dtype, name=name)(x + h)

        h = attention("self_attention")(x, mask, deterministic, cache_index=cache_index)
        x = residual(x, h, "attention_norm")
        if self.is_decoder:
            h = attention("cross_attention")(x, cross_mask, deterministic, kv=encoded,
                                             cache_kv=self.decode)
            x = residual(x, h, "cross_attention_norm")
        h = FeedForward(ffn_dim, cfg.activation_function, cfg.activation_dropout, name="mlp",
                        **kw)(x, deterministic)
        return residual(x, h, "mlp_norm")


class BartStack(nn.Module):
    """The encoder or the decoder: token embeddings (`shared`, or its own
    `embed_tokens` when untied) times the embedding scale, learned positions,
    `layernorm_embedding`, dropout and the layers."""
    config: BartConfig
    is_decoder: bool
    shared: nn.Module | None = None
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    decode: bool = False

    @nn.compact
    def __call__(self, ids, mask, deterministic: bool, encoded=None, source_mask=None):
        cfg = self.config
        kw = dict(init_std=cfg.init_std, param_dtype=self.param_dtype)
        cache_index, cross_mask = None, None
        if self.is_decoder:
            mask, positions, cache_index = encdec.decoder_positions(self, ids, mask)
            cross_mask = encdec.cross_mask(source_mask)
        else:
            mask, positions = encdec.cross_mask(mask), jnp.arange(ids.shape[1])
        embed_tokens = self.shared
        if embed_tokens is None:  # untied: this stack's own
            embed_tokens = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"),
                                        name="embed_tokens", **kw)
        x = embed_tokens(ids) * cfg.embed_scale + layers.embed(
            cfg.max_position_embeddings + POSITION_OFFSET, cfg.d_model, (None, "embed"),
            name="position", **kw)(positions + POSITION_OFFSET)
        x = layers.layer_norm(LAYER_NORM_EPS, dtype=self.dtype, param_dtype=self.param_dtype,
                              name="embedding_norm")(x.astype(self.dtype))
        x = nn.Dropout(cfg.dropout)(x, deterministic=deterministic)
        # static_argnums counts `self`: argument 3 is `deterministic`.
        layer = nn.remat(BartLayer, static_argnums=(3,)) if self.remat else BartLayer
        count = cfg.decoder_layers if self.is_decoder else cfg.encoder_layers
        for i in range(count):
            x = layer(cfg, self.is_decoder, self.dtype, self.param_dtype, self.decode,
                      name=f"layer_{i}")(x, mask, deterministic, encoded, cross_mask, cache_index)
        return x


class BartModel(nn.Module):
    """The encoder-decoder backbone (fmt/models/encdec.py's contract): called
    with the source and `decoder_input_ids` (default: the source shifted
    right after `decoder_start_token_id`, as `transformers` does), it returns
    the decoder's `BackboneOutput`; `token_type_ids` are ignored."""
    config: BartConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    decode: bool = False

    is_encoder_decoder = True  # a class attribute, not a field

    def setup(self):
        cfg = self.config
        self.shared = layers.embed(cfg.vocab_size, cfg.d_model, ("vocab", "embed"),
                                   init_std=cfg.init_std, param_dtype=self.param_dtype, name=None)
        shared = self.shared if cfg.tie_word_embeddings else None
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat)
        self.encoder = BartStack(cfg, False, shared, **kw)
        self.decoder = BartStack(cfg, True, shared, decode=self.decode, **kw)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 deterministic: bool = True, decoder_input_ids=None, decoder_attention_mask=None):
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if decoder_input_ids is None:
            start = jnp.full_like(input_ids[:, :1], self.config.decoder_start_token_id)
            decoder_input_ids = jnp.concatenate([start, input_ids[:, :-1]], axis=1)
        encoded = self.encode(input_ids, attention_mask, deterministic)
        return self.decode_from(encoded, attention_mask, decoder_input_ids,
                                decoder_attention_mask, deterministic)

    def encode(self, input_ids, attention_mask=None, deterministic: bool = True):
        """The encoder's final hidden states `[batch, source_len, d_model]`."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        return self.encoder(input_ids, attention_mask, deterministic)

    def decode_from(self, encoded, attention_mask, decoder_input_ids,
                    decoder_attention_mask=None, deterministic: bool = True):
        """The decoder over `encoded`, as a `BackboneOutput` (hidden states, no
        pooled state, the shared embeddings), ready for the head. With `decode`,
        `decoder_attention_mask` covers every cache slot and `encoded` is read on
        the first call only (cross-attention keeps its keys and values)."""
        if attention_mask is None:
            attention_mask = jnp.ones(encoded.shape[:2], jnp.int32)
        hidden = self.decoder(decoder_input_ids, decoder_attention_mask, deterministic,
                              encoded, attention_mask)
        return heads.BackboneOutput(hidden, None, self.shared.embedding)


def backbone(config: BartConfig, *, pooler: bool, dtype: Dtype = jnp.float32,
             param_dtype: Dtype = jnp.float32, remat: bool = False) -> BartModel:
    return BartModel(config, dtype=dtype, param_dtype=param_dtype, remat=remat)


HEAD_KINDS = ("seq2seq_lm",)
# Fairseq conversions' version buffers, which `transformers` skips too.
_VERSIONS = ("model.encoder.version", "model.decoder.version", "encoder.version",
             "decoder.version")


def head(kind: str, config: BartConfig, num_outputs: int, dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32) -> heads.HeadSpec:
    """This family's head of `kind`, with its HF names and architecture."""
    if kind == "seq2seq_lm":
        tied = config.tie_word_embeddings
        names = [("final_logits_bias", ("head", "final_logits_bias"), "copy")]
        # Tied: `transformers` ties lm_head and both embed_tokens to model.shared again
        # on load, so they are not written; older checkpoints that carry them (a
        # base model's without `model.`) load without a word.
        ignored = _VERSIONS
        if tied:
            ignored += ("lm_head.weight",) + tuple(
                f"{prefix}{side}.embed_tokens.weight" for prefix in ("model.", "")
                for side in ("encoder", "decoder"))
        else:
            names.insert(0, ("lm_head.weight", ("head", "lm_head", "kernel"), "linear"))
        return heads.HeadSpec(
            heads.CausalLMHead(config.vocab_size, tied, logits_bias=True,
                               init_std=config.init_std, dtype=dtype, param_dtype=param_dtype),
            names, "BartForConditionalGeneration", ignored=ignored)
    raise UserError(f"model_type {config.model_type!r} has no {kind} head; "
                    f"{config.model_type} supports {', '.join(HEAD_KINDS)}")


def with_dropout(config: BartConfig, rate: float) -> BartConfig:
    """The config with `rate` as its residual, attention and activation dropout."""
    return dataclasses.replace(config, dropout=rate, attention_dropout=rate,
                               activation_dropout=rate)


def max_positions(config: BartConfig) -> int:
    return config.max_position_embeddings


def weight_prefix(config: BartConfig) -> str:
    """The prefix of backbone weights in a task checkpoint; a `BartModel`
    checkpoint has none."""
    return "model"


# --- Hugging Face name map -------------------------------------------------
# (HF weight name, fmt param path, transform); transforms as in fmt/hf.py.

def _linear(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.weight", path + ("kernel",), "linear"), (f"{hf}.bias", path + ("bias",), "copy")]


def _norm(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.weight", path + ("scale",), "copy"), (f"{hf}.bias", path + ("bias",), "copy")]


def _attention(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [entry for hf_name, name in (("q_proj", "query"), ("k_proj", "key"),
                                        ("v_proj", "value"), ("out_proj", "out"))
            for entry in _linear(f"{hf}.{hf_name}", path + (name,))]


def backbone_name_map(config: BartConfig, pooler: bool) -> list[WeightName]:
    """Every backbone weight, under the `model.` prefix."""
    names = [("model.shared.weight", ("encoder", "shared", "embedding"), "copy")]
    for side, count in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        hf, fm = f"model.{side}", ("encoder", side)
        if not config.tie_word_embeddings:
            names.append((f"{hf}.embed_tokens.weight", fm + ("embed_tokens", "embedding"), "copy"))
        names.append((f"{hf}.embed_positions.weight", fm + ("position", "embedding"), "copy"))
        names += _norm(f"{hf}.layernorm_embedding", fm + ("embedding_norm",))
        for i in range(count):
            h, f = f"{hf}.layers.{i}", fm + (f"layer_{i}",)
            names += _attention(f"{h}.self_attn", f + ("self_attention",))
            names += _norm(f"{h}.self_attn_layer_norm", f + ("attention_norm",))
            if side == "decoder":
                names += _attention(f"{h}.encoder_attn", f + ("cross_attention",))
                names += _norm(f"{h}.encoder_attn_layer_norm", f + ("cross_attention_norm",))
            names += _linear(f"{h}.fc1", f + ("mlp", "up"))
            names += _linear(f"{h}.fc2", f + ("mlp", "down"))
            names += _norm(f"{h}.final_layer_norm", f + ("mlp_norm",))
    return names
