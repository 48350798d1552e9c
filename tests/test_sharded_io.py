"""Checkpoints read by the slice and exported by the tensor (fmt.safetensors_io).

Lazy params read exactly the box asked of them under every name-map transform;
sharded sets load as one file does; exports split into transformers' shard files
and index, keep bf16, and load into `transformers` with fmt's logits; and two
processes of an FSDP mesh each read about half of the checkpoint and export
byte for byte what one process exports.
"""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
from conftest import (GLUE, ROOT, device_env, finetune_command, run_finetune,  # noqa: E402
                      user_error)
from fmt import hf, safetensors_io  # noqa: E402

SHARDED_LOAD = ROOT / "tests/tools/sharded_load.py"
IDS = np.array([[5, 17, 99, 3, 42, 7], [8, 8, 301, 11, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])


def save_numpy(folder: pathlib.Path, tensors: dict) -> dict:
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    return safetensors_io.open_folder(folder)


def boxes(shape, rng, count=25):
    """Whole, empty, single-index and random boxes of `shape`, as slices."""
    yield tuple(slice(None) for _ in shape)
    yield tuple(slice(0, 0) for _ in shape)
    for _ in range(count):
        box = []
        for dim in shape:
            start = int(rng.integers(0, dim + 1))
            box.append(slice(start, int(rng.integers(start, dim + 1))))
        yield tuple(box)
    yield tuple(slice(dim - 1, dim) for dim in shape)


# (hf name, HF shape, transform): every kind, and parts of fused weights.
TRANSFORMS = [("embedding", (7, 6), "copy"), ("dense", (5, 6), "linear"),
              ("conv", (6, 9), "conv1d"), ("fused_conv", (6, 9), "conv1d:1/3"),
              ("fused_bias", (9,), "copy:2/3"), ("fused_linear", (9, 6), "linear:0/3"),
              ("volume", (3, 4, 5), "copy")]


@pytest.mark.parametrize("name, shape, transform", TRANSFORMS)
def test_lazy_slices_equal_the_same_slice_of_the_whole(tmp_path, name, shape, transform):
    rng = np.random.default_rng(0)
    whole = rng.normal(size=shape).astype(np.float16)
    stored = save_numpy(tmp_path, {name: whole})[name]
    lazy = hf.LazyParam(stored, transform, np.float32)  # cast as a f16 checkpoint is
    want = hf.to_flax(whole, transform).astype(np.float32)
    assert lazy.shape == want.shape and lazy.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(lazy), want)
    for box in boxes(lazy.shape, rng):
        got = lazy[box]
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, want[box], err_msg=str(box))


def test_a_slice_reads_its_own_bytes(tmp_path):
    rows = np.arange(60, dtype=np.float32).reshape(10, 6)
    stored = save_numpy(tmp_path, {"w": rows})["w"]
    for box, size in [((slice(2, 5),), 3 * 6), ((slice(None), slice(1, 4)), 10 * 3),
                      ((slice(4, 6), slice(0, 1)), 2), ((slice(3, 3),), 0)]:
        before = safetensors_io.READS.bytes
        np.testing.assert_array_equal(stored[box], rows[box])
        assert safetensors_io.READS.bytes - before == size * 4, box
    # A transposed ("linear") param's rows are the checkpoint's columns: strided runs.
    lazy = hf.LazyParam(stored, "linear", np.float32)
    before = safetensors_io.READS.bytes
    np.testing.assert_array_equal(lazy[1:3], rows.T[1:3])
    assert safetensors_io.READS.bytes - before == 10 * 2 * 4


