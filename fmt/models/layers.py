"""Building blocks shared by the Transformer families: attention (bidirectional for
encoders, causal with RoPE and grouped-query heads for decoders), MLPs, norms,
attention masks and dense layers.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `mlp`), so
sharding rules can place it on a mesh without the modules knowing the mesh.
`dtype` is the compute dtype; `param_dtype` the storage dtype of the weights.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fmt.models import attention

Dtype = Any

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    # Hugging Face's "gelu" is the exact erf form; "gelu_new" the tanh form.
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
    "tanh": jnp.tanh,
}


def activation(name: str) -> Callable[[jax.Array], jax.Array]:
    if name not in ACTIVATIONS:
        raise ValueError(f"unsupported activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def dense(features: int, axes: tuple[str, str], *, init_std: float, dtype: Dtype,
          param_dtype: Dtype, name: str, use_bias: bool = True) -> nn.Dense:
    """A Dense layer whose kernel [in, out] and bias [out] carry logical axis names."""
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=param_dtype,
        kernel_init=nn.with_logical_partitioning(
            nn.initializers.normal(stddev=init_std), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]),
        name=name,
    )


def layer_norm(eps: float, *, dtype: Dtype, param_dtype: Dtype, name: str) -> nn.LayerNorm:
    return nn.LayerNorm(
        epsilon=eps,
        dtype=dtype,
        param_dtype=param_dtype,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
        name=name,
    )


def embed(num: int, features: int, axes: tuple[str, str], *, init_std: float,
          param_dtype: Dtype, name: str) -> nn.Embed:
    return nn.Embed(
        num, features, param_dtype=param_dtype,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(stddev=init_std), axes),
        name=name,
    )


class SelfAttention(nn.Module):
    """Multi-head self-attention over a boolean mask from `encoder_mask`; the
    product itself (fused, with dropout, or in query blocks for long rows) is
    `attention.attend`'s."""
    num_heads: int
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        batch, length, hidden = x.shape
        head_dim = hidden // self.num_heads
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)
        split = lambda t: t.reshape(batch, length, self.num_heads, head_dim)
        query = split(dense(hidden, ("embed", "heads"), name="query", **kw)(x))
        key = split(dense(hidden, ("embed", "heads"), name="key", **kw)(x))
        value = split(dense(hidden, ("embed", "heads"), name="value", **kw)(x))
        context = attention.attend(
            query, key, value, mask, dropout_rate=self.dropout_rate,
            dropout_rng=attention.dropout_key(self, self.dropout_rate, deterministic))
        context = context.reshape(batch, length, hidden)
        return dense(hidden, ("heads", "embed"), name="out", **kw)(context)


class MLP(nn.Module):
    """The position-wise feed-forward block: up-projection, activation, down-projection."""
    intermediate_size: int
    activation: str = "gelu"
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)
        h = dense(self.intermediate_size, ("embed", "mlp"), name="up", **kw)(x)
        h = activation(self.activation)(h)
        return dense(x.shape[-1], ("mlp", "embed"), name="down", **kw)(h)


class PostLNLayer(nn.Module):
    """One encoder layer in the original (post-LayerNorm) arrangement of BERT."""
    num_heads: int
    intermediate_size: int
    activation: str = "gelu"
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool) -> jax.Array:
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)
        norm_kw = dict(dtype=self.dtype, param_dtype=self.param_dtype)
        h = SelfAttention(self.num_heads, self.attention_dropout, name="attention", **kw)(
            x, mask, deterministic)
        h = nn.Dropout(self.hidden_dropout)(h, deterministic=deterministic)
        x = layer_norm(self.layer_norm_eps, name="attention_norm", **norm_kw)(x + h)
        h = MLP(self.intermediate_size, self.activation, name="mlp", **kw)(x)
        h = nn.Dropout(self.hidden_dropout)(h, deterministic=deterministic)
        return layer_norm(self.layer_norm_eps, name="mlp_norm", **norm_kw)(x + h)


def encoder_mask(attention_mask: jax.Array, segment_ids: jax.Array | None = None) -> jax.Array:
    """Which keys each query of an encoder may attend to, as a bool array
    broadcastable to `[batch, heads, queries, keys]`: every real key,
    `[batch, 1, 1, keys]`; with `segment_ids` (packed rows) only the keys of the
    query's own segment, `[batch, 1, queries, keys]` (padding, segment 0,
    attends to padding: never read, and never a row without keys)."""
    if segment_ids is None:
        return attention_mask.astype(bool)[:, None, None, :]
    return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


# --- decoder building blocks (GPT-2, Llama family) ------------------------------

def default_positions(attention_mask: jax.Array) -> jax.Array:
    """Each token's position counted over real tokens only, from 0: a left-padded
    row's first real token is position 0, as `generate` numbers them in
    `transformers`. Padding gets 0 or the last real position; its outputs are
    never read."""
    return jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)


