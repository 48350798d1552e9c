"""Sequence classification and regression: the loss, predictions and metrics.

`num_labels == 1` is regression (STS-B) with a squared-error loss on the single
logit, as `transformers` does for `problem_type="regression"`.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmt import metrics


@dataclasses.dataclass(frozen=True)
class ClassificationTask:
    num_labels: int
    metric_names: tuple[str, ...] = ("accuracy",)

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1

    def loss(self, logits: jax.Array, labels: jax.Array) -> jax.Array:
        """Per-example loss `[batch]` in float32."""
        logits = logits.astype(jnp.float32)
        if self.is_regression:
            return jnp.square(logits[:, 0] - labels.astype(jnp.float32))
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels)

    def predict(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits)
        return logits[:, 0] if self.is_regression else logits.argmax(-1)

    def evaluate(self, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
        return metrics.compute(self.metric_names, predictions, labels)
