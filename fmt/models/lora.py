"""LoRA: low-rank adapters as a transform of the params dict.

An adapter belongs to a Hugging Face module (`model.layers.0.self_attn.q_proj`)
and is kept in PEFT's layout, `lora_A` [rank, in] and `lora_B` [out, rank], so
PEFT's adapter folders are read and written as they are. Its delta is
`alpha / rank * B @ A` in torch Linear's [out, in] layout (transposed for
GPT-2's Conv1D, which PEFT calls fan_in_fan_out); the family's name map turns
it into fmt's layout, cut into parts where one HF weight is several fmt params
(GPT-2's fused c_attn), and `merge` adds it to the frozen params. Merging
happens inside the jitted step, so nothing but the adapters has a gradient or
optimizer state, and the frozen params keep their sharding.

LoRA dropout (dropout on the adapter's input) has no place in a merged weight:
this formulation trains without it.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np

from fmt import hf
from fmt.errors import UserError
from fmt.files import as_path, write_bytes_atomic, write_text_atomic

# PEFT's default target modules per model type.
DEFAULT_TARGETS = {"bert": ("query", "value"), "roberta": ("query", "value"),
                   "gpt2": ("c_attn",), "llama": ("q_proj", "v_proj"),
                   "mistral": ("q_proj", "v_proj"), "qwen2": ("q_proj", "v_proj"),
                   "bart": ("q_proj", "v_proj"), "t5": ("q", "v")}
# fmt task kinds -> PEFT task types, written into adapter_config.json.
PEFT_TASK_TYPES = {"causal_lm": "CAUSAL_LM", "classification": "SEQ_CLS",
                   "token_classification": "TOKEN_CLS", "question_answering": "QUESTION_ANS",
                   "masked_lm": None, "seq2seq_lm": "SEQ_2_SEQ_LM"}
SHOWN_MODULES = 12  # module names listed when targets match none


@dataclasses.dataclass(frozen=True)
class Target:
    """One adapted HF module: its weight's fmt params and the delta's shape."""
    module: str                              # e.g. "model.layers.0.self_attn.q_proj"
    params: tuple[tuple[tuple[str, ...], str], ...]  # (fmt path, transform) of each part
    in_features: int
    out_features: int
    conv1d: bool                             # HF stores the weight [in, out]


@dataclasses.dataclass(frozen=True)
class LoraSpec:
    rank: int
    alpha: float
    patterns: tuple[str, ...]
    targets: tuple[Target, ...]

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


def matches(module: str, pattern: str) -> bool:
    """PEFT's rule for a list of target names: the module's name is the pattern
    or ends with "." + pattern."""
    return module == pattern or module.endswith("." + pattern)


def plan(name_map, params: dict, rank: int, alpha: float, patterns,
         model_type: str) -> LoraSpec:
    """The modules that `patterns` (default: PEFT's for the family) pick out of the
    name map's dense weights, with their shapes read off `params`."""
    if rank < 1:
        raise UserError(f"--config.lora_rank={rank}: give a rank of 1 or more (0 turns LoRA off)")
    patterns = tuple(patterns) or DEFAULT_TARGETS.get(model_type, ())
    parts: dict[str, list] = {}
    for hf_name, path, transform in name_map:
        base = hf.parse_transform(transform)[0]
        if hf_name.endswith(".weight") and base in ("linear", "conv1d"):
            parts.setdefault(hf_name[:-len(".weight")], []).append((path, transform))
    chosen = [m for m in parts if any(matches(m, p) for p in patterns)]
    if not chosen:
        names = sorted({m.split(".")[-1] for m in parts})
        raise UserError(f"--config.lora_targets={','.join(patterns)} matches no weight of this "
                        f"{model_type} model; its dense modules are named "
                        f"{', '.join(names[:SHOWN_MODULES])} (e.g. {next(iter(parts), '-')})")
    targets = []
    for module in chosen:
        pieces = sorted(parts[module], key=lambda pt: hf.parse_transform(pt[1])[1])
        path, transform = pieces[0]
        shape = hf.get_path(params, path).shape  # fmt's [in, out-part]
        count = hf.parse_transform(transform)[2]
        targets.append(Target(module, tuple(pieces), int(shape[0]), int(shape[-1]) * count,
                              hf.parse_transform(transform)[0] == "conv1d"))
    return LoraSpec(rank, float(alpha), patterns, tuple(targets))


def init(spec: LoraSpec, seed: int) -> dict:
    """Fresh adapters as PEFT makes them: A uniform in ±1/sqrt(in) (Kaiming
    uniform with a = sqrt(5)), B zero, so training starts from the base model."""
    key = jax.random.key(seed)
    adapters = {}
    for i, t in enumerate(spec.targets):
        bound = 1.0 / np.sqrt(t.in_features)
        a = jax.random.uniform(jax.random.fold_in(key, i), (spec.rank, t.in_features),
                               jnp.float32, -bound, bound)
        adapters[str(i)] = {"lora_A": np.asarray(a),
                            "lora_B": np.zeros((t.out_features, spec.rank), np.float32)}
    return adapters


def merge(params: dict, adapters: dict, spec: LoraSpec) -> dict:
    """`params` with every adapter's delta added (jit-friendly; params not adapted
    are the same arrays)."""
    merged = hf.copy_tree(params)
    for i, t in enumerate(spec.targets):
        adapter = adapters[str(i)]
        delta = spec.scale * (adapter["lora_B"] @ adapter["lora_A"])  # [out, in]
        if t.conv1d:
            delta = delta.T  # Conv1D's [in, out], the layout its transform expects
        for path, transform in t.params:
            value = hf.get_path(params, path)
            hf.set_path(merged, path, value + hf.to_flax(delta, transform).astype(value.dtype))
    return merged


def count(adapters: dict) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(adapters))


