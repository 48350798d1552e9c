"""Optimizers and learning-rate schedules from the run config (optax)."""

import math

import jax
import jax.numpy as jnp
import optax

from fmt.errors import UserError

OPTIMIZERS = ("adamw", "adam", "rmsprop", "sgd", "adafactor")
DECAYS = ("linear", "cosine", "constant")


def decay_mask(params):
    """True where weight decay applies: not biases and not LayerNorm scales,
    the split `transformers` makes with its `no_decay` list."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) not in ("bias", "scale"), params)


def warmup_steps(config, total_steps: int) -> int:
    if config.warmup_steps:
        return int(config.warmup_steps)
    return math.ceil(config.warmup_ratio * total_steps)  # as transformers' Trainer


def schedule(config, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then linear (to 0 at the last step), cosine or constant."""
    if config.lr_decay not in DECAYS:
        raise UserError(f"--config.lr_decay={config.lr_decay!r}: choose one of {DECAYS}")
    peak = config.learning_rate
    warmup = min(warmup_steps(config, total_steps), total_steps)
    rest = max(total_steps - warmup, 1)
    decay = {
        "linear": optax.linear_schedule(peak, 0.0, rest),
        "cosine": optax.cosine_decay_schedule(peak, rest),
        "constant": optax.constant_schedule(peak),
    }[config.lr_decay]
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_optimizer(config, total_steps: int) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Global-norm clipping, then the chosen optimizer on the schedule.

    AdamW and Adafactor decay weights decoupled from the gradient; for Adam,
    RMSprop and SGD `weight_decay` is added to the gradient (as torch does).
    """
    name = config.optimizer
    if name not in OPTIMIZERS:
        raise UserError(f"--config.optimizer={name!r}: choose one of {OPTIMIZERS}")
    lr = schedule(config, total_steps)
    wd = config.weight_decay
    if name == "adamw":
        opt = optax.adamw(lr, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps,
                          weight_decay=wd, mask=decay_mask)
    elif name == "adafactor":
        opt = optax.adafactor(lr, weight_decay_rate=wd or None, weight_decay_mask=decay_mask)
    else:
        opt = {
            "adam": lambda: optax.adam(lr, b1=config.adam_b1, b2=config.adam_b2,
                                       eps=config.adam_eps),
            "rmsprop": lambda: optax.rmsprop(lr, momentum=config.momentum or None),
            "sgd": lambda: optax.sgd(lr, momentum=config.momentum or None),
        }[name]()
        if wd:
            opt = optax.chain(optax.add_decayed_weights(wd, decay_mask), opt)
    if config.max_grad_norm:
        opt = optax.chain(clip_by_global_norm(config.max_grad_norm), opt)
    return optax.with_extra_args_support(opt), lr


def clip_by_global_norm(max_norm: float) -> optax.GradientTransformationExtraArgs:
    """Scale the gradient down to global norm `max_norm` where it is above it, as
    optax's and torch's clipping do, with two differences for speed: the norm is
    the train step's (`update(..., grad_norm=)`, which it has computed anyway)
    where given, and each element is multiplied by the scale, which XLA fuses
    into the moments' update, where optax's division is written out as a pass of
    its own over every gradient. Its state is optax's (empty)."""
    def update(updates, state, params=None, *, grad_norm=None, **extra_args):
        del params, extra_args
        norm = optax.tree.norm(updates) if grad_norm is None else grad_norm
        scale = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return jax.tree.map(lambda t: t * scale.astype(t.dtype), updates), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update)


def schedule_count(opt_state):
    """How many updates the optimizer has applied: the count its learning-rate
    schedule reads. It differs from the train step when updates were skipped
    (`skip_nonfinite_steps`), so the logged rate is read at it."""
    counts = [value for path, value in optax.tree.get_all_with_path(opt_state, "count")
              if getattr(path[-1], "tuple_name", None) == "ScaleByScheduleState"]
    if len(counts) != 1:
        raise ValueError(f"expected one learning-rate schedule in the optimizer, found "
                         f"{len(counts)}")
    return counts[0]
