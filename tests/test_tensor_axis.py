"""The tensor axis: meshes with `tensor` give one device's update, for every family.

Each family's tiny checkpoint, written by `transformers`, takes the same first
train steps on one device and on 8-device meshes with a tensor axis
(`--config.mesh` values, made by the loop's own `make_mesh`), all in one process
per family (tests/tools/mesh_steps.py runs the loop's `compile_steps`; a
finetune.py process per mesh would cost several times as long). Encoders train
classification on RTE, decoders causal-LM on Shakespeare. Between them the
meshes split the batch over `data`, `fsdp` or both beside `tensor` 2 or 4. The
grouped-query decoders have fewer key/value heads than the tensor axis: Llama
one (against 2 and 4), Qwen2 and Mistral two (against 4); their key/value
kernels are then split within a head (a dimension is split wherever the axis
divides it), which the partitioner must, and does, undo where attention needs
whole heads.

SGD with momentum (sharded as its param), so the updates are sums of
gradients. Dropout is on for some families (its masks do not depend on the
mesh) and off for the others, so that both attention paths run: the fused
kernel, and the explicit softmax with grouped key/value heads repeated. Each
step's loss and gradient norm must agree to 1e-5, and every param after the
steps to 1e-5 of that param's update, give or take two float32 roundings at
the scale of the param (or of the largest update, for a param that starts at
zero): the rounding of a data-parallel sum can move a param by one ulp, and
the updates of the split kernels are asserted to be far above that. The
attention and MLP kernels must really be split over `tensor`, so that a mesh
that replicated them could not pass.
"""

import json
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import GLUE, ROOT, TEXT, device_env

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

STEPS = 3
RTOL = 1e-5
# family -> (tensor meshes, dropout).
FAMILIES = {
    "bert": (("data=4,tensor=2", "fsdp=2,tensor=4"), 0.1),
    "roberta": (("data=2,fsdp=2,tensor=2",), 0.1),
    "gpt2": (("fsdp=4,tensor=2",), 0.1),
    "llama": (("data=2,fsdp=2,tensor=2", "data=2,tensor=4"), 0.0),
    "qwen2": (("fsdp=2,tensor=4",), 0.1),
    "mistral": (("data=2,tensor=4",), 0.0),
}
COMMON = dict(batch_size=8, eval_batch_size=8, max_train_examples=64, max_eval_examples=8,
              optimizer="sgd", learning_rate=0.1, lr_decay="constant", warmup_ratio=0.0,
              progress_bar=False)
CONFIGS = {
    "encoder": dict(config="experiments/configs/glue.py:rte",
                    # One bucket length: one compilation per mesh.
                    set=dict(COMMON, data_dir=str(GLUE), max_seq_length=64,
                             bucket_lengths=[64])),
    "decoder": dict(config="experiments/configs/clm.py", set=dict(COMMON, max_seq_length=32)),
}
SIZES = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=128)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model, tiny_decoder):
    """family -> a random 2-layer checkpoint folder with a tokenizer."""
    def make(family: str) -> pathlib.Path:
        if family == "bert":
            return tiny_model  # MiniLM's tokenizer: 30522 ids, which 4 does not divide
        if family == "gpt2":
            return tiny_decoder("gpt2")  # 500 byte-level BPE ids, as the decoders below
        folder = tmp_path_factory.mktemp(f"tensor-{family}")
        torch.manual_seed(0)
        if family == "roberta":
            from fmt.data.tokenizer_training import train_tokenizer
            texts = TEXT.read_text().splitlines()
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(train_tokenizer(iter(texts), "bpe", 512, folder)))
            config = transformers.RobertaConfig(
                vocab_size=len(tokenizer), **{**SIZES, "max_position_embeddings": 130},
                type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2)
            transformers.RobertaModel(config, add_pooling_layer=False).save_pretrained(folder)
            return folder
        source = tiny_decoder("gpt2")
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (source / name).exists():
                shutil.copy(source / name, folder / name)
        vocab_size = json.loads((source / "config.json").read_text())["vocab_size"]
        ids = dict(vocab_size=vocab_size, bos_token_id=0, eos_token_id=0,
                   tie_word_embeddings=False)
        if family == "llama":  # one key/value head for four query heads
            config = transformers.LlamaConfig(**SIZES, **ids, num_key_value_heads=1)
            model = transformers.LlamaForCausalLM(config)
        elif family == "qwen2":  # query/key/value biases
            config = transformers.Qwen2Config(**SIZES, **ids, num_key_value_heads=2)
            model = transformers.Qwen2ForCausalLM(config)
        else:  # a window shorter than the 32-token blocks
            config = transformers.MistralConfig(**SIZES, **ids, num_key_value_heads=2,
                                                sliding_window=8)
            model = transformers.MistralForCausalLM(config)
        model.save_pretrained(folder)
        return folder
    return make


