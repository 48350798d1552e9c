"""Task heads, the module that joins a backbone to one, and what a family says
about each head it supports (`HeadSpec`).

A backbone returns a `BackboneOutput`; a head turns it into the task kind's
outputs: `[batch, num_labels]` for sequence classification, `[batch, seq,
num_labels]` for token classification, `[batch, seq, vocab]` for masked-LM and
causal-LM.
Heads are generic; the Hugging Face names of their weights differ by family,
so each family pairs a head with its names and architecture in a `HeadSpec`.
"""

import dataclasses
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from fmt.models import layers

Dtype = Any
# (HF weight name, fmt param path, transform), as in each family's name map.
WeightName = tuple[str, tuple[str, ...], str]


class BackboneOutput(NamedTuple):
    hidden: jax.Array            # [batch, seq, hidden], compute dtype
    pooled: jax.Array | None     # [batch, hidden] (BERT's pooler, a decoder's last
                                 # real token), or None
    embedding: jax.Array         # [vocab, hidden] word embeddings, for tied decoders
    first_token: jax.Array | None = None  # [batch, hidden] each example's first token
                                          # (encoders: what RoBERTa's head reads)


# Where a packed example sits: `example_spans[:, i]` for i in (ROW, FIRST, LAST)
# (fmt.data.packing); without spans each row is one example.
ROW, FIRST, LAST = 0, 1, 2


def span_tokens(hidden: jax.Array, spans: jax.Array, which: int) -> jax.Array:
    """`[examples, hidden]`: each packed example's FIRST or LAST token."""
    return hidden[spans[:, ROW], spans[:, which]]


def last_tokens(hidden: jax.Array, attention_mask: jax.Array, spans=None) -> jax.Array:
    """`[examples, hidden]`: what a decoder's sequence classifier reads, each
    example's last real token (each row's, or each packed span's)."""
    if spans is None:
        return layers.last_token(hidden, attention_mask)
    return span_tokens(hidden, spans, LAST)


@dataclasses.dataclass(frozen=True)
class HeadSpec:
    """One head of one family: the module, its weights' HF names (under the
    fmt param path `("head", ...)`), the HF class it matches, whether the
    backbone needs its pooler, and HF weights that loading ignores (a decoder
    tied to the embeddings, which `transformers` ties again on load)."""
    module: nn.Module
    name_map: list[WeightName]
    architecture: str
    pooler: bool = False
    ignored: tuple[str, ...] = ()


class TaskModel(nn.Module):
    """A backbone and a head: token ids in, the head's float32 outputs out.

    The backbone's slot is named `encoder`, as it was when encoders were the
    only backbones: Flax derives each dropout stream from the module path, so
    the name keeps runs (and checkpoints' param paths) what they were.
    """
    encoder: nn.Module
    head: nn.Module

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None,
                 deterministic: bool = True, positions=None, segment_ids=None,
                 decoder_input_ids=None, decoder_attention_mask=None, example_spans=None):
        # Only packed rows pass positions, segments and example spans, only
        # encoder-decoders the decoder's inputs; otherwise the four-argument call.
        extra = {name: value for name, value in
                 (("positions", positions), ("segment_ids", segment_ids),
                  ("example_spans", example_spans),
                  ("decoder_input_ids", decoder_input_ids),
                  ("decoder_attention_mask", decoder_attention_mask)) if value is not None}
        out = self.encoder(input_ids, attention_mask, token_type_ids, deterministic, **extra)
        return jax.tree.map(lambda x: x.astype(jnp.float32), self.head(out, deterministic))


class LinearHead(nn.Module):
    """Dropout and one dense layer named `classifier`, over the pooled `[CLS]`
    (BERT's sequence classifier: `[batch, num_labels]`; a decoder's last real
    token, through HF's bias-free `score`) or over every token (token
    classification: `[batch, seq, num_labels]`)."""
    num_labels: int
    dropout_rate: float
    per_token: bool = False
    use_bias: bool = True
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, deterministic: bool):
        x = out.hidden if self.per_token else out.pooled
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return layers.dense(self.num_labels, ("embed", None), init_std=self.init_std,
                            dtype=self.dtype, param_dtype=self.param_dtype,
                            use_bias=self.use_bias, name="classifier")(x)


