"""Sequence classification and regression (GLUE, own csv/tsv/jsonl files).

A head with one output is regression (STS-B), with a squared-error loss on the
single logit, as `transformers` does for `problem_type="regression"`; that
one fact (`regression`) decides the loss, the predictions and the label type.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmt import metrics
from fmt.data import datasets, tokenize
from fmt.files import write_text_atomic
from fmt.tasks.base import Splits, TaskKind


class Classification(TaskKind):
    name = "classification"
    head = "sequence_classification"
    labels = "classes_or_score"
    architecture_suffix = "ForSequenceClassification"
    packable = True
    per_example_outputs = True

    def __init__(self, config=None, regression: bool = False,
                 metric_names: tuple[str, ...] = ("accuracy",)):
        super().__init__(config)
        self.regression = regression
        self.metric_names = tuple(metric_names)
        self.text_fields: tuple[str, ...] = ()
        self.label_names: tuple[str, ...] | None = None
        self.allow_empty = False

    @staticmethod
    def hf_config_fields(label_names) -> dict:
        names = label_names or ("LABEL_0",)
        return dict(id2label={str(i): name for i, name in enumerate(names)},
                    label2id={name: i for i, name in enumerate(names)},
                    problem_type=("regression" if label_names is None
                                  else "single_label_classification"))

    def load(self) -> Splits:
        data = datasets.load(self.config)
        self.regression = data.is_regression
        self.metric_names = data.metric_names
        self.text_fields = data.text_fields
        self.label_names = data.label_names
        # Official GLUE data keeps its few empty texts; a user's file may not.
        self.allow_empty = data.name != "custom"
        return Splits(data.name, data.train, data.evals, data.origins, data.label_names)

    def featurize(self, model, records, split, source):
        return tokenize.encode(model.tokenizer, records, self.text_fields,
                               self.config.max_seq_length, regression=self.regression,
                               source=source, allow_empty=self.allow_empty)

    def example_loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-example loss `[batch]` in float32."""
        logits = logits.astype(jnp.float32)
        if self.regression:
            return jnp.square(logits[:, 0] - labels.astype(jnp.float32))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    def loss(self, logits, batch):
        weights = batch["weights"]
        return (self.example_loss(logits, batch["labels"]) * weights).sum(), weights.sum()

    def eval_outputs(self, logits, batch):
        return {"logits": logits}

    def predict(self, logits: np.ndarray) -> np.ndarray:
        """The prediction rule: the class id of the largest logit, or the score
        (regression). Evaluation and fmt.predict both use it."""
        logits = np.asarray(logits)
        return logits[:, 0] if self.regression else logits.argmax(-1)

    def label_of(self, prediction) -> str | float:
        """A prediction (or gold label) as written out: the class name, or the score."""
        return float(prediction) if self.regression else self.label_names[int(prediction)]

    def evaluate(self, outputs, features):
        predictions = self.predict(np.stack(outputs["logits"]))
        labels = features.examples["labels"]
        return metrics.compute(self.metric_names, predictions, labels), predictions

    def write_predictions(self, folder, split, features, predictions):
        """`predictions_<split>.jsonl`: each example's predicted label (or score) and
        its gold one, in the split's order."""
        lines = [json.dumps({"index": i, "prediction": self.label_of(p),
                             "label": self.label_of(gold)})
                 for i, (p, gold) in enumerate(zip(predictions, features.examples["labels"]))]
        write_text_atomic(folder / f"predictions_{split}.jsonl", "\n".join(lines) + "\n")
