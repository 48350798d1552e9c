"""`fmt.from_pretrained`: a Hugging Face folder in, a callable model with params out.

`Model` bundles what fine-tuning and inference need together: the Flax module
(a family's backbone joined to the head its task kind asks for), its params (a
plain nested dict), the family config, the fast tokenizer and the label names;
`save_pretrained` writes a folder that `transformers` opens as the matching
`*For<Task>` class.
"""

import dataclasses
import functools
import logging
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from fmt import generate as generation, generate_seq2seq, hf
from fmt.scratch import scratch_config
from fmt.errors import UserError
from fmt.models import FAMILIES
from fmt.models.heads import HeadSpec, TaskModel

log = logging.getLogger("fmt")


def _kinds():
    from fmt.tasks import KINDS  # tasks import data readers; only loading needs them
    return KINDS


@dataclasses.dataclass
class Model:
    module: TaskModel
    params: dict
    config: Any                         # the family's config dataclass
    hf_config: dict                     # the folder's config.json, kept for export
    tokenizer: Any
    label_names: tuple[str, ...] | None  # None: regression, or a kind without labels
    loading_info: dict = dataclasses.field(default_factory=dict)
    task: str = "classification"        # the task kind (fmt.tasks.KINDS)
    head: HeadSpec | None = None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def logical_specs(self) -> dict:
        return logical_specs(self.module)

    @property
    def family(self):
        return FAMILIES[self.config.model_type][0]

    @property
    def max_positions(self) -> int:
        """The longest input, in tokens, that the model's positions allow."""
        return self.family.max_positions(self.config)

    @functools.cached_property
    def _apply(self):
        return jax.jit(lambda params, ids, mask, types, extra: self.module.apply(
            {"params": params}, ids, mask, types, deterministic=True, **extra))

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, positions=None,
                 segment_ids=None, decoder_input_ids=None, decoder_attention_mask=None,
                 example_spans=None):
        """The task kind's outputs for a batch of token ids, as `transformers`
        computes them: `[batch, num_labels]` (classification), `[batch, seq,
        num_labels]` (token classification), `[batch, seq, vocab]` (masked-LM,
        causal-LM), `[batch, target_len, vocab]` (seq2seq, given
        `decoder_input_ids` and optionally `decoder_attention_mask`). Decoders
        also take `positions` (default: counted over real tokens, so left
        padding is fine); packed rows (fmt.data.packing) give `positions`,
        `segment_ids` and `example_spans` to encoders and decoders alike."""
        input_ids = jnp.asarray(input_ids)
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        extra = {name: jnp.asarray(value) for name, value in
                 (("positions", positions), ("segment_ids", segment_ids),
                  ("example_spans", example_spans), ("decoder_input_ids", decoder_input_ids),
                  ("decoder_attention_mask", decoder_attention_mask)) if value is not None}
        return self._apply(self.host_params(), input_ids, jnp.asarray(attention_mask),
                           jnp.asarray(token_type_ids), extra)

    def generate(self, input_ids, attention_mask=None, max_new_tokens: int = 20,
                 do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, eos_token_id=None, seed: int = 0,
                 pad_token_id: int | None = None, num_beams: int = 1,
                 length_penalty: float = 1.0, early_stopping=False,
                 no_repeat_ngram_size: int = 0, min_length: int = 0):
        """Generated ids, as `transformers`' generate returns them.

        A causal-LM decoder continues the prompts `[batch, length]` (left-padded
        as for `transformers`, or any padding with `attention_mask`):
        `[batch, length + max_new_tokens]` ids, the prompts first, pad after a
        row's end; greedy unless `do_sample` (temperature, top_k, top_p, as
        `transformers` applies them, keyed by `seed`). See fmt/generate.py.

        An encoder-decoder (T5, BART; task 'seq2seq_lm') writes a target for
        each source: `[batch, 1 + generated]`, the decoder start token first,
        columns up to the longest row's end, pad after each row's end; greedy,
        or beam search with `num_beams` > 1 (`length_penalty`,
        `early_stopping`: True, False or "never"), `no_repeat_ngram_size` and
        `min_length` (counting the start token) as `transformers` applies
        them. The defaults are `GenerationConfig`'s, not a checkpoint's own
        (bart-large-cnn's config asks for 4 beams, for one): pass them. Token
        ids (decoder start, end, pad, forced_bos/eos_token_id) come from the
        config. See fmt/generate_seq2seq.py.

        With a KV cache, one compilation per batch size, input bucket and
        setting."""
        self.host_params()
        if is_encoder_decoder(self.module):
            if do_sample:
                raise UserError("do_sample=True: sampling is not supported for encoder-decoders "
                                "yet; use do_sample=False (greedy, or num_beams > 1)")
            return generate_seq2seq.generate(
                self, input_ids, attention_mask, max_new_tokens=max_new_tokens,
                num_beams=num_beams, length_penalty=length_penalty,
                early_stopping=early_stopping, no_repeat_ngram_size=no_repeat_ngram_size,
                min_length=min_length, eos_token_id=eos_token_id, pad_token_id=pad_token_id)
        for name, value, default in (("num_beams", num_beams, 1),
                                     ("no_repeat_ngram_size", no_repeat_ngram_size, 0),
                                     ("min_length", min_length, 0)):
            if value != default:
                raise UserError(f"{name}={value}: not supported for decoder-only models yet; "
                                f"leave it at {default}")
        return generation.generate(
            self, input_ids, attention_mask, max_new_tokens=max_new_tokens,
            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            eos_token_id=eos_token_id, pad_token_id=pad_token_id, seed=seed)

    def name_map(self) -> list:
        return name_map(self.config, self.head)

    def export_config(self) -> dict:
        config = {k: v for k, v in self.hf_config.items()
                  if k not in ("id2label", "label2id", "num_labels", "_name_or_path",
                               "problem_type", "architectures")}
        config.update(self.config.to_hf())
        config.update(architectures=[self.head.architecture])
        config.update(_kinds()[self.task].hf_config_fields(self.label_names))
        if config.get("pad_token_id") is None:
            # A decoder checkpoint often has none, and HF's decoder classifiers
            # find each row's last token by it (and refuse batches without
            # one): the id fmt's batches are padded with, else end-of-text.
            eos = config.get("eos_token_id")
            eos = eos[0] if isinstance(eos, list) else eos
            pad = getattr(self.tokenizer, "pad_token_id", None)
            config["pad_token_id"] = pad if pad is not None else eos
        return config

    def host_params(self) -> dict:
        """The params, with lazy ones (`from_pretrained(lazy=True)`) read whole, once."""
        if any(isinstance(x, hf.LazyParam) for x in jax.tree.leaves(self.params)):
            self.params = jax.tree.map(
                lambda x: np.asarray(x) if isinstance(x, hf.LazyParam) else x, self.params)
        return self.params

    def save_pretrained(self, folder: str | os.PathLike,
                        max_shard_size: int | str = "5GB") -> None:
        """Write config.json, the weights and the tokenizer, atomically.

        The weights keep their dtype (bf16 stays bf16) and stream one tensor at a
        time into `model.safetensors`, or past `max_shard_size` bytes into shard
        files with `transformers`' index, so the host holds one tensor, not the
        model. Params spread over processes are gathered one at a time: every
        process must call this (a collective), and process 0 writes.
        """
        from fmt.train.sharding import host_array
        tensors = hf.export_stream(self.params, self.name_map(), host_array)
        if jax.process_index() != 0:
            for tensor in tensors:  # join the gathers that process 0's writing makes
                tensor.read()
            return
        config = self.export_config()
        floats = {t.dtype.name for t in tensors} & {"float16", "bfloat16", "float32", "float64"}
        if len(floats) == 1:  # the dtype transformers then loads the weights in
            config["dtype"] = floats.pop()
            if "torch_dtype" in config:
                config["torch_dtype"] = config["dtype"]
        hf.write_folder(folder, tensors, config, self.tokenizer, max_shard_size)