# --- PEFT adapter folders -------------------------------------------------------

PREFIX = "base_model.model."


def save_peft(folder, adapters: dict, spec: LoraSpec, base_model: str, task: str,
              trained: dict[str, np.ndarray] | None = None) -> None:
    """`adapter_config.json` and `adapter_model.safetensors` as PEFT writes them;
    `trained` (HF name -> tensor) are fully trained weights, such as a new
    classification head, saved as PEFT saves its modules_to_save."""
    from safetensors.numpy import save
    folder = as_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, t in enumerate(spec.targets):
        for name in ("lora_A", "lora_B"):
            tensors[f"{PREFIX}{t.module}.{name}.weight"] = np.ascontiguousarray(
                np.asarray(jax.device_get(adapters[str(i)][name]), np.float32))
    trained = trained or {}
    tensors.update({PREFIX + name: np.ascontiguousarray(value) for name, value in trained.items()})
    modules_to_save = sorted({name.split(".")[0] for name in trained}) or None
    config = {"peft_type": "LORA", "task_type": PEFT_TASK_TYPES.get(task),
              "base_model_name_or_path": base_model, "r": spec.rank,
              "lora_alpha": spec.alpha, "lora_dropout": 0.0, "bias": "none",
              "target_modules": sorted(spec.patterns),
              "fan_in_fan_out": any(t.conv1d for t in spec.targets),
              "inference_mode": True, "init_lora_weights": True, "use_rslora": False,
              "use_dora": False, "modules_to_save": modules_to_save}
    write_bytes_atomic(folder / "adapter_model.safetensors", save(tensors))
    write_text_atomic(folder / "adapter_config.json", json.dumps(config, indent=2) + "\n")


def load_peft(folder, name_map, params: dict, model_type: str
              ) -> tuple[dict, LoraSpec, dict[str, np.ndarray]]:
    """A PEFT LoRA adapter folder as (adapters, spec, fully trained weights by HF
    name: its modules_to_save) for a model of this name map."""
    from safetensors.numpy import load
    folder = as_path(folder)
    config_path, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    if not config_path.is_file() or not weights.is_file():
        raise UserError(f"{folder}: not a PEFT adapter folder (needs adapter_config.json and "
                        f"adapter_model.safetensors)")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("use_rslora"):
        raise UserError(f"{config_path}: only plain LoRA adapters load (peft_type LORA, no "
                        f"DoRA or rsLoRA)")
    tensors = load(weights.read_bytes())  # an adapter is small; any file system
    modules = sorted({k[len(PREFIX):].rsplit(".lora_", 1)[0] for k in tensors if ".lora_" in k})
    targets = config.get("target_modules") or []
    patterns = tuple([targets] if isinstance(targets, str) else targets)
    spec = plan(name_map, params, int(config["r"]), float(config["lora_alpha"]), modules,
                model_type)
    spec = dataclasses.replace(spec, patterns=patterns)
    found = {t.module for t in spec.targets}
    missing = [m for m in modules if m not in found]
    if missing:
        raise UserError(f"{folder}: adapter modules {', '.join(missing[:3])} are not weights of "
                        f"this model; was it trained on another base?")
    adapters = {}
    for i, t in enumerate(spec.targets):
        adapters[str(i)] = {name: tensors[f"{PREFIX}{t.module}.{name}.weight"].astype(np.float32)
                            for name in ("lora_A", "lora_B")}
        want = {"lora_A": (spec.rank, t.in_features), "lora_B": (t.out_features, spec.rank)}
        for name, shape in want.items():
            if adapters[str(i)][name].shape != shape:
                raise UserError(f"{weights}: {t.module}.{name} has shape "
                                f"{adapters[str(i)][name].shape}, this model needs {shape}")
    trained = {k[len(PREFIX):]: v for k, v in tensors.items()
               if ".lora_" not in k and k.startswith(PREFIX)}
    return adapters, spec, trained
