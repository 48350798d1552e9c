"""`fmt.from_pretrained`: a Hugging Face folder in, a callable model with params out.

`Model` bundles what fine-tuning and inference need together: the Flax module,
its params (a plain nested dict), the family config, the fast tokenizer and the
label names; `save_pretrained` writes a folder that `transformers` opens.
"""

import dataclasses
import functools
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fmt import hf
from fmt.errors import UserError
from fmt.models import FAMILIES
from fmt.models.heads import SequenceClassifier

TASKS = ("classification",)


@dataclasses.dataclass
class Model:
    module: SequenceClassifier
    params: dict
    config: Any                         # the family's config dataclass
    hf_config: dict                     # the folder's config.json, kept for export
    tokenizer: Any
    label_names: tuple[str, ...] | None  # None: regression
    loading_info: dict = dataclasses.field(default_factory=dict)

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def logical_specs(self) -> dict:
        return logical_specs(self.module)

    @property
    def family(self):
        return FAMILIES[self.config.model_type][0]

    @functools.cached_property
    def _apply(self):
        return jax.jit(lambda params, ids, mask, types: self.module.apply(
            {"params": params}, ids, mask, types, deterministic=True))

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None) -> jax.Array:
        """Logits `[batch, num_labels]` for a batch of token ids, as `transformers` computes."""
        input_ids = jnp.asarray(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        return self._apply(self.params, input_ids, jnp.asarray(attention_mask),
                           jnp.asarray(token_type_ids))

    def export_config(self) -> dict:
        config = {k: v for k, v in self.hf_config.items()
                  if k not in ("id2label", "label2id", "num_labels", "_name_or_path")}
        config.update(self.config.to_hf())
        names = self.label_names or ("LABEL_0",)
        config.update(
            architectures=[self.family.HF_ARCHITECTURE[self.config.model_type]],
            id2label={str(i): name for i, name in enumerate(names)},
            label2id={name: i for i, name in enumerate(names)},
            problem_type=("regression" if self.label_names is None
                          else "single_label_classification"),
        )
        return config

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write config.json, model.safetensors and the tokenizer, atomically."""
        params = jax.device_get(self.params)
        tensors = hf.export_tensors(params, self.family.hf_name_map(self.config))
        hf.write_folder(folder, tensors, self.export_config(), self.tokenizer)


def build(config, num_labels: int, dtype=jnp.float32, param_dtype=jnp.float32,
          remat: bool = False):
    """The Flax module of a family's sequence classifier."""
    family = FAMILIES[config.model_type][0]
    encoder, head = family.build_classifier(config, num_labels, dtype, param_dtype, remat)
    return SequenceClassifier(encoder=encoder, head=head)


def _init(module: nn.Module, seed: int):
    ids = jnp.zeros((1, 8), jnp.int32)
    return module.init(jax.random.key(seed), ids, ids, ids)["params"]


def init_params(module: nn.Module, seed: int) -> dict:
    """Fresh params (unboxed from their logical-axis annotations) on the host."""
    return jax.device_get(nn.unbox(jax.jit(_init, static_argnums=(0, 1))(module, seed)))


def param_shapes(module: nn.Module) -> dict:
    """Every param's shape and dtype (`jax.ShapeDtypeStruct`), computing nothing."""
    return nn.unbox(jax.eval_shape(functools.partial(_init, module, 0)))


def fill_missing(params: dict, module: nn.Module, seed: int) -> dict:
    """Initialise the leaves of `params` that are still shapes (weights a checkpoint
    lacks), with the values `init_params(module, seed)` gives them. The rest of
    the init is dead code to XLA, so a new head costs the head, not the model."""
    leaves, treedef = jax.tree.flatten(params)
    missing = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.ShapeDtypeStruct)]
    if missing:
        fresh = jax.jit(lambda: [jax.tree.leaves(nn.unbox(_init(module, seed)))[i]
                                 for i in missing])()
        for i, value in zip(missing, jax.device_get(fresh)):
            leaves[i] = value
    return jax.tree.unflatten(treedef, leaves)


def logical_specs(module: nn.Module) -> dict:
    """Each param's logical axis names (a PartitionSpec of names like "embed")."""
    return nn.get_partition_spec(jax.eval_shape(functools.partial(_init, module, 0)))


def _label_names_from(hf_config: dict, num_labels: int | None, label_names):
    """Label names for the head: given, else the checkpoint's own if it was trained
    for classification with as many labels, else LABEL_i. None means regression
    (one output), as `transformers` reads a one-label checkpoint."""
    if num_labels == 1:
        return None
    if label_names is not None:
        if len(label_names) < 2:
            raise UserError(f"label_names={tuple(label_names)}: a classifier needs two or "
                            "more labels; use num_labels=1 for regression")
        return tuple(label_names)
    trained = any(a.endswith("ForSequenceClassification")
                  for a in hf_config.get("architectures") or [])
    id2label = hf_config.get("id2label") or {}
    if trained and num_labels in (None, len(id2label)):
        if hf_config.get("problem_type") == "regression" or len(id2label) == 1:
            return None
        if id2label:
            return tuple(id2label[k] for k in sorted(id2label, key=int))
    return tuple(f"LABEL_{i}" for i in range(num_labels or 2))


def from_pretrained(name_or_folder: str, task: str = "classification",
                    num_labels: int | None = None, label_names=None, *, dtype=jnp.float32,
                    param_dtype=jnp.float32, seed: int = 0, dropout: float | None = None,
                    remat: bool = False) -> Model:
    """Load a Hugging Face checkpoint (folder, hub id or packaged model) for `task`.

    `num_labels == 1` is regression (STS-B). Weights the checkpoint lacks, such
    as a new classification head, are initialised from `seed` and reported.
    `dropout`, when given, replaces the config's hidden and attention dropout;
    `remat` recomputes layer activations in the backward pass to save memory.
    """
    if task not in TASKS:
        raise UserError(f"task {task!r} is not supported; choose one of {TASKS}")
    folder = hf.resolve_folder(name_or_folder)
    hf_config = hf.read_config(folder)
    model_type = hf_config.get("model_type")
    if model_type not in FAMILIES:
        raise UserError(f"{folder}/config.json: model_type {model_type!r} is not supported; "
                        f"known: {sorted(FAMILIES)}")
    config = FAMILIES[model_type][1].from_hf(hf_config)
    if dropout is not None:
        config = dataclasses.replace(config, hidden_dropout_prob=dropout,
                                     attention_probs_dropout_prob=dropout)
    names = _label_names_from(hf_config, num_labels, label_names)
    if num_labels is not None and names is not None and len(names) != num_labels:
        raise UserError(f"num_labels={num_labels} but {len(names)} label names were given")
    module = build(config, 1 if names is None else len(names), dtype, param_dtype, remat)
    family = FAMILIES[model_type][0]
    tensors = hf.read_weights(folder)
    params, info = hf.load_params(tensors, family.hf_name_map(config), param_shapes(module),
                                  model_type, str(folder))
    hf.report_loading(info, family.HF_ARCHITECTURE[model_type], str(folder))
    params = jax.tree.map(np.asarray, fill_missing(params, module, seed))
    return Model(module, params, config, hf_config, hf.load_tokenizer(folder), names, info)
