"""The Llama family: Llama (2 and 3), Mistral and Qwen2 decoders, their configs,
heads and Hugging Face names.

All three are pre-norm decoders with RMSNorm, RoPE, a SwiGLU MLP and grouped-
query attention (fewer key/value heads than query heads), and share HF's
weight names. They differ in what this file reads from the config:
- Llama: `attention_bias` (query/key/value and output biases), `mlp_bias`,
  RoPE scaling ("linear", or Llama 3's "llama3");
- Mistral: no biases; `sliding_window` on every layer;
- Qwen2: query/key/value biases always, no output bias; a sliding window only
  with `use_sliding_window`, on the layers from `max_window_layers` on (or
  those `layer_types` names "sliding_attention").

The family interface (see fmt/models/__init__.py): `backbone(...)`,
`backbone_name_map(config)` (weights under the `model.` prefix) and
`head(kind, ...)`.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmt.errors import UserError
from fmt.models import heads, layers

Dtype = Any
WeightName = heads.WeightName

ARCHITECTURES = {"llama": "Llama", "mistral": "Mistral", "qwen2": "Qwen2"}
ROPE_TYPES = ("default", "linear", "llama3")
# Defaults of `transformers` that a config.json may leave out and that matter here.
_TYPE_DEFAULTS = {"mistral": {"sliding_window": 4096}, "qwen2": {"sliding_window": 4096}}
# Fields that only some model types have; written back only for those.
_ONLY_FOR = {"attention_bias": ("llama",), "mlp_bias": ("llama",),
             "sliding_window": ("mistral", "qwen2"), "use_sliding_window": ("qwen2",),
             "max_window_layers": ("qwen2",), "layer_types": ("qwen2",)}


@dataclasses.dataclass(frozen=True)
class LlamaConfig:
    """Architecture fields, named as in Hugging Face's `config.json` (hashable:
    dicts and lists are kept as tuples)."""
    model_type: str = "llama"  # "llama", "mistral" or "qwen2"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: num_attention_heads
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    attention_dropout: float = 0.0
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None  # sorted items; None: plain RoPE
    sliding_window: int | None = None
    use_sliding_window: bool = False
    max_window_layers: int = 28
    layer_types: tuple[str, ...] | None = None
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None

    @classmethod
    def from_hf(cls, hf_config: dict) -> "LlamaConfig":
        hf = {**_TYPE_DEFAULTS.get(hf_config.get("model_type"), {}), **hf_config}
        # transformers 5 writes `rope_parameters` (theta included); 4 wrote
        # `rope_theta` and `rope_scaling`, which wins when both are present, as there.
        rope = dict(hf.get("rope_scaling") or hf.get("rope_parameters") or {})
        theta = float(rope.pop("rope_theta", hf.get("rope_theta", 10000.0)))
        kind = rope.pop("rope_type", rope.pop("type", "default"))
        if kind not in ROPE_TYPES:
            raise UserError(f"rope_type {kind!r} is not supported; fmt supports "
                            f"{', '.join(ROPE_TYPES)}")
        scaling = None
        if kind == "llama3":  # as transformers fills it in
            rope.setdefault("original_max_position_embeddings", hf.get("max_position_embeddings"))
        if kind != "default":
            scaling = tuple(sorted({"rope_type": kind, **rope}.items()))
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in hf.items() if k in names}
        values.update(rope_theta=theta, rope_scaling=scaling,
                      num_key_value_heads=hf.get("num_key_value_heads")
                      or hf["num_attention_heads"])
        for name in ("eos_token_id", "layer_types"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    def to_hf(self) -> dict:
        config = {k: list(v) if k in ("eos_token_id", "layer_types") and isinstance(v, tuple)
                  else v for k, v in dataclasses.asdict(self).items()
                  if self.model_type in _ONLY_FOR.get(k, (self.model_type,))}
        if self.head_dim is None:
            config.pop("head_dim")  # Qwen2 reads a head_dim attribute of None as given
        if self.layer_types is None:
            config.pop("layer_types", None)
        # Both spellings of RoPE, so that transformers 4 and 5 read the same.
        scaling = dict(self.rope_scaling or ())
        config["rope_scaling"] = scaling or None
        config["rope_parameters"] = {"rope_type": "default", **scaling,
                                     "rope_theta": self.rope_theta}
        return config

    @property
    def dim_per_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def qkv_bias(self) -> bool:
        return self.model_type == "qwen2" or (self.model_type == "llama" and self.attention_bias)

    @property
    def out_bias(self) -> bool:
        return self.model_type == "llama" and self.attention_bias

    def layer_window(self, layer: int) -> int | None:
        """The sliding window of layer `layer`, or None (full causal attention)."""
        if self.sliding_window is None or self.model_type == "llama":
            return None
        if self.model_type == "mistral":
            return self.sliding_window
        if not self.use_sliding_window:
            return None
        if self.layer_types is not None:
            sliding = self.layer_types[layer] == "sliding_attention"
        else:
            sliding = layer >= self.max_window_layers
        return self.sliding_window if sliding else None


class LlamaBlock(nn.Module):
    """One pre-norm block: x + attention(norm(x)), then x + mlp(norm(x))."""
    config: LlamaConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, rope, deterministic: bool, cache_index=None):
        cfg = self.config
        kw = dict(init_std=cfg.initializer_range, dtype=self.dtype, param_dtype=self.param_dtype)
        norm_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.RMSNorm(cfg.rms_norm_eps, name="attention_norm", **norm_kw)(x)
        x = x + layers.CausalSelfAttention(
            cfg.num_attention_heads, cfg.num_key_value_heads, cfg.dim_per_head,
            qkv_bias=cfg.qkv_bias, out_bias=cfg.out_bias, dropout_rate=cfg.attention_dropout,
            name="attention", **kw)(h, mask, deterministic, rope, cache_index)
        h = layers.RMSNorm(cfg.rms_norm_eps, name="mlp_norm", **norm_kw)(x)
        mlp_bias = cfg.model_type == "llama" and cfg.mlp_bias
        return x + layers.GatedMLP(cfg.intermediate_size, cfg.hidden_act, mlp_bias,
                                   name="mlp", **kw)(h)


class LlamaDecoder(nn.Module):
    """Word embeddings, the blocks and the final RMSNorm.

    Called as every backbone is, plus `positions` (default: counted over real
    tokens, so left padding is fine; RoPE reads them) and `segment_ids` (packed
    rows attend within their segment). `token_type_ids` are ignored. `pooled`
    is the last real token's hidden state (HF's *ForSequenceClassification).

    With `decode`, each call appends its tokens to a KV cache (fmt/generate.py):
    `attention_mask` then covers every cache slot and `positions` are required.
    """
    config: LlamaConfig
    add_pooler: bool = False
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False
    decode: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 deterministic: bool = True, positions=None, segment_ids=None,
                 example_spans=None):
        cfg = self.config
        attention_mask, positions, cache_index = layers.decoding_inputs(
            self, input_ids, attention_mask, positions)
        word = layers.embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"),
                            init_std=cfg.initializer_range, param_dtype=self.param_dtype,
                            name="word")
        x = word(input_ids).astype(self.dtype)
        rope = layers.rope_tables(positions, layers.rope_frequencies(
            cfg.dim_per_head, cfg.rope_theta, dict(cfg.rope_scaling or ()) or None))
        masks = {}  # one per distinct window (Qwen2 mixes full and sliding layers)
        # static_argnums counts `self`: argument 4 is `deterministic`.
        block = nn.remat(LlamaBlock, static_argnums=(4,)) if self.remat else LlamaBlock
        for i in range(cfg.num_hidden_layers):
            window = cfg.layer_window(i)
            if window not in masks and self.decode:
                masks[window] = layers.cache_mask(attention_mask, cache_index,
                                                  input_ids.shape[1], window)
            elif window not in masks:
                masks[window] = layers.decoder_mask(attention_mask, segment_ids, window)
            x = block(cfg, self.dtype, self.param_dtype, name=f"layer_{i}")(
                x, masks[window], rope, deterministic, cache_index)
        x = layers.RMSNorm(cfg.rms_norm_eps, dtype=self.dtype, param_dtype=self.param_dtype,
                           name="final_norm")(x)
        pooled = heads.last_tokens(x, attention_mask, example_spans) \
            if self.add_pooler else None
        return heads.BackboneOutput(x, pooled, word.embedding)


def backbone(config: LlamaConfig, *, pooler: bool, dtype: Dtype = jnp.float32,
             param_dtype: Dtype = jnp.float32, remat: bool = False) -> LlamaDecoder:
    return LlamaDecoder(config, add_pooler=pooler, dtype=dtype, param_dtype=param_dtype,
                        remat=remat)


HEAD_KINDS = ("causal_lm", "sequence_classification")


def head(kind: str, config: LlamaConfig, num_outputs: int, dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32) -> heads.HeadSpec:
    """This family's head of `kind`, with its HF names and architecture."""
    arch = ARCHITECTURES[config.model_type]
    kw = dict(init_std=config.initializer_range, dtype=dtype, param_dtype=param_dtype)
    if kind == "causal_lm":
        tied = config.tie_word_embeddings
        return heads.HeadSpec(
            heads.CausalLMHead(config.vocab_size, tied, **kw),
            [] if tied else [("lm_head.weight", ("head", "lm_head", "kernel"), "linear")],
            f"{arch}ForCausalLM",
            # Tied: `transformers` ties lm_head to embed_tokens again on load.
            ignored=("lm_head.weight",) if tied else ())
    if kind == "sequence_classification":
        # HF's `score` has no dropout and no bias.
        return heads.HeadSpec(heads.LinearHead(num_outputs, 0.0, use_bias=False, **kw),
                              [("score.weight", ("head", "classifier", "kernel"), "linear")],
                              f"{arch}ForSequenceClassification", pooler=True)
    raise UserError(f"model_type {config.model_type!r} has no {kind} head; "
                    f"{config.model_type} supports {', '.join(HEAD_KINDS)}")