@pytest.fixture(scope="module")
def trained(checkpoint, tmp_path_factory):
    """family -> (runs.json, params.npz) of mesh_steps.py on 8 simulated devices."""
    cache = {}

    def run(family: str) -> tuple[dict, dict]:
        if family in cache:
            return cache[family]
        out = tmp_path_factory.mktemp(f"meshes-{family}")
        kind = "encoder" if family in ("bert", "roberta") else "decoder"
        meshes, dropout = FAMILIES[family]
        spec = dict(CONFIGS[kind], steps=STEPS, meshes=["one", *meshes])
        spec["set"] = dict(spec["set"], model=str(checkpoint(family)), dropout=dropout)
        (out / "spec.json").write_text(json.dumps(spec))
        env = device_env(8)
        # Compiling dominates; LLVM's optimisations of the CPU code (not the SPMD
        # partitioning under test) take a third of it.
        env["XLA_FLAGS"] += " --xla_backend_optimization_level=0"
        result = subprocess.run(
            [sys.executable, str(ROOT / "tests/tools/mesh_steps.py"), str(out / "spec.json"),
             str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
        assert result.returncode == 0, result.stderr[-4000:]
        with np.load(out / "params.npz") as arrays:
            cache[family] = json.loads((out / "runs.json").read_text()), dict(arrays)
        return cache[family]
    return run


def tensor_dim(path: str) -> int | None:
    """Which dimension of an attention or MLP param the tensor axis must split."""
    *_, module, name = path.split("/")
    if "/attention/" in path and module in ("query", "key", "value"):
        return 1 if name == "kernel" else 0
    if "/attention/out/kernel" in path or "/mlp/down/kernel" in path:
        return 0
    if "/mlp/" in path and module in ("up", "gate"):
        return 1 if name == "kernel" else 0
    return None


def check_split(run: dict, path: str) -> None:
    """Each device's shard is the param's shape divided by its spec's mesh axes."""
    param, mesh = run["params"][path], run["mesh"]
    for dim, size in enumerate(param["shape"]):
        axes = param["spec"][dim] if dim < len(param["spec"]) else None
        axes = [axes] if isinstance(axes, str) else axes or []
        parts = int(np.prod([mesh[axis] for axis in axes]))
        assert size % parts == 0 and param["shard_shape"][dim] == size // parts, (path, param)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tensor_meshes_match_one_device(family, trained):
    runs, arrays = trained(family)
    reference = runs["one"]
    assert len(reference["losses"]) == STEPS
    paths = sorted(reference["params"])
    split = [p for p in paths if tensor_dim(p) is not None]
    # Both layers' query, key, value, out and two or three MLP kernels.
    assert len([p for p in split if p.endswith("kernel")]) >= 2 * 6, split
    initial = {p: arrays[f"initial/{p}"] for p in paths}
    update = {p: arrays[f"one/{p}"] - initial[p] for p in paths}
    largest = max(np.abs(u).max() for u in update.values())

    def tolerance(path):  # key biases, which softmax ignores, get rounding noise only
        scale = max(np.abs(arrays[f"one/{path}"]).max(), largest)
        return RTOL * np.abs(update[path]).max() + 2 * np.spacing(scale)

    for path in (p for p in split if p.endswith("kernel")):  # a wrong update shows
        assert np.abs(update[path]).max() > 100 * tolerance(path), path
    for mesh in FAMILIES[family][0]:
        run = runs[mesh]
        assert run["mesh"]["tensor"] in (2, 4) and np.prod(list(run["mesh"].values())) == 8
        for path in paths:
            check_split(run, path)
        for path in split:
            dim = tensor_dim(path)
            param = run["params"][path]
            assert "tensor" in json.dumps(param["spec"][dim]), (mesh, path, param)
            assert param["shard_shape"][dim] < param["shape"][dim], (mesh, path, param)
        for name in ("losses", "grad_norms"):
            got, want = np.array(run[name]), np.array(reference[name])
            assert np.all(np.abs(got - want) <= RTOL * np.abs(want)), (mesh, name, got, want)
        for path in paths:
            error = np.abs(arrays[f"{mesh}/{path}"] - arrays[f"one/{path}"]).max()
            assert error <= tolerance(path), (mesh, path, error, tolerance(path))


def test_vocabulary_split_only_where_the_axis_divides_it(trained):
    """BERT's 30522 word embeddings split over tensor=2 but stay whole over 4 (each
    dimension a mesh axis does not divide stays whole), still split by fsdp."""
    runs, _ = trained("bert")
    path = "encoder/embeddings/word/embedding"
    two, four = (runs[mesh]["params"][path] for mesh in FAMILIES["bert"][0])
    assert two["spec"][0] == "tensor" and two["shard_shape"] == [30522 // 2, 32], two
    assert four["spec"][0] is None and four["shard_shape"] == [30522, 16], four
