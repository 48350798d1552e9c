"""The pure train and eval steps. They are compiled by the loop with `jax.jit`;
nothing in here touches Python state, files or the clock.

The train state is a plain dict: `params`, `opt_state`, `step` and `rng` (the
run's base key; each step's dropout key is `fold_in(rng, step)`, so randomness
is a function of (seed, step) and survives a resume unchanged).
"""

import jax
import jax.numpy as jnp
import optax

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


def make_train_step(module, task, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, l1: float = 0.0, l2: float = 0.0):
    """A step that skips the update when the loss or a gradient is not finite.

    Such a step leaves params and optimizer state as they were and reports
    `nonfinite = 1`; the loop then stops the run or, if asked, goes on.
    """
    def train_step(state: dict, batch: dict) -> tuple[dict, dict]:
        dropout_rng = jax.random.fold_in(state["rng"], state["step"])

        def loss_fn(params):
            logits = module.apply({"params": params}, batch["input_ids"],
                                  batch["attention_mask"], batch["token_type_ids"],
                                  deterministic=False, rngs={"dropout": dropout_rng})
            weights = batch["weights"]
            loss = (task.loss(logits, batch["labels"]) * weights).sum() / jnp.maximum(
                weights.sum(), 1.0)
            return loss + penalty(params, l1, l2), loss

        (_, loss), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        grad_norm = optax.tree.norm(grads)
        finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
        keep_if_finite = lambda new, old: jax.tree.map(
            lambda n, o: jnp.where(finite, n, o), new, old)
        params = keep_if_finite(params, state["params"])
        opt_state = keep_if_finite(opt_state, state["opt_state"])
        metrics = {
            "train_loss": loss,
            "learning_rate": schedule(state["step"]),
            "l2_grads": grad_norm,
            "l2_updates": optax.tree.norm(updates),
            "l2_params": optax.tree.norm(params),
            "nonfinite": 1 - finite.astype(jnp.int32),
        }
        new_state = dict(params=params, opt_state=opt_state, step=state["step"] + 1,
                         rng=state["rng"])
        return new_state, metrics

    return train_step


def make_eval_step(module):
    def eval_step(params: dict, batch: dict) -> jax.Array:
        return module.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                            batch["token_type_ids"], deterministic=True)

    return eval_step
