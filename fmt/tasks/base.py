"""The task-kind interface: the one place where kinds differ (DESIGN principle 7).

A task kind says
- which head the model gets (`head`, a head kind each family may provide) and
  what its labels are (`labels`: "classes", "classes_or_score" or None);
- how records are read (`load`) and become features (`featurize`): named
  per-token and per-example arrays with their pad values (fmt.data.features);
  `train_view` / `eval_view` may change them per epoch (masked-LM's masks);
- the loss as a (sum, weight) pair over a batch, so that the step divides by
  the weight of the whole global batch (examples, or target tokens);
- what evaluation keeps of each batch on device (`eval_outputs`: small
  per-row arrays, never `[batch, seq, vocab]` logits), and the metrics and
  predictions made of them on the host (`evaluate`), gathered back per example
  by the task itself (one example may have several features);
- how predictions are written (`write_predictions`).

The loop, step, batching, sharding, checkpoints and export call these and know
no kind by name. A new kind is a new file here plus a line in `KINDS`.

How the kinds still to come fit:
- extractive QA: `featurize` cuts each example into stride windows and keeps,
  in `info`, which example and character offsets each window has; `eval_outputs`
  are the start/end logits of a row; `evaluate` groups windows by example. The
  loop never learns that one example made several features.
- packing (`packable` kinds): the batching layer, not the kind, packs a
  batch's examples into rows (fmt.data.packing) and adds `segment_ids`,
  restarting `positions` and `example_spans`, which reach the backbone as
  model inputs; per-example fields and `weights` stay one per example, and a
  pooling head reads each example's own token, so a classifier's loss and
  outputs are what they are unpacked. A kind whose targets look across tokens
  masks segment boundaries in its loss (causal-LM's shifted labels).
- seq2seq: the decoder's fields form a `TokenGroup` with a padded length of
  its own; its `eval_apply` generates inside the eval step, and `evaluate`
  scores the decoded text.
"""

import pathlib
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from fmt.data.features import IGNORE, Features


class Splits:
    """A run's records: `train` and named eval splits (the first is the main one),
    where each came from, and the label names the data defines."""

    def __init__(self, name: str, train: list, evals: dict[str, list],
                 origins: dict[str, str], label_names: tuple[str, ...] | None = None):
        self.name, self.train, self.evals, self.origins = name, train, evals, origins
        self.label_names = label_names


class TaskKind:
    name: ClassVar[str]
    head: ClassVar[str]                   # the head kind families provide
    labels: ClassVar[str | None] = None   # "classes", "classes_or_score" or None
    architecture_suffix: ClassVar[str] = ""  # HF class suffix of trained checkpoints
    # Whether several examples may share a row (`--config.packing`): kinds whose
    # targets are per token, or per example through a pooled token; not those
    # whose targets are token positions (QA) or that have a second token group
    # (seq2seq). Models must read `segment_ids`, `positions`, `example_spans`.
    packable: ClassVar[bool] = False
    # Whether the eval outputs are one per example (pooled heads), not per row:
    # then evaluation packs too, and each packed slot's output is its example's.
    per_example_outputs: ClassVar[bool] = False

    def __init__(self, config):
        self.config = config
        self.metric_names: tuple[str, ...] = ()

    @property
    def main_metric(self) -> str:
        """The metric a run is judged by (model selection in sweeps and tables): the
        first the kind reports."""
        return self.metric_names[0]

    # --- data -----------------------------------------------------------------
    def load(self) -> Splits:
        raise NotImplementedError

    def featurize(self, model, records: list, split: str, source: str) -> Features:
        raise NotImplementedError

    def train_view(self, features: Features, epoch: int):
        """What training batches read in `epoch`; the features themselves by default."""
        return features

    def eval_view(self, features: Features):
        return features

    # --- model side -------------------------------------------------------------
    @classmethod
    def head_for(cls, family) -> str:
        """The head kind a family (a module of fmt.models) gets for this kind."""
        return cls.head

    @classmethod
    def num_outputs(cls, label_names, model_config) -> int:
        """The head's width: one per label, 1 for regression (no label names)."""
        return 1 if label_names is None else len(label_names)

    @staticmethod
    def hf_config_fields(label_names) -> dict:
        """What the exported config.json says about the head (labels, problem type)."""
        return {}

    targets: ClassVar[tuple[str, ...]] = ("labels", "weights")  # batch fields, not inputs

    def model_inputs(self, batch: dict) -> dict:
        """The batch fields the module takes as keyword arguments."""
        return {k: v for k, v in batch.items() if k not in self.targets}

    def loss(self, outputs, batch: dict) -> tuple[jax.Array, jax.Array]:
        """(summed loss, weight) over the batch; rows with `weights == 0` count nowhere."""
        raise NotImplementedError

    def eval_outputs(self, outputs, batch: dict) -> dict[str, jax.Array]:
        """Per-row arrays that evaluation brings to the host (computed on device)."""
        raise NotImplementedError

    def eval_apply(self, module, params, batch: dict) -> dict[str, jax.Array]:
        """The eval step's work on a batch, inside its jit: the module's outputs
        reduced by `eval_outputs`. Kinds that generate text add their decoding."""
        outputs = module.apply({"params": params}, **self.model_inputs(batch),
                               deterministic=True)
        return self.eval_outputs(outputs, batch)

    # --- host side ----------------------------------------------------------------
    def evaluate(self, outputs: dict[str, list], features: Features) -> tuple[dict, Any]:
        """(metrics, predictions) from the eval outputs of every example (lists in
        the features' order)."""
        raise NotImplementedError

    def write_predictions(self, folder: pathlib.Path, split: str, features: Features,
                          predictions) -> None:
        """Write one split's predictions under `folder` (nothing by default)."""