def decoder_mask(attention_mask: jax.Array, segment_ids: jax.Array | None = None,
                 sliding_window: int | None = None) -> jax.Array:
    """Which keys each query may attend to: `[batch, 1 (heads), queries, keys]` bool.

    Causal (a key at or before the query), never a padded key, within the query's
    segment when `segment_ids` are given (packed rows), and, with a sliding
    window, only the `sliding_window` latest keys, the query's own included
    (HF's `kv_idx > q_idx - sliding_window`). Distances are counted in row
    indices, which equal position differences inside any one example.
    A query with no key left (left padding) gets uniform weights, not NaN; its
    output is padding anyway.
    """
    length = attention_mask.shape[1]
    mask = _causal(jnp.arange(length), length, sliding_window)[None]
    mask &= attention_mask.astype(bool)[:, None, :]
    if segment_ids is not None:
        mask &= segment_ids[:, :, None] == segment_ids[:, None, :]
    return mask[:, None]


def cache_mask(attention_mask: jax.Array, start: jax.Array, queries: int,
               sliding_window: int | None = None) -> jax.Array:
    """`decoder_mask` for decoding with a KV cache: `queries` new tokens, written
    to the cache slots from `start` on, against every slot of the cache
    `[batch, 1, queries, slots]`. `attention_mask` `[batch, slots]` says which
    slots hold real tokens (left padding 0); slots not yet written may say 1,
    as causality hides them. Windows count slots, as `decoder_mask` counts rows:
    with padding only on the left, the same thing."""
    mask = _causal(start + jnp.arange(queries), attention_mask.shape[1], sliding_window)[None]
    return (mask & attention_mask.astype(bool)[:, None, :])[:, None]


def _causal(query: jax.Array, keys: int, sliding_window: int | None) -> jax.Array:
    """[queries, keys]: key index at or before each query index (within the window)."""
    query, key = query[:, None], jnp.arange(keys)[None, :]
    allowed = key <= query
    if sliding_window is not None:
        allowed &= query - key < sliding_window
    return allowed


def decoding_inputs(module: nn.Module, input_ids, attention_mask, positions):
    """A decoder's (attention_mask, positions, first cache slot) for this call.

    Without `module.decode`: the defaults, and no slot. Decoding takes the mask
    of the whole cache `[batch, slots]` and needs `positions`, which that mask
    cannot give; the slot is the decoder's 'cache' `index`, advanced here past
    this call's tokens. One index serves every layer, as the masks are built
    from it once per call.
    """
    if not module.decode:
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if positions is None:
            positions = default_positions(attention_mask)
        return attention_mask, positions, None
    if attention_mask is None or positions is None:
        raise ValueError("decoding with a cache needs the attention_mask of every cache slot "
                         "and the new tokens' positions")
    index = module.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    start = index.value
    index.value = start + input_ids.shape[1]
    return attention_mask, positions, start


def last_token(hidden: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """The hidden state at each row's last real token `[batch, hidden]`: what a
    decoder's sequence classifier reads, whichever side the row is padded on."""
    index = jnp.argmax(jnp.arange(hidden.shape[1]) * attention_mask.astype(jnp.int32), axis=1)
    return jnp.take_along_axis(hidden, index[:, None, None], axis=1)[:, 0]


class RMSNorm(nn.Module):
    """Root-mean-square norm (Llama): no centring and no bias; the statistics in
    float32 whatever the compute dtype, as `transformers` computes them."""
    eps: float = 1e-6
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(),
                                                                 ("embed",)),
                           (x.shape[-1],), self.param_dtype)
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
        return scale.astype(self.dtype) * x32.astype(self.dtype)


def rope_frequencies(head_dim: int, theta: float, scaling: dict | None = None) -> np.ndarray:
    """RoPE's inverse frequencies `[head_dim // 2]` (float32, as `transformers`
    computes them), with "linear" or Llama-3 ("llama3") scaling when given.

    Llama 3 leaves high frequencies (wavelengths under `original / high_freq_factor`)
    alone, divides low ones (over `original / low_freq_factor`) by `factor`, and
    blends the two in between, so short-range attention keeps its resolution
    while long wavelengths stretch to the longer context.
    """
    exponents = np.arange(0, head_dim, 2, dtype=np.int64).astype(np.float32) / np.float32(head_dim)
    inv_freq = (1.0 / np.power(np.float32(theta), exponents)).astype(np.float32)
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return inv_freq
    factor = np.float32(scaling["factor"])
    if kind == "linear":
        return (inv_freq / factor).astype(np.float32)
    if kind == "llama3":
        low, high = np.float32(scaling["low_freq_factor"]), np.float32(scaling["high_freq_factor"])
        original = np.float32(scaling["original_max_position_embeddings"])
        wavelength = np.float32(2 * np.pi) / inv_freq
        scaled = np.where(wavelength > original / low, inv_freq / factor, inv_freq)
        smooth = (original / wavelength - low) / (high - low)
        blended = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelength >= original / high) & (wavelength <= original / low)
        return np.where(medium, blended, scaled).astype(np.float32)
    raise ValueError(f"unsupported rope_type {kind!r}; known: default, linear, llama3")


