"""What a user waits for: whole runs, command to `results.json`, fmt against the
PyTorch peer (`bench.py --end_to_end`).

Each task runs as three commands on the same config and data, one after
another and alone on the machine:

  fmt cold   finetune.py with --config.packing=true and an empty compilation
             cache (a fresh folder)
  fmt warm   the same command again in a new workdir, on the cache the cold
             run filled: what a rerun, a resume or the next run of a sweep pays
  torch      experiments/torch_peer.py on the same config

Reported per run: wall seconds from the command to its `results.json`, the
task's main dev metric, and for fmt the seconds JAX spent compiling
(`compile_s` in metrics.jsonl) and its cache hits.
"""

import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def timed_run(command: list[str], workdir: pathlib.Path, env: dict | None = None) -> dict:
    """Run `command` (in `env`, default this process's) to its end; its wall
    time and what it wrote."""
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    if result.returncode or not (workdir / "results.json").exists():
        sys.exit(f"bench: {' '.join(command)} failed:\n{result.stderr[-3000:]}")
    results = json.loads((workdir / "results.json").read_text())
    row = dict(seconds=seconds, metric=results["main_metric"],
               value=results[results["main_metric"]])
    metrics = workdir / "metrics.jsonl"
    if metrics.exists():
        lines = [json.loads(line) for line in metrics.read_text().splitlines()]
        for key in ("compile_s", "cache_hits", "compilations"):
            values = [line[key] for line in lines if key in line]
            if values:
                row[key] = max(values)
    return row


def run_task(task: str, epochs: float, data_dir: str, overrides: list[str], warm: bool,
             root: pathlib.Path, fmt_env: dict | None = None,
             torch_env: dict | None = None) -> dict:
    """fmt cold (and warm) in `fmt_env` and the torch peer in `torch_env` on one
    GLUE task (None: this process's environment)."""
    config = [f"--config=experiments/configs/glue.py:{task}", f"--config.data_dir={data_dir}",
              f"--config.num_epochs={epochs}", "--config.progress_bar=false",
              *[f"--config.{o}" for o in overrides]]
    cache = root / f"{task}-cache"
    fmt = [sys.executable, "experiments/finetune.py", *config, "--config.packing=true",
           f"--config.compilation_cache={cache}"]
    rows = {}
    for name in ("fmt_cold", "fmt_warm") if warm else ("fmt_cold",):
        workdir = root / f"{task}-{name}"
        rows[name] = timed_run([*fmt, f"--workdir={workdir}"], workdir, fmt_env)
        print(f"end_to_end: {task} {name}: {rows[name]}", file=sys.stderr, flush=True)
    workdir = root / f"{task}-torch"
    rows["torch"] = timed_run([sys.executable, "experiments/torch_peer.py", *config,
                               f"--workdir={workdir}"], workdir, torch_env)
    print(f"end_to_end: {task} torch: {rows['torch']}", file=sys.stderr, flush=True)
    summary = {f"{name}_{key}": value for name, row in rows.items() for key, value in row.items()}
    summary.update(task=task, epochs=epochs,
                   speedup=rows["torch"]["seconds"] / rows["fmt_cold"]["seconds"])
    if warm and rows["fmt_cold"].get("compile_s"):
        summary["warm_compile_fraction"] = \
            rows["fmt_warm"].get("compile_s", 0.0) / rows["fmt_cold"]["compile_s"]
    return summary


def main(tasks: list[str], data_dir: str, overrides: list[str], warm: bool,
         fmt_env: dict | None = None, torch_env: dict | None = None) -> None:
    """`tasks` as NAME:EPOCHS; prints a Markdown table, then one JSON line."""
    summaries = []
    with tempfile.TemporaryDirectory(prefix="fmt-e2e-") as folder:
        for spec in tasks:
            name, _, epochs = spec.partition(":")
            summaries.append(run_task(name, float(epochs or 3), data_dir, overrides, warm,
                                      pathlib.Path(folder), fmt_env, torch_env))
    print("| task | epochs | fmt s (cold cache) | fmt compile s | fmt s (warm cache) | "
          "warm compile s | torch s | speedup | fmt metric | torch metric |\n"
          "|---|---|---|---|---|---|---|---|---|---|")
    for s in summaries:
        warm_s = f"{s['fmt_warm_seconds']:.0f}" if "fmt_warm_seconds" in s else "-"
        warm_c = f"{s.get('fmt_warm_compile_s', 0):.1f}" if "fmt_warm_seconds" in s else "-"
        print(f"| {s['task']} | {s['epochs']:g} | {s['fmt_cold_seconds']:.0f} | "
              f"{s.get('fmt_cold_compile_s', 0):.1f} | {warm_s} | {warm_c} | "
              f"{s['torch_seconds']:.0f} | {s['speedup']:.2f} | "
              f"{s['fmt_cold_metric']} {s['fmt_cold_value']:.4f} | "
              f"{s['torch_metric']} {s['torch_value']:.4f} |")
    print(json.dumps({"end_to_end": summaries}))
