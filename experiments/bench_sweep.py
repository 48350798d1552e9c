"""Scaling by shape (`bench.py --sweep`): fmt's train step and the PyTorch peer's
on full-length `[batch, seq_len]` batches of random ids, one process per peer and
shape, so that each peak memory is that shape's own.

Shapes longer than the checkpoint's positions (all-MiniLM-L6-v2 has 512) run on
a model of the same shape with more positions and random weights, made once
with `transformers`: speed and memory do not depend on the weights' values.
"""

import json
import pathlib
import subprocess
import sys
import time

import bench_common

ROOT = pathlib.Path(__file__).resolve().parents[1]


def parse_shapes(specs: list[str]) -> list[tuple[int, int]]:
    """["512x32", ...] -> [(seq_len, batch), ...]."""
    shapes = []
    for spec in specs:
        length, _, batch = spec.partition("x")
        if not (length.isdigit() and batch.isdigit()):
            sys.exit(f"--sweep_shapes: {spec!r} is not SEQ_LENxBATCH, e.g. 512x32")
        shapes.append((int(length), int(batch)))
    return shapes


def model_for(model: str, length: int, root: pathlib.Path) -> str:
    """`model`, or a copy of its architecture with `length` positions (random)."""
    from fmt import hf
    folder = hf.resolve_folder(model)
    config = json.loads((pathlib.Path(folder) / "config.json").read_text())
    if length <= config.get("max_position_embeddings", length):
        return str(folder)
    import torch
    import transformers
    longer = root / f"positions-{length}"
    if not (longer / "config.json").exists():
        torch.manual_seed(0)
        hf_config = transformers.AutoConfig.from_pretrained(str(folder),
                                                            max_position_embeddings=length)
        transformers.AutoModel.from_config(hf_config).save_pretrained(longer)
        transformers.AutoTokenizer.from_pretrained(str(folder)).save_pretrained(longer)
    return str(longer)


def _timed(step, min_steps: int) -> float:
    """Seconds per call of `step` after one warm-up call: at least `min_steps`
    calls, more while under 5 s (at most 20)."""
    step()
    count, start = 0, time.perf_counter()
    while count < min_steps or (count < 20 and time.perf_counter() - start < 5.0):
        step()
        count += 1
    return (time.perf_counter() - start) / count


def fmt_shape(config, length: int, batch: int, peak_flops: float, min_steps: int) -> dict:
    """fmt's jitted train step at one shape; XLA's temporaries from its buffer
    assignment. A step whose temporaries exceed half the host is only reported."""
    import os

    import jax
    from fmt import model as model_lib
    from fmt.tasks.classification import Classification
    from fmt.train import loop, sharding

    config.batch_size = config.eval_batch_size = batch
    model = model_lib.from_pretrained(config.model, num_labels=2, dtype=loop.DTYPES[config.dtype],
                                      remat=config.remat)
    state, steps = loop.compile_steps(config, model, Classification(), config.max_steps,
                                      sharding.make_mesh(config.mesh))
    step_batch = bench_common.random_batch(steps.train_feed, model.config.vocab_size, batch,
                                           length)
    train_step = steps.train_step.lower(state, step_batch).compile()
    temp_mb = train_step.memory_analysis().temp_size_in_bytes / 2 ** 20
    row = dict(peer="fmt", seq_len=length, batch=batch, temp_mb=temp_mb)
    if temp_mb * 2 ** 20 > 0.5 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"):
        return row
    holder = {"state": state}

    def step():
        holder["state"], _ = train_step(holder["state"], step_batch)
        jax.block_until_ready(holder["state"])

    seconds = _timed(step, min_steps)
    return dict(row, examples_per_s=batch / seconds, tokens_per_s=batch * length / seconds,
                mfu=bench_common.train_flops(model.config, batch, length) / seconds / peak_flops,
                peak_mb=bench_common.peak_mb())


def torch_shape(config, length: int, batch: int, peak_flops: float, min_steps: int) -> dict:
    """The PyTorch peer's train step (its own code, experiments/torch_peer.py) at one shape."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, get_scheduler
    sys.path.insert(0, str(ROOT / "experiments"))
    import torch_peer

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(config.model, num_labels=2)
    model.train()
    optimizer = torch_peer.make_optimizer(model, config)
    scheduler = get_scheduler("linear", optimizer, 100, config.max_steps)
    rng = np.random.default_rng(0)
    inputs = {"input_ids": torch.from_numpy(rng.integers(1000, model.config.vocab_size,
                                                         (batch, length))),
              "attention_mask": torch.ones(batch, length, dtype=torch.long),
              "token_type_ids": torch.zeros(batch, length, dtype=torch.long)}
    labels = torch.from_numpy(rng.integers(0, 2, batch))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.dtype == "bfloat16")

    def step():
        torch_peer.train_step(model, optimizer, scheduler, inputs, labels,
                              config.max_grad_norm, autocast)

    seconds = _timed(step, min_steps)
    return dict(peer="torch", seq_len=length, batch=batch, examples_per_s=batch / seconds,
                tokens_per_s=batch * length / seconds,
                mfu=bench_common.train_flops(model.config, batch, length) / seconds / peak_flops,
                peak_mb=bench_common.peak_mb(), threads=torch.get_num_threads())


def run(shapes: list[tuple[int, int]], peers: list[str], model: str, child) -> list[dict]:
    """Every (peer, shape) through `child(peer, extra_args)` (a fresh process that
    prints one JSON row); Markdown to stdout, rows returned."""
    import tempfile
    rows = []
    with tempfile.TemporaryDirectory(prefix="fmt-sweep-") as folder:
        for length, batch in shapes:
            folder_for = model_for(model, length, pathlib.Path(folder))
            for peer in peers:
                row = child(f"sweep_{peer}", [f"--sweep_shape={length}x{batch}",
                                              f"--model={folder_for}"])
                rows.append(row)
                print(f"sweep: {row}", file=sys.stderr, flush=True)
    print("| seq_len | batch | peer | examples/s | tokens/s | MFU | peak MB | "
          "step temporaries MB |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        temp = f"{r['temp_mb']:.0f}" if "temp_mb" in r else "-"
        if "mfu" not in r:
            print(f"| {r['seq_len']} | {r['batch']} | {r['peer']} | - | - | - | - | {temp} "
                  "(more than half the host: not run) |")
            continue
        print(f"| {r['seq_len']} | {r['batch']} | {r['peer']} | {r['examples_per_s']:.1f} | "
              f"{r['tokens_per_s']:.0f} | {r['mfu']:.2f} | {r['peak_mb']:.0f} | {temp} |")
    return rows


def child_process(script: str, peer: str, args: list[str], extra: list[str],
                  env: dict | None = None) -> dict:
    """`script --peer=peer` with the parent's flags (minus peer selection) and
    `extra`, in `env` (default: this process's)."""
    replaced = {a.split("=")[0] for a in extra}
    inherited = [a for a in args if not a.startswith(("--peer", "--peers"))
                 and a.split("=")[0] not in replaced]
    result = subprocess.run([sys.executable, script, f"--peer={peer}", *inherited, *extra],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode:
        sys.exit(f"bench: the {peer} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
