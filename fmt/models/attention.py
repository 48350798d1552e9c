"""Scaled dot-product attention, the one function every family's attention
module calls (`layers.SelfAttention`, `layers.CausalSelfAttention`,
`encdec.Attention`): the projections, caches and masks differ between them,
the product of queries and keys does not.

`attend` takes one of three paths, all with the same result up to float
rounding and all with the softmax in float32:

- fused: `jax.nn.dot_product_attention` when nothing is dropped: on GPU with
  bfloat16/float16 inputs its cuDNN kernel, tried first as it never holds
  the whole score tensor (flash attention); else XLA's, while the scores
  are small;
- explicit: einsum, softmax and dropout on the probabilities, which no fused
  kernel offers (BERT and BART train with it), while the scores are small;
- chunked: the explicit path over blocks of queries, one block at a time
  (`lax.map`), each block under `jax.checkpoint`, so neither pass holds more
  than one block's `[batch, heads, block, keys]` scores: the backward pass
  recomputes a block's scores instead of keeping every block's
  probabilities. Taken, with or without dropout, when the float32 scores
  would pass `CHUNK_BYTES`; it costs that recomputation (about one more
  forward pass of the attention product) and a sequential loop.

Masks (or None) are bool, broadcastable to `[batch, heads, queries, keys]`:
`[b, 1, 1, k]` (padding) or `[b, 1, q, k]` (segments, causal, windows,
caches); an additive bias likewise (`[1, heads, q, k]`, T5's relative
positions). A query whose every key is masked gets uniform weights over all
keys, a finite output, never NaN (left padding has such rows; their outputs
are never read).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

# Above this many bytes of float32 scores `[batch, heads, queries, keys]`
# (global shapes, so per device it is less under data parallelism), attention
# runs over blocks of queries whose scores each fit in it. 64 MiB leaves the
# usual fine-tuning shapes (BERT-base, batch 32 at 128 tokens: 24 MiB) on the
# faster unchunked paths. Tests lower it to force chunks through a model.
CHUNK_BYTES = 64 * 2 ** 20


def attend(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array | None = None,
           *, scale: float | None = None, bias: jax.Array | None = None,
           dropout_rate: float = 0.0, dropout_rng: jax.Array | None = None,
           query_chunk: int | None = None) -> jax.Array:
    """softmax(scale * query . key + bias, masked) . value, `[batch, queries, heads, head_dim]`.

    `query` `[batch, queries, heads, head_dim]`; `key`, `value` `[batch, keys,
    kv_heads, head_dim]`, `kv_heads` dividing `heads` (grouped-query attention:
    query head n reads key/value head n // (heads // kv_heads)). `scale` None
    means head_dim ** -0.5. Dropout (rate `dropout_rate`) applies to the
    probabilities when given a `dropout_rng` (from `dropout_key`); without one
    the call is deterministic. `query_chunk` forces blocks of that many queries
    (None: the `CHUNK_BYTES` rule of `query_chunk_size`).

    Unchunked, dropout draws one `bernoulli(dropout_rng)` over the whole
    probability tensor, as `nn.Dropout` does: the bits attention dropout always
    had. Chunked, block i draws from `fold_in(dropout_rng, i)`: other bits, the
    same distribution, still a pure function of the key.
    """
    batch, queries, heads, _ = query.shape
    dropping = dropout_rng is not None and dropout_rate > 0.0
    if not dropping and _cudnn_applies(query):
        try:
            return _cudnn(query, key, value, mask, scale, bias)
        except (NotImplementedError, ValueError, RuntimeError):
            pass  # a shape or build cuDNN's kernel lacks: XLA's paths below serve it
    if query_chunk is None:
        query_chunk = query_chunk_size(batch, heads, queries, key.shape[1])
    if query_chunk is not None and query_chunk < queries:
        return _chunked(query, key, value, mask, bias, scale, dropout_rate,
                        dropout_rng if dropping else None, query_chunk)
    if dropping:
        return _explicit(query, key, value, mask, bias, scale, dropout_rate, dropout_rng)
    return jax.nn.dot_product_attention(
        query, key, value, bias=None if bias is None else bias.astype(query.dtype),
        mask=mask, scale=scale)


def query_chunk_size(batch: int, heads: int, queries: int, keys: int) -> int | None:
    """Queries per block, or None for one pass: None while the float32 scores
    fit in `CHUNK_BYTES`, else the largest power of two of queries whose
    scores fit (at least 1). Powers of two divide the usual bucket lengths, so
    no block is padded; a length they do not divide pads its last block."""
    row_bytes = batch * heads * keys * 4
    if row_bytes * queries <= CHUNK_BYTES:
        return None
    return 1 << max(0, (CHUNK_BYTES // row_bytes).bit_length() - 1)


class _DropoutKey(nn.Module):
    """Draws a 'dropout' key in its own scope; see `dropout_key`."""

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.make_rng("dropout")


def dropout_key(module: nn.Module, rate: float, deterministic: bool) -> jax.Array | None:
    """`attend`'s `dropout_rng` for a call inside `module`'s compact method, or
    None when nothing is dropped.

    Attention dropout used to be an unnamed `nn.Dropout` inside each attention
    module, which Flax names 'Dropout_0' and whose key it derives from that
    scope name; the key is drawn from a scope of that name, so the unchunked
    path drops the very bits it always did and runs resumed from checkpoints
    written before `attend` existed go on bit for bit. The module must have
    no other unnamed `nn.Dropout`.
    """
    if deterministic or rate == 0.0:
        return None
    return _DropoutKey(parent=module, name="Dropout_0")()


def repeat_kv(x: jax.Array, groups: int) -> jax.Array:
    """Grouped-query attention's key/value heads `[b, s, kv_heads, d]`, each
    repeated for the `groups` query heads that share it: query head n reads
    key/value head n // groups, as in `transformers`."""
    return x if groups == 1 else jnp.repeat(x, groups, axis=2)


def _explicit(query, key, value, mask, bias, scale, rate, rng):
    """The explicit path (also one block of the chunked one); drops with `rng`
    exactly as `nn.Dropout(rate)` would with that key."""
    groups = query.shape[2] // key.shape[2]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = query.shape[-1] ** -0.5 if scale is None else scale
    logits = jnp.einsum("btnh,bsnh->bnts", query, key).astype(jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    if mask is not None:
        # The finite minimum, not -inf: a row without keys is uniform, not NaN.
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if rng is not None:
        keep = jax.random.bernoulli(rng, p=1.0 - rate, shape=probs.shape)
        probs = jax.lax.select(keep, probs / (1.0 - rate), jnp.zeros_like(probs))
    return jnp.einsum("bnts,bsnh->btnh", probs.astype(value.dtype), value)


def _chunked(query, key, value, mask, bias, scale, rate, rng, chunk):
    """`_explicit` over blocks of `chunk` queries, one at a time, each
    recomputed in the backward pass rather than stored (see the module doc).
    Masks and biases with a query axis are cut into the same blocks; those
    with a query axis of 1 serve every block whole."""
    batch, queries, heads, head_dim = query.shape
    blocks = -(-queries // chunk)

    def split(x, axis):
        """[..., queries, ...] -> [blocks, ..., chunk, ...], padded (False, 0) to fill."""
        if x is None or x.shape[axis] == 1:
            return None
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, blocks * chunk - queries)
        x = jnp.pad(x, pad)
        x = x.reshape(x.shape[:axis] + (blocks, chunk) + x.shape[axis + 1:])
        return jnp.moveaxis(x, axis, 0)

    def block(inputs):
        index, q, block_mask, block_bias = inputs
        block_rng = None if rng is None else jax.random.fold_in(rng, index)
        return _explicit(q, key, value, mask if block_mask is None else block_mask,
                         bias if block_bias is None else block_bias, scale, rate, block_rng)

    # prevent_cse=False: inside lax.map (a scan) CSE cannot undo the remat.
    out = jax.lax.map(jax.checkpoint(block, prevent_cse=False),
                      (jnp.arange(blocks), split(query, 1), split(mask, 2), split(bias, 2)))
    out = jnp.moveaxis(out, 0, 1).reshape(batch, blocks * chunk, heads, head_dim)
    return out[:, :queries]


def _cudnn_applies(query: jax.Array) -> bool:
    return jax.default_backend() == "gpu" and query.dtype in (jnp.bfloat16, jnp.float16)


def _cudnn(query, key, value, mask, scale, bias):
    """cuDNN's fused kernel, which wants the mask's query axis whole (it folds
    the mask into a bias `[.., queries, keys]`). Untested here: the machines
    this code is tested on have no GPU; any error it raises while tracing sends
    `attend` back to XLA's paths."""
    if mask is not None:
        mask = jnp.broadcast_to(mask, mask.shape[:2] + (query.shape[1], key.shape[1]))
    if bias is not None:
        bias = jnp.broadcast_to(bias, bias.shape[:2] + (query.shape[1], key.shape[1]))
        bias = bias.astype(query.dtype)
    return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask, scale=scale,
                                        implementation="cudnn")
