"""T5: an encoder-decoder with relative position buckets and RMS layer norms
(v1.0: ReLU MLP, LM head tied to the embeddings; v1.1 / Flan-T5: gated-GELU
MLP, untied head); its config, head and Hugging Face names.

One embedding table, `shared`, feeds both stacks. Positions enter only as a
learned bias on each self-attention's logits, looked up by the bucket of the
key's offset from the query (bidirectional in the encoder, looking back in
the decoder); each stack's first layer holds the table in `transformers`,
here the stack holds it and every layer reads the same bias. Attention has
no biases and no 1/sqrt(head_dim) scale (T5 folds it into the query's init).

Tying in `transformers` 5: its `T5Config` always says `tie_word_embeddings:
true` and keeps the checkpoint's own value as `scale_decoder_outputs`
(whether the decoder's output is scaled by d_model ** -0.5 before the tied
head); an untied `lm_head.weight` in the checkpoint stays untied on load. So
`from_hf` reads `scale_decoder_outputs` when present, else
`tie_word_embeddings`, and `to_hf` writes both, which `transformers` 4 and 5
read alike.

The family interface (see fmt/models/__init__.py and fmt/models/encdec.py):
`backbone(...)`, `backbone_name_map(config)` (names without a prefix, as in
`T5ForConditionalGeneration` and the base `T5Model`) and `head(kind, ...)`.
"""

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fmt.errors import UserError
from fmt.models import encdec, heads, layers

Dtype = Any
WeightName = heads.WeightName

# HF weights that checkpoints may carry but that are not weights of their own:
# both stacks' `embed_tokens` (tied to `shared`; `transformers` ties them again
# and does not write them) and a cross-attention position table that old
# checkpoints had and no one reads (`_keys_to_ignore_on_load_unexpected`).
TIED_COPIES = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight",
               "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight")


@dataclasses.dataclass(frozen=True)
class T5Config:
    """Architecture fields, named as in Hugging Face's `config.json`.
    `tie_word_embeddings`: the LM head is `shared`, read after scaling the
    decoder's output by d_model ** -0.5 (v1.0); False: its own `lm_head`."""
    model_type: str = "t5"
    vocab_size: int = 32128
    d_model: int = 512
    d_kv: int = 64
    d_ff: int = 2048
    num_layers: int = 6
    num_decoder_layers: int | None = None  # None: num_layers
    num_heads: int = 8
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_epsilon: float = 1e-6
    feed_forward_proj: str = "relu"  # "relu" (v1.0), "gated-gelu" (v1.1), "gated-silu", ...
    tie_word_embeddings: bool = True
    initializer_factor: float = 1.0
    pad_token_id: int | None = 0
    eos_token_id: int | tuple[int, ...] | None = 1
    decoder_start_token_id: int | None = 0
    is_encoder_decoder: bool = True

    @classmethod
    def from_hf(cls, hf_config: dict) -> "T5Config":
        hf = dict(hf_config)
        proj = hf.get("feed_forward_proj", "relu")
        parts = proj.split("-")
        if len(parts) > 2 or (len(parts) == 2 and parts[0] != "gated"):
            raise UserError(f"T5 feed_forward_proj {proj!r} is not valid; expected 'ACT' or "
                            "'gated-ACT', e.g. 'relu' or 'gated-gelu'")
        if _activation(proj) not in layers.ACTIVATIONS:
            raise UserError(f"T5 feed_forward_proj {proj!r}: activation {_activation(proj)!r} "
                            f"is not supported; known: {', '.join(sorted(layers.ACTIVATIONS))}")
        if "scale_decoder_outputs" in hf:  # written by transformers 5 (see the module doc)
            hf["tie_word_embeddings"] = bool(hf["scale_decoder_outputs"])
        names = {f.name for f in dataclasses.fields(cls)} - {"is_encoder_decoder"}
        values = {k: v for k, v in hf.items() if k in names}
        if values.get("num_decoder_layers") is None:
            values["num_decoder_layers"] = hf.get("num_layers", cls.num_layers)
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = tuple(values["eos_token_id"])
        values.setdefault("decoder_start_token_id", hf.get("pad_token_id", 0))
        return cls(**values)

    def to_hf(self) -> dict:
        config = dataclasses.asdict(self)
        if isinstance(self.eos_token_id, tuple):
            config["eos_token_id"] = list(self.eos_token_id)
        config.update(dense_act_fn=self.activation, is_gated_act=self.gated,
                      scale_decoder_outputs=self.tie_word_embeddings)
        return config

    @property
    def activation(self) -> str:
        """HF's `dense_act_fn`: the MLP's activation."""
        return _activation(self.feed_forward_proj)

    @property
    def gated(self) -> bool:
        return self.feed_forward_proj.startswith("gated-")

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers


