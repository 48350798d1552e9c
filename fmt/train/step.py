"""The pure train and eval steps. They are compiled by the loop with `jax.jit`;
nothing in here touches Python state, files or the clock.

The train state is a plain dict: `params`, `opt_state`, `step` and `rng` (the
run's base key; each step's dropout key is `fold_in(rng, step)`, so randomness
is a function of (seed, step) and survives a resume unchanged), and with LoRA
`frozen`, the params that no update touches.

The `rng` is raw uint32 key data (`jax.random.key_data`), so checkpoints hold a
plain array; the step wraps it as a key of the run's PRNG implementation
(`--config.rng_impl`), which sets what dropout's random bits cost. The step of
all-MiniLM-L6-v2 at batch 32 on 2 CPU cores (experiments/bench_dropout.py):

                  64 tokens   128 tokens
  dropout off      700 ms     1572 ms
  philox4x32       752        1707
  threefry2x32     785        1876
  rbg              799        1850
  unsafe_rbg       810        1873

  philox4x32    Philox-4x32-10 in JAX arithmetic: the same bits on every backend
                and sharding, at half to two thirds of threefry's dropout cost on
                CPU. Not the default: in jax 0.10.2 its `mulhi` does not compile
                on tensor-parallel meshes ("Unable to convert MHLO to StableHLO");
                on data/fsdp meshes and one device it works. Not measured on GPU
                or TPU.
  threefry2x32  JAX's default, and fmt's (it compiles on every mesh): 20
                add-rotate-xor rounds per draw; slow to compile and to run on TPU.
  rbg           XLA's RngBitGenerator for the bits (threefry for fold_in): the
                fastest on TPU (take it there); CPU and GPU expand it into Philox
                arithmetic, on CPU no faster than threefry. Its bits differ by
                backend, and XLA does not split a sharded draw across devices
                unless told to (TPU: --xla_tpu_spmd_rng_bit_generator_unsafe=1),
                which then makes the bits depend on the sharding.
  unsafe_rbg    rbg that also derives keys (fold_in, split) with RngBitGenerator:
                a derivation of untested quality, and no faster here, where a
                step derives a few dozen keys.

Each is a pure function of (seed, step): a resume is bit-exact.
"""

import jax
import jax.numpy as jnp
import optax

from fmt.errors import UserError
from fmt.train import optim
from fmt.train.optim import decay_mask


def penalty(params, l1: float, l2: float) -> jax.Array:
    """Optional L1 and (1/2) L2 penalties on the weights that weight decay covers."""
    leaves = [p for p, use in zip(jax.tree.leaves(params), jax.tree.leaves(decay_mask(params)))
              if use]
    total = jnp.zeros((), jnp.float32)
    if l1:
        total += l1 * sum(jnp.abs(p.astype(jnp.float32)).sum() for p in leaves)
    if l2:
        total += 0.5 * l2 * sum(jnp.square(p.astype(jnp.float32)).sum() for p in leaves)
    return total


def _microbatches(batch: dict, count: int) -> dict:
    """[batch, ...] -> [count, batch // count, ...], microbatch i holding rows
    i, i + count, ...: strided, so each one is spread over all the devices."""
    return jax.tree.map(
        lambda x: x.reshape(x.shape[0] // count, count, *x.shape[1:]).swapaxes(0, 1), batch)


def _whole(params, frozen):
    return params


RNG_IMPLS = ("philox4x32", "threefry2x32", "rbg", "unsafe_rbg")  # --config.rng_impl; see above


def check_rng_impl(impl: str) -> None:
    """Only the implementations weighed above, named as the flag that chose them."""
    if impl not in RNG_IMPLS:
        raise UserError(f"--config.rng_impl={impl!r}: choose one of {', '.join(RNG_IMPLS)}")


def initial_rng(seed: int, impl: str = "threefry2x32") -> jax.Array:
    """The state's `rng`: the run's base key as raw key data (threefry2x32: the
    uint32[2] that `fold_in(PRNGKey(seed), 1)` has always been)."""
    check_rng_impl(impl)
    return jax.random.key_data(jax.random.fold_in(jax.random.key(seed, impl=impl), 1))


def _accumulated(summed_loss, params, batch, step_rng, frozen, count: int):
    """(loss, weight, gradient) of the batch as `count` microbatches: the losses and
    gradients summed over them, then divided by their summed weight."""
    def accumulate(carry, micro):
        index, microbatch = micro
        (loss, weight), grads = jax.value_and_grad(summed_loss, has_aux=True)(
            params, microbatch, jax.random.fold_in(step_rng, index), frozen)
        return jax.tree.map(jnp.add, carry, (loss, weight, grads)), None

    zeros = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32),
             jax.tree.map(jnp.zeros_like, params))
    (loss_sum, weight_sum, grad_sum), _ = jax.lax.scan(
        accumulate, zeros, (jnp.arange(count), _microbatches(batch, count)))
    # The weight of the whole global batch (examples, or target tokens over every
    # microbatch, device and process): the same update however it is split.
    total_weight = jnp.maximum(weight_sum, 1.0)
    return (loss_sum / total_weight, weight_sum,
            jax.tree.map(lambda g: g / total_weight, grad_sum))