def test_bf16_and_f16_read_and_written_as_torch_does(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file
    generator = torch.Generator().manual_seed(0)
    tensors = {"bf16": torch.randn(4, 5, generator=generator).bfloat16(),
               "f16": torch.randn(3, generator=generator).half(),
               "i64": torch.arange(6).reshape(2, 3), "scalar": torch.tensor(2.5)}
    (tmp_path / "torch").mkdir()
    save_file(tensors, str(tmp_path / "torch/model.safetensors"))
    stored = safetensors_io.open_folder(tmp_path / "torch")
    for name, tensor in tensors.items():
        np.testing.assert_array_equal(np.asarray(stored[name]).astype(np.float64),
                                      tensor.double().numpy(), err_msg=name)
    assert stored["bf16"].dtype.name == "bfloat16"
    # Written back by fmt, read by safetensors' torch API: the same values and dtypes.
    pending = [safetensors_io.PendingTensor.of(name, np.asarray(t)) for name, t in stored.items()]
    safetensors_io.write_file(tmp_path / "fmt.safetensors", pending, {"format": "pt"})
    with safe_open(str(tmp_path / "fmt.safetensors"), framework="pt") as file:
        assert file.metadata() == {"format": "pt"}
        for name, tensor in tensors.items():
            assert torch.equal(file.get_tensor(name), tensor), name


def test_damaged_files_are_one_line_errors(tmp_path):
    path = tmp_path / "cut" / "model.safetensors"
    save_numpy(path.parent, {"w": np.ones((64, 64), np.float32)})
    path.write_bytes(path.read_bytes()[:-100])
    user_error(lambda: np.asarray(safetensors_io.open_folder(path.parent)["w"]),
               str(path), "truncated")
    path.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}......")
    user_error(lambda: safetensors_io.open_folder(path.parent), str(path), "damaged")
    sharded = tmp_path / "sharded"
    save_numpy(sharded, {"w": np.ones(3, np.float32)})
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00001.safetensors")
    (sharded / safetensors_io.INDEX_FILE).write_text(json.dumps(
        {"weight_map": {"w": "model-00001-of-00001.safetensors",
                        "v": "model-00001-of-00001.safetensors"}}))
    user_error(lambda: safetensors_io.open_folder(sharded), "no tensor v", "incomplete")
    user_error(lambda: safetensors_io.parse_size("5 gigs"), "max_shard_size='5 gigs'", "5GB")


def test_a_changed_file_is_not_misread(tmp_path):
    stored = save_numpy(tmp_path, {"w": np.ones(8, np.float32)})["w"]
    save_numpy(tmp_path, {"w": np.zeros(16, np.float32)})
    user_error(lambda: stored[:4], "changed after fmt read its header", "load the model again")


# --- whole models -----------------------------------------------------------------


def real(values: np.ndarray) -> np.ndarray:
    """Outputs at real tokens only: padded positions' mean nothing on either side."""
    return values[MASK.astype(bool)] if values.ndim == 3 else values


def logits(model) -> np.ndarray:
    return real(np.asarray(model(IDS, MASK)))


def torch_logits(folder, auto_class, **kwargs) -> np.ndarray:
    model = auto_class.from_pretrained(str(folder), **kwargs).eval()
    with torch.no_grad():
        return real(model(input_ids=torch.as_tensor(IDS),
                          attention_mask=torch.as_tensor(MASK)).logits.float().numpy())


def shard_files(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.glob("model*.safetensors"))


@pytest.fixture(scope="module")
def checkpoints(tiny_model, tiny_decoder):
    """family -> (folder, task, the transformers class that loads its export)."""
    return {"bert": (tiny_model, "classification",
                     transformers.AutoModelForSequenceClassification),
            "gpt2": (tiny_decoder("gpt2"), "causal_lm", transformers.AutoModelForCausalLM)}


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_export_past_the_shard_size_loads_in_transformers(checkpoints, family, tmp_path):
    folder, task, auto_class = checkpoints[family]
    model = fmt.from_pretrained(str(folder), task=task)
    model.save_pretrained(tmp_path / "out", max_shard_size="40KB")
    files = shard_files(tmp_path / "out")
    assert len(files) >= 3 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    index = json.loads((tmp_path / "out" / safetensors_io.INDEX_FILE).read_text())
    headers = {name: safetensors_io.SafetensorsFile(tmp_path / "out" / name).tensors
               for name in files}
    assert index["weight_map"] == {tensor: name for name, tensors in headers.items()
                                   for tensor in tensors}
    sizes = [sum(t.nbytes for t in tensors.values()) for tensors in headers.values()]
    assert index["metadata"]["total_size"] == sum(sizes)
    assert all(size <= 40_000 or len(headers[name]) == 1 for name, size in zip(files, sizes))
    want = logits(model)
    assert np.abs(torch_logits(tmp_path / "out", auto_class) - want).max() <= 1e-5
    # Read back by fmt from the shards: the same params.
    again = fmt.from_pretrained(str(tmp_path / "out"), task=task)
    jax.tree.map(np.testing.assert_array_equal, again.params, model.params)
    if family == "gpt2":  # the fused query/key/value weight, joined again
        original = safetensors_io.open_folder(folder)
        exported = safetensors_io.open_folder(tmp_path / "out")
        name = "transformer.h.1.attn.c_attn.weight"
        np.testing.assert_array_equal(np.asarray(exported[name]), np.asarray(original[name]))


