"""How fast fmt fine-tunes, against what a researcher would otherwise run.

Trains all-MiniLM-L6-v2 (or --model) for --steps steps of --batch examples drawn
from SST-2's training set, its real length distribution, several ways, each in a
fresh process so that peak memory is its own:

  fmt      fmt's train step on packed rows (`--config.packing`, fmt.data.packing)
  buckets  the same step on length buckets fitted to the data (--num_buckets)
  pad128   the same step, every batch padded to --seq_len (the classic Flax
           GLUE example)
  torch    PyTorch `transformers` BertForSequenceClassification with AdamW and
           dynamic padding (each batch padded to its longest sequence)

All see the same examples: fmt draws them as stratified batches, buckets groups
them by length, the others take them in random batches. Reported: examples/s, real (non-pad) tokens/s, padding
efficiency (real / computed tokens), compilations and compile seconds, peak
host memory (and device memory on a GPU), and MFU: model FLOPs of the computed
shapes per second over the matmul peak measured here on the same device. The
last line is one JSON object.

  python experiments/bench.py --data_dir=../shared/data/glue
  python experiments/bench.py --sweep            # examples/s and MFU by shape
  python experiments/bench.py --model=bert-base-uncased --dtype=bfloat16  # a GPU
"""

import dataclasses
import json
import os
import pathlib
import resource
import sys
import time

from absl import app, flags

import bench_sweep
from bench_common import matmul_peak, peak_mb, rss_mb, train_flops

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
_RNG_IMPL = flags.DEFINE_string("rng_impl", "philox4x32", "fmt: dropout's PRNG "
                                "(--config.rng_impl; philox4x32 is the fast one on CPU).")
_PROFILE = flags.DEFINE_bool("profile", False, "fmt peers: after timing, trace the most "
                              "common shape's steps with jax.profiler and print where the step's "
                              "time goes, op by op (experiments/bench_profile.py).")
_HUGE_PAGES = flags.DEFINE_bool("huge_pages", True, "fmt's peers run with glibc's huge "
                                 "pages, as fmt's scripts do (fmt/huge_pages.py).")
_TORCH_HUGE_PAGES = flags.DEFINE_bool("torch_huge_pages", False, "The torch peer runs with "
                                      "them too (not what a torch user gets by default).")
_PEERS = flags.DEFINE_list("peers", ["fmt", "buckets", "torch"],
                           "What to run: fmt, buckets, pad128, torch.")
_SWEEP = flags.DEFINE_bool("sweep", False, "Print fmt's and the peer's speed, MFU and peak "
                           "memory by shape (--sweep_shapes) instead (a shape whose step "
                           "needs more than half the host's memory is reported, not run).")
_SWEEP_SHAPES = flags.DEFINE_list("sweep_shapes", ["64x32", "128x32", "256x32", "512x32",
                                                   "128x8", "512x8", "1024x8"],
                                  "SEQ_LENxBATCH shapes of --sweep.")
_SWEEP_STEPS = flags.DEFINE_integer("sweep_steps", 1, "Timed steps per sweep shape, at least "
                                     "(more while under 5 s).")
_END_TO_END = flags.DEFINE_bool("end_to_end", False, "Time whole runs instead, command to "
                                "results.json, fmt (cold and warm compilation cache) against "
                                "torch_peer.py (experiments/bench_end_to_end.py).")
_E2E_TASKS = flags.DEFINE_list("end_to_end_tasks", ["cola:3", "sst2:1"],
                               "GLUE TASK:EPOCHS of --end_to_end.")
_E2E_WARM = flags.DEFINE_bool("end_to_end_warm", True, "--end_to_end: also rerun fmt on the "
                              "cache its first run filled.")
_E2E_OVERRIDES = flags.DEFINE_list("end_to_end_overrides", [], "--end_to_end: config "
                                   "overrides for both peers, e.g. learning_rate=1e-4,seed=0.")
_PEER = flags.DEFINE_string("peer", "", "Internal: run one peer in this process.")
_SWEEP_SHAPE = flags.DEFINE_string("sweep_shape", "", "Internal: the sweep shape of --peer.")
_PEAK = flags.DEFINE_float("peak_flops", 0.0, "Internal: the measured matmul peak.")


# --- shared: the examples, the FLOPs, the clock -----------------------------

def _config():
    from fmt.train.config import default_config
    config = default_config()
    config.model, config.task, config.data_dir = _MODEL.value, "sst2", _DATA_DIR.value
    config.batch_size, config.max_seq_length = _BATCH.value, _SEQ_LEN.value
    config.dtype, config.remat, config.rng_impl = _DTYPE.value, _REMAT.value, _RNG_IMPL.value
    config.max_steps = 10 ** 6  # the schedule's length only; warmup stays 10% of it
    return config


