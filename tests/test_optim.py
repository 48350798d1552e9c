"""Checks fmt.train.optim: schedules against transformers, the decay mask, the
optimizers (each runs; clipping; AdamW against torch.optim.AdamW)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import transformers

import fmt
from fmt.models.bert import BertConfig
from fmt.model import build, init_params
from fmt.train import optim
from fmt.train.config import default_config

PEAK = 3e-4
TOTAL = 100


def _config(**overrides):
    config = default_config()
    config.learning_rate = PEAK
    config.update(overrides)
    return config


def _hf_lrs(make_scheduler, total: int = TOTAL) -> np.ndarray:
    """The learning rate transformers' scheduler gives at steps 0..total-1."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=PEAK)
    scheduler = make_scheduler(optimizer)
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return np.asarray(lrs, np.float64)


def _fmt_lrs(config, total: int = TOTAL) -> np.ndarray:
    with jax.enable_x64(True):  # compare in float64, so 1e-7 relative is meaningful
        lr = optim.schedule(config, total)
        return np.asarray([float(lr(jnp.asarray(step, jnp.int64))) for step in range(total)])


def _assert_lrs_equal(ours, theirs):
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-7 * PEAK)


# --- schedules ------------------------------------------------------------------------

def test_linear_schedule_matches_transformers():
    ours = _fmt_lrs(_config(lr_decay="linear", warmup_ratio=0.1, warmup_steps=0))
    theirs = _hf_lrs(lambda opt: transformers.get_linear_schedule_with_warmup(opt, 10, TOTAL))
    _assert_lrs_equal(ours, theirs)
    assert ours[0] == 0.0 and ours[10] == pytest.approx(PEAK)


def test_cosine_schedule_matches_transformers():
    ours = _fmt_lrs(_config(lr_decay="cosine", warmup_ratio=0.1, warmup_steps=0))
    theirs = _hf_lrs(lambda opt: transformers.get_cosine_schedule_with_warmup(opt, 10, TOTAL))
    _assert_lrs_equal(ours, theirs)


def test_constant_schedule_matches_transformers():
    ours = _fmt_lrs(_config(lr_decay="constant", warmup_ratio=0.1, warmup_steps=0))
    theirs = _hf_lrs(lambda opt: transformers.get_constant_schedule_with_warmup(opt, 10))
    _assert_lrs_equal(ours, theirs)
    np.testing.assert_allclose(ours[10:], PEAK, rtol=1e-12)


@pytest.mark.parametrize("decay, make", [
    ("linear", lambda opt: transformers.get_linear_schedule_with_warmup(opt, 7, TOTAL)),
    ("cosine", lambda opt: transformers.get_cosine_schedule_with_warmup(opt, 7, TOTAL)),
    ("constant", lambda opt: transformers.get_constant_schedule_with_warmup(opt, 7)),
])
def test_warmup_steps_override_warmup_ratio(decay, make):
    ours = _fmt_lrs(_config(lr_decay=decay, warmup_ratio=0.1, warmup_steps=7))
    _assert_lrs_equal(ours, _hf_lrs(make))


def test_no_warmup_starts_at_peak():
    ours = _fmt_lrs(_config(lr_decay="linear", warmup_ratio=0.0, warmup_steps=0))
    theirs = _hf_lrs(lambda opt: transformers.get_linear_schedule_with_warmup(opt, 0, TOTAL))
    _assert_lrs_equal(ours, theirs)
    assert ours[0] == pytest.approx(PEAK)


def test_warmup_steps_helper():
    assert optim.warmup_steps(_config(warmup_ratio=0.1, warmup_steps=0), 100) == 10
    assert optim.warmup_steps(_config(warmup_ratio=0.06, warmup_steps=0), 1000) == 60
    assert optim.warmup_steps(_config(warmup_ratio=0.1, warmup_steps=3), 100) == 3


def test_unknown_lr_decay_raises_user_error():
    with pytest.raises(fmt.UserError):
        optim.schedule(_config(lr_decay="exponential"), TOTAL)
    with pytest.raises(fmt.UserError):
        optim.make_optimizer(_config(lr_decay="step"), TOTAL)


# --- decay mask -------------------------------------------------------------------------

def _tiny_bert_params():
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=64)
    return init_params(build(config, "classification", 2)[0], seed=0)