def _activation(feed_forward_proj: str) -> str:
    # As transformers parses it: the part after "gated-"; gated-gelu is the tanh GELU.
    return "gelu_new" if feed_forward_proj == "gated-gelu" else feed_forward_proj.split("-")[-1]


def bucket_table(span: int, bidirectional: bool, num_buckets: int,
                 max_distance: int) -> np.ndarray:
    """The bucket of each relative position (key - query) in [-(span-1), span-1],
    at index position + span - 1: exact offsets below half the buckets (per
    direction), then log-spaced up to `max_distance`, past which all share the
    last. Computed on the host in float32 as `transformers` computes it, so
    buckets on the log bins' edges come out the same on every device."""
    rel = np.arange(-(span - 1), span, dtype=np.int64)
    buckets = np.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0) * num_buckets
        distance = np.abs(rel)
    else:
        distance = -np.minimum(rel, 0)  # later keys are masked; they share bucket 0
    max_exact = num_buckets // 2
    ratio = np.maximum(distance, 1).astype(np.float32) / np.float32(max_exact)
    large = max_exact + (np.log(ratio) / np.float32(math.log(max_distance / max_exact))
                         * np.float32(num_buckets - max_exact)).astype(np.int64)
    large = np.minimum(large, num_buckets - 1)
    return (buckets + np.where(distance < max_exact, distance, large)).astype(np.int32)


class T5MLP(nn.Module):
    """wo(dropout(act(wi(x)))), or gated: wo(dropout(act(wi_0(x)) * wi_1(x)));
    here `up` (wi or wi_1), `gate` (wi_0) and `down` (wo), without biases."""
    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, deterministic: bool):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, use_bias=False)
        std = cfg.initializer_factor * cfg.d_model ** -0.5
        act = layers.activation(cfg.activation)
        if cfg.gated:
            h = act(layers.dense(cfg.d_ff, ("embed", "mlp"), init_std=std, name="gate", **kw)(x))
            h = h * layers.dense(cfg.d_ff, ("embed", "mlp"), init_std=std, name="up", **kw)(x)
        else:
            h = act(layers.dense(cfg.d_ff, ("embed", "mlp"), init_std=std, name="up", **kw)(x))
        h = nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)
        return layers.dense(x.shape[-1], ("mlp", "embed"), name="down",
                            init_std=cfg.initializer_factor * cfg.d_ff ** -0.5, **kw)(h)


class T5Layer(nn.Module):
    """One pre-norm block: x + dropout(self-attention(norm(x)) + position bias),
    in the decoder x + dropout(cross-attention(norm(x), encoded)), then
    x + dropout(mlp(norm(x)))."""
    config: T5Config
    decoder: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, bias, deterministic: bool, encoded=None, encoded_mask=None,
                 cache_index=None):
        cfg = self.config
        norm_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        # One std for query, key, value and out (encdec.Attention has one): the
        # query's and key's product has the variance of HF's init, where the query's
        # std carries the missing 1/sqrt(d_kv).
        std = cfg.initializer_factor * (cfg.d_model * cfg.d_kv ** 0.5) ** -0.5
        attention = dict(num_heads=cfg.num_heads, head_dim=cfg.d_kv, use_bias=False, scale=1.0,
                         dropout_rate=cfg.dropout_rate, init_std=std, **norm_kw)

        def residual(h):
            return x + nn.Dropout(cfg.dropout_rate)(h, deterministic=deterministic)

        h = layers.RMSNorm(cfg.layer_norm_epsilon, name="attention_norm", **norm_kw)(x)
        x = residual(encdec.Attention(**attention, name="attention")(
            h, mask, deterministic, bias=bias, cache_index=cache_index))
        if self.decoder:
            h = layers.RMSNorm(cfg.layer_norm_epsilon, name="cross_attention_norm", **norm_kw)(x)
            x = residual(encdec.Attention(**attention, name="cross_attention")(
                h, encoded_mask, deterministic, kv=encoded, cache_kv=cache_index is not None))
        h = layers.RMSNorm(cfg.layer_norm_epsilon, name="mlp_norm", **norm_kw)(x)
        return residual(T5MLP(cfg, name="mlp", **norm_kw)(h, deterministic))


