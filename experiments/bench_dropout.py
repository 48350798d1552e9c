"""What dropout's random bits cost in the train step, by PRNG implementation.

Times fmt's train step (full fine-tuning, AdamW) of all-MiniLM-L6-v2 (or --model)
on full-length [--batch, seq_len] batches for each --seq_lens: once per PRNG
implementation (--config.rng_impl; fmt/train/step.py says what each one is)
with the checkpoint's dropout, and once with dropout 0 (`off`: no masks, and
the fused attention path), the floor.

Every variant is compiled first; then they are timed in interleaved rounds (a
discarded warm-up round, then --rounds rounds of --steps steps each), so that a
drift in the machine's speed falls on all of them alike. Reported: the median
wall-clock ms per step (with its quartiles), the median CPU ms of this process
per step (steadier on a shared machine), and dropout's share of the step,
(variant - off) / variant, by each. The last line is one JSON object.

  python experiments/bench_dropout.py
  python experiments/bench_dropout.py --seq_lens=128 --impls=threefry2x32,rbg
"""

import json
import sys
import time

from absl import app, flags

import bench_common

_MODEL = flags.DEFINE_string("model", "sentence-transformers/all-MiniLM-L6-v2",
                             "Checkpoint folder, hub id or packaged model.")
_BATCH = flags.DEFINE_integer("batch", 32, "Examples per step.")
_SEQ_LENS = flags.DEFINE_list("seq_lens", ["64", "128"], "Padded lengths to time.")
_IMPLS = flags.DEFINE_list("impls", ["philox4x32", "threefry2x32", "rbg", "unsafe_rbg"],
                           "PRNG implementations to time (jax.random.key's impl names).")
_STEPS = flags.DEFINE_integer("steps", 2, "Timed steps per variant per round.")
_ROUNDS = flags.DEFINE_integer("rounds", 10, "Timed rounds (after one warm-up round).")


def _compiled_step(model, impl: str, batch, mesh):
    """(jitted step compiled for `batch`, a fresh state), as fmt.train.loop builds them."""
    from fmt.tasks.classification import Classification
    from fmt.train import loop
    from fmt.train.config import default_config
    config = default_config()
    config.batch_size, config.rng_impl = _BATCH.value, impl
    state, steps = loop.compile_steps(config, model, Classification(), 10 ** 6, mesh)
    return steps.train_step.lower(state, batch).compile(), state


def run() -> list[dict]:
    import jax
    import numpy as np
    from fmt import model as model_lib
    from fmt.train import sharding

    mesh = sharding.make_mesh()
    dropped = model_lib.from_pretrained(_MODEL.value, num_labels=2)
    plain = model_lib.from_pretrained(_MODEL.value, num_labels=2, dropout=0.0)
    variants = [(impl, dropped, impl) for impl in _IMPLS.value]
    variants.append(("off", plain, _IMPLS.value[0]))
    runs = []  # [name, length, compiled step, state, batch, times]
    for length in map(int, _SEQ_LENS.value):
        batch = bench_common.random_batch(sharding.BatchFeeder(mesh, _BATCH.value),
                                          dropped.config.vocab_size, _BATCH.value, length,
                                          seed=length)
        for name, model, impl in variants:
            start = time.perf_counter()
            compiled, state = _compiled_step(model, impl, batch, mesh)
            print(f"compiled {name} at {length} in {time.perf_counter() - start:.0f} s",
                  file=sys.stderr, flush=True)
            runs.append([name, length, compiled, state, batch, []])
    print("timing", file=sys.stderr, flush=True)
    for round_ in range(_ROUNDS.value + 1):
        for run_ in runs:
            _, _, compiled, state, batch, times = run_
            for _ in range(_STEPS.value):
                start, cpu = time.perf_counter(), time.process_time()
                state, metrics = compiled(state, batch)
                jax.block_until_ready((state, metrics))
                if round_:  # round 0 warms up
                    times.append((time.perf_counter() - start, time.process_time() - cpu))
            run_[3] = state
    rows = []
    for name, length, _, _, _, times in runs:
        wall, cpu = (1000 * np.asarray(t) for t in zip(*times))
        rows.append(dict(variant=name, seq_len=length, batch=_BATCH.value, steps=len(wall),
                         step_ms=float(np.median(wall)), q1_ms=float(np.percentile(wall, 25)),
                         q3_ms=float(np.percentile(wall, 75)), cpu_ms=float(np.median(cpu))))
    for row in rows:
        off = next(r for r in rows if (r["variant"], r["seq_len"]) == ("off", row["seq_len"]))
        row["dropout_share"] = 1 - off["step_ms"] / row["step_ms"]
        row["dropout_cpu_share"] = 1 - off["cpu_ms"] / row["cpu_ms"]
    return rows


def main(argv):
    del argv
    rows = run()
    print(f"{'variant':<14}{'seq':>5}{'ms/step':>9}{'q1-q3':>15}{'share':>8}"
          f"{'cpu ms':>9}{'share':>8}")
    for r in rows:
        print(f"{r['variant']:<14}{r['seq_len']:>5}{r['step_ms']:>9.0f}"
              f"{r['q1_ms']:>9.0f}-{r['q3_ms']:<5.0f}{100 * r['dropout_share']:>7.1f}%"
              f"{r['cpu_ms']:>9.0f}{100 * r['dropout_cpu_share']:>7.1f}%")
    print(json.dumps(dict(model=_MODEL.value, rows=rows)))


if __name__ == "__main__":
    app.run(main)