def make_train_step(module, task, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, l1: float = 0.0, l2: float = 0.0,
                    grad_accum_steps: int = 1, materialize=_whole,
                    rng_impl: str = "threefry2x32"):
    """One optimizer update over a batch, whose gradient is accumulated over
    `grad_accum_steps` microbatches: the same update as the whole batch at once,
    since the loss is the weighted sum over all rows divided by their weight.

    The task gives the loss as a (sum, weight) pair over each microbatch; the
    step divides the summed loss and gradient by the summed weight.

    A step whose loss or gradient is not finite leaves params and optimizer
    state as they were and reports `nonfinite = 1`; the loop then stops the run
    or, if asked, goes on.

    `materialize(params, frozen)` gives the model's params from the trained ones
    and the state's `frozen` part (LoRA: fmt.train.trainable); by default the
    trained params are all of them. `rng_impl` reads the state's `rng` (made by
    `initial_rng` with the same implementation).

    The optimizer's update is given the step's gradient norm (`grad_norm=`) for
    `optim.clip_by_global_norm`; an optimizer that takes no extra arguments is
    wrapped to ignore it.
    """
    optimizer = optax.with_extra_args_support(optimizer)

    def summed_loss(params, batch, rng, frozen):
        outputs = module.apply({"params": materialize(params, frozen)},
                               **task.model_inputs(batch),
                               deterministic=False, rngs={"dropout": rng})
        return task.loss(outputs, batch)

    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        params, frozen = state["params"], state.get("frozen")
        base = jax.random.wrap_key_data(state["rng"], impl=rng_impl)
        step_rng = jax.random.fold_in(base, state["step"])

        if grad_accum_steps == 1:
            # One microbatch: its weight is known inside the differentiated function,
            # so the division is the scalar loss's, not a pass over every gradient.
            def mean_loss(params):
                loss_sum, weight = summed_loss(params, batch, jax.random.fold_in(step_rng, 0),
                                               frozen)
                return loss_sum / jnp.maximum(weight, 1.0), weight

            (loss, weight_sum), grads = jax.value_and_grad(mean_loss, has_aux=True)(params)
        else:
            loss, weight_sum, grads = _accumulated(summed_loss, params, batch, step_rng,
                                                   frozen, grad_accum_steps)
        if l1 or l2:
            grads = jax.tree.map(jnp.add, grads, jax.grad(penalty)(params, l1, l2))
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)

        def update(_):
            updates, opt_state = optimizer.update(grads, state["opt_state"], params,
                                                  grad_norm=grad_norm)
            return optax.apply_updates(params, updates), opt_state

        def keep(_):
            return params, state["opt_state"]

        # A conditional, not a select over every leaf: XLA fuses the new moments
        # into both their own output and the params' update, so a select that
        # also needs the old moments costs a copy of each and keeps old and new
        # state alive at once (~40% more update time and ~115 MB on MiniLM).
        # Likewise nothing else reads the updates or the new params: a norm of
        # either costs another pass, so the loop takes the params' norm only
        # when it logs.
        new_params, opt_state = jax.lax.cond(finite, update, keep, None)
        metrics = {
            "train_loss": loss,
            "learning_rate": schedule(optim.schedule_count(state["opt_state"])),
            "l2_grads": grad_norm,
            "nonfinite": 1 - finite.astype(jnp.int32),
        }
        new_state = dict(state, params=new_params, opt_state=opt_state, step=state["step"] + 1)
        return new_state, metrics

    return train_step


def make_eval_step(module, task):
    """(params, batch) -> the task's per-row eval outputs, reduced on device."""
    def eval_step(params: dict, batch: dict) -> dict:
        return task.eval_apply(module, params, batch)

    return eval_step