def _examples(tokenizer):
    """SST-2 training sentences as token ids, read and tokenized by fmt."""
    from fmt.data import datasets, tokenize
    data = datasets.limit(datasets.load(_config()), _config())
    return tokenize.encode(tokenizer, data.train, data.text_fields, _SEQ_LEN.value,
                           allow_empty=True)


def _batches(encoded, mode: str = "random", quantum: int = 1):
    """The sample every peer trains on (the first stratified batches of an epoch:
    a fair sample of the training set), as `mode` batches it: "packed" (fmt's
    packed plan over the sample, row length and counts chosen over the whole
    set), "buckets" (length buckets fitted to the set), or "random" batches."""
    import numpy as np
    from fmt.data import batching, packing
    from fmt.data.features import Features
    lengths = encoded.lengths
    count = _STEPS.value + _NUM_BUCKETS.value + 3  # room for warm-up batches
    sample = np.concatenate(packing.stratified_batches(lengths, _BATCH.value, 0, 0)[:count])
    if mode == "packed":
        shapes = packing.choose(lengths, _BATCH.value, _SEQ_LEN.value, 0, 1, quantum)
        plan = packing.plan(lengths[sample], _BATCH.value, shapes, 0, 0)
        return [(dataclasses.replace(p, examples=sample[p.examples]), n) for p, n in plan]
    if mode == "buckets":
        buckets = batching.fit_bucket_lengths(lengths, _NUM_BUCKETS.value, int(lengths.max()))
        subset = Features({"input_ids": [encoded.tokens["input_ids"][i] for i in sample]})
        plan = batching.train_plan(subset, _BATCH.value, buckets, 0, 0)
        return [(sample[indices], n) for indices, n in plan]
    shuffled = np.random.default_rng(0).permutation(sample)
    return [(shuffled[i:i + _BATCH.value], _SEQ_LEN.value)
            for i in range(0, len(shuffled) - _BATCH.value + 1, _BATCH.value)]


def _summary(name, seconds, batches, real_tokens, computed_tokens, flops, peak_flops, **extra):
    steps, examples = len(batches), sum(len(indices) for indices in batches)
    return dict(peer=name, examples_per_s=examples / seconds,
                tokens_per_s=real_tokens / seconds,
                padding_efficiency=real_tokens / computed_tokens,
                step_ms=1000 * seconds / steps,
                mfu=flops / seconds / peak_flops if peak_flops else None,
                peak_mb=peak_mb(), **extra)


# --- fmt and pad128 ----------------------------------------------------------

def run_fmt(mode: str, peak_flops: float) -> dict:
    """fmt's train step over the sample as `mode` batches it ("packed", "buckets";
    "random": every batch padded to --seq_len, the pad128 peer)."""
    import jax
    import numpy as np
    from fmt import model as model_lib
    from fmt.tasks.classification import Classification
    from fmt.train import loop, sharding

    compile_seconds = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, seconds, **_: compile_seconds.append(seconds)
        if event.startswith("/jax/core/compile/") else None)
    memory = {"imports": rss_mb()}  # resident MB after each stage: where the peak comes from
    config = _config()
    model = model_lib.from_pretrained(config.model, num_labels=2, dtype=loop.DTYPES[config.dtype],
                                      remat=config.remat)
    memory["model"] = rss_mb()
    encoded = _examples(model.tokenizer)
    task = Classification()
    mesh = sharding.make_mesh(config.mesh)
    plan = _batches(encoded, mode, sharding.batch_devices(mesh))
    memory["data"] = rss_mb()
    state, steps = loop.compile_steps(config, model, task, config.max_steps, mesh)
    memory["train_state"] = rss_mb()
    feed = steps.train_feed
    # Warm-up: one step of every shape (compiles), then a timed run.
    compile_seconds.clear()
    warmup, timed = _split_warmup(plan)
    for indices, length in warmup:
        state, metrics = steps.train_step(state, feed(encoded, indices, length))
        memory[f"compiled {_rows(indices)}x{length}"] = rss_mb()
    jax.block_until_ready(state)
    compile_s = sum(compile_seconds)
    compilations = steps.train_traces.count
    start = time.perf_counter()
    for indices, length in timed:
        state, metrics = steps.train_step(state, feed(encoded, indices, length))
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    assert steps.train_traces.count == compilations, "recompiled while timing"
    rows = [_rows(indices) for indices, _ in timed]
    real = float(sum(encoded.lengths[_examples_of(indices)].sum() for indices, _ in timed))
    computed = float(sum(r * length for r, (_, length) in zip(rows, timed)))
    flops = sum(train_flops(model.config, r, length) for r, (_, length) in zip(rows, timed))
    memory["timed"], memory["peak"] = rss_mb(), peak_mb()
    extra = dict(compilations=compilations, compile_s=compile_s, memory_mb=memory,
                 shapes=sorted({(_rows(indices), length) for indices, length in plan}),
                 final_loss=float(np.asarray(sharding.to_host(metrics)["train_loss"])))
    device = jax.devices()[0]
    if device.platform != "cpu":
        extra["device_peak_mb"] = device.memory_stats()["peak_bytes_in_use"] / 2 ** 20
    name = {"packed": "fmt", "buckets": "buckets", "random": "pad128"}[mode]
    result = _summary(name, seconds, [_examples_of(i) for i, _ in timed], real, computed, flops,
                      peak_flops, **extra)
    if _PROFILE.value:  # after the summary took the peak: profiling compiles and traces
        result["profile"] = _profile(steps, state, feed, encoded, timed)
    return result


