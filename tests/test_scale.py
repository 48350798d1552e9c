"""One train step from one CPU to a mesh of devices and to several processes."""

import json
import pathlib
import socket
import subprocess

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


def test_no_recompilation_after_the_first_epoch(tmp_path, tiny_model):
    """Three epochs: the train step compiles once per bucket length, all in epoch one."""
    run_finetune(*args_for(tiny_model, tmp_path, "--config.max_train_examples=96",
                           "--config.batch_size=8", "--config.max_steps=0",
                           "--config.num_epochs=3", "--config.bucket_lengths=(32,48,64)"))
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


def test_two_processes_match_one(reference, tmp_path, tiny_model):
    """jax.distributed over 127.0.0.1: two processes, one CPU device each, mesh data=2."""
    port = free_port()
    processes = [
        subprocess.Popen(
            finetune_command(*args_for(tiny_model, tmp_path, "--config.mesh=data=2"),
                             f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                             f"--process_id={i}"),
            cwd=ROOT, env=device_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    got = losses(tmp_path)
    assert len(got) == STEPS, "each step must be logged once, by process 0 alone"
    assert max(abs(a - b) for a, b in zip(got, reference)) < 1e-5, (got, reference)
    printed = [[line for line in out.splitlines() if line.startswith("{")] for out, _ in outputs]
    assert json.loads(printed[0][-1])["step"] == STEPS and not printed[1]