def test_decay_mask_on_bert_params():
    params = _tiny_bert_params()
    mask = optim.decay_mask(params)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    seen = set()
    for path, use in jax.tree_util.tree_leaves_with_path(mask):
        name = path[-1].key
        seen.add(name)
        assert use == (name in ("kernel", "embedding")), (path, use)
    assert seen == {"kernel", "bias", "scale", "embedding"}
    # Spot checks on known leaves.
    assert mask["encoder"]["embeddings"]["word"]["embedding"] is True
    assert mask["encoder"]["embeddings"]["norm"]["scale"] is False
    assert mask["encoder"]["embeddings"]["norm"]["bias"] is False
    assert mask["encoder"]["layer_0"]["attention"]["query"]["kernel"] is True
    assert mask["encoder"]["layer_0"]["attention"]["query"]["bias"] is False
    assert mask["head"]["classifier"]["kernel"] is True


# --- make_optimizer ----------------------------------------------------------------------

def _tiny_tree():
    rng = np.random.default_rng(0)
    return {
        "dense": {"kernel": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
                  "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32)},
        "norm": {"scale": jnp.ones((3,), jnp.float32), "bias": jnp.zeros((3,), jnp.float32)},
    }


def _grads_like(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), tree)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_every_optimizer_updates_params(name, weight_decay):
    config = _config(optimizer=name, learning_rate=0.1, warmup_ratio=0.0, warmup_steps=0,
                     weight_decay=weight_decay)
    optimizer, lr = optim.make_optimizer(config, TOTAL)
    assert float(lr(0)) == pytest.approx(0.1)
    params = _tiny_tree()
    state = optimizer.init(params)
    for step in range(2):
        updates, state = optimizer.update(_grads_like(params, step), state, params)
        new = optax.apply_updates(params, updates)
        for old_leaf, new_leaf in zip(jax.tree.leaves(params), jax.tree.leaves(new)):
            assert np.all(np.isfinite(new_leaf))
            assert not np.allclose(old_leaf, new_leaf)
        params = new


def test_unknown_optimizer_raises_user_error():
    with pytest.raises(fmt.UserError):
        optim.make_optimizer(_config(optimizer="lamb"), TOTAL)


def _plain_sgd(max_grad_norm):
    return _config(optimizer="sgd", momentum=0.0, learning_rate=1.0, weight_decay=0.0,
                   lr_decay="constant", warmup_ratio=0.0, warmup_steps=0,
                   max_grad_norm=max_grad_norm)


def test_clipping_caps_the_global_norm():
    optimizer, _ = optim.make_optimizer(_plain_sgd(1e-3), TOTAL)
    params = _tiny_tree()
    grads = _grads_like(params, 1)
    assert optax.global_norm(grads) > 1.0
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(1e-3, rel=1e-5)
    # The direction is kept: updates are -grads scaled down.
    scale = 1e-3 / float(optax.global_norm(grads))
    for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(updates)):
        np.testing.assert_allclose(u, -scale * np.asarray(g), rtol=1e-5, atol=1e-9)


def test_clipping_leaves_small_grads_and_can_be_off():
    params = _tiny_tree()
    grads = jax.tree.map(lambda g: g * 1e-3, _grads_like(params, 1))  # norm well below 1
    for max_norm in (1.0, 0.0):
        optimizer, _ = optim.make_optimizer(_plain_sgd(max_norm), TOTAL)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(updates)):
            np.testing.assert_allclose(u, -np.asarray(g), rtol=1e-6)
    big = _grads_like(params, 1)
    optimizer, _ = optim.make_optimizer(_plain_sgd(0.0), TOTAL)
    updates, _ = optimizer.update(big, optimizer.init(params), params)
    assert float(optax.global_norm(updates)) == pytest.approx(float(optax.global_norm(big)))