def test_a_sharded_set_loads_the_params_of_one_file(tiny_model, tmp_path):
    torch_model = transformers.AutoModel.from_pretrained(str(tiny_model))
    torch_model.save_pretrained(str(tmp_path), max_shard_size="40KB")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_bytes((tiny_model / name).read_bytes())
    assert len(shard_files(tmp_path)) >= 3 and not (tmp_path / "model.safetensors").exists()
    one = fmt.from_pretrained(str(tiny_model))
    for lazy in (False, True):
        sharded = fmt.from_pretrained(str(tmp_path), lazy=lazy)
        assert sharded.loading_info == one.loading_info
        jax.tree.map(np.testing.assert_array_equal, sharded.params, one.params)
    np.testing.assert_array_equal(logits(sharded), logits(one))  # lazy params, called


def test_bf16_params_export_as_bf16(tiny_model, tmp_path):
    model = fmt.from_pretrained(str(tiny_model), param_dtype=jnp.bfloat16)
    assert {x.dtype.name for x in jax.tree.leaves(model.params)} == {"bfloat16"}
    model.save_pretrained(tmp_path / "out")
    stored = safetensors_io.open_folder(tmp_path / "out")
    assert {t.dtype.name for t in stored.values()} == {"bfloat16"}
    assert os.path.getsize(tmp_path / "out/model.safetensors") < sum(
        t.nbytes for t in safetensors_io.open_folder(tiny_model).values()) * 0.51
    assert json.loads((tmp_path / "out/config.json").read_text())["dtype"] == "bfloat16"
    auto = transformers.AutoModelForSequenceClassification
    in_bf16 = auto.from_pretrained(str(tmp_path / "out"))
    assert in_bf16.dtype == torch.bfloat16
    # Upcast on both sides, the bf16 values give the same logits.
    reloaded = fmt.from_pretrained(str(tmp_path / "out"))
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, np.asarray(b, np.float32)),
                 reloaded.params, model.params)
    want = torch_logits(tmp_path / "out", auto, dtype=torch.float32)
    assert np.abs(logits(reloaded) - want).max() <= 1e-5


@pytest.mark.parametrize("family", ["bert", "gpt2"])
def test_a_lazy_load_merges_an_adapter_as_an_eager_one(checkpoints, family, tmp_path):
    """With `adapter=`, the adapted params are read whole and merged; the others
    stay lazy, and the model computes what an eager load computes."""
    from fmt.models import lora
    folder, task, _ = checkpoints[family]
    eager = fmt.from_pretrained(str(folder), task=task)
    spec = lora.plan(eager.name_map(), eager.params, 4, 8.0, (), eager.config.model_type)
    adapters = jax.tree.map(lambda x: np.random.default_rng(x.size).normal(
        size=x.shape).astype(np.float32) * 0.1, lora.init(spec, 0))
    lora.save_peft(tmp_path, adapters, spec, str(folder), task)
    merged = fmt.from_pretrained(str(folder), task=task, adapter=str(tmp_path))
    lazy = fmt.from_pretrained(str(folder), task=task, adapter=str(tmp_path), lazy=True)
    kinds = {type(x) for x in jax.tree.leaves(lazy.params)}
    assert hf.LazyParam in kinds and np.ndarray in kinds
    np.testing.assert_array_equal(logits(lazy), logits(merged))
    path = spec.targets[0].params[0][0]  # an adapted param, changed by the merge
    assert np.abs(hf.get_path(lazy.params, path) - hf.get_path(eager.params, path)).max() > 1e-3


