"""Building blocks shared by the Transformer families: attention, MLP, dense layers.

Every parameter carries logical axis names (`vocab`, `embed`, `heads`, `mlp`), so
sharding rules can place it on a mesh without the modules knowing the mesh.
`dtype` is the compute dtype; `param_dtype` the storage dtype of the weights.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

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
    """Multi-head self-attention over a padding mask.

    The fast path is `jax.nn.dot_product_attention` (XLA or cuDNN kernels). Dropout
    on the attention probabilities, which BERT trains with, has no place in that
    fused kernel, so training with `dropout_rate > 0` takes the explicit
    softmax path; evaluation always takes the fused one.
    """
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
        # [batch, 1 (heads), 1 (queries), keys]: padded keys are never attended.
        key_mask = mask[:, None, None, :].astype(bool)
        if deterministic or self.dropout_rate == 0.0:
            context = jax.nn.dot_product_attention(query, key, value, mask=key_mask)
        else:
            context = self._attention_with_dropout(query, key, value, key_mask)
        context = context.reshape(batch, length, hidden)
        return dense(hidden, ("heads", "embed"), name="out", **kw)(context)

    def _attention_with_dropout(self, query, key, value, key_mask):
        scale = query.shape[-1] ** -0.5
        logits = jnp.einsum("btnh,bsnh->bnts", query, key).astype(jnp.float32) * scale
        logits = jnp.where(key_mask, logits, jnp.finfo(jnp.float32).min)
        probs = jax.nn.softmax(logits, axis=-1)
        probs = nn.Dropout(self.dropout_rate)(probs, deterministic=False)
        return jnp.einsum("bnts,bsnh->btnh", probs.astype(value.dtype), value)


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
