"""What the benchmarks share: model FLOPs, the matmul peak they are measured
against, and the process's peak memory."""

import resource
import time


def train_flops(config, rows: int, length: int) -> float:
    """Model FLOPs of one training step on [rows, length] (forward + backward = 3x
    forward; 2 FLOPs per multiply-add; weight matmuls and attention scores)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * h * h + 2 * h * config.intermediate_size)
    attention = layers * 2 * length * h  # Q.K^T and P.V, per token
    return 6.0 * rows * length * (weights + attention) + 6.0 * rows * h * h  # + pooler


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    """The process's resident memory now (Linux), to say where a peak comes from."""
    import os
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def matmul_peak(dtype: str) -> float:
    """The best FLOP/s of jitted matmuls shaped like the model's and larger."""
    import jax
    import jax.numpy as jnp
    best = 0.0
    for m, k, n in [(4096, 384, 1536), (4096, 1536, 384), (4096, 768, 3072), (2048, 2048, 2048)]:
        a = jnp.ones((m, k), dtype)
        b = jnp.ones((k, n), dtype)
        matmul = jax.jit(lambda a, b: a @ b)
        matmul(a, b).block_until_ready()
        times = []
        for _ in range(5):
            start = time.perf_counter()
            matmul(a, b).block_until_ready()
            times.append(time.perf_counter() - start)
        best = max(best, 2.0 * m * k * n / min(times))
    return best


def random_batch(feed, vocab_size: int, batch: int, length: int, seed: int = 0) -> dict:
    """`batch` rows of `length` random token ids (from 1000 on, past special
    tokens) with random binary labels, placed on the mesh by `feed` (a
    fmt.train.sharding.BatchFeeder): a full-length classification batch."""
    import numpy as np
    from fmt.data.features import Features
    rng = np.random.default_rng(seed)
    ids = [rng.integers(1000, vocab_size, length, dtype=np.int32) for _ in range(batch)]
    data = Features({"input_ids": ids, "token_type_ids": [np.zeros(length, np.int32)] * batch},
                    {"labels": rng.integers(0, 2, batch).astype(np.int32)})
    return feed(data, np.arange(batch), length)
