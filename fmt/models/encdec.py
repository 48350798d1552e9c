"""What the encoder-decoder families (T5, BART) share: their backbone's
interface, the attention they both use, and the right shift of targets.

An encoder-decoder backbone (`is_encoder_decoder = True`) is called as every
backbone is, `(input_ids, attention_mask, token_type_ids, deterministic)`,
plus `decoder_input_ids` and `decoder_attention_mask` (`transformers`'
keyword names), and returns a `heads.BackboneOutput` of the decoder: its
hidden states `[batch, target_len, hidden]`, no pooled state, and the shared
word embeddings (the tied LM head's weights). It has two more methods, which
generation (fmt/generate.py) calls apart:

- `encode(input_ids, attention_mask, deterministic)`: the encoder's final
  hidden states `[batch, source_len, hidden]`;
- `decode_from(encoded, attention_mask, decoder_input_ids,
  decoder_attention_mask, deterministic)`: the decoder over `encoded`.

With the module attribute `decode=True` the decoder keeps a KV cache in the
'cache' collection: each call appends its tokens' self-attention keys and
values from the decoder's `index` on (positions count from there), and
`decoder_attention_mask` covers every cache slot. Cross-attention keys and
values are projected from `encoded` on the first call and read from the
cache after it. Training rows are right-padded, so a target's positions are
its row indices.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fmt.data.features import IGNORE
from fmt.models import attention, layers

Dtype = jnp.dtype


def shift_right(labels: np.ndarray, start_id: int, pad_id: int) -> np.ndarray:
    """Teacher forcing's decoder inputs `[..., length]`: `start_id`, then the labels
    but the last, with IGNORE read as `pad_id` (T5's `_shift_right`, BART's
    `shift_tokens_right`)."""
    labels = np.asarray(labels)
    shifted = np.concatenate([np.full(labels.shape[:-1] + (1,), start_id, labels.dtype),
                              labels[..., :-1]], axis=-1)
    return np.where(shifted == IGNORE, pad_id, shifted)


def cross_mask(attention_mask: jax.Array) -> jax.Array:
    """Cross-attention's `[batch, 1, 1, source_len]` mask: no padded source token."""
    return attention_mask.astype(bool)[:, None, None, :]


def decoder_positions(module: nn.Module, decoder_input_ids, decoder_attention_mask):
    """(self-attention mask `[batch, 1, queries, keys]`, positions `[queries]`,
    cache slot or None) of a decoder call: causal over right-padded targets in
    training; in `decode` mode, this call's tokens go to the cache slots from
    the decoder's 'cache' `index` on and see every earlier slot."""
    length = decoder_input_ids.shape[1]
    if decoder_attention_mask is None:
        decoder_attention_mask = jnp.ones_like(decoder_input_ids)
    if not module.decode:
        return layers.decoder_mask(decoder_attention_mask), jnp.arange(length), None
    index = module.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    start = index.value
    index.value = start + length
    return (layers.cache_mask(decoder_attention_mask, start, length),
            start + jnp.arange(length), start)


class Attention(nn.Module):
    """Multi-head attention for encoder-decoders: self-attention, or cross-
    attention when given `kv` (the encoder's states); an additive `bias`
    `[batch or 1, heads, queries, keys]` (T5's relative positions); `scale`
    (BART: head_dim ** -0.5; T5: 1, folded into its init).

    Caching: with `cache_index`, self-attention writes this call's keys and
    values to `cached_key`/`cached_value` `[batch, slots, heads, head_dim]`
    (slots: the mask's last axis) and attends to every slot; with
    `cache_kv`, cross-attention projects `kv` once and keeps it as
    `cross_key`/`cross_value`. The product itself is `attention.attend`'s.
    """
    num_heads: int
    head_dim: int
    use_bias: bool = True
    scale: float = 1.0
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool, *, kv=None,
                 bias=None, cache_index=None, cache_kv: bool = False) -> jax.Array:
        batch, length, hidden = x.shape
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype,
                  use_bias=self.use_bias)
        inner = self.num_heads * self.head_dim

        def project(source, name):
            out = layers.dense(inner, ("embed", "heads"), name=name, **kw)(source)
            return out.reshape(source.shape[0], source.shape[1], self.num_heads, self.head_dim)

        query = project(x, "query")
        if kv is not None and cache_kv:  # cross-attention while decoding: project once
            key = self.variable("cache", "cross_key", lambda: project(kv, "key")).value
            value = self.variable("cache", "cross_value", lambda: project(kv, "value")).value
        else:
            source = x if kv is None else kv
            key, value = project(source, "key"), project(source, "value")
        if cache_index is not None:
            key, value = layers.cached(self, key, value, cache_index, mask.shape[-1])
        context = attention.attend(
            query, key, value, mask, scale=self.scale, bias=bias, dropout_rate=self.dropout_rate,
            dropout_rng=attention.dropout_key(self, self.dropout_rate, deterministic))
        context = context.reshape(batch, length, inner)
        return layers.dense(hidden, ("heads", "embed"), name="out", **kw)(context)
