"""`attention.attend`: its chunked path against the unchunked ones (outputs and
gradients, for every kind of mask and bias the families build), its dropout,
and the memory the chunks save."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fmt.models import attention, layers

BATCH, LENGTH, HEADS, HEAD_DIM = 2, 32, 4, 8


def qkv(kv_heads=HEADS, length=LENGTH, seed=0):
    q, k, v = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(q, (BATCH, length, HEADS, HEAD_DIM)),
            jax.random.normal(k, (BATCH, length, kv_heads, HEAD_DIM)),
            jax.random.normal(v, (BATCH, length, kv_heads, HEAD_DIM)))


def padding(length=LENGTH):
    """Row 0 ends in padding; row 1 is full."""
    return jnp.ones((BATCH, length), jnp.int32).at[0, length - 11:].set(0)


def left_padding(length=LENGTH):
    """Row 0 starts with padding, so its first queries have no key at all."""
    return jnp.ones((BATCH, length), jnp.int32).at[0, :5].set(0)


def segments(length=LENGTH):
    ids = np.zeros((BATCH, length), np.int32)
    ids[0, :12], ids[0, 12:25] = 1, 2  # two examples, then padding (segment 0)
    ids[1, :20], ids[1, 20:] = 1, 2
    return jnp.asarray(ids)


T5_BIAS = jax.random.normal(jax.random.key(9), (1, HEADS, LENGTH, LENGTH))

# name: (key/value heads, mask, extra attend arguments)
CASES = {
    "padding": (HEADS, lambda: layers.encoder_mask(padding()), {}),
    "segments": (HEADS, lambda: layers.encoder_mask(padding(), segments()), {}),
    "causal_window": (HEADS, lambda: layers.decoder_mask(left_padding(), None, 7), {}),
    "gqa": (2, lambda: layers.decoder_mask(left_padding(), segments()), {"scale": 0.3}),
    "t5_bias": (HEADS, lambda: layers.encoder_mask(padding()), {"scale": 1.0, "bias": T5_BIAS}),
}


def output_and_grads(query_chunk, kv_heads, mask, **kwargs):
    """attend's output and the gradients of a weighted sum of it w.r.t. q, k, v."""
    query, key, value = qkv(kv_heads)
    weights = jax.random.normal(jax.random.key(5), query.shape)

    def loss(q, k, v):
        out = attention.attend(q, k, v, mask, query_chunk=query_chunk, **kwargs)
        return jnp.sum(out * weights), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        query, key, value)
    return out, grads


@pytest.mark.parametrize("chunk", [8, 12])  # 12 does not divide 32: a padded last block
@pytest.mark.parametrize("case", sorted(CASES))
def test_chunked_matches_unchunked_outputs_and_gradients(case, chunk):
    kv_heads, mask, kwargs = CASES[case]
    full, full_grads = output_and_grads(None, kv_heads, mask(), **kwargs)
    chunked, chunked_grads = output_and_grads(chunk, kv_heads, mask(), **kwargs)
    assert np.isfinite(full).all()
    np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-5)
    for got, want in zip(chunked_grads, full_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rate, with_rng", [(0.0, True), (0.3, False)])
def test_nothing_dropped_is_the_deterministic_result(rate, with_rng):
    """A zero rate, or no key, is deterministic attention, chunked or not."""
    kv_heads, mask, kwargs = CASES["causal_window"]
    query, key, value = qkv(kv_heads)
    rng = jax.random.key(3) if with_rng else None
    want = attention.attend(query, key, value, mask(), **kwargs)
    for chunk in (None, 8):
        got = attention.attend(query, key, value, mask(), dropout_rate=rate, dropout_rng=rng,
                               query_chunk=chunk, **kwargs)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def dropped_probabilities(rng, rate, query_chunk, length=64):
    """The attention probabilities after dropout `[batch, queries, heads, keys]`:
    zero queries and keys weigh every key 1/keys, and one-hot values read each
    weight out."""
    zeros = jnp.zeros((BATCH, length, HEADS, length))
    one_hot = jnp.broadcast_to(jnp.eye(length)[None, :, None, :], zeros.shape)
    mask = jnp.ones((BATCH, 1, 1, length), bool)
    # The inputs go in as arguments, as a model's traced queries and keys do. Closed
    # over instead, one captured array read as both queries and keys inside the
    # chunked path's loop came out all NaN in about 1 call in 15 (jax 0.10.2, CPU).
    return jax.jit(lambda r, q, k, v, m: attention.attend(
        q, k, v, m, dropout_rate=rate, dropout_rng=r, query_chunk=query_chunk))(
            rng, zeros, zeros, one_hot, mask)


@pytest.mark.parametrize("chunk", [None, 8])
def test_dropout_is_a_pure_function_of_the_key_and_drops_the_rate(chunk):
    rate, length = 0.3, 64
    probs = dropped_probabilities(jax.random.key(1), rate, chunk)
    np.testing.assert_array_equal(probs, dropped_probabilities(jax.random.key(1), rate, chunk))
    assert not np.array_equal(probs, dropped_probabilities(jax.random.key(2), rate, chunk))
    dropped = np.asarray(probs) == 0
    assert abs(dropped.mean() - rate) < 0.02
    np.testing.assert_allclose(np.asarray(probs)[~dropped], 1 / (length * (1 - rate)), rtol=1e-6)
    if chunk:  # each block draws its own bits (the key folded with the block's index)
        assert not np.array_equal(dropped[:, :chunk], dropped[:, chunk:2 * chunk])


def test_unchunked_dropout_keeps_the_bits_of_the_modules_nn_dropout():
    """Before `attend`, attention modules dropped probabilities with an unnamed
    `nn.Dropout`; `dropout_key` must give the unchunked path the same bits."""
    rate = 0.3
    query, key, value = qkv()
    mask = layers.encoder_mask(padding())

    class Before(nn.Module):
        @nn.compact
        def __call__(self, q, k, v):
            logits = jnp.einsum("btnh,bsnh->bnts", q, k) * HEAD_DIM ** -0.5
            probs = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(jnp.float32).min))
            probs = nn.Dropout(rate)(probs, deterministic=False)
            return jnp.einsum("bnts,bsnh->btnh", probs, v)

    class After(nn.Module):
        @nn.compact
        def __call__(self, q, k, v):
            return attention.attend(q, k, v, mask, dropout_rate=rate,
                                    dropout_rng=attention.dropout_key(self, rate, False))

    rngs = {"dropout": jax.random.key(4)}
    before = jax.jit(lambda *a: Before().apply({}, *a, rngs=rngs))(query, key, value)
    after = jax.jit(lambda *a: After().apply({}, *a, rngs=rngs))(query, key, value)
    np.testing.assert_array_equal(after, before)


