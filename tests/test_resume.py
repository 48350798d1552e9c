"""Never lose a run: kill and resume, preemption, divergence, the best model."""

import json
import pathlib
import random
import signal
import subprocess
import time

import pytest

from conftest import GLUE, ROOT, device_env, finetune_command, run_finetune

# Facts of the process, not of the run: a resumed process times and compiles anew.
PROCESS_FIELDS = ("examples_per_s", "tokens_per_s", "compilations", "compile_s", "cache_hits",
                  "cache_misses")


def rte_args(model: pathlib.Path, workdir: pathlib.Path, *extra) -> list[str]:
    return ["--config=experiments/configs/glue.py:rte", f"--workdir={workdir}",
            f"--config.data_dir={GLUE}", f"--config.model={model}", "--config.batch_size=8",
            "--config.eval_batch_size=8", "--config.max_seq_length=64",
            "--config.max_train_examples=96", "--config.max_eval_examples=32",
            "--config.log_every_steps=1", "--config.eval_every_steps=6", *extra]


def record(workdir: pathlib.Path) -> dict:
    """What must be identical between runs: results, params, metric lines (minus timing)."""
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {
        "results": json.loads((workdir / "results.json").read_text()),
        "params": (workdir / "model" / "model.safetensors").read_bytes(),
        "metrics": [{k: v for k, v in line.items() if k not in PROCESS_FIELDS} for line in lines],
    }


def last_step(workdir: pathlib.Path) -> int:
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines() if line.endswith("}")]
    return json.loads(lines[-1])["step"] if lines else 0