class T5Stack(nn.Module):
    """The encoder's or decoder's layers over embedded tokens: dropout, the
    layers sharing one relative position bias, the final norm and dropout.
    The decoder keeps a KV cache with `decode` (fmt/models/encdec.py)."""
    config: T5Config
    decoder: bool
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    decode: bool = False

    @nn.compact
    def __call__(self, x, ids, attention_mask, deterministic: bool, encoded=None,
                 encoded_mask=None):
        cfg = self.config
        if self.decoder:
            mask, positions, cache_index = encdec.decoder_positions(self, ids, attention_mask)
            encoded_mask = encdec.cross_mask(encoded_mask)
        else:
            mask, cache_index = attention_mask.astype(bool)[:, None, None, :], None
            positions = jnp.arange(ids.shape[1])
        # Keys are every position (every cache slot); queries are this call's.
        keys = mask.shape[-1]
        table = bucket_table(keys, not self.decoder, cfg.relative_attention_num_buckets,
                             cfg.relative_attention_max_distance)
        relative = jnp.arange(keys)[None, :] - positions[:, None]
        bias = layers.embed(cfg.relative_attention_num_buckets, cfg.num_heads, (None, "heads"),
                            init_std=cfg.initializer_factor * cfg.d_model ** -0.5,
                            param_dtype=self.param_dtype, name="relative_attention_bias")(
            jnp.asarray(table)[relative + keys - 1])
        bias = bias.transpose(2, 0, 1)[None]  # [1, heads, queries, keys]
        x = nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)
        # static_argnums counts `self`: argument 4 is `deterministic`.
        block = nn.remat(T5Layer, static_argnums=(4,)) if self.remat else T5Layer
        for i in range(cfg.decoder_layers if self.decoder else cfg.num_layers):
            x = block(cfg, self.decoder, self.dtype, self.param_dtype, name=f"layer_{i}")(
                x, mask, bias, deterministic, encoded, encoded_mask, cache_index)
        x = layers.RMSNorm(cfg.layer_norm_epsilon, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="final_norm")(x)
        return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class T5Model(nn.Module):
    """The shared embeddings, the encoder and the decoder: an encoder-decoder
    backbone as fmt/models/encdec.py describes it. `token_type_ids` are ignored."""
    config: T5Config
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    decode: bool = False

    is_encoder_decoder = True

    def setup(self):
        cfg = self.config
        kw = dict(dtype=self.dtype, param_dtype=self.param_dtype, remat=self.remat)
        # setup names submodules by attribute, so nn.Embed as layers.embed builds it.
        self.shared = nn.Embed(cfg.vocab_size, cfg.d_model, param_dtype=self.param_dtype,
                               embedding_init=nn.with_logical_partitioning(
                                   nn.initializers.normal(cfg.initializer_factor),
                                   ("vocab", "embed")))
        self.encoder = T5Stack(cfg, decoder=False, **kw)
        self.decoder = T5Stack(cfg, decoder=True, decode=self.decode, **kw)

    def encode(self, input_ids, attention_mask=None, deterministic: bool = True) -> jax.Array:
        """The encoder's final hidden states `[batch, source_len, d_model]`."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        x = self.shared(input_ids).astype(self.dtype)
        return self.encoder(x, input_ids, attention_mask, deterministic)

    def decode_from(self, encoded, attention_mask, decoder_input_ids, decoder_attention_mask=None,
                    deterministic: bool = True) -> heads.BackboneOutput:
        """The decoder over `encoded` (whose padding `attention_mask` marks): its
        final hidden states `[batch, target_len, d_model]` and the shared embeddings."""
        if attention_mask is None:
            attention_mask = jnp.ones(encoded.shape[:2], jnp.int32)
        x = self.shared(decoder_input_ids).astype(self.dtype)
        hidden = self.decoder(x, decoder_input_ids, decoder_attention_mask, deterministic,
                              encoded, attention_mask)
        return heads.BackboneOutput(hidden, None, self.shared.embedding)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 deterministic: bool = True, decoder_input_ids=None,
                 decoder_attention_mask=None) -> heads.BackboneOutput:
        if decoder_input_ids is None:
            raise UserError("T5 is an encoder-decoder: pass decoder_input_ids (the targets "
                            "shifted right, starting with decoder_start_token_id)")
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        encoded = self.encode(input_ids, attention_mask, deterministic)
        return self.decode_from(encoded, attention_mask, decoder_input_ids,
                                decoder_attention_mask, deterministic)


def backbone(config: T5Config, *, pooler: bool, dtype: Dtype = jnp.float32,
             param_dtype: Dtype = jnp.float32, remat: bool = False) -> T5Model:
    if pooler:
        raise UserError("T5 has no pooled output; its heads read the decoder")
    return T5Model(config, dtype=dtype, param_dtype=param_dtype, remat=remat)


HEAD_KINDS = ("seq2seq_lm",)
# T5 was trained on many tasks at once, each named by a prefix of its source
# ("summarize: ", "translate English to German: "): `--config.source_prefix`.
TASK_PREFIXES = True


def head(kind: str, config: T5Config, num_outputs: int, dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32) -> heads.HeadSpec:
    """This family's head of `kind`, with its HF names and architecture."""
    if kind == "seq2seq_lm":
        tied = config.tie_word_embeddings
        return heads.HeadSpec(
            heads.CausalLMHead(config.vocab_size, tied,
                               hidden_scale=config.d_model ** -0.5 if tied else 1.0,
                               init_std=config.initializer_factor, dtype=dtype,
                               param_dtype=param_dtype),
            [] if tied else [("lm_head.weight", ("head", "lm_head", "kernel"), "linear")],
            "T5ForConditionalGeneration",
            # Tied: `transformers` ties lm_head to `shared` again on load.
            ignored=TIED_COPIES + (("lm_head.weight",) if tied else ()))
    raise UserError(f"model_type {config.model_type!r} has no {kind} head; "
                    f"{config.model_type} supports {', '.join(HEAD_KINDS)}")