# --- two processes ----------------------------------------------------------------


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_fsdp_processes_read_half_and_export_what_one_does(checkpoints, tmp_path):
    """tests/tools/sharded_load.py as two jax.distributed processes (gloo over
    127.0.0.1, one CPU device each) on the mesh fsdp=2: each places its half of
    every param read lazily, then both export together."""
    models = [[str(folder), task, str(tmp_path / family)]
              for family, (folder, task, _) in checkpoints.items()]
    port = free_port()
    processes = [subprocess.Popen(
        [sys.executable, str(SHARDED_LOAD), f"--models={json.dumps(models)}", "--mesh=fsdp=2",
         "--max_shard_size=40KB", f"--coordinator=127.0.0.1:{port}", "--num_processes=2",
         f"--process_id={i}"], cwd=ROOT, env=device_env(1), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    lines = [json.loads(line) for out, _ in outputs for line in out.splitlines()
             if line.startswith("{")]
    for folder, task, out in models:
        stored = sum(t.nbytes for t in safetensors_io.open_folder(folder).values())
        read = [line["bytes_read"] for line in lines if line["folder"] == folder]
        assert len(read) == 2 and all(0.45 * stored < r < 0.55 * stored for r in read), \
            (folder, read, stored)
        reference = tmp_path / f"{pathlib.Path(out).name}-one-process"
        fmt.from_pretrained(folder, task=task).save_pretrained(reference, max_shard_size="40KB")
        names = sorted(p.name for p in reference.iterdir())
        assert len(shard_files(reference)) >= 2
        assert sorted(p.name for p in pathlib.Path(out).iterdir()) == names
        for name in names:
            assert (reference / name).read_bytes() == (pathlib.Path(out) / name).read_bytes(), name


def test_two_process_lora_run_exports_what_one_process_does(tiny_model, tmp_path):
    """finetune.py with LoRA on fsdp=2 over two processes: both join the export of
    the merged model and of the adapter (the frozen params and the head sharded
    over both), process 0 writes them, and they equal one process's run's."""
    args = ["--config=experiments/configs/glue.py:rte", f"--config.data_dir={GLUE}",
            f"--config.model={tiny_model}", "--config.batch_size=8", "--config.eval_batch_size=8",
            "--config.max_seq_length=32", "--config.max_steps=2", "--config.dropout=0",
            "--config.max_eval_examples=16", "--config.lora_rank=4", "--config.learning_rate=1e-2"]
    run_finetune(*args, f"--workdir={tmp_path / 'one'}")
    port = free_port()
    processes = [subprocess.Popen(
        finetune_command(*args, f"--workdir={tmp_path / 'two'}", "--config.mesh=fsdp=2",
                         f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                         f"--process_id={i}"), cwd=ROOT, env=device_env(1),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr[-3000:]
    for folder, weights in (("model", "model.safetensors"),
                            ("adapter", "adapter_model.safetensors")):
        one, two = (safetensors_io.SafetensorsFile(tmp_path / run / folder / weights).tensors
                    for run in ("one", "two"))
        assert sorted(one) == sorted(two)
        for name in one:
            np.testing.assert_allclose(np.asarray(two[name]), np.asarray(one[name]), atol=1e-5,
                                       err_msg=f"{folder}: {name}")
    trained = safetensors_io.open_folder(tmp_path / "one/model")
    original = safetensors_io.open_folder(tiny_model)
    name = "bert.encoder.layer.0.attention.self.query.weight"  # LoRA changed it
    assert np.abs(np.asarray(trained[name]) - np.asarray(original[name[5:]])).max() > 1e-4
