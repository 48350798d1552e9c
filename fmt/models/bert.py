"""BERT and RoBERTa encoders, their configs, their heads and Hugging Face names.

RoBERTa is BERT with three differences that matter here: position ids start
after the padding index and skip padding, there is one token type, and the
classification head reads `<s>` through its own dense-tanh-dense block instead
of BERT's pooler. Both share this file.

The family interface (see fmt/models/__init__.py): `backbone(...)`,
`backbone_name_map(config)` (weights under the `bert.`/`roberta.` prefix) and
`head(kind, ...)`, the `HeadSpec` of each head kind this family has.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from fmt.errors import UserError
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
    def __call__(self, input_ids, token_type_ids, deterministic: bool, positions=None):
        cfg = self.config
        kw = dict(init_std=cfg.initializer_range, param_dtype=self.param_dtype)
        if positions is not None:  # packed rows: positions restart with each example
            position_ids = positions + (cfg.pad_token_id + 1 if cfg.model_type == "roberta" else 0)
        elif cfg.model_type == "roberta":
            # RoBERTa numbers real tokens from pad_token_id + 1 and gives padding
            # the padding index, as `create_position_ids_from_input_ids` does.
            not_pad = (input_ids != cfg.pad_token_id).astype(jnp.int32)
            position_ids = jnp.cumsum(not_pad, axis=1) * not_pad + cfg.pad_token_id
        else:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1]), input_ids.shape)
        word = layers.embed(cfg.vocab_size, cfg.hidden_size, ("vocab", "embed"), name="word", **kw)
        x = word(input_ids)
        x += layers.embed(cfg.max_position_embeddings, cfg.hidden_size, (None, "embed"),
                          name="position", **kw)(position_ids)
        x += layers.embed(cfg.type_vocab_size, cfg.hidden_size, (None, "embed"),
                          name="token_type", **kw)(token_type_ids)
        x = layers.layer_norm(cfg.layer_norm_eps, dtype=self.dtype,
                              param_dtype=self.param_dtype, name="norm")(x)
        return nn.Dropout(cfg.hidden_dropout_prob)(x, deterministic=deterministic), word.embedding


class BertEncoder(nn.Module):
    """Embeddings, post-LN layers and (for BERT) the tanh pooler over `[CLS]`.

    Packed rows (fmt.data.packing) add `positions` that restart with each
    example, `segment_ids` that keep attention within one, and `example_spans`
    that say where each example's `[CLS]` sits.
    Returns a `BackboneOutput`: hidden states `[batch, length, hidden]`, the
    pooled `[CLS]` `[batch, hidden]` (None without the pooler), and the word
    embeddings for a tied decoder.
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
                 deterministic: bool = True, positions=None, segment_ids=None,
                 example_spans=None):
        cfg = self.config
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x, embedding = BertEmbeddings(cfg, self.dtype, self.param_dtype, name="embeddings")(
            input_ids, token_type_ids, deterministic, positions)
        x = x.astype(self.dtype)
        mask = layers.encoder_mask(attention_mask, segment_ids)
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
            )(x, mask, deterministic)
        first = x[:, 0] if example_spans is None else \
            heads.span_tokens(x, example_spans, heads.FIRST)
        pooled = None
        if self.add_pooler:
            pooled = jnp.tanh(layers.dense(
                cfg.hidden_size, ("embed", "embed_out"), init_std=cfg.initializer_range,
                dtype=self.dtype, param_dtype=self.param_dtype, name="pooler")(first))
        return heads.BackboneOutput(x, pooled, embedding, first)


def backbone(config: BertConfig, *, pooler: bool, dtype: Dtype = jnp.float32,
             param_dtype: Dtype = jnp.float32, remat: bool = False) -> BertEncoder:
    return BertEncoder(config, add_pooler=pooler and config.model_type != "roberta",
                       dtype=dtype, param_dtype=param_dtype, remat=remat)