def with_dropout(config: T5Config, rate: float) -> T5Config:
    """The config with `rate` as its dropout (T5 has one rate for all of it)."""
    return dataclasses.replace(config, dropout_rate=rate)


# T5 has no position table: offsets past relative_attention_max_distance share
# the last bucket, so any length runs (memory is the limit). fmt reads this as
# the cap on tokenized lengths and on prompt + new tokens.
NO_POSITION_LIMIT = 1 << 20


def max_positions(config: T5Config) -> int:
    return NO_POSITION_LIMIT


def weight_prefix(config: T5Config) -> str:
    """No prefix: T5ForConditionalGeneration and the base T5Model name their
    weights alike (shared., encoder., decoder.); the base lacks lm_head."""
    return ""


# --- Hugging Face name map -------------------------------------------------
# (HF weight name, fmt param path, transform); transforms as in fmt/hf.py.

def _attention(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.{name}.weight", path + (fm, "kernel"), "linear")
            for name, fm in (("q", "query"), ("k", "key"), ("v", "value"), ("o", "out"))]


def _stack(config: T5Config, stack: str) -> list[WeightName]:
    decoder = stack == "decoder"
    base = ("encoder", stack)
    names = [(f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
              base + ("relative_attention_bias", "embedding"), "copy")]
    for i in range(config.decoder_layers if decoder else config.num_layers):
        hf, fm = f"{stack}.block.{i}.layer", base + (f"layer_{i}",)
        names.append((f"{hf}.0.layer_norm.weight", fm + ("attention_norm", "scale"), "copy"))
        names += _attention(f"{hf}.0.SelfAttention", fm + ("attention",))
        if decoder:
            names.append((f"{hf}.1.layer_norm.weight", fm + ("cross_attention_norm", "scale"),
                          "copy"))
            names += _attention(f"{hf}.1.EncDecAttention", fm + ("cross_attention",))
        mlp = f"{hf}.{2 if decoder else 1}"
        names.append((f"{mlp}.layer_norm.weight", fm + ("mlp_norm", "scale"), "copy"))
        parts = (("wi_0", "gate"), ("wi_1", "up")) if config.gated else (("wi", "up"),)
        for hf_name, name in parts + (("wo", "down"),):
            names.append((f"{mlp}.DenseReluDense.{hf_name}.weight", fm + ("mlp", name, "kernel"),
                          "linear"))
    names.append((f"{stack}.final_layer_norm.weight", base + ("final_norm", "scale"), "copy"))
    return names


def backbone_name_map(config: T5Config, pooler: bool) -> list[WeightName]:
    """Every backbone weight: `shared` once (both stacks' `embed_tokens` are
    copies of it, see TIED_COPIES), then the encoder and the decoder."""
    return ([("shared.weight", ("encoder", "shared", "embedding"), "copy")]
            + _stack(config, "encoder") + _stack(config, "decoder"))