def build(config, task: str = "classification", num_outputs: int = 2, dtype=jnp.float32,
          param_dtype=jnp.float32, remat: bool = False) -> tuple[TaskModel, HeadSpec]:
    """The Flax module of a family's backbone with the head that `task` needs."""
    family = FAMILIES[config.model_type][0]
    head = family.head(_kinds()[task].head_for(family), config, num_outputs, dtype,
                       param_dtype)
    backbone = family.backbone(config, pooler=head.pooler, dtype=dtype,
                               param_dtype=param_dtype, remat=remat)
    return TaskModel(encoder=backbone, head=head.module), head


def name_map(config, head: HeadSpec) -> list:
    """The HF names of every weight: the family's backbone and the head."""
    family = FAMILIES[config.model_type][0]
    return family.backbone_name_map(config, head.pooler) + head.name_map


def _init(module: nn.Module, seed: int):
    ids = jnp.zeros((1, 8), jnp.int32)
    decoder = {"decoder_input_ids": ids} if is_encoder_decoder(module) else {}
    return module.init(jax.random.key(seed), ids, ids, ids, **decoder)["params"]


def is_encoder_decoder(module: nn.Module) -> bool:
    """Whether the backbone is an encoder-decoder (fmt/models/encdec.py)."""
    return getattr(module.encoder, "is_encoder_decoder", False)


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