def test_chunked_dropout_keeps_rows_without_keys_finite():
    kv_heads, mask, kwargs = CASES["causal_window"]
    query, key, value = qkv(kv_heads)
    out = attention.attend(query, key, value, mask(), dropout_rate=0.3,
                           dropout_rng=jax.random.key(0), query_chunk=8, **kwargs)
    assert np.isfinite(out).all()


def test_chunk_size_rule(monkeypatch):
    monkeypatch.setattr(attention, "CHUNK_BYTES", 64 * 2 ** 20)
    assert attention.query_chunk_size(32, 12, 128, 128) is None  # 24 MiB of scores
    # 384 MiB: 85 queries' scores fit in 64 MiB; blocks are powers of two.
    assert attention.query_chunk_size(32, 12, 512, 512) == 64
    monkeypatch.setattr(attention, "CHUNK_BYTES", 1)
    assert attention.query_chunk_size(1, 1, 4, 4) == 1


def test_a_model_takes_the_chunked_path_past_chunk_bytes(monkeypatch):
    """SelfAttention over long rows (forced here by lowering CHUNK_BYTES) gives
    what it gives unchunked."""
    module = layers.SelfAttention(HEADS, dropout_rate=0.1)
    x = jax.random.normal(jax.random.key(0), (BATCH, LENGTH, HEADS * HEAD_DIM))
    mask = layers.encoder_mask(padding(), segments())
    params = module.init(jax.random.key(1), x, mask, True)
    want = module.apply(params, x, mask, True)
    monkeypatch.setattr(attention, "CHUNK_BYTES", BATCH * HEADS * LENGTH * 4 * 8)  # 8 queries
    assert attention.query_chunk_size(BATCH, HEADS, LENGTH, LENGTH) == 8
    np.testing.assert_allclose(module.apply(params, x, mask, True), want, rtol=1e-5, atol=1e-5)
    train = jax.jit(lambda r: module.apply(params, x, mask, False, rngs={"dropout": r}))
    np.testing.assert_array_equal(train(jax.random.key(2)), train(jax.random.key(2)))


@pytest.mark.parametrize("rate", [0.0, 0.1])
def test_chunked_training_step_needs_far_less_memory(rate):
    """value_and_grad of [batch 32, 512 tokens, 12 heads, 32 dims]: unchunked,
    the step keeps [32, 12, 512, 512] float32 probabilities (384 MiB) and more;
    chunked, one block's scores at a time."""
    shape = jax.ShapeDtypeStruct((32, 512, 12, 32), jnp.float32)
    mask = jax.ShapeDtypeStruct((32, 1, 1, 512), jnp.bool_)
    rng = jax.random.key(0) if rate else None

    def temp_bytes(query_chunk):
        def loss(q, k, v, m):
            out = attention.attend(q, k, v, m, dropout_rate=rate, dropout_rng=rng,
                                   query_chunk=query_chunk)
            return jnp.sum(out ** 2)
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
        return step.lower(shape, shape, shape, mask).compile().memory_analysis().temp_size_in_bytes

    full = temp_bytes(512)
    chunked = temp_bytes(None)  # the CHUNK_BYTES rule: blocks of 64 queries
    assert full > 384 * 2 ** 20
    assert chunked < full / 4
