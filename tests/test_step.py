"""Checks fmt.train.step on a tiny BERT classifier: training reduces the loss,
filler rows count nowhere, steps are deterministic, the regression loss and
the L1/L2 penalty.

Compiling a train step is the slow part here, so the few steps are compiled
once per module (fixtures), without XLA's backend optimisations, and shared.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fmt.data.batching import make_batch
from fmt.data.features import Features
from fmt.model import build, init_params, logical_specs
from fmt.models.bert import BertConfig
from fmt.tasks.classification import Classification
from fmt.train import optim, sharding
from fmt.train.config import default_config
from fmt.train.step import make_eval_step, make_train_step, penalty

BERT = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64)
NO_DROPOUT = dataclasses.replace(BERT, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
LENGTH = 16
BATCH = 8
TOTAL_STEPS = 20
L2 = 1e-2  # the dropout-free step trains with an L2 penalty
# XLA's CPU backend optimisations cost far more compile time than these tiny steps
# take to run; they change speed, not the computation, so the tests skip them.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def _data(n: int = 8, regression: bool = False, seed: int = 0) -> Features:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, LENGTH + 1, n)
    lengths[0] = LENGTH
    input_ids = [rng.integers(1, 50, k).astype(np.int32) for k in lengths]
    token_type_ids = [(np.arange(k) >= k // 2).astype(np.int32) for k in lengths]
    if regression:
        labels = rng.uniform(0, 5, n).astype(np.float32)
    else:
        labels = (np.arange(n) % 2).astype(np.int32)
    return Features({"input_ids": input_ids, "token_type_ids": token_type_ids},
                    {"labels": labels})


def _batch(data: Features, indices, batch_size: int = BATCH) -> dict:
    return make_batch(data, np.asarray(list(indices)), LENGTH, batch_size)


def _config(**overrides):
    config = default_config()
    config.update(dict(learning_rate=1e-2, lr_decay="linear", warmup_steps=2))
    config.update(overrides)
    return config


@dataclasses.dataclass
class Setup:
    module: object
    step: object      # the jitted train step
    schedule: object
    state: dict


def _setup(mesh, bert, params, num_labels=2, l1=0.0, l2=0.0, **options) -> Setup:
    """Module, jitted train step and a fresh state, as fmt.train.loop builds them."""
    module = build(bert, "classification", num_labels, **options)[0]
    optimizer, schedule = optim.make_optimizer(_config(), TOTAL_STEPS)
    specs = logical_specs(module)
    state = sharding.create_state(sharding.state_shardings(mesh, params, specs, optimizer),
                                  params, optimizer, seed=0)
    task = Classification(regression=num_labels == 1)
    step = jax.jit(make_train_step(module, task, optimizer, schedule, l1, l2),
                   compiler_options=FAST_COMPILE)
    return Setup(module, step, schedule, state)


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


@pytest.fixture(scope="module")
def params():
    return init_params(build(BERT, "classification", 2)[0], seed=0)


@pytest.fixture(scope="module")
def dropout(mesh, params):
    """Dropout on, no penalty."""
    return _setup(mesh, BERT, params)


@pytest.fixture(scope="module")
def plain(mesh, params):
    """Dropout off, with an L2 penalty."""
    return _setup(mesh, NO_DROPOUT, params, l2=L2)


@pytest.fixture(scope="module")
def eval_step():
    step = jax.jit(make_eval_step(build(BERT, "classification", 2)[0], Classification()),
                   compiler_options=FAST_COMPILE)
    return lambda params, batch: step(params, batch)["logits"]


def _assert_trees_close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


# --- training ------------------------------------------------------------------------

def test_training_reduces_the_loss_and_reports_metrics(dropout):
    state = dropout.state
    batch = _batch(_data(), range(6))  # 2 filler rows
    losses = []
    for i in range(8):
        assert int(state["step"]) == i
        previous = state["params"]
        state, metrics = dropout.step(state, batch)
        assert set(metrics) >= {"train_loss", "learning_rate", "l2_grads", "nonfinite"}
        for value in metrics.values():
            assert np.shape(value) == () and np.isfinite(value)
        assert int(metrics["nonfinite"]) == 0
        assert float(metrics["learning_rate"]) == pytest.approx(float(dropout.schedule(i)),
                                                                rel=1e-6)
        assert float(metrics["l2_grads"]) > 0
        moved = optax.tree.norm(jax.tree.map(jnp.subtract, state["params"], previous))
        losses.append(float(metrics["train_loss"]))
        if i == 0:  # warmup starts at 0: no update yet
            assert float(metrics["learning_rate"]) == 0.0
            assert float(moved) == 0.0
        else:
            assert float(moved) > 0
    assert int(state["step"]) == 8
    assert max(losses[-2:]) < losses[0] - 0.05, losses


def test_a_skipped_update_holds_the_logged_learning_rate(dropout):
    """A non-finite step applies no update, so the schedule does not advance: the
    rate logged for it and for the next step is the one the next update uses."""
    good = _batch(_data(), range(6))
    bad = dict(good, weights=np.full_like(good["weights"], np.nan))
    state, rates = dropout.state, []
    for batch in (good, good, bad, good, good):
        state, metrics = dropout.step(state, batch)
        rates.append(float(metrics["learning_rate"]))
    assert int(metrics["nonfinite"]) == 0 and int(state["step"]) == 5
    applied = [dropout.schedule(i) for i in (0, 1, 2, 2, 3)]  # the skipped step is step 2
    assert rates == pytest.approx([float(r) for r in applied], rel=1e-6)
    assert rates[2] == rates[3] != rates[4]


def test_train_step_is_deterministic_with_dropout(dropout):
    assert BERT.hidden_dropout_prob > 0 and BERT.attention_probs_dropout_prob > 0
    batch = _batch(_data(), range(6))
    state, first = dropout.step(dropout.state, batch)
    state2, second = dropout.step(dropout.state, batch)
    for key in first:
        assert float(first[key]) == float(second[key]), key
    _assert_trees_close(state["params"], state2["params"], rtol=0, atol=0)
    # The base key is carried unchanged; each step folds in its step number.
    np.testing.assert_array_equal(state["rng"], dropout.state["rng"])
    assert int(state["step"]) == int(dropout.state["step"]) + 1


def test_remat_gives_the_same_update(mesh, params, dropout):
    """Recomputing layer activations in the backward pass changes memory, not the step."""
    remat = _setup(mesh, BERT, params, remat=True)
    batch = _batch(_data(), range(6))
    state, metrics = remat.step(remat.state, batch)
    expected_state, expected = dropout.step(dropout.state, batch)
    assert float(metrics["train_loss"]) == pytest.approx(float(expected["train_loss"]), rel=1e-6)
    _assert_trees_close(state["params"], expected_state["params"], rtol=1e-5, atol=1e-7)


def test_bfloat16_compute_keeps_float32_params_optimizer_state_and_loss(mesh, params, plain):
    low = _setup(mesh, NO_DROPOUT, params, l2=L2, dtype=jnp.bfloat16)
    batch = _batch(_data(), range(8))
    state, metrics = low.step(low.state, batch)
    _, expected = plain.step(plain.state, batch)
    for leaf in jax.tree.leaves((state["params"], state["opt_state"])):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert metrics["train_loss"].dtype == jnp.float32
    # bfloat16 keeps 8 bits of mantissa: close to the float32 loss, not equal to it.
    assert float(metrics["train_loss"]) == pytest.approx(float(expected["train_loss"]), abs=2e-2)
    assert float(metrics["train_loss"]) != float(expected["train_loss"])
    logits = jax.jit(make_eval_step(low.module, Classification()))(params, batch)["logits"]
    assert logits.dtype == jnp.float32


def test_dropout_is_active_in_training(dropout, plain):
    """The same params and batch give another loss with dropout than without it."""
    batch = _batch(_data(), range(8))
    _, on = dropout.step(dropout.state, batch)
    _, off = plain.step(plain.state, batch)
    # The tiny model's loss sits near ln 2 either way: any difference shows dropout.
    assert float(on["train_loss"]) != float(off["train_loss"])
    assert float(on["l2_grads"]) != float(off["l2_grads"])


# --- weights -------------------------------------------------------------------------

def test_filler_rows_count_nowhere(plain):
    """Four real rows plus four weight-0 filler rows give the same loss, grads and
    update as the four rows alone."""
    data = _data()
    padded = _batch(data, range(4))  # rows 4..7: all padding, weight 0
    assert padded["weights"].tolist() == [1, 1, 1, 1, 0, 0, 0, 0]
    alone = _batch(data, range(4), batch_size=4)
    assert alone["weights"].tolist() == [1, 1, 1, 1]
    new_padded, m_padded = plain.step(plain.state, padded)
    new_alone, m_alone = plain.step(plain.state, alone)
    for key in ("train_loss", "l2_grads"):
        assert float(m_padded[key]) == pytest.approx(float(m_alone[key]), rel=1e-5), key
    _assert_trees_close(new_padded["params"], new_alone["params"], rtol=1e-5, atol=1e-7)


def test_weight_zero_rows_with_real_content_count_nowhere(plain):
    """Rows with weight 0 are ignored even when they hold real tokens and labels:
    the batch equals one whose last four rows repeat the first four (same mean)."""
    data = _data()
    masked = _batch(data, range(8))
    masked["weights"][4:] = 0.0
    repeated = _batch(data, [0, 1, 2, 3, 0, 1, 2, 3])
    new_masked, m_masked = plain.step(plain.state, masked)
    new_repeated, m_repeated = plain.step(plain.state, repeated)
    for key in ("train_loss", "l2_grads"):
        assert float(m_masked[key]) == pytest.approx(float(m_repeated[key]), rel=1e-5), key
    _assert_trees_close(new_masked["params"], new_repeated["params"], rtol=1e-5, atol=1e-7)


def test_train_loss_is_the_weighted_mean_without_the_penalty(plain, eval_step):
    """Dropout off: train_loss is the mean cross-entropy of the real rows; the L2
    penalty the step trains with is not part of the reported loss."""
    batch = _batch(_data(), range(5))
    logits = np.asarray(eval_step(plain.state["params"], batch))
    expected = optax.softmax_cross_entropy_with_integer_labels(
        logits[:5], batch["labels"][:5]).mean()
    _, metrics = plain.step(plain.state, batch)
    assert float(metrics["train_loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(penalty(plain.state["params"], 0.0, L2)) > 1e-3 * float(expected)


# --- eval ----------------------------------------------------------------------------

def test_eval_step_returns_logits(params, eval_step):
    batch = _batch(_data(), range(6))
    logits = eval_step(params, batch)
    assert logits.shape == (BATCH, 2)
    assert logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))
    np.testing.assert_array_equal(logits, eval_step(params, batch))
    # Real rows do not depend on what the other rows hold.
    alone = _batch(_data(), range(3))
    np.testing.assert_allclose(eval_step(params, alone)[:3], logits[:3], rtol=1e-5, atol=1e-6)


# --- regression ----------------------------------------------------------------------

def test_regression_task_loss_is_squared_error():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 1)).astype(np.float32)
    labels = rng.uniform(0, 5, 6).astype(np.float32)
    task = Classification(regression=True)
    np.testing.assert_allclose(task.example_loss(jnp.asarray(logits), jnp.asarray(labels)),
                               (logits[:, 0] - labels) ** 2, rtol=1e-6)
    weights = np.array([1, 1, 1, 1, 0, 0], np.float32)
    total, weight = task.loss(jnp.asarray(logits), {"labels": jnp.asarray(labels),
                                                     "weights": jnp.asarray(weights)})
    assert float(weight) == 4.0
    assert float(total) == pytest.approx(float(((logits[:4, 0] - labels[:4]) ** 2).sum()),
                                         rel=1e-6)
    np.testing.assert_array_equal(task.predict(logits), logits[:, 0])


def test_regression_train_step_loss_is_mean_squared_error(mesh, params):
    # The regression head has one output: take the first column of the 2-label head.
    reg_params = jax.tree.map(lambda x: x, params)
    head = reg_params["head"]["classifier"]
    reg_params["head"] = {"classifier": {"kernel": head["kernel"][:, :1],
                                          "bias": head["bias"][:1]}}
    setup = _setup(mesh, NO_DROPOUT, reg_params, num_labels=1)
    data = _data(regression=True)
    batch = _batch(data, range(5))
    assert batch["labels"].dtype == np.float32
    eval_step = jax.jit(make_eval_step(setup.module, Classification(regression=True)),
                        compiler_options=FAST_COMPILE)
    logits = np.asarray(eval_step(reg_params, batch)["logits"])
    assert logits.shape == (BATCH, 1)
    expected = np.mean((logits[:5, 0] - data.examples["labels"][:5]) ** 2)
    state, metrics = setup.step(setup.state, batch)
    assert float(metrics["train_loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert int(state["step"]) == 1


# --- penalty -------------------------------------------------------------------------

def _hand_penalty(params, l1, l2):
    total = 0.0
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if path[-1].key in ("kernel", "embedding"):
            leaf = np.asarray(leaf, np.float64)
            total += l1 * np.abs(leaf).sum() + 0.5 * l2 * np.square(leaf).sum()
    return total


@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (1e-3, 0.0), (0.0, 1e-2), (1e-3, 1e-2)])
def test_penalty_on_bert_params(params, l1, l2):
    # Make biases and LayerNorm params non-trivial so that including them would show.
    shifted = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 1.0 if path[-1].key in ("bias", "scale") else p, params)
    got = float(penalty(shifted, l1, l2))
    assert got == pytest.approx(_hand_penalty(shifted, l1, l2), rel=1e-5, abs=1e-12)


def test_penalty_on_a_tiny_tree():
    params = {"dense": {"kernel": jnp.array([[1.0, -2.0]]), "bias": jnp.array([5.0])},
              "norm": {"scale": jnp.array([3.0]), "bias": jnp.array([-4.0])},
              "embed": {"embedding": jnp.array([[-1.0, 3.0]])}}
    # L1: |1|+|-2|+|-1|+|3| = 7; L2: 1+4+1+9 = 15.
    assert float(penalty(params, 0.0, 0.0)) == 0.0
    assert float(penalty(params, 0.1, 0.0)) == pytest.approx(0.7)
    assert float(penalty(params, 0.0, 0.2)) == pytest.approx(0.5 * 0.2 * 15)
    assert float(penalty(params, 0.1, 0.2)) == pytest.approx(0.7 + 1.5)
