"""Dropout's keys under every `--config.rng_impl`: a step is a pure function of
the state and the batch, each step draws new masks, and the state's `rng` (raw
key data) goes through a checkpoint and back to the same next step, bit for bit.

A tiny BERT classifier with dropout, its steps compiled once per implementation
(module fixtures) without XLA's backend optimisations, as in test_step.py.
"""

import jax
import numpy as np
import pytest

from fmt.data.batching import make_batch
from fmt.data.features import Features
from fmt.errors import UserError
from fmt.model import build, init_params, logical_specs
from fmt.models.bert import BertConfig
from fmt.tasks.classification import Classification
from fmt.train import optim, sharding
from fmt.train.checkpoint import Checkpoints
from fmt.train.config import default_config
from fmt.train.step import RNG_IMPLS, make_train_step

BERT = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=32, max_position_embeddings=64,
                  hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
LENGTH = 16
BATCH = 8
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


@pytest.fixture(scope="module")
def parts(mesh):
    """What every implementation shares: module, optimizer, params and their shardings."""
    module = build(BERT, "classification", 2)[0]
    config = default_config()
    config.update(learning_rate=1e-2, warmup_steps=0)
    optimizer, schedule = optim.make_optimizer(config, 20)
    params = init_params(module, seed=0)
    shardings = sharding.state_shardings(mesh, params, logical_specs(module), optimizer)
    return module, optimizer, schedule, params, shardings


@pytest.fixture(scope="module", params=RNG_IMPLS)
def setup(request, parts):
    """(impl, jitted train step, a fresh state) for each implementation."""
    module, optimizer, schedule, params, shardings = parts
    impl = request.param
    state = sharding.create_state(shardings, params, optimizer, seed=3, rng_impl=impl)
    step = jax.jit(make_train_step(module, Classification(), optimizer, schedule,
                                   rng_impl=impl), compiler_options=FAST_COMPILE)
    return impl, step, state


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    data = Features({"input_ids": [rng.integers(1, 50, LENGTH).astype(np.int32)
                                   for _ in range(BATCH)],
                     "token_type_ids": [np.zeros(LENGTH, np.int32)] * BATCH},
                    {"labels": (np.arange(BATCH) % 2).astype(np.int32)})
    return make_batch(data, np.arange(BATCH), LENGTH, BATCH)


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_the_state_holds_plain_key_data(setup):
    impl, _, state = setup
    rng = state["rng"]
    assert not jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key)
    assert rng.dtype == np.uint32
    assert rng.shape == jax.random.key_data(jax.random.key(0, impl=impl)).shape


def test_threefry_keeps_the_key_of_old_runs(parts):
    """The default (and threefry2x32) is the key every run had before rng_impl."""
    _, optimizer, _, params, shardings = parts
    state = sharding.create_state(shardings, params, optimizer, seed=3)
    np.testing.assert_array_equal(np.asarray(state["rng"]), np.asarray(
        jax.random.fold_in(jax.random.PRNGKey(3), 1)))


def test_an_unknown_impl_names_the_flag(parts):
    _, optimizer, _, params, shardings = parts
    with pytest.raises(UserError, match="--config.rng_impl='mersenne'"):
        sharding.create_state(shardings, params, optimizer, seed=3, rng_impl="mersenne")


def test_the_same_state_and_batch_give_the_same_step(setup, batch):
    _, step, state = setup
    first = step(state, batch)
    second = step(state, batch)
    _assert_trees_equal(first, second)


def test_each_step_draws_new_masks(setup, batch):
    """Two states alike but for `step` (params, moments and so the learning rate
    the same): only the dropout key differs, and with it the loss and gradient."""
    _, step, state = setup
    _, now = step(state, batch)
    _, later = step(dict(state, step=state["step"] + 1), batch)
    assert float(now["train_loss"]) != float(later["train_loss"])
    assert float(now["l2_grads"]) != float(later["l2_grads"])
    assert float(now["learning_rate"]) == float(later["learning_rate"])


def test_a_restored_checkpoint_resumes_bit_for_bit(setup, batch, tmp_path):
    _, step, state = setup
    state, _ = step(state, batch)
    checkpoints = Checkpoints(tmp_path / "checkpoints", max_to_keep=2)
    checkpoints.save(1, state)
    checkpoints.wait()
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    restored = checkpoints.restore_latest(abstract)
    checkpoints.close()
    assert restored["rng"].dtype == np.uint32
    _assert_trees_equal(restored, state)
    _assert_trees_equal(step(restored, batch), step(state, batch))