def head(kind: str, config: BertConfig, num_outputs: int, dtype: Dtype = jnp.float32,
         param_dtype: Dtype = jnp.float32) -> heads.HeadSpec:
    """This family's head of `kind`, with its HF names and architecture."""
    roberta = config.model_type == "roberta"
    arch = "Roberta" if roberta else "Bert"
    kw = dict(init_std=config.initializer_range, dtype=dtype, param_dtype=param_dtype)
    if kind == "sequence_classification":
        if roberta:
            return heads.HeadSpec(
                heads.RobertaClassifierHead(num_outputs, config.head_dropout, **kw),
                _linear("classifier.dense", ("head", "dense"))
                + _linear("classifier.out_proj", ("head", "out_proj")),
                f"{arch}ForSequenceClassification")
        return heads.HeadSpec(heads.LinearHead(num_outputs, config.head_dropout, **kw),
                              _linear("classifier", ("head", "classifier")),
                              f"{arch}ForSequenceClassification", pooler=True)
    if kind == "token_classification":
        return heads.HeadSpec(heads.LinearHead(num_outputs, config.head_dropout, per_token=True, **kw),
                              _linear("classifier", ("head", "classifier")),
                              f"{arch}ForTokenClassification")
    if kind == "question_answering":
        return heads.HeadSpec(heads.SpanHead(**kw), _linear("qa_outputs", ("head", "qa_outputs")),
                              f"{arch}ForQuestionAnswering")
    if kind == "masked_lm":
        # RoBERTa's LM head applies GELU whatever the config's activation says.
        module = heads.MaskedLMHead("gelu" if roberta else config.hidden_act,
                                    config.layer_norm_eps, **kw)
        hf = "lm_head" if roberta else "cls.predictions"
        transform = "lm_head" if roberta else "cls.predictions.transform"
        norm = "lm_head.layer_norm" if roberta else "cls.predictions.transform.LayerNorm"
        return heads.HeadSpec(
            module,
            _linear(f"{transform}.dense", ("head", "dense")) + _norm(norm, ("head", "norm"))
            + [(f"{hf}.bias", ("head", "bias"), "copy")],
            f"{arch}ForMaskedLM",
            # The decoder is the word embeddings (and its bias `bias`): tied again on load.
            ignored=(f"{hf}.decoder.weight", f"{hf}.decoder.bias"))
    raise UserError(f"model_type {config.model_type!r} has no {kind} head; "
                    f"{config.model_type} supports {', '.join(HEAD_KINDS)}")


HEAD_KINDS = ("sequence_classification", "token_classification", "question_answering",
              "masked_lm")


# --- Hugging Face name map -------------------------------------------------
# (HF weight name, fmt param path, transform). "linear": torch's Linear stores
# weight as [out, in]; Flax's Dense kernel is [in, out].
WeightName = heads.WeightName


def with_dropout(config: BertConfig, rate: float) -> BertConfig:
    """The config with `rate` as its hidden and attention dropout."""
    return dataclasses.replace(config, hidden_dropout_prob=rate,
                               attention_probs_dropout_prob=rate)


def max_positions(config: BertConfig) -> int:
    """The longest input the position table allows (RoBERTa's starts after padding)."""
    if config.model_type == "roberta":
        return config.max_position_embeddings - config.pad_token_id - 1
    return config.max_position_embeddings


def weight_prefix(config: BertConfig) -> str:
    """The prefix of backbone weights in a task checkpoint (`bert.` in
    `bert.encoder...`); a base-model checkpoint has none."""
    return config.model_type


def _linear(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.weight", path + ("kernel",), "linear"), (f"{hf}.bias", path + ("bias",), "copy")]


def _norm(hf: str, path: tuple[str, ...]) -> list[WeightName]:
    return [(f"{hf}.weight", path + ("scale",), "copy"), (f"{hf}.bias", path + ("bias",), "copy")]


def backbone_name_map(config: BertConfig, pooler: bool) -> list[WeightName]:
    """Every backbone weight, under the family's prefix (`bert.`, `roberta.`)."""
    base = config.model_type  # the weight prefix of the backbone
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
    if pooler and config.model_type != "roberta":
        names += _linear(f"{base}.pooler.dense", enc + ("pooler",))
    return names