def token_cross_entropy(logits: jax.Array, labels: jax.Array, smoothing: float = 0.0):
    """(summed cross-entropy over labelled tokens, their count) for `[batch, seq,
    classes]` logits and `[batch, seq]` labels where IGNORE marks no target
    (filler rows are all IGNORE, so per-token kinds need no `weights`: a packed
    batch's weights are per example, not per row).

    With `smoothing` e, the target is (1 - e) on the label plus e spread evenly
    over the classes (`transformers`' LabelSmoother): (1 - e) * nll + e * the
    mean of -log p, computed without a `[batch, seq, classes]` target."""
    import optax
    valid = labels != IGNORE
    logits = logits.astype(jnp.float32)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(valid, labels, 0))
    if smoothing:
        uniform = jax.nn.logsumexp(logits, axis=-1) - logits.mean(axis=-1)
        losses = (1 - smoothing) * losses + smoothing * uniform
    return jnp.where(valid, losses, 0.0).sum(), valid.sum().astype(jnp.float32)


def token_lm_outputs(logits: jax.Array, labels: jax.Array) -> dict:
    """Each row's summed loss, labelled-token count and correct count (on device:
    `[batch, seq, vocab]` logits never leave it), for language-model kinds."""
    import optax
    valid = labels != IGNORE
    target = jnp.where(valid, labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, target)
    correct = (jnp.argmax(logits, axis=-1) == target) & valid
    return {"loss_sum": jnp.where(valid, losses, 0.0).sum(-1),
            "count": valid.sum(-1), "correct": correct.sum(-1)}


def token_lm_metrics(outputs: dict) -> dict:
    """Perplexity, loss and accuracy over every labelled token of a split."""
    import numpy as np
    loss_sum = float(np.sum(outputs["loss_sum"], dtype=np.float64))
    count = int(np.sum(outputs["count"]))  # > 0: the kinds check it when featurizing
    loss = loss_sum / count
    return {"perplexity": float(np.exp(loss)), "loss": loss,
            "accuracy": int(np.sum(outputs["correct"])) / count}


class TokenLM(TaskKind):
    """What the language-model kinds share: text records, a vocabulary-wide head
    without labels, and perplexity, loss and accuracy over the target tokens."""
    labels = None

    def __init__(self, config=None):
        super().__init__(config)
        self.metric_names = ("perplexity", "loss", "accuracy")

    @classmethod
    def num_outputs(cls, label_names, model_config) -> int:
        return model_config.vocab_size

    def load(self) -> Splits:
        from fmt.data import datasets
        train, validation, origins = datasets.text_records(self.config)
        return Splits("text", train, {"validation": validation}, origins)

    def evaluate(self, outputs, features):
        return token_lm_metrics(outputs), None
