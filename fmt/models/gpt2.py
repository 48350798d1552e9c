"""GPT-2: a decoder with learned positions, pre-LayerNorm blocks and an LM head
tied to the word embeddings; its config, heads and Hugging Face names.

Two things of HF's GPT-2 show in the name map: its dense layers are `Conv1D`,
which store weights [in, out] (Flax's layout, so the "conv1d" transform copies
them), and the attention's query, key and value are one fused `c_attn` weight,
split here into three params (as the Llama family has them) and joined again
on export.

The family interface (see fmt/models/__init__.py): `backbone(...)`,
`backbone_name_map(config)` (weights under the `transformer.` prefix) and
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


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Architecture fields, named as in Hugging Face's `config.json`."""
    model_type: str = "gpt2"
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None  # None: 4 * n_embd
    activation_function: str = "gelu_new"
    resid_pdrop: float = 0.1
    embd_pdrop: float = 0.1
    attn_pdrop: float = 0.1
    layer_norm_epsilon: float = 1e-5
    initializer_range: float = 0.02
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None

    @classmethod
    def from_hf(cls, hf_config: dict) -> "GPT2Config":
        if hf_config.get("add_cross_attention"):
            raise UserError("GPT-2 with add_cross_attention (an encoder-decoder's decoder) is "
                            "not supported; use a plain GPT-2 checkpoint")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf_config.items() if k in names})

    def to_hf(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def intermediate_size(self) -> int:
        return self.n_inner or 4 * self.n_embd

    def attention_scale(self, layer: int) -> float:
        """HF's scaling: 1/sqrt(head_dim) unless turned off, further divided by the
        layer number with `scale_attn_by_inverse_layer_idx`."""
        scale = (self.n_embd // self.n_head) ** -0.5 if self.scale_attn_weights else 1.0
        return scale / (layer + 1) if self.scale_attn_by_inverse_layer_idx else scale


class GPT2Block(nn.Module):
    """One pre-LayerNorm block: x + attention(norm(x)), then x + mlp(norm(x))."""
    config: GPT2Config
    layer: int
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x, mask, deterministic: bool, cache_index=None):
        cfg = self.config
        kw = dict(init_std=cfg.initializer_range, dtype=self.dtype, param_dtype=self.param_dtype)
        norm_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = layers.layer_norm(cfg.layer_norm_epsilon, name="attention_norm", **norm_kw)(x)
        h = layers.CausalSelfAttention(
            cfg.n_head, cfg.n_head, cfg.n_embd // cfg.n_head, qkv_bias=True, out_bias=True,
            scale=cfg.attention_scale(self.layer), dropout_rate=cfg.attn_pdrop,
            name="attention", **kw)(h, mask, deterministic, cache_index=cache_index)
        x = x + nn.Dropout(cfg.resid_pdrop)(h, deterministic=deterministic)
        h = layers.layer_norm(cfg.layer_norm_epsilon, name="mlp_norm", **norm_kw)(x)
        h = layers.MLP(cfg.intermediate_size, cfg.activation_function, name="mlp", **kw)(h)
        return x + nn.Dropout(cfg.resid_pdrop)(h, deterministic=deterministic)


class GPT2Decoder(nn.Module):
    """Word and position embeddings, the blocks and the final LayerNorm.

    Called as every backbone is, plus `positions` (default: counted over real
    tokens, so left padding is fine) and `segment_ids` (packed rows attend
    within their segment). `token_type_ids` are ignored: HF's GPT-2 would add
    their word embeddings, which no fmt feature means. `pooled` is the last
    real token's hidden state (HF's GPT2ForSequenceClassification).

    With `decode`, each call appends its tokens to a KV cache (fmt/generate.py):
    `attention_mask` then covers every cache slot and `positions` are required.
    """
    config: GPT2Config
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
        kw = dict(init_std=cfg.initializer_range, param_dtype=self.param_dtype)
        word = layers.embed(cfg.vocab_size, cfg.n_embd, ("vocab", "embed"), name="word", **kw)
        x = word(input_ids) + layers.embed(cfg.n_positions, cfg.n_embd, (None, "embed"),
                                           name="position", **kw)(positions)
        x = nn.Dropout(cfg.embd_pdrop)(x, deterministic=deterministic).astype(self.dtype)
        if self.decode:
            mask = layers.cache_mask(attention_mask, cache_index, input_ids.shape[1])
        else:
            mask = layers.decoder_mask(attention_mask, segment_ids)
        # static_argnums counts `self`: argument 3 is `deterministic`.
        block = nn.remat(GPT2Block, static_argnums=(3,)) if self.remat else GPT2Block
        for i in range(cfg.n_layer):
            x = block(cfg, i, self.dtype, self.param_dtype, name=f"layer_{i}")(
                x, mask, deterministic, cache_index)
        x = layers.layer_norm(cfg.layer_norm_epsilon, dtype=self.dtype,
                              param_dtype=self.param_dtype, name="final_norm")(x)
        pooled = heads.last_tokens(x, attention_mask, example_spans) \
            if self.add_pooler else None
        return heads.BackboneOutput(x, pooled, word.embedding)


def backbone(config: GPT2Config, *, pooler: bool, dtype: Dtype = jnp.float32,
             param_dtype: Dtype = jnp.float32, remat: bool = False) -> GPT2Decoder:
    return GPT2Decoder(config, add_pooler=pooler, dtype=dtype, param_dtype=param_dtype,
                       remat=remat)


HEAD_KINDS = ("causal_lm", "sequence_classification")


def head(kind: str, config: GPT2Config, num_outputs: int, dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32) -> heads.HeadSpec:
    """This family's head of `kind`, with its HF names and architecture."""
    kw = dict(init_std=config.initializer_range, dtype=dtype, param_dtype=param_dtype)
    if kind == "causal_lm":
        tied = config.tie_word_embeddings
        return heads.HeadSpec(
            heads.CausalLMHead(config.vocab_size, tied, **kw),
            [] if tied else [("lm_head.weight", ("head", "lm_head", "kernel"), "linear")],
            "GPT2LMHeadModel",
            # Tied: `transformers` ties lm_head to wte again on load, so it is not written.
            ignored=("lm_head.weight",) if tied else ())
    if kind == "sequence_classification":
        # HF's `score` has no dropout and no bias.
        return heads.HeadSpec(heads.LinearHead(num_outputs, 0.0, use_bias=False, **kw),
                              [("score.weight", ("head", "classifier", "kernel"), "linear")],
                              "GPT2ForSequenceClassification", pooler=True)
    raise UserError(f"model_type {config.model_type!r} has no {kind} head; "
                    f"{config.model_type} supports {', '.join(HEAD_KINDS)}")


def with_dropout(config: GPT2Config, rate: float) -> GPT2Config:
    """The config with `rate` as its embedding, residual and attention dropout."""
    return dataclasses.replace(config, resid_pdrop=rate, embd_pdrop=rate, attn_pdrop=rate)


def max_positions(config: GPT2Config) -> int:
    return config.n_positions


def weight_prefix(config: GPT2Config) -> str:
    """The prefix of backbone weights in a task checkpoint; the original `gpt2`
    checkpoint is a base model without it."""
    return "transformer"


# --- Hugging Face name map -------------------------------------------------
# (HF weight name, fmt param path, transform); transforms as in fmt/hf.py.

def _conv1d(hf: str, path: tuple[str, ...], split: str = "") -> list[WeightName]:
    """A Conv1D layer (weight [in, out]); `split` ":i/n" takes part i of n."""
    return [(f"{hf}.weight", path + ("kernel",), "conv1d" + split),
            (f"{hf}.bias", path + ("bias",), "copy" + split)]


def _norm(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.weight", path + ("scale",), "copy"), (f"{hf}.bias", path + ("bias",), "copy")]


def backbone_name_map(config: GPT2Config, pooler: bool) -> list[WeightName]:
    """Every backbone weight, under the `transformer.` prefix."""
    base, dec = "transformer", ("encoder",)
    names = [(f"{base}.wte.weight", dec + ("word", "embedding"), "copy"),
             (f"{base}.wpe.weight", dec + ("position", "embedding"), "copy")]
    for i in range(config.n_layer):
        hf, fm = f"{base}.h.{i}", dec + (f"layer_{i}",)
        names += _norm(f"{hf}.ln_1", fm + ("attention_norm",))
        # c_attn's output features are query | key | value, n_embd each.
        for part, name in enumerate(("query", "key", "value")):
            names += _conv1d(f"{hf}.attn.c_attn", fm + ("attention", name), f":{part}/3")
        names += _conv1d(f"{hf}.attn.c_proj", fm + ("attention", "out"))
        names += _norm(f"{hf}.ln_2", fm + ("mlp_norm",))
        names += _conv1d(f"{hf}.mlp.c_fc", fm + ("mlp", "up"))
        names += _conv1d(f"{hf}.mlp.c_proj", fm + ("mlp", "down"))
    names += _norm(f"{base}.ln_f", dec + ("final_norm",))
    return names
