"""Restore never quarantines a good checkpoint: a changed train state is the user's
error, a storage hiccup is retried, only a damaged step is moved aside, and every
process of a run reaches the same decision."""

import errno
import json
import logging
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from etils import epath

from conftest import ROOT, device_env, user_error
from test_scale import free_port

from fmt.train import restore
from fmt.train.checkpoint import Checkpoints

KERNEL = "params/encoder/layer_0/attention/query/kernel"


def state(value: float, kernel_shape=(8, 4), dtype=jnp.float32, name="query") -> dict:
    """A tiny train state whose arrays all hold `value` (the step), to tell steps apart."""
    return {"params": {"encoder": {"layer_0": {"attention": {name: {
                "kernel": jnp.full(kernel_shape, value, dtype),
                "bias": jnp.full(kernel_shape[-1:], value, dtype)}}}}},
            "step": jnp.int32(value)}


def abstract(tree: dict) -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


def saved_steps(directory: pathlib.Path, steps=(1, 2)) -> pathlib.Path:
    """`directory` holding a real orbax checkpoint of `state(step)` for each step."""
    checkpoints = Checkpoints(directory, max_to_keep=5)
    for step in steps:
        checkpoints.save(step, state(step))
    checkpoints.close()
    return directory


def on_disk(directory: pathlib.Path) -> dict[str, list[str]]:
    """The step folders in `checkpoints/` and in `checkpoints.corrupt/`."""
    corrupt = directory.parent / (directory.name + ".corrupt")
    return {where.name: sorted(p.name for p in where.iterdir()) if where.exists() else []
            for where in (directory, corrupt)}


def restore_latest(directory: pathlib.Path, wanted: dict):
    checkpoints = Checkpoints(directory, max_to_keep=5)
    try:
        return checkpoints.restore_latest(abstract(wanted))
    finally:
        checkpoints.close()


def fail_reads(monkeypatch, errors: list[BaseException]) -> list:
    """The orbax read fails with each of `errors` in turn, then reads; the calls made."""
    calls, read = [], ocp.StandardCheckpointHandler.restore

    def faulty(self, *args, **kwargs):
        calls.append(args)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return read(self, *args, **kwargs)
    monkeypatch.setattr(ocp.StandardCheckpointHandler, "restore", faulty)
    return calls


@pytest.mark.parametrize("changed, expected", [
    (dict(name="q"), [f"{KERNEL}: in the checkpoint, not here",
                      "params/encoder/layer_0/attention/q/kernel: here, not in the checkpoint"]),
    (dict(kernel_shape=(8, 2)), [f"{KERNEL}: shape (8, 4) in the checkpoint, (8, 2) here"]),
    (dict(dtype=jnp.bfloat16), [f"{KERNEL}: dtype float32 in the checkpoint, bfloat16 here"]),
])
def test_another_train_state_is_a_user_error_and_every_step_stays(changed, expected, tmp_path):
    directory = saved_steps(tmp_path / "checkpoints")
    before = on_disk(directory)
    message = user_error(lambda: restore_latest(directory, state(0, **changed)),
                         str(directory / "2"), "code that wrote it", "another --workdir",
                         *expected)
    assert "more" not in message, message
    assert on_disk(directory) == before == {"checkpoints": ["1", "2"],
                                            "checkpoints.corrupt": []}


def test_many_mismatches_name_the_first_few(tmp_path):
    directory = saved_steps(tmp_path / "checkpoints", steps=(1,))
    wanted = state(0, name="renamed")
    wanted["params"]["extra"] = {f"w{i}": jnp.zeros(2) for i in range(5)}
    # 9 differ: 2 params only in the checkpoint, 2 + 5 only here; sorted by name.
    message = user_error(lambda: restore_latest(directory, wanted),
                         "attention/query/bias: in the checkpoint, not here",
                         "attention/renamed/kernel: here, not in the checkpoint",
                         f"and {9 - restore.MISMATCHES_SHOWN} more")
    assert "params/extra" not in message, message


