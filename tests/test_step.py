"""Checks fmt.train.step on a tiny BERT classifier: training reduces the loss,
filler rows count nowhere, steps are deterministic, the regression loss and
the L1/L2 penalty."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fmt.data.batching import make_batch
from fmt.data.tokenize import Encoded
from fmt.model import build, init_params
from fmt.models.bert import BertConfig
from fmt.tasks.classification import ClassificationTask
from fmt.train import optim, sharding
from fmt.train.config import default_config
from fmt.train.step import make_eval_step, make_train_step, penalty

BERT = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64)
NO_DROPOUT = dataclasses.replace(BERT, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
LENGTH = 16
TOTAL_STEPS = 20


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


def _data(n: int = 6, regression: bool = False, seed: int = 0) -> Encoded:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, LENGTH + 1, n)
    lengths[0] = LENGTH
    input_ids = [rng.integers(1, 50, k).astype(np.int32) for k in lengths]
    token_type_ids = [(np.arange(k) >= k // 2).astype(np.int32) for k in lengths]
    if regression:
        labels = rng.uniform(0, 5, n).astype(np.float32)
    else:
        labels = (np.arange(n) % 2).astype(np.int32)
    return Encoded(input_ids, token_type_ids, labels, pad_id=0)


def _batch(data: Encoded, indices, batch_size: int) -> dict:
    return make_batch(data, np.asarray(indices), LENGTH, batch_size)


def _setup(mesh, bert=BERT, num_labels=2, l1=0.0, l2=0.0, **config_overrides):
    """Module, jitted train step and a fresh state, as fmt.train.loop builds them."""
    config = default_config()
    config.update(dict(learning_rate=1e-3, warmup_ratio=0.0, warmup_steps=0,
                       lr_decay="constant"))
    config.update(config_overrides)
    module = build(bert, num_labels=num_labels)
    params = init_params(module, seed=0)
    optimizer, schedule = optim.make_optimizer(config, TOTAL_STEPS)
    state = sharding.create_state(mesh, params, optimizer, seed=0)
    task = ClassificationTask(num_labels)
    step = jax.jit(make_train_step(module, task, optimizer, schedule, l1, l2))
    return module, step, state


def _assert_trees_close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def test_training_reduces_the_loss_and_reports_metrics(mesh):
    module, train_step, state = _setup(mesh)
    batch = sharding.batch_putter(mesh)(_batch(_data(), range(6), 8))
    losses = []
    for i in range(8):
        assert int(state["step"]) == i
        state, metrics = train_step(state, batch)
        assert set(metrics) >= {"train_loss", "learning_rate", "l2_grads", "l2_updates",
                                "l2_params"}
        for value in metrics.values():
            assert np.shape(value) == () and np.isfinite(value)
        assert float(metrics["learning_rate"]) == pytest.approx(1e-3)
        assert float(metrics["l2_grads"]) > 0 and float(metrics["l2_updates"]) > 0
        assert float(metrics["l2_params"]) == pytest.approx(
            float(optax.tree.norm(state["params"])), rel=1e-5)
        losses.append(float(metrics["train_loss"]))
    assert int(state["step"]) == 8
    assert losses[-1] < losses[0] - 0.1, losses


def test_learning_rate_metric_follows_the_schedule(mesh):
    _, train_step, state = _setup(mesh, lr_decay="linear", warmup_steps=4)
    batch = _batch(_data(), range(6), 8)
    config = default_config()
    config.update(dict(learning_rate=1e-3, lr_decay="linear", warmup_steps=4))
    _, schedule = optim.make_optimizer(config, TOTAL_STEPS)
    for i in range(6):
        state, metrics = train_step(state, batch)
        assert float(metrics["learning_rate"]) == pytest.approx(float(schedule(i)), rel=1e-6)
    assert float(schedule(0)) == 0.0


def test_filler_rows_count_nowhere(mesh):
    """A batch padded with weight-0 filler rows gives the same loss, grads and update."""
    data = _data()
    _, train_step, state = _setup(mesh, bert=NO_DROPOUT)
    state_copy = jax.tree.map(jnp.copy, state)
    small = _batch(data, range(4), 4)
    padded = _batch(data, range(4), 8)  # rows 4..7: all padding, weight 0
    assert padded["weights"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    new_small, m_small = train_step(state, small)
    new_padded, m_padded = train_step(state_copy, padded)
    for key in ("train_loss", "l2_grads", "l2_updates", "l2_params"):
        assert float(m_padded[key]) == pytest.approx(float(m_small[key]), rel=1e-5), key
    _assert_trees_close(new_padded["params"], new_small["params"], rtol=1e-5, atol=1e-7)


def test_filler_rows_with_real_content_but_weight_zero_count_nowhere(mesh):
    """Weight 0 rows are ignored even when they hold real tokens and labels."""
    data = _data(n=8)
    _, train_step, state = _setup(mesh, bert=NO_DROPOUT)
    state_copy = jax.tree.map(jnp.copy, state)
    small = _batch(data, range(4), 4)
    full = _batch(data, range(8), 8)
    full["weights"][4:] = 0.0
    new_small, m_small = train_step(state, small)
    new_full, m_full = train_step(state_copy, full)
    for key in ("train_loss", "l2_grads", "l2_updates"):
        assert float(m_full[key]) == pytest.approx(float(m_small[key]), rel=1e-5), key
    _assert_trees_close(new_full["params"], new_small["params"], rtol=1e-5, atol=1e-7)


def test_loss_is_the_weighted_mean(mesh):
    """With dropout off, train_loss equals the mean per-example loss of the real rows."""
    data = _data()
    module, train_step, state = _setup(mesh, bert=NO_DROPOUT)
    batch = _batch(data, range(5), 8)
    logits = make_eval_step(module)(state["params"], batch)
    expected = optax.softmax_cross_entropy_with_integer_labels(
        np.asarray(logits)[:5], batch["labels"][:5]).mean()
    _, metrics = train_step(state, batch)
    assert float(metrics["train_loss"]) == pytest.approx(float(expected), rel=1e-5)


def test_train_step_is_deterministic_with_dropout(mesh):
    _, train_step, state = _setup(mesh)
    assert BERT.hidden_dropout_prob > 0
    batch = _batch(_data(), range(6), 8)
    first_state, first = train_step(jax.tree.map(jnp.copy, state), batch)
    second_state, second = train_step(jax.tree.map(jnp.copy, state), batch)
    for key in first:
        assert float(first[key]) == float(second[key]), key
    _assert_trees_close(first_state["params"], second_state["params"], rtol=0, atol=0)
    # The base key is carried unchanged; each step folds in its step number.
    np.testing.assert_array_equal(first_state["rng"], state["rng"])
    assert int(first_state["step"]) == int(state["step"]) + 1


def test_dropout_is_active_in_training(mesh):
    """With dropout on, the loss differs from the dropout-free loss on the same params."""
    data = _data()
    batch = _batch(data, range(6), 8)
    _, step_on, state_on = _setup(mesh)
    _, step_off, state_off = _setup(mesh, bert=NO_DROPOUT)
    _, m_on = step_on(state_on, batch)
    _, m_off = step_off(state_off, batch)
    assert float(m_on["train_loss"]) != pytest.approx(float(m_off["train_loss"]), rel=1e-6)


def test_eval_step_returns_logits(mesh):
    module, _, state = _setup(mesh)
    eval_step = jax.jit(make_eval_step(module))
    batch = _batch(_data(), range(6), 8)
    logits = eval_step(state["params"], batch)
    assert logits.shape == (8, 2)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    # Deterministic: the same params and batch give the same logits.
    np.testing.assert_array_equal(logits, eval_step(state["params"], batch))


def test_regression_loss_is_squared_error(mesh):
    data = _data(regression=True)
    module, train_step, state = _setup(mesh, bert=NO_DROPOUT, num_labels=1)
    batch = _batch(data, range(5), 8)
    assert batch["labels"].dtype == np.float32
    logits = np.asarray(make_eval_step(module)(state["params"], batch))
    assert logits.shape == (8, 1)
    expected = np.mean((logits[:5, 0] - data.labels[:5]) ** 2)
    _, metrics = train_step(state, batch)
    assert float(metrics["train_loss"]) == pytest.approx(float(expected), rel=1e-5)
    per_example = ClassificationTask(1).loss(jnp.asarray(logits), jnp.asarray(batch["labels"]))
    np.testing.assert_allclose(per_example, (logits[:, 0] - batch["labels"]) ** 2, rtol=1e-6)


# --- penalty --------------------------------------------------------------------------

def _hand_penalty(params, l1, l2):
    total = 0.0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key in ("kernel", "embedding"):
            leaf = np.asarray(leaf, np.float64)
            total += l1 * np.abs(leaf).sum() + 0.5 * l2 * np.square(leaf).sum()
    return total


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-2), (1e-3, 1e-2)])
def test_penalty_on_bert_params(l1, l2):
    params = init_params(build(BERT, num_labels=2), seed=0)
    # Make biases and LayerNorm params non-trivial so that including them would show.
    params = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 1.0 if path[-1].key in ("bias", "scale") else p, params)
    got = float(penalty(params, l1, l2))
    assert got == pytest.approx(_hand_penalty(params, l1, l2), rel=1e-5, abs=1e-12)


def test_penalty_on_a_tiny_tree():
    params = {"dense": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])},
              "norm": {"scale": jnp.array([3.0]), "bias": jnp.array([-4.0])},
              "embed": {"embedding": jnp.array([[-1.0, 3.0]])}}
    # L1: |1|+|-2|+|-1|+|3| = 7; L2: 1+4+1+9 = 15.
    assert float(penalty(params, 0.1, 0.0)) == pytest.approx(0.7)
    assert float(penalty(params, 0.0, 0.2)) == pytest.approx(0.5 * 0.2 * 15)
    assert float(penalty(params, 0.1, 0.2)) == pytest.approx(0.7 + 1.5)


def test_train_step_adds_the_penalty_to_the_gradient_not_to_train_loss(mesh):
    """train_loss reports the task loss only; the penalty shows in the gradient."""
    data = _data()
    batch = _batch(data, range(6), 8)
    _, plain_step, plain_state = _setup(mesh, bert=NO_DROPOUT)
    _, l2_step, l2_state = _setup(mesh, bert=NO_DROPOUT, l2=10.0)
    _, m_plain = plain_step(plain_state, batch)
    _, m_l2 = l2_step(l2_state, batch)
    assert float(m_l2["train_loss"]) == pytest.approx(float(m_plain["train_loss"]), rel=1e-6)
    assert float(m_l2["l2_grads"]) > float(m_plain["l2_grads"]) * 2