class SpanHead(nn.Module):
    """Extractive QA: one dense layer `qa_outputs` of width 2 over every token,
    split into `(start_logits, end_logits)`, each `[batch, seq]` (no dropout, as
    `BertForQuestionAnswering`)."""
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, deterministic: bool):
        logits = layers.dense(2, ("embed", None), init_std=self.init_std, dtype=self.dtype,
                              param_dtype=self.param_dtype, name="qa_outputs")(out.hidden)
        return logits[..., 0], logits[..., 1]


class RobertaClassifierHead(nn.Module):
    """RoBERTa's head: dense-tanh-dense on the `<s>` token, dropout before each dense."""
    num_labels: int
    dropout_rate: float
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, deterministic: bool):
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)
        hidden = out.hidden
        x = nn.Dropout(self.dropout_rate)(out.first_token, deterministic=deterministic)
        x = jnp.tanh(layers.dense(hidden.shape[-1], ("embed", "embed_out"), name="dense",
                                  **kw)(x))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=deterministic)
        return layers.dense(self.num_labels, ("embed", None), name="out_proj", **kw)(x)


class MaskedLMHead(nn.Module):
    """BERT's and RoBERTa's LM head: dense, activation, LayerNorm, then a decoder
    tied to the word embeddings plus its own bias: `[batch, seq, vocab]`."""
    activation: str
    layer_norm_eps: float
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, deterministic: bool):
        hidden_size = out.hidden.shape[-1]
        x = layers.dense(hidden_size, ("embed", "embed_out"), init_std=self.init_std,
                         dtype=self.dtype, param_dtype=self.param_dtype, name="dense")(out.hidden)
        x = layers.activation(self.activation)(x)
        x = layers.layer_norm(self.layer_norm_eps, dtype=self.dtype,
                              param_dtype=self.param_dtype, name="norm")(x)
        vocab = out.embedding.shape[0]
        bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros_init(),
                                                               ("vocab",)),
                          (vocab,), self.param_dtype)
        logits = jnp.einsum("bsh,vh->bsv", x, out.embedding.astype(self.dtype))
        return logits + bias.astype(self.dtype)


class CausalLMHead(nn.Module):
    """A decoder's LM head (causal-LM, and seq2seq's decoder): next-token logits
    `[batch, seq, vocab]` at every position, from the word embeddings (`tied`:
    GPT-2, Llama with `tie_word_embeddings`, T5, BART) or from its own
    bias-free projection `lm_head`. `hidden_scale` multiplies the hidden states
    first (T5's tied head: d_model ** -0.5); `logits_bias` adds BART's
    `final_logits_bias` `[1, vocab]`, a buffer in `transformers`, so it takes
    no gradient here either."""
    vocab_size: int
    tied: bool
    hidden_scale: float = 1.0
    logits_bias: bool = False
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, out: BackboneOutput, deterministic: bool):
        hidden = out.hidden * self.hidden_scale if self.hidden_scale != 1.0 else out.hidden
        if self.tied:
            logits = jnp.einsum("bsh,vh->bsv", hidden, out.embedding.astype(self.dtype))
        else:
            logits = layers.dense(self.vocab_size, ("embed", "vocab"), init_std=self.init_std,
                                  dtype=self.dtype, param_dtype=self.param_dtype,
                                  use_bias=False, name="lm_head")(hidden)
        if self.logits_bias:
            bias = self.param("final_logits_bias", nn.with_logical_partitioning(
                nn.initializers.zeros_init(), (None, "vocab")), (1, self.vocab_size),
                self.param_dtype)
            logits = logits + jax.lax.stop_gradient(bias).astype(self.dtype)
        return logits