def _trained_labels(kind, hf_config: dict) -> tuple[str, ...] | None:
    """The label names a checkpoint's head of this kind was trained for, in order;
    None if it has no such head."""
    id2label = hf_config.get("id2label") or {}
    trained = any(a.endswith(kind.architecture_suffix)
                  for a in hf_config.get("architectures") or [])
    if not (trained and id2label and kind.labels):
        return None
    return tuple(id2label[k] for k in sorted(id2label, key=int))


def _label_names_from(kind, hf_config: dict, num_labels: int | None, label_names):
    """Label names for the head: given, else the checkpoint's own if it was trained
    for this kind with as many labels, else LABEL_i. None means regression (one
    output, as `transformers` reads a one-label classifier) or a kind without
    labels."""
    if kind.labels is None:
        if num_labels is not None or label_names is not None:
            raise UserError(f"task {kind.name!r} has no labels; leave out num_labels and "
                            "label_names")
        return None
    if num_labels == 1 and kind.labels == "classes_or_score":
        return None
    if label_names is not None:
        if len(label_names) < 2 and kind.labels == "classes_or_score":
            raise UserError(f"label_names={tuple(label_names)}: a classifier needs two or "
                            "more labels; use num_labels=1 for regression")
        return tuple(label_names)
    trained = _trained_labels(kind, hf_config)
    if trained is not None and num_labels in (None, len(trained)):
        if kind.labels == "classes_or_score" and (
                hf_config.get("problem_type") == "regression" or len(trained) == 1):
            return None
        return trained
    return tuple(f"LABEL_{i}" for i in range(num_labels or 2))


