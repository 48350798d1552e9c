"""One train step from one CPU to a mesh of devices and to several processes."""

import json
import pathlib
import signal
import socket
import subprocess
import time

import pytest

from conftest import GLUE, ROOT, device_env, finetune_command, run_finetune

STEPS = 20


def args_for(model: pathlib.Path, workdir: pathlib.Path, *extra) -> list[str]:
    """20 steps of batch 32 on real RTE text, dropout off so runs can be compared."""
    return ["--config=experiments/configs/glue.py:rte", f"--workdir={workdir}",
            f"--config.data_dir={GLUE}", f"--config.model={model}", "--config.batch_size=32",
            "--config.eval_batch_size=32", "--config.max_seq_length=64",
            f"--config.max_steps={STEPS}", "--config.log_every_steps=1", "--config.dropout=0",
            "--config.learning_rate=1e-3", "--config.max_eval_examples=64", *extra]


def losses(workdir: pathlib.Path) -> list[float]:
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line["train_loss"] for line in lines if "train_loss" in line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model) -> list[float]:
    workdir = tmp_path_factory.mktemp("one-device")
    run_finetune(*args_for(tiny_model, workdir))
    result = losses(workdir)
    # The losses must move, or matching them would show nothing.
    assert len(result) == STEPS and max(result) - min(result) > 1e-3, result
    return result


@pytest.mark.parametrize("mesh, accum, devices", [
    ("data=8", 1, 8),
    ("data=4,fsdp=2", 1, 8),
    ("data=2,fsdp=4", 1, 8),
    ("data=1", 4, 1),
])
def test_meshes_and_accumulation_match_one_device(mesh, accum, devices, reference, tmp_path,
                                                  tiny_model):
    run_finetune(*args_for(tiny_model, tmp_path, f"--config.mesh={mesh}",
                           f"--config.grad_accum_steps={accum}"), devices=devices)
    got = losses(tmp_path)
    assert max(abs(a - b) for a, b in zip(got, reference)) < 1e-5, (got, reference)


@pytest.mark.parametrize("buckets", ["--config.bucket_lengths=(32,48,64)",
                                     "--config.num_buckets=3"])
def test_no_recompilation_after_the_first_epoch(buckets, tmp_path, tiny_model):
    """Three epochs: the train step compiles once per bucket length, all in epoch one."""
    run_finetune(*args_for(tiny_model, tmp_path, "--config.max_train_examples=96",
                           "--config.batch_size=8", "--config.max_steps=0",
                           "--config.num_epochs=3", buckets))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    counts = [(line["epoch"], line["compilations"]) for line in lines if "compilations" in line]
    after_first = [c for epoch, c in counts if epoch > 1]
    assert after_first and set(after_first) == {counts[-1][1]}
    first_epoch_final = max(c for epoch, c in counts if epoch <= 1)
    assert counts[-1][1] == first_epoch_final <= 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(args: list[str]) -> list[subprocess.Popen]:
    """finetune.py as two jax.distributed processes over 127.0.0.1, one CPU device each."""
    port = free_port()
    return [subprocess.Popen(
                finetune_command(*args, f"--coordinator_address=127.0.0.1:{port}",
                                 "--num_processes=2", f"--process_id={i}"),
                cwd=ROOT, env=device_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                text=True)
            for i in range(2)]


def wait_all(processes: list[subprocess.Popen]) -> list[str]:
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    return [out for out, _ in outputs]


def test_two_processes_match_one(reference, tmp_path, tiny_model):
    """jax.distributed over 127.0.0.1: two processes, one CPU device each, mesh data=2."""
    outputs = wait_all(launch_two(args_for(tiny_model, tmp_path, "--config.mesh=data=2")))
    got = losses(tmp_path)
    assert len(got) == STEPS, "each step must be logged once, by process 0 alone"
    assert max(abs(a - b) for a, b in zip(got, reference)) < 1e-5, (got, reference)
    printed = [[line for line in out.splitlines() if line.startswith("{")] for out in outputs]
    assert json.loads(printed[0][-1])["step"] == STEPS and not printed[1]


def logged_losses(workdir: pathlib.Path) -> dict[int, float]:
    """step -> train_loss of the complete lines of metrics.jsonl (a killed run may leave
    half a line)."""
    path = workdir / "metrics.jsonl"
    lines = path.read_text().split("\n")[:-1] if path.exists() else []
    return {line["step"]: line["train_loss"] for line in map(json.loads, lines)
            if "train_loss" in line}


@pytest.mark.slow
def test_two_processes_resume_after_sigkill(tmp_path, tiny_model):
    """An FSDP run over two processes, both killed with SIGKILL past a checkpoint,
    relaunched with the same command: it restores the sharded checkpoint and recomputes
    the lost steps exactly as the killed run had computed them, then finishes."""
    total, every = 300, 50
    args = args_for(tiny_model, tmp_path, "--config.mesh=fsdp=2", f"--config.max_steps={total}",
                    f"--config.checkpoint_every_steps={every}")
    first = launch_two(args)
    checkpoints, deadline = tmp_path / "checkpoints", time.monotonic() + 300
    while True:  # until a checkpoint is final and steps past it are logged
        saved = [int(p.name) for p in checkpoints.glob("*") if p.name.isdigit()] \
            if checkpoints.exists() else []
        if saved and len(logged_losses(tmp_path)) >= min(saved) + 3:
            break
        ended = [p for p in first if p.poll() is not None]
        assert not ended, f"the run ended before it was killed:\n{ended[0].stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
    for process in first:
        process.send_signal(signal.SIGKILL)
    for process in first:
        process.communicate()
    before = logged_losses(tmp_path)
    resumed = max(int(p.name) for p in checkpoints.glob("*") if p.name.isdigit())
    assert not (tmp_path / "results.json").exists() and len(before) < total, len(before)

    wait_all(launch_two(args))
    after = logged_losses(tmp_path)
    assert sorted(after) == list(range(1, total + 1))
    redone = [step for step in before if step > resumed]
    assert redone and all(abs(after[s] - before[s]) < 1e-6 for s in redone), \
        [(s, before[s], after[s]) for s in redone]
    assert json.loads((tmp_path / "results.json").read_text())["step"] == total