def _profile(steps, state, feed, encoded, timed) -> dict:
    """bench_profile's breakdown of the timed batches of the most common shape."""
    import collections
    import jax
    import bench_profile
    shapes = collections.Counter((_rows(indices), length) for indices, length in timed)
    shape = shapes.most_common(1)[0][0]
    batches = [feed(encoded, indices, length) for indices, length in timed
               if (_rows(indices), length) == shape]
    ops = bench_profile.parse_hlo(steps.train_step.lower(state, batches[0]).compile().as_text())
    wall, faults = [], []

    def run():
        nonlocal state
        start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for batch in batches:
            state, metrics = steps.train_step(state, batch)
        jax.block_until_ready((state, metrics))
        wall.append(time.perf_counter() - start)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

    seconds = bench_profile.trace_ops(run, len(batches))
    profile = bench_profile.breakdown(ops, seconds, wall[0] / len(batches))
    profile.update(shape=list(shape), page_faults_per_step=faults[0] / len(batches))
    return profile


def _rows(indices) -> int:
    from fmt.data import packing
    return indices.num_rows if isinstance(indices, packing.Packed) else _BATCH.value


def _examples_of(indices):
    from fmt.data import batching
    return batching.examples_in(indices)


def _split_warmup(plan):
    """The first batch of each shape for the warm-up; the rest, `--steps` of them, timed."""
    seen, warmup, timed = set(), [], []
    for indices, length in plan:
        shape = (_rows(indices), length)
        (timed if shape in seen else warmup).append((indices, length))
        seen.add(shape)
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
    random = [indices for indices, _ in _batches(encoded)]
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


# --- driver ------------------------------------------------------------------

def _peer_env(torch: bool) -> dict:
    """A peer's environment: fmt's with huge pages, as fmt's scripts set them
    (fmt/huge_pages.py), unless --huge_pages=false; torch's only under
    --torch_huge_pages. Off means off: the tunable is taken out of the
    environment and fmt's scripts are told not to add it."""
    from fmt import huge_pages
    return huge_pages.environment(on=_TORCH_HUGE_PAGES.value if torch else _HUGE_PAGES.value)


def _child(peer: str, peak_flops: float, extra: tuple[str, ...] = ()) -> dict:
    """Run one peer in a fresh Python process; its JSON is the last stdout line."""
    return bench_sweep.child_process(__file__, peer, sys.argv[1:],
                                     [f"--peak_flops={peak_flops}", *extra],
                                     _peer_env(peer.endswith("torch")))


def main(argv):
    del argv
    if _PEER.value:
        run = {"fmt": lambda: run_fmt("packed", _PEAK.value),
               "buckets": lambda: run_fmt("buckets", _PEAK.value),
               "pad128": lambda: run_fmt("random", _PEAK.value),
               "torch": lambda: run_torch(_PEAK.value)}
        if _PEER.value.startswith("sweep_"):
            [(length, batch)] = bench_sweep.parse_shapes([_SWEEP_SHAPE.value])
            shape = getattr(bench_sweep, _PEER.value[len("sweep_"):] + "_shape")
            run[_PEER.value] = lambda: shape(_config(), length, batch, _PEAK.value,
                                             _SWEEP_STEPS.value)
        print(json.dumps(run[_PEER.value]()))
        return
    if _END_TO_END.value:
        import bench_end_to_end
        bench_end_to_end.main(_E2E_TASKS.value, _DATA_DIR.value, _E2E_OVERRIDES.value,
                              _E2E_WARM.value, _peer_env(torch=False), _peer_env(torch=True))
        return
    peak = matmul_peak({"float32": "float32", "bfloat16": "bfloat16"}[_DTYPE.value])
    print(f"matmul peak ({_DTYPE.value}): {peak / 1e9:.1f} GFLOP/s")
    if _SWEEP.value:
        rows = bench_sweep.run(bench_sweep.parse_shapes(_SWEEP_SHAPES.value),
                               [p for p in _PEERS.value if p in ("fmt", "torch")], _MODEL.value,
                               lambda peer, extra: _child(peer, peak, extra))
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
    for name, r in results.items():
        if "profile" in r:
            import bench_profile
            rows, length = r["profile"]["shape"]
            print(f"\n{name}: where a {rows}x{length} step's time goes "
                  f"({r['profile']['page_faults_per_step']:.0f} page faults per step)\n"
                  + bench_profile.markdown(r["profile"]) + "\n")
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
