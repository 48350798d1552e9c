"""How fast fmt fine-tunes, against what a researcher would otherwise run.

Trains all-MiniLM-L6-v2 (or --model) for --steps steps of --batch examples drawn
from SST-2's training set, its real length distribution, three ways, each in a
fresh process so that peak memory is its own:

  fmt     fmt's train step, length buckets fitted to the data (--num_buckets)
  pad128  the same train step, every batch padded to --seq_len (the classic Flax
          GLUE example)
  torch   PyTorch `transformers` BertForSequenceClassification with AdamW and
          dynamic padding (each batch padded to its longest sequence)

All three see the same examples; fmt groups them by length, the others take
them in random batches. Reported: examples/s, real (non-pad) tokens/s, padding
efficiency (real / computed tokens), compilations and compile seconds, peak
host memory (and device memory on a GPU), and MFU: model FLOPs of the computed
shapes per second over the matmul peak measured here on the same device. The
last line is one JSON object.

  python experiments/bench.py --data_dir=../shared/data/glue
  python experiments/bench.py --sweep            # examples/s and MFU by shape
  python experiments/bench.py --model=bert-base-uncased --dtype=bfloat16  # a GPU
"""

import json
import os
import pathlib
import resource
import subprocess
import sys
import time

from absl import app, flags

ROOT = pathlib.Path(__file__).resolve().parents[1]
_MODEL = flags.DEFINE_string("model", "sentence-transformers/all-MiniLM-L6-v2",
                             "Checkpoint folder, hub id or packaged model.")
_DATA_DIR = flags.DEFINE_string("data_dir", str(ROOT / "tests/data/glue"),
                                "glue_data folder with SST-2/train.tsv (the shipped slice "
                                "by default; ../shared/data/glue for all of it).")
_BATCH = flags.DEFINE_integer("batch", 32, "Examples per step.")
_SEQ_LEN = flags.DEFINE_integer("seq_len", 128, "max_seq_length: truncation and pad128's length.")
_STEPS = flags.DEFINE_integer("steps", 40, "Timed steps per peer, after the warm-up.")
_NUM_BUCKETS = flags.DEFINE_integer("num_buckets", 10, "fmt's bucket count (fitted lengths).")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "Compute dtype (torch: autocast).")
_REMAT = flags.DEFINE_bool("remat", False, "fmt: recompute layer activations.")
_PEERS = flags.DEFINE_list("peers", ["fmt", "pad128", "torch"], "What to run.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Print fmt's scaling table over seq_len x batch "
                           "instead (a shape whose step needs more than half the host's "
                           "memory is reported, not run).")
_SWEEP_STEPS = flags.DEFINE_integer("sweep_steps", 1, "Timed steps per sweep shape, at least "
                                     "(more while under 5 s).")
_PEER = flags.DEFINE_string("peer", "", "Internal: run one peer in this process.")
_PEAK = flags.DEFINE_float("peak_flops", 0.0, "Internal: the measured matmul peak.")

SWEEP_LENGTHS = (64, 128, 256, 512)
SWEEP_BATCHES = (8, 32, 128)


# --- shared: the examples, the FLOPs, the clock -----------------------------

def _config():
    from fmt.train.config import default_config
    config = default_config()
    config.model, config.task, config.data_dir = _MODEL.value, "sst2", _DATA_DIR.value
    config.batch_size, config.max_seq_length = _BATCH.value, _SEQ_LEN.value
    config.dtype, config.remat = _DTYPE.value, _REMAT.value
    config.max_steps = 10 ** 6  # the schedule's length only; warmup stays 10% of it
    return config


def _examples(tokenizer):
    """SST-2 training sentences as token ids, read and tokenized by fmt."""
    from fmt.data import datasets, tokenize
    data = datasets.limit(datasets.load(_config()), _config())
    return tokenize.encode(tokenizer, data.train, data.text_fields, _SEQ_LEN.value,
                           allow_empty=True)