def start_and_wait(args, workdir, devices, until_step: int) -> subprocess.Popen:
    process = subprocess.Popen(finetune_command(*args), cwd=ROOT, env=device_env(devices),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while last_step(workdir) < until_step and process.poll() is None:
        assert time.time() < deadline, "the run never reached the step"
        time.sleep(0.02)
    return process


def killed_then_resumed(args, root: pathlib.Path, until_step: int) -> tuple[dict, dict]:
    """(record of an uninterrupted run, record of the same run killed with SIGKILL
    past `until_step` and resumed); `args(workdir)` gives finetune.py's flags."""
    clean, broken = root / "clean", root / "broken"
    run_finetune(*args(clean))
    process = start_and_wait(args(broken), broken, 1, until_step)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (broken / "results.json").exists()
    run_finetune(*args(broken))
    return record(clean), record(broken)


@pytest.mark.parametrize("devices", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_sigkill_at_random_steps_then_resume_is_identical(devices, tmp_path, tiny_model):
    extra = ["--config.max_steps=36", "--config.checkpoint_every_steps=4",
             "--config.dropout=0.1"]
    clean = tmp_path / "clean"
    run_finetune(*rte_args(tiny_model, clean, *extra), devices=devices)

    killed = tmp_path / "killed"
    args = rte_args(tiny_model, killed, *extra)
    rng = random.Random(devices)
    for target in sorted(rng.sample(range(3, 33), 3)):
        process = start_and_wait(args, killed, devices, target)
        process.kill()
        process.wait()
        assert not (killed / "results.json").exists(), "the run ended before the kill"
    run_finetune(*args, devices=devices)
    assert record(killed) == record(clean)


def test_sigterm_saves_a_checkpoint_at_the_step_reached(tmp_path, tiny_model):
    workdir = tmp_path / "run"
    args = rte_args(tiny_model, workdir, "--config.max_steps=100000",
                    "--config.checkpoint_every_steps=100000")
    process = start_and_wait(args, workdir, 1, 7)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGTERM
    message = stderr.strip().splitlines()[-1]
    assert message.startswith("stopped: SIGTERM at step ") and "rerun" in message
    step = int(message.split("at step ")[1].split(":")[0])
    assert step >= 7
    saved = [int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit()]
    assert saved == [step]
    assert last_step(workdir) == step


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, tiny_model):
    workdir = tmp_path / "run"
    args = rte_args(tiny_model, workdir, "--config.max_steps=12",
                    "--config.checkpoint_every_steps=1", "--config.learning_rate=1e30",
                    "--config.max_grad_norm=0", "--config.warmup_ratio=0")
    result = run_finetune(*args, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "not finite" in message and "skip_nonfinite_steps" in message
    bad_step = int(message.split("step ")[1].split(":")[0])
    saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
    assert saved and saved[-1] == bad_step - 1
    assert f"step {bad_step - 1}" in message

    skipping = tmp_path / "skip"
    run_finetune(*rte_args(tiny_model, skipping, "--config.max_steps=12",
                           "--config.learning_rate=1e30", "--config.max_grad_norm=0",
                           "--config.warmup_ratio=0", "--config.skip_nonfinite_steps=true"))
    lines = [json.loads(line) for line in (skipping / "metrics.jsonl").read_text().splitlines()]
    skipped = sum(line.get("nonfinite_steps", 0) for line in lines)
    assert skipped >= 1 and (skipping / "results.json").exists()


def test_early_stopping_exports_the_best_model(tmp_path, tiny_model):
    workdir = tmp_path / "run"
    run_finetune(*rte_args(tiny_model, workdir, "--config.max_steps=60",
                           "--config.eval_every_steps=2", "--config.learning_rate=3e-3",
                           "--config.early_stopping_metric=accuracy",
                           "--config.early_stopping_patience=2"))
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [(line["step"], line["eval_accuracy"]) for line in lines if "eval_accuracy" in line]
    best_step, best_value = max(evals, key=lambda e: (e[1], -e[0]))
    results = json.loads((workdir / "results.json").read_text())
    assert results["step"] == best_step and results["accuracy"] == best_value
    last = evals[-1][0]
    assert last - best_step == 4 and results.get("last_step", best_step) == last
    assert last < 60, "patience 2 should stop before max_steps on 32 dev examples"

    from fmt import from_pretrained
    from fmt.train.config import default_config
    from fmt.data import datasets, tokenize
    from fmt.train import sharding
    from fmt.train.loop import evaluate
    from fmt.tasks.classification import Classification
    import jax
    import numpy as np
    exported = from_pretrained(str(workdir / "model"))
    config = default_config()
    config.update(task="rte", data_dir=str(GLUE), max_eval_examples=32)
    encoded = tokenize.encode(exported.tokenizer, datasets.limit(datasets.load(config), config).evals["validation"],
                              ("sentence1", "sentence2"), 64)
    step = jax.jit(lambda p, b: {"logits": exported.module.apply(
        {"params": p}, b["input_ids"], b["attention_mask"], b["token_type_ids"])})
    feed = sharding.BatchFeeder(sharding.make_mesh(), 8)
    metrics, _ = evaluate(step, exported.params, encoded, Classification(), feed, (32, 64))
    assert np.isclose(metrics["accuracy"], best_value)


def test_corrupt_latest_checkpoint_falls_back_to_the_previous(tmp_path, tiny_model):
    extra = ["--config.max_steps=40", "--config.checkpoint_every_steps=4",
             "--config.keep_checkpoints=3"]
    clean = tmp_path / "clean"
    run_finetune(*rte_args(tiny_model, clean, *extra))
    broken = tmp_path / "broken"
    args = rte_args(tiny_model, broken, *extra)
    process = start_and_wait(args, broken, 1, 16)
    process.kill()
    process.wait()
    steps = sorted(int(p.name) for p in (broken / "checkpoints").iterdir() if p.name.isdigit())
    assert len(steps) >= 2
    for path in (broken / "checkpoints" / str(steps[-1])).rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")
    result = run_finetune(*args)
    assert "cannot be loaded" in result.stderr and "falling back" in result.stderr
    assert record(broken) == record(clean)


def test_finished_and_incompatible_workdirs(tmp_path, tiny_model):
    workdir = tmp_path / "run"
    args = rte_args(tiny_model, workdir, "--config.max_steps=4")
    first = run_finetune(*args)
    again = run_finetune(*args)
    assert json.loads(again.stdout.splitlines()[-1]) == json.loads(first.stdout.splitlines()[-1])
    assert "already holds a finished run" in again.stderr
    result = run_finetune(*args, "--config.learning_rate=1e-3", check=False)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()[-1]
    assert "learning_rate" in message and "another --workdir" in message
