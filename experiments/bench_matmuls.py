"""What share of the measured matmul peak the MiniLM step's own operations reach
at a step's shapes: the ceiling that MFU meets (experiments/results/bench_cpu.md).

  python experiments/bench_matmuls.py --shapes=6x88,32x128,32x17

For each ROWSxLENGTH: the Q/K/V/output projections, the MLP's up and down
matmuls and the attention scores (as FLOP/s over the peak), and exact GELU
(elements/s over the peak, for scale). Prints one JSON object.
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


def rate(f, *args, flops: float) -> float:
    """FLOP/s of jitted `f` on `args` (median of 30 calls after one)."""
    f = jax.jit(f)
    f(*args).block_until_ready()
    times = []
    for _ in range(30):
        start = time.perf_counter()
        f(*args).block_until_ready()
        times.append(time.perf_counter() - start)
    return flops / sorted(times)[len(times) // 2]


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
    print(json.dumps(out))


if __name__ == "__main__":
    app.run(main)