def _batches(encoded):
    """The sample every peer trains on, as fmt's bucketed batches and as random ones.

    fmt's plan is shuffled over buckets, so its first batches are a fair sample
    of the training set; the others get the same examples in random batches.
    """
    import numpy as np
    from fmt.data import batching
    lengths = encoded.lengths
    buckets = batching.fit_bucket_lengths(lengths, _NUM_BUCKETS.value, int(lengths.max()))
    count = _STEPS.value + max(len(buckets), 3)  # room for warm-up batches
    plan = batching.train_plan(encoded, _BATCH.value, buckets, seed=0, epoch=0)[:count]
    sample = np.concatenate([indices for indices, _ in plan])
    shuffled = np.random.default_rng(0).permutation(sample)
    random = [shuffled[i:i + _BATCH.value] for i in range(0, len(shuffled), _BATCH.value)]
    return plan, random


def train_flops(config, rows: int, length: int) -> float:
    """Model FLOPs of one training step on [rows, length] (forward + backward = 3x
    forward; 2 FLOPs per multiply-add; weight matmuls and attention scores)."""
    h, layers = config.hidden_size, config.num_hidden_layers
    weights = layers * (4 * h * h + 2 * h * config.intermediate_size)
    attention = layers * 2 * length * h  # Q.K^T and P.V, per token
    return 6.0 * rows * length * (weights + attention) + 6.0 * rows * h * h  # + pooler


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _summary(name, seconds, batches, real_tokens, computed_tokens, flops, peak_flops, **extra):
    steps, examples = len(batches), sum(len(indices) for indices in batches)
    return dict(peer=name, examples_per_s=examples / seconds,
                tokens_per_s=real_tokens / seconds,
                padding_efficiency=real_tokens / computed_tokens,
                step_ms=1000 * seconds / steps,
                mfu=flops / seconds / peak_flops if peak_flops else None,
                peak_mb=_peak_mb(), **extra)


# --- the matmul peak ---------------------------------------------------------

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


# --- fmt and pad128 ----------------------------------------------------------

def run_fmt(padded: bool, peak_flops: float) -> dict:
    import jax
    import numpy as np
    from fmt import model as model_lib
    from fmt.tasks.classification import Classification
    from fmt.train import loop, sharding

    compile_seconds = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compile_seconds.append(seconds)
        if event.startswith("/jax/core/compile/") else None)
    config = _config()
    model = model_lib.from_pretrained(config.model, num_labels=2, dtype=loop.DTYPES[config.dtype],
                                      remat=config.remat)
    encoded = _examples(model.tokenizer)
    plan, random = _batches(encoded)
    if padded:
        plan = [(indices, _SEQ_LEN.value) for indices in random]
    task = Classification()
    state, steps = loop.compile_steps(config, model, task, config.max_steps,
                                      sharding.make_mesh(config.mesh))
    feed = steps.train_feed
    # Warm-up: one step of every shape (compiles), then a timed run.
    compile_seconds.clear()
    warmup, timed = _split_warmup(plan)
    for indices, length in warmup:
        state, metrics = steps.train_step(state, feed(encoded, indices, length))
    jax.block_until_ready(state)
    compile_s = sum(compile_seconds)
    compilations = steps.train_traces.count
    start = time.perf_counter()
    for indices, length in timed:
        state, metrics = steps.train_step(state, feed(encoded, indices, length))
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    assert steps.train_traces.count == compilations, "recompiled while timing"
    real = float(sum(encoded.lengths[indices].sum() for indices, _ in timed))
    computed = float(sum(_BATCH.value * length for _, length in timed))
    flops = sum(train_flops(model.config, _BATCH.value, length) for _, length in timed)
    extra = dict(compilations=compilations, compile_s=compile_s,
                 buckets=sorted({length for _, length in plan}),
                 final_loss=float(np.asarray(sharding.to_host(metrics)["train_loss"])))
    device = jax.devices()[0]
    if device.platform != "cpu":
        extra["device_peak_mb"] = device.memory_stats()["peak_bytes_in_use"] / 2 ** 20
    return _summary("pad128" if padded else "fmt", seconds, [i for i, _ in timed], real, computed, flops,
                    peak_flops, **extra)