def rope_tables(positions: jax.Array, inv_freq: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """(cos, sin) `[batch, seq, head_dim]` in float32 for each token's position:
    computed once per forward pass and shared by every layer."""
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, rope: tuple[jax.Array, jax.Array]) -> jax.Array:
    """Rotate `x` `[batch, seq, heads, head_dim]` by its positions' angles, pairing
    dimension i with i + head_dim/2 (the "rotate half" layout of HF checkpoints,
    not interleaved pairs)."""
    cos, sin = (t[:, :, None, :] for t in rope)
    x32 = x.astype(jnp.float32)
    first, second = jnp.split(x32, 2, axis=-1)
    rotated = jnp.concatenate([-second, first], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def cached(module: nn.Module, key: jax.Array, value: jax.Array, index, slots: int):
    """A KV cache step: this call's keys and values `[batch, tokens, heads,
    head_dim]` written to `module`'s 'cache' `cached_key` / `cached_value`
    `[batch, slots, heads, head_dim]` from slot `index` on; returns every slot's."""
    shape = (key.shape[0], slots) + key.shape[2:]
    cached_key = module.variable("cache", "cached_key", jnp.zeros, shape, key.dtype)
    cached_value = module.variable("cache", "cached_value", jnp.zeros, shape, value.dtype)
    slot = (0, index, 0, 0)
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, slot)
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, slot)
    return cached_key.value, cached_value.value


class CausalSelfAttention(nn.Module):
    """A decoder's self-attention: separate query/key/value projections, grouped-
    query heads (`num_kv_heads` dividing `num_heads`), RoPE when given the
    (cos, sin) tables, and any boolean mask from `decoder_mask`.

    Positions arrive as RoPE tables and the mask is built outside, so a KV
    cache (one token at a time against earlier keys) only changes what this
    module keeps between calls: given `cache_index`, this call's keys and
    values (after RoPE; only the `num_kv_heads`) are written to the 'cache'
    collection's `cached_key` and `cached_value` `[batch, slots, kv_heads,
    head_dim]` from slot `cache_index` on, and the queries attend to every
    slot through a `cache_mask` (whose last axis sizes the cache). The product
    itself, grouped heads included, is `attention.attend`'s.
    """
    num_heads: int
    num_kv_heads: int
    head_dim: int
    qkv_bias: bool = False
    out_bias: bool = False
    scale: float | None = None  # None: head_dim ** -0.5
    dropout_rate: float = 0.0
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array, deterministic: bool,
                 rope: tuple[jax.Array, jax.Array] | None = None,
                 cache_index: jax.Array | None = None) -> jax.Array:
        batch, length, hidden = x.shape
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype)

        def project(heads, name):
            out = dense(heads * self.head_dim, ("embed", "heads"), name=name,
                        use_bias=self.qkv_bias, **kw)(x)
            return out.reshape(batch, length, heads, self.head_dim)

        query = project(self.num_heads, "query")
        key = project(self.num_kv_heads, "key")
        value = project(self.num_kv_heads, "value")
        if rope is not None:
            query, key = apply_rope(query, rope), apply_rope(key, rope)
        if cache_index is not None:
            key, value = cached(self, key, value, cache_index, mask.shape[-1])
        context = attention.attend(
            query, key, value, mask, scale=self.scale, dropout_rate=self.dropout_rate,
            dropout_rng=attention.dropout_key(self, self.dropout_rate, deterministic))
        context = context.reshape(batch, length, self.num_heads * self.head_dim)
        return dense(hidden, ("heads", "embed"), name="out", use_bias=self.out_bias, **kw)(context)


class GatedMLP(nn.Module):
    """SwiGLU feed-forward (Llama): down(act(gate(x)) * up(x))."""
    intermediate_size: int
    activation: str = "silu"
    use_bias: bool = False
    init_std: float = 0.02
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kw = dict(init_std=self.init_std, dtype=self.dtype, param_dtype=self.param_dtype,
                  use_bias=self.use_bias)
        gate = dense(self.intermediate_size, ("embed", "mlp"), name="gate", **kw)(x)
        up = dense(self.intermediate_size, ("embed", "mlp"), name="up", **kw)(x)
        return dense(x.shape[-1], ("mlp", "embed"), name="down", **kw)(
            activation(self.activation)(gate) * up)