def with_dropout(config: LlamaConfig, rate: float) -> LlamaConfig:
    """The config with `rate` as its attention dropout, the only dropout these
    models have."""
    return dataclasses.replace(config, attention_dropout=rate)


def max_positions(config: LlamaConfig) -> int:
    """The context the model was trained for (RoPE itself has no table to run past)."""
    return config.max_position_embeddings


def weight_prefix(config: LlamaConfig) -> str:
    return "model"


# --- Hugging Face name map -------------------------------------------------
# (HF weight name, fmt param path, transform); transforms as in fmt/hf.py.

def _linear(hf: str, path: tuple[str, ...], bias: bool) -> list[WeightName]:
    names = [(f"{hf}.weight", path + ("kernel",), "linear")]
    return names + [(f"{hf}.bias", path + ("bias",), "copy")] if bias else names


def backbone_name_map(config: LlamaConfig, pooler: bool) -> list[WeightName]:
    """Every backbone weight, under the `model.` prefix."""
    base, dec = "model", ("encoder",)
    mlp_bias = config.model_type == "llama" and config.mlp_bias
    names = [(f"{base}.embed_tokens.weight", dec + ("word", "embedding"), "copy")]
    for i in range(config.num_hidden_layers):
        hf, fm = f"{base}.layers.{i}", dec + (f"layer_{i}",)
        attention = fm + ("attention",)
        names.append((f"{hf}.input_layernorm.weight", fm + ("attention_norm", "scale"), "copy"))
        for hf_name, name in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
            names += _linear(f"{hf}.self_attn.{hf_name}", attention + (name,), config.qkv_bias)
        names += _linear(f"{hf}.self_attn.o_proj", attention + ("out",), config.out_bias)
        names.append((f"{hf}.post_attention_layernorm.weight", fm + ("mlp_norm", "scale"),
                      "copy"))
        for name in ("gate", "up", "down"):
            names += _linear(f"{hf}.mlp.{name}_proj", fm + ("mlp", name), mlp_bias)
    names.append((f"{base}.norm.weight", dec + ("final_norm", "scale"), "copy"))
    return names