def _split_warmup(plan):
    """The first batch of each shape for the warm-up; the rest, `--steps` of them, timed."""
    seen, warmup, timed = set(), [], []
    for indices, length in plan:
        (timed if length in seen else warmup).append((indices, length))
        seen.add(length)
    return warmup, timed[:_STEPS.value]


# --- the PyTorch peer --------------------------------------------------------

def run_torch(peak_flops: float) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, get_scheduler
    sys.path.insert(0, str(ROOT / "experiments"))
    import torch_peer
    from fmt import hf

    config = _config()
    folder = hf.resolve_folder(config.model)
    encoded = _examples(hf.load_tokenizer(folder))
    _, random = _batches(encoded)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), num_labels=2)
    model.to(device).train()
    optimizer = torch_peer.make_optimizer(model, config)
    scheduler = get_scheduler("linear", optimizer, 100, config.max_steps)
    autocast = torch.autocast(device, dtype=torch.bfloat16,
                              enabled=config.dtype == "bfloat16")

    def step(indices):
        batch = {k: v.to(device) for k, v in
                 torch_peer.padded(encoded, indices).items()}
        labels = torch.from_numpy(encoded.examples["labels"][indices]).long().to(device)
        return torch_peer.train_step(model, optimizer, scheduler, batch, labels,
                                     config.max_grad_norm, autocast)

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    warmup, timed = random[:3], random[3:3 + _STEPS.value]
    for indices in warmup:
        step(indices)
    sync()
    start = time.perf_counter()
    for indices in timed:
        loss = step(indices)
    final_loss = float(loss)
    sync()
    seconds = time.perf_counter() - start
    lengths = [int(encoded.lengths[indices].max()) for indices in timed]
    real = float(sum(encoded.lengths[indices].sum() for indices in timed))
    computed = float(sum(len(indices) * n for indices, n in zip(timed, lengths)))
    cfg = model.config
    flops = sum(train_flops(cfg, len(indices), n) for indices, n in zip(timed, lengths))
    extra = dict(threads=torch.get_num_threads(), final_loss=final_loss)
    if device == "cuda":
        extra["device_peak_mb"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return _summary("torch", seconds, timed, real, computed, flops, peak_flops, **extra)


# --- the scaling sweep -------------------------------------------------------

def run_sweep(peak_flops: float) -> list[dict]:
    """fmt's train step on full-length [batch, seq_len] batches of every sweep shape.
    A shape whose compiled step needs more temporary memory than half the host
    has is reported, not run."""
    import jax
    import numpy as np
    from fmt import model as model_lib
    from fmt.data.features import Features
    from fmt.tasks.classification import Classification
    from fmt.train import loop, sharding

    config = _config()
    model = model_lib.from_pretrained(config.model, num_labels=2, dtype=loop.DTYPES[config.dtype],
                                      remat=config.remat)
    budget = 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    rng = np.random.default_rng(0)
    rows = []
    for batch in SWEEP_BATCHES:
        config.batch_size = config.eval_batch_size = batch
        for length in SWEEP_LENGTHS:
            state, steps = loop.compile_steps(config, model, Classification(),
                                              config.max_steps, sharding.make_mesh(config.mesh))
            ids = [rng.integers(1000, model.config.vocab_size, length, dtype=np.int32)
                   for _ in range(batch)]
            data = Features({"input_ids": ids,
                             "token_type_ids": [np.zeros(length, np.int32)] * batch},
                            {"labels": rng.integers(0, 2, batch).astype(np.int32)})
            step_batch = steps.train_feed(data, np.arange(batch), length)
            train_step = steps.train_step.lower(state, step_batch).compile()
            temp_mb = train_step.memory_analysis().temp_size_in_bytes / 2 ** 20
            row = dict(seq_len=length, batch=batch, temp_mb=temp_mb)
            if temp_mb * 2 ** 20 > budget:
                rows.append(row)
                print(f"sweep: {batch}x{length} skipped: needs {temp_mb:.0f} MB of "
                      "temporaries", file=sys.stderr, flush=True)
                continue
            state, _ = train_step(state, step_batch)
            jax.block_until_ready(state)
            count, start = 0, time.perf_counter()
            while count < _SWEEP_STEPS.value or (count < 20 and
                                                 time.perf_counter() - start < 5.0):
                state, _ = train_step(state, step_batch)
                jax.block_until_ready(state)
                count += 1
            seconds = (time.perf_counter() - start) / count
            row.update(examples_per_s=batch / seconds, tokens_per_s=batch * length / seconds,
                       mfu=train_flops(model.config, batch, length) / seconds / peak_flops)
            rows.append(row)
            print(f"sweep: {row}", file=sys.stderr, flush=True)
            del state, steps, step_batch, train_step
    return rows


# --- driver ------------------------------------------------------------------

def _child(peer: str, peak_flops: float):
    """Run one peer in a fresh Python process; its JSON is the last stdout line."""
    args = [sys.executable, __file__, f"--peer={peer}", f"--peak_flops={peak_flops}",
            *[a for a in sys.argv[1:] if not a.startswith(("--peer", "--peers"))]]
    result = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        sys.exit(f"bench: the {peer} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])



def main(argv):
    del argv
    if _PEER.value:
        run = {"fmt": lambda: run_fmt(False, _PEAK.value),
               "pad128": lambda: run_fmt(True, _PEAK.value),
               "torch": lambda: run_torch(_PEAK.value),
               "sweep": lambda: run_sweep(_PEAK.value)}
        print(json.dumps(run[_PEER.value]()))
        return
    peak = matmul_peak({"float32": "float32", "bfloat16": "bfloat16"}[_DTYPE.value])
    print(f"matmul peak ({_DTYPE.value}): {peak / 1e9:.1f} GFLOP/s")
    if _SWEEP.value:
        rows = _child("sweep", peak)
        print("| seq_len | batch | examples/s | tokens/s | MFU | step temporaries MB |\n"
              "|---|---|---|---|---|---|")
        for r in rows:
            if "mfu" not in r:
                print(f"| {r['seq_len']} | {r['batch']} | - | - | - | {r['temp_mb']:.0f} "
                      "(more than half the host: not run) |")
                continue
            print(f"| {r['seq_len']} | {r['batch']} | {r['examples_per_s']:.1f} | "
                  f"{r['tokens_per_s']:.0f} | {r['mfu']:.2f} | {r['temp_mb']:.0f} |")
        print(json.dumps({"matmul_peak_gflops": peak / 1e9, "sweep": rows}))
        return
    results = {}
    for peer in _PEERS.value:
        results[peer] = _child(peer, peak)
    header = ("peer", "examples/s", "real tokens/s", "padding eff", "step ms", "MFU",
              "compiles", "compile s", "peak MB")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name, r in results.items():
        mfu = f"{r['mfu']:.2f}" if r["mfu"] is not None else "-"
        print(f"| {name} | {r['examples_per_s']:.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['padding_efficiency']:.2f} | {r['step_ms']:.0f} | {mfu} | "
              f"{r.get('compilations', '-')} | {r.get('compile_s', 0):.1f} | "
              f"{r['peak_mb']:.0f} |")
    summary = {"model": _MODEL.value, "batch": _BATCH.value, "seq_len": _SEQ_LEN.value,
               "dtype": _DTYPE.value, "matmul_peak_gflops": peak / 1e9}
    for name, r in results.items():
        for key, value in r.items():
            if key != "peer":
                summary[f"{name}_{key}"] = value
    if "fmt" in results:
        fmt = results["fmt"]
        summary.update(padding_efficiency=fmt["padding_efficiency"], mfu=fmt["mfu"],
                       compilations=fmt["compilations"])
        if "torch" in results:
            summary["speedup"] = fmt["examples_per_s"] / results["torch"]["examples_per_s"]
    print(json.dumps(summary))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(main)