def test_clipping_matches_optax_and_uses_the_norm_it_is_given():
    """fmt's clipping (a multiply, for speed) gives optax's clipped AdamW update; given
    the step's `grad_norm`, it scales by that norm instead of computing its own."""
    config = _config(optimizer="adamw", max_grad_norm=1e-3, weight_decay=0.01)
    optimizer, schedule = optim.make_optimizer(config, TOTAL)
    reference = optax.chain(
        optax.clip_by_global_norm(1e-3),
        optax.adamw(schedule, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                    weight_decay=0.01, mask=optim.decay_mask))
    params = _tiny_tree()
    state, ref_state = optimizer.init(params), reference.init(params)
    assert jax.tree.structure(state) == jax.tree.structure(ref_state)  # checkpoints load
    for seed in range(1, 4):
        grads = _grads_like(params, seed)
        updates, state = optimizer.update(grads, state, params)
        expected, ref_state = reference.update(grads, ref_state, params)
        for u, e in zip(jax.tree.leaves(updates), jax.tree.leaves(expected)):
            np.testing.assert_allclose(u, e, rtol=1e-5, atol=1e-12)
        params = optax.apply_updates(params, updates)
    sgd, _ = optim.make_optimizer(_plain_sgd(1e-3), TOTAL)
    grads = _grads_like(params, 1)
    norm = optax.global_norm(grads)
    halved, _ = sgd.update(grads, sgd.init(params), params, grad_norm=2 * norm)
    assert float(optax.global_norm(halved)) == pytest.approx(0.5e-3, rel=1e-5)


def test_sgd_weight_decay_skips_bias_and_scale():
    config = _plain_sgd(0.0)
    config.weight_decay = 0.5
    optimizer, _ = optim.make_optimizer(config, TOTAL)
    params = _tiny_tree()
    zeros = jax.tree.map(jnp.zeros_like, params)
    updates, _ = optimizer.update(zeros, optimizer.init(params), params)
    np.testing.assert_allclose(updates["dense"]["kernel"], -0.5 * params["dense"]["kernel"],
                               rtol=1e-6)
    for leaf in (updates["dense"]["bias"], updates["norm"]["scale"], updates["norm"]["bias"]):
        np.testing.assert_array_equal(leaf, 0.0)


# --- AdamW against torch ------------------------------------------------------------------

@pytest.mark.parametrize("lr_decay, warmup_steps", [("constant", 0), ("linear", 2)])
def test_adamw_matches_torch(lr_decay, warmup_steps):
    steps, lr, wd = 6, 1e-2, 0.01
    config = _config(optimizer="adamw", learning_rate=lr, weight_decay=wd, lr_decay=lr_decay,
                     warmup_ratio=0.0, warmup_steps=warmup_steps, max_grad_norm=0.0,
                     adam_b1=0.9, adam_b2=0.999, adam_eps=1e-8)
    optimizer, _ = optim.make_optimizer(config, steps)
    rng = np.random.default_rng(0)
    kernel0 = rng.normal(size=(4, 3)).astype(np.float32)
    bias0 = rng.normal(size=(3,)).astype(np.float32)
    params = {"kernel": jnp.asarray(kernel0), "bias": jnp.asarray(bias0)}
    state = optimizer.init(params)

    weight = torch.nn.Parameter(torch.tensor(kernel0))
    bias = torch.nn.Parameter(torch.tensor(bias0))
    torch_opt = torch.optim.AdamW(
        [{"params": [weight], "weight_decay": wd}, {"params": [bias], "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.999), eps=1e-8)
    if lr_decay == "linear":
        scheduler = transformers.get_linear_schedule_with_warmup(torch_opt, warmup_steps, steps)
    else:
        scheduler = transformers.get_constant_schedule(torch_opt)

    for step in range(steps):
        # Grads of a tiny linear model's squared error on fresh data each step.
        x = rng.normal(size=(5, 4)).astype(np.float32)
        y = rng.normal(size=(5, 3)).astype(np.float32)
        grads = jax.grad(lambda p: jnp.mean((x @ p["kernel"] + p["bias"] - y) ** 2))(params)
        updates, state = optimizer.update(grads, state, params)
        params = optax.apply_updates(params, updates)

        weight.grad = torch.tensor(np.asarray(grads["kernel"]))
        bias.grad = torch.tensor(np.asarray(grads["bias"]))
        torch_opt.step()
        scheduler.step()

        np.testing.assert_allclose(params["kernel"], weight.detach().numpy(), atol=1e-6, rtol=0)
        np.testing.assert_allclose(params["bias"], bias.detach().numpy(), atol=1e-6, rtol=0)
    assert not np.allclose(params["kernel"], kernel0)
