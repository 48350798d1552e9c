"""BERT and RoBERTa encoders, their configs, and their Hugging Face name map.

RoBERTa is BERT with three differences that matter here: position ids start
after the padding index and skip padding, there is one token type, and the
classification head reads `<s>` through its own dense-tanh-dense block instead
of BERT's pooler. Both share this file.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fmt.models import heads, layers

Dtype = Any


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Architecture fields, named as in Hugging Face's `config.json`."""
    model_type: str = "bert"  # "bert" or "roberta"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    classifier_dropout: float | None = None  # None: hidden_dropout_prob

    @classmethod
    def from_hf(cls, hf_config: dict) -> "BertConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in hf_config.items() if k in names})

    def to_hf(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def head_dropout(self) -> float:
        if self.classifier_dropout is None:
            return self.hidden_dropout_prob
        return self.classifier_dropout


class BertEmbeddings(nn.Module):
    config: BertConfig
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids, token_type_ids, deterministic: bool):
        cfg = self.config
        kw = dict(init_std=cfg.initializer_range, param_dtype=self.param_dtype)
        if cfg.model_type == "roberta":
            # RoBERTa numbers real tokens from pad_token_id + 1 and gives padding
            # the padding index, as `create_position_ids_from_input_ids` does.
            not_pad = (input_ids != cfg.pad_token_id).astype(jnp.int32)
            position_ids = jnp.cumsum(not_pad, axis=1) * not_pad + cfg.pad_token_id
        else:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        x = layers.embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), name="word", **kw)(
            input_ids)
        x += layers.embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"),
                          name="position", **kw)(position_ids)
        x += layers.embed(cfg.type_vocab_size, cfg.hidden_size, (None, "embed"),
                          name="token_type", **kw)(token_type_ids)
        x = layers.layer_norm(cfg.layer_norm_eps, dtype=self.dtype,
                              param_dtype=self.param_dtype, name="norm")(x)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic)


class BertEncoder(nn.Module):
    """Embeddings, post-LN layers and (for BERT) the tanh pooler over `[CLS]`.

    Returns `(hidden_states [batch, length, hidden], pooled [batch, hidden] or None)`.
    `remat` recomputes each layer's activations in the backward pass instead of
    keeping them: activation memory of one layer instead of all, for about a
    third more compute.
    """
    config: BertConfig
    add_pooler: bool = True
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    remat: bool = False

    @nn.compact
    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 deterministic: bool = True):
        cfg = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = BertEmbeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(
            input_ids, token_type_ids, deterministic)
        x = x.astype(self.dtype)
        # static_argnums counts `self`: argument 3 is `deterministic`.
        layer = nn.remat(layers.PostLNLayer, static_argnums=(3,)) if self.remat \
            else layers.PostLNLayer
        for i in range(cfg.num_hidden_layers):
            x = layer(
                num_heads=cfg.num_attention_heads,
                intermediate_size=cfg.intermediate_size,
                activation=cfg.hidden_act,
                hidden_dropout=cfg.hidden_dropout_prob,
                attention_dropout=cfg.attention_probs_dropout_prob,
                layer_norm_eps=cfg.layer_norm_eps,
                init_std=cfg.initializer_range,
                dtype=self.dtype,
                param_dtype=self.param_dtype,
                name=f"layer_{i}",
            )(x, attention_mask, deterministic)
        pooled = None
        if self.add_pooler:
            pooled = jnp.tanh(layers.dense(
                cfg.hidden_size, ("embed", "embed_out"), init_std=cfg.initializer_range,
                dtype=self.dtype, param_dtype=self.param_dtype, name="pooler")(x[:, 0]))
        return x, pooled


def build_classifier(config: BertConfig, num_labels: int, dtype: Dtype,
                     param_dtype: Dtype, remat: bool = False) -> tuple[nn.Module, nn.Module]:
    """The encoder and sequence-classification head of this family."""
    is_roberta = config.model_type == "roberta"
    encoder = BertEncoder(config, add_pooler=not is_roberta, dtype=dtype,
                          param_dtype=param_dtype, remat=remat)
    head_cls = heads.RobertaClassifierHead if is_roberta else heads.PooledClassifierHead
    head = head_cls(num_labels, config.head_dropout, config.initializer_range, dtype=dtype,
                    param_dtype=param_dtype)
    return encoder, head


# --- Hugging Face name map -------------------------------------------------
# (HF weight name, fmt param path, transform). "linear": torch's Linear stores
# weight as [out, in]; Flax's Dense kernel is [in, out].
WeightName = tuple[str, tuple[str, ...], str]


def _linear(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.weight", path + ("kernel",), "linear"), (f"{hf}.bias", path + ("bias",), "copy")]


def _norm(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.weight", path + ("scale",), "copy"), (f"{hf}.bias", path + ("bias",), "copy")]


def hf_name_map(config: BertConfig) -> list[WeightName]:
    """Every weight of a `*ForSequenceClassification` checkpoint of this family."""
    base = config.model_type  # "bert." / "roberta." prefix of the encoder weights
    enc = ("encoder",)
    names = [
        (f"{base}.embeddings.word_embeddings.weight", enc + ("embeddings", "word", "embedding"), "copy"),
        (f"{base}.embeddings.position_embeddings.weight",
         enc + ("embeddings", "position", "embedding"), "copy"),
        (f"{base}.embeddings.token_type_embeddings.weight",
         enc + ("embeddings", "token_type", "embedding"), "copy"),
        *_norm(f"{base}.embeddings.LayerNorm", enc + ("embeddings", "norm")),
    ]
    for i in range(config.num_hidden_layers):
        hf, fm = f"{base}.encoder.layer.{i}", enc + (f"layer_{i}",)
        names += _linear(f"{hf}.attention.self.query", fm + ("attention", "query"))
        names += _linear(f"{hf}.attention.self.key", fm + ("attention", "key"))
        names += _linear(f"{hf}.attention.self.value", fm + ("attention", "value"))
        names += _linear(f"{hf}.attention.output.dense", fm + ("attention", "out"))
        names += _norm(f"{hf}.attention.output.LayerNorm", fm + ("attention_norm",))
        names += _linear(f"{hf}.intermediate.dense", fm + ("mlp", "up"))
        names += _linear(f"{hf}.output.dense", fm + ("mlp", "down"))
        names += _norm(f"{hf}.output.LayerNorm", fm + ("mlp_norm",))
    if config.model_type == "roberta":
        names += _linear("classifier.dense", ("head", "dense"))
        names += _linear("classifier.out_proj", ("head", "out_proj"))
    else:
        names += _linear(f"{base}.pooler.dense", enc + ("pooler",))
        names += _linear("classifier", ("head", "classifier"))
    return names


HF_ARCHITECTURE = {"bert": "BertForSequenceClassification",
                   "roberta": "RobertaForSequenceClassification"}
