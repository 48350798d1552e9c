"""What share of the measured matmul peak the MiniLM step's own operations reach
at a step's shapes: the ceiling that MFU meets (experiments/results/bench_cpu.md).

  python experiments/bench_matmuls.py --shapes=6x88,32x128,32x17

For each ROWSxLENGTH: the Q/K/V/output projections, the MLP's up and down
matmuls and the attention scores (as FLOP/s over the peak), and exact GELU
(elements/s over the peak, for scale). Then what bounds the optimizer: AdamW's
update of --params float32 params as in the step (clipping and decay included)
against the memory bandwidth of a triad (a + s * b), and the least time its 7
arrays' traffic (read params, gradients and both moments; write three) takes at
that bandwidth. Prints one JSON object.
"""

import json
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from bench_common import matmul_peak

_SHAPES = flags.DEFINE_list("shapes", ["6x88", "32x128", "32x17"], "ROWSxLENGTH shapes.")
_HIDDEN = flags.DEFINE_integer("hidden", 384, "Hidden size (MiniLM: 384).")
_HEADS = flags.DEFINE_integer("heads", 12, "Attention heads.")
_PARAMS = flags.DEFINE_integer("params", 22_713_986, "Trained params (MiniLM with a head).")


def seconds(f, *args, donate=()) -> float:
    """Median seconds of jitted `f` on `args` over 30 calls after one; donated
    arguments are replaced by the outputs, as a train step's state is."""
    f = jax.jit(f, donate_argnums=donate)
    args = list(args)

    def call():
        out = f(*args)
        jax.block_until_ready(out)
        for i, value in zip(donate, out if donate else ()):
            args[i] = value

    call()
    times = []
    for _ in range(30):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def rate(f, *args, flops: float) -> float:
    """FLOP/s of jitted `f` on `args`."""
    return flops / seconds(f, *args)


def optimizer_bound(params: int) -> dict:
    """AdamW's update (as fmt.train.optim makes it) against the memory bandwidth."""
    import optax
    from fmt.train import optim
    from fmt.train.config import default_config
    optimizer, _ = optim.make_optimizer(default_config(), 10 ** 6)
    key = jax.random.PRNGKey(1)
    tree = {"kernel": jax.random.normal(key, (params,))}
    grads = jax.tree.map(lambda p: p * 1e-3, tree)

    def update(p, state, g, norm):  # the norm given, as the train step gives it
        updates, state = optimizer.update(g, state, p, grad_norm=norm)
        return optax.apply_updates(p, updates), state

    adamw = seconds(update, tree, optimizer.init(tree), grads, optax.tree.norm(grads),
                    donate=(0, 1))
    a, b = jax.random.normal(key, (params,)), grads["kernel"]
    triad = seconds(lambda a, b: (a + 0.5 * b,), a, b, donate=(0,))
    bandwidth = 3 * 4 * params / triad  # read two arrays, write one
    return dict(params=params, adamw_ms=1000 * adamw, triad_gb_per_s=bandwidth / 1e9,
                adamw_least_ms=1000 * 7 * 4 * params / bandwidth)


def main(argv):
    del argv
    peak = matmul_peak("float32")
    h, n = _HIDDEN.value, _HEADS.value
    key = jax.random.PRNGKey(0)
    out = {"peak_gflops": peak / 1e9}
    for spec in _SHAPES.value:
        rows, length = (int(v) for v in spec.split("x"))
        m = rows * length
        x, h4 = jax.random.normal(key, (m, h)), jax.random.normal(key, (m, 4 * h))
        square, up = jax.random.normal(key, (h, h)), jax.random.normal(key, (h, 4 * h))
        down = jax.random.normal(key, (4 * h, h))
        q = jax.random.normal(key, (rows, length, n, h // n))
        shares = {
            "projection": rate(jnp.matmul, x, square, flops=2 * m * h * h),
            "mlp_up": rate(jnp.matmul, x, up, flops=2 * m * h * 4 * h),
            "mlp_down": rate(jnp.matmul, h4, down, flops=2 * m * 4 * h * h),
            "scores": rate(lambda a, b: jnp.einsum("btnh,bsnh->bnts", a, b), q, q,
                           flops=2 * rows * n * length * length * (h // n)),
            "gelu_elements": rate(lambda a: jax.nn.gelu(a, approximate=False), h4,
                                  flops=m * 4 * h),
        }
        out[spec] = {name: round(value / peak, 3) for name, value in shares.items()}
    out["optimizer"] = optimizer_bound(_PARAMS.value)
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