def from_pretrained(name_or_folder: str, task: str = "classification",
                    num_labels: int | None = None, label_names=None, *, dtype=jnp.float32,
                    param_dtype=jnp.float32, seed: int = 0, dropout: float | None = None,
                    remat: bool = False, new_head_note: str | None = None,
                    scratch: dict | None = None, adapter: str | None = None,
                    lazy: bool = False) -> Model:
    """Load a Hugging Face checkpoint (folder, hub id or packaged model) for `task`,
    a task kind of `fmt.tasks.KINDS` ("classification", "token_classification",
    "question_answering", "masked_lm", "causal_lm", "seq2seq_lm").

    For classification `num_labels == 1` is regression (STS-B). Weights the
    checkpoint lacks, such as a new head, are initialised from `seed` and
    reported as `transformers` reports them, or, given `new_head_note`, in one
    info line with that note (a fine-tuning run is about to train them).
    `dropout`, when given, replaces the config's hidden and attention dropout;
    `remat` recomputes layer activations in the backward pass to save memory.
    `scratch` (layer count and sizes, see `fmt.scratch.scratch_config`) builds a new model
    around the folder's tokenizer instead of loading weights: pretraining from
    scratch. `adapter`, a PEFT LoRA adapter folder, is merged into the weights.
    `lazy` leaves the loaded params in the checkpoint (`hf.LazyParam`) until
    asked for: `sharding.place` then reads only the slices that this process's
    devices hold, so no host holds the whole model; `host_params()` (and calling
    the model) reads them whole.
    """
    kinds = _kinds()
    if task not in kinds:
        raise UserError(f"task {task!r} is not supported; choose one of {tuple(kinds)}")
    kind = kinds[task]
    folder = hf.resolve_folder(name_or_folder)
    tokenizer = with_pad_token(hf.load_tokenizer(folder)) if scratch else None
    hf_config = scratch_config(tokenizer, scratch, folder) if scratch else hf.read_config(folder)
    model_type = hf_config.get("model_type")
    if model_type not in FAMILIES:
        raise UserError(f"{folder}/config.json: model_type {model_type!r} is not supported; "
                        f"known: {sorted(FAMILIES)}")
    family, config_class = FAMILIES[model_type]
    config = config_class.from_hf(hf_config)
    if dropout is not None:
        config = family.with_dropout(config, dropout)
    names = _label_names_from(kind, hf_config, num_labels, label_names)
    if num_labels is not None and names is not None and len(names) != num_labels:
        raise UserError(f"num_labels={num_labels} but {len(names)} label names were given")
    num_outputs = kind.num_outputs(names, config)
    module, head = build(config, task, num_outputs, dtype, param_dtype, remat)
    if scratch:
        log.info("%s: a new %s of %d parameters, initialized from seed %d (from scratch)",
                 folder, head.architecture, sum(int(np.prod(x.shape)) for x in
                                                jax.tree.leaves(param_shapes(module))), seed)
        params, info = init_params(module, seed), {"missing_keys": [], "unexpected_keys": []}
    else:
        tensors = hf.read_weights(folder)
        names_to_load = name_map(config, head)
        ignored = head.ignored
        trained_for = _trained_labels(kind, hf_config)
        if label_names is not None and trained_for is not None and trained_for != names:
            # A head trained for other labels (or another order) would predict the
            # wrong ones: it is left out and a new one trained, as the log says.
            log.info("%s: its head was trained for the labels %s, not %s; a new head is "
                     "initialized", folder, trained_for, names)
            names_to_load = family.backbone_name_map(config, head.pooler)
            ignored += tuple(hf_name for hf_name, _, _ in head.name_map)
        params, info = hf.load_params(tensors, names_to_load, param_shapes(module),
                                      family.weight_prefix(config), str(folder), ignored)
        hf.report_loading(info, head.architecture, str(folder), new_head_note)
        params = fill_missing(params, module, seed)
        if not lazy:
            params = jax.tree.map(np.asarray, params)
        tokenizer = with_pad_token(hf.load_tokenizer(folder))
    if adapter is not None:
        from fmt.models import lora
        names = name_map(config, head)
        adapters, spec, trained = lora.load_peft(adapter, names, params, model_type)
        for hf_name, path, transform in names:  # modules_to_save: a trained head
            if hf_name in trained:
                hf.set_path(params, path, hf.to_flax(trained[hf_name], transform))
        for target in spec.targets:  # the merge adds to these: they are read whole
            for path, _ in target.params:
                hf.set_path(params, path, np.asarray(hf.get_path(params, path)))
        params = lora.merge(params, adapters, spec)
        log.info("%s: LoRA adapter of rank %d on %d modules merged", adapter, spec.rank,
                 len(spec.targets))
    return Model(module, params, config, hf_config, tokenizer, names, info, task, head)


def with_pad_token(tokenizer):
    """The tokenizer, given its end-of-text token as pad token if it has none.

    Decoders' tokenizers (GPT-2, Llama) usually have no pad token. Padding is
    masked out, so any id serves; end-of-text is the custom with
    `transformers`, and the exported config then names it (`export_config`).
    """
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