@pytest.mark.parametrize("error", [
    ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
    TimeoutError("The read operation timed out"),
    OSError(errno.EIO, "Input/output error"),
    ValueError("UNAVAILABLE: Error reading from gs://bucket/checkpoints/2: HTTP 503"),
])
def test_a_transient_read_error_is_retried(error, monkeypatch, tmp_path):
    directory = saved_steps(tmp_path / "checkpoints")
    monkeypatch.setattr(restore, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    calls = fail_reads(monkeypatch, [error, error])
    restored = restore_latest(directory, state(0))
    assert len(calls) == 3
    assert int(restored["step"]) == 2 and np.all(np.asarray(
        restored["params"]["encoder"]["layer_0"]["attention"]["query"]["kernel"]) == 2)
    assert on_disk(directory)["checkpoints.corrupt"] == []


def test_a_lasting_transient_error_is_reported_and_nothing_moves(monkeypatch, tmp_path):
    directory = saved_steps(tmp_path / "checkpoints")
    monkeypatch.setattr(restore, "RETRY_DELAYS_S", (0.01, 0.01, 0.01))
    calls = fail_reads(monkeypatch, [TimeoutError("The read operation timed out")] * 10)
    user_error(lambda: restore_latest(directory, state(0)), str(directory / "2"),
               "TimeoutError: The read operation timed out", "4 tries", "left in place",
               "rerun")
    assert len(calls) == 4
    assert on_disk(directory) == {"checkpoints": ["1", "2"], "checkpoints.corrupt": []}


def test_an_unexplained_error_is_raised_as_it_is_and_nothing_moves(monkeypatch, tmp_path):
    directory = saved_steps(tmp_path / "checkpoints")
    calls = fail_reads(monkeypatch, [MemoryError("out of host memory")] * 10)
    with pytest.raises(MemoryError):
        restore_latest(directory, state(0))
    assert len(calls) == 1
    assert on_disk(directory) == {"checkpoints": ["1", "2"], "checkpoints.corrupt": []}


def cut_data_short(step: pathlib.Path) -> None:
    """Truncate the step's array data (the OCDBT chunks under `d/`) to half."""
    chunks = [p for p in step.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert chunks
    for path in chunks:
        path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


def garble_everything(step: pathlib.Path) -> None:
    for path in step.rglob("*"):
        if path.is_file():
            path.write_bytes(b"\0garbage")


def lose_data(step: pathlib.Path) -> None:
    for path in step.rglob("*"):
        if path.is_file() and path.parent.name == "d":
            path.unlink()


@pytest.mark.parametrize("damage", [cut_data_short, garble_everything, lose_data])
def test_a_damaged_step_is_moved_aside_and_the_previous_restored(damage, tmp_path, caplog):
    directory = saved_steps(tmp_path / "checkpoints")
    damage(directory / "2")
    checkpoints = Checkpoints(directory, max_to_keep=5)
    with caplog.at_level(logging.WARNING, logger="fmt"):
        restored = checkpoints.restore_latest(abstract(state(0)))
    assert int(restored["step"]) == 1 and np.all(np.asarray(
        restored["params"]["encoder"]["layer_0"]["attention"]["query"]["bias"]) == 1)
    assert on_disk(directory) == {"checkpoints": ["1"], "checkpoints.corrupt": ["2"]}
    assert "cannot be loaded" in caplog.text and "falling back" in caplog.text
    # The manager forgot the step: the run saves it again.
    checkpoints.save(2, state(2))
    checkpoints.close()
    assert on_disk(directory)["checkpoints"] == ["1", "2"]
    assert int(restore_latest(directory, state(0))["step"]) == 2


def test_cloud_style_paths_and_a_step_moved_aside_before(tmp_path):
    """An `etils.epath.Path` directory (what gs:// workdirs are), and a step of the same
    number already in `checkpoints.corrupt/` from an earlier run: it is replaced."""
    directory = epath.Path(tmp_path) / "checkpoints"
    saved_steps(directory)
    earlier = epath.Path(tmp_path) / "checkpoints.corrupt" / "2"
    earlier.mkdir(parents=True)
    (earlier / "from-an-earlier-run").write_text("x")
    cut_data_short(pathlib.Path(directory / "2"))
    assert int(restore_latest(directory, state(0))["step"]) == 1
    assert on_disk(directory) == {"checkpoints": ["1"], "checkpoints.corrupt": ["2"]}
    assert not (earlier / "from-an-earlier-run").exists() and (earlier / "default").exists()


def run_two(directory: pathlib.Path, fault: str) -> list[tuple[int, dict]]:
    """tests/tools/restore_two_processes.py as two JAX processes: (exit code, printed
    JSON) of each; a process still running after 120 s is a hang."""
    port = free_port()
    processes = [subprocess.Popen(
        [sys.executable, str(ROOT / "tests/tools/restore_two_processes.py"), str(directory),
         str(port), str(i), fault], cwd=ROOT, env=device_env(1), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=120)
            lines = [line for line in out.splitlines() if line.startswith("{")]
            assert lines, f"no result; stderr:\n{err[-3000:]}"
            results.append((process.returncode, json.loads(lines[-1])))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a process hung with fault {fault!r}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def test_two_processes_agree_when_only_one_sees_damage(tmp_path):
    """Process 1 alone reads step 2 as damaged: both fall back to step 1, each with
    its own half of the kernel, and process 0 alone moved step 2 aside."""
    directory = tmp_path / "checkpoints"
    saved = Checkpoints(directory, max_to_keep=5)
    for step in (1, 2):
        saved.save(step, {"params": {"kernel": jnp.full((8, 4), step, jnp.float32)},
                          "step": jnp.int32(step)})
    saved.close()
    results = run_two(directory, "damaged")
    assert results == [(0, {"step": 1, "kernel_holds_step": True, "kernel_rows": 4})] * 2
    assert on_disk(directory) == {"checkpoints": ["1"], "checkpoints.corrupt": ["2"]}


def test_two_processes_agree_when_only_one_cannot_read(tmp_path):
    """Process 1 alone keeps failing to read: both report it, and nothing moves."""
    directory = tmp_path / "checkpoints"
    saved = Checkpoints(directory, max_to_keep=5)
    saved.save(2, {"params": {"kernel": jnp.full((8, 4), 2, jnp.float32)},
                   "step": jnp.int32(2)})
    saved.close()
    (first_code, first), (second_code, second) = run_two(directory, "transient")
    assert first_code == second_code == 2
    assert "process 1 could not load it" in first["error"]
    assert "ConnectionResetError" in second["error"] and "left in place" in second["error"]
    assert on_disk(directory) == {"checkpoints": ["2"], "checkpoints.corrupt": []}
