"""GLUE metrics on 1-D numpy arrays of predictions and gold labels.

Classification metrics take predicted and gold class ids; regression metrics
take floats. Every metric returns a python float. Undefined ratios (a class
never predicted, a constant prediction) score 0.0 instead of NaN, so that
comparing checkpoints by a metric never meets a NaN.
"""

import functools
from typing import Callable, Iterable

import numpy as np
import scipy.stats

from fmt.errors import UserError


def _check(predictions, labels):
    """Returns both inputs as numpy arrays after checking they pair up."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.ndim != 1 or predictions.shape != labels.shape:
        raise ValueError(
            f"predictions and labels must be 1-D of the same length, got shapes "
            f"{predictions.shape} and {labels.shape}"
        )
    if predictions.size == 0:
        raise UserError(
            "metrics: no examples to evaluate; check that the evaluation split is not empty"
        )
    return predictions, labels


def _confusion_matrix(predictions, labels):
    """Returns (classes, matrix) with matrix[gold, predicted] counts.

    The classes are those present in labels or predictions, sorted.
    """
    classes, ids = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    gold, predicted = ids[: labels.size], ids[labels.size :]
    k = classes.size
    matrix = np.bincount(gold * k + predicted, minlength=k * k).reshape(k, k)
    return classes, matrix


def _counts(predictions, labels, average):
    """Returns true positive, false positive and false negative counts per class.

    One entry for class 1 with average="binary", one per class present with
    average="macro".
    """
    predictions, labels = _check(predictions, labels)
    classes, matrix = _confusion_matrix(predictions, labels)
    tp = np.diag(matrix)
    fp = matrix.sum(axis=0) - tp
    fn = matrix.sum(axis=1) - tp
    if average == "macro":
        return tp, fp, fn
    if average != "binary":
        raise ValueError(f"average must be 'binary' or 'macro', got {average!r}")
    outside = classes[~np.isin(classes, (0, 1))]
    if outside.size:
        raise UserError(
            f"metrics: binary precision/recall/f1 need class ids 0 and 1, got "
            f"{outside[0]!r}; use 'precision_macro', 'recall_macro' or 'f1_macro' "
            f"for multi-class tasks"
        )
    # Summing the (possibly empty) selection keeps one entry of zeros when
    # class 1 appears nowhere, which then scores 0.0 like sklearn.
    positive = classes == 1
    return tuple(c[positive].sum(keepdims=True) for c in (tp, fp, fn))


def _mean_ratio(numerator, denominator):
    """Mean over classes of numerator / denominator, a zero denominator giving 0."""
    safe = np.where(denominator > 0, denominator, 1)
    return float(np.mean(np.where(denominator > 0, numerator / safe, 0.0)))


def accuracy(predictions, labels):
    """Fraction of predictions equal to their label."""
    predictions, labels = _check(predictions, labels)
    return float(np.mean(predictions == labels))


def precision(predictions, labels, average="binary"):
    """Precision of class 1 ("binary") or unweighted mean over classes ("macro")."""
    tp, fp, _ = _counts(predictions, labels, average)
    return _mean_ratio(tp, tp + fp)


def recall(predictions, labels, average="binary"):
    """Recall of class 1 ("binary") or unweighted mean over classes ("macro")."""
    tp, _, fn = _counts(predictions, labels, average)
    return _mean_ratio(tp, tp + fn)


def f1(predictions, labels, average="binary"):
    """F1 of class 1 ("binary") or unweighted mean over classes ("macro")."""
    tp, fp, fn = _counts(predictions, labels, average)
    return _mean_ratio(2 * tp, 2 * tp + fp + fn)


def matthews_corrcoef(predictions, labels):
    """Multi-class Matthews correlation; 0.0 when either side is a single class."""
    predictions, labels = _check(predictions, labels)
    _, matrix = _confusion_matrix(predictions, labels)
    # Floats, because the products below overflow int64 from ~55k examples on.
    matrix = matrix.astype(np.float64)
    gold, predicted = matrix.sum(axis=1), matrix.sum(axis=0)
    n, correct = matrix.sum(), np.trace(matrix)
    cov_gold_predicted = correct * n - gold @ predicted
    cov_predicted = n * n - predicted @ predicted
    cov_gold = n * n - gold @ gold
    if cov_predicted * cov_gold == 0:
        return 0.0
    return float(cov_gold_predicted / np.sqrt(cov_gold * cov_predicted))


def pearson(predictions, labels):
    """Pearson correlation; 0.0 when either side is constant (scipy gives NaN)."""
    predictions, labels = _check(predictions, labels)
    # Exact equality: a constant float array can have a tiny nonzero variance
    # after subtracting its rounded mean, which would give a meaningless score.
    if np.all(predictions == predictions[0]) or np.all(labels == labels[0]):
        return 0.0
    return float(scipy.stats.pearsonr(predictions, labels).statistic)


def spearman(predictions, labels):
    """Spearman rank correlation, ties sharing their average rank."""
    predictions, labels = _check(predictions, labels)
    return pearson(scipy.stats.rankdata(predictions), scipy.stats.rankdata(labels))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": accuracy,
    "precision": precision,
    "recall": recall,
    "f1": f1,
    "precision_macro": functools.partial(precision, average="macro"),
    "recall_macro": functools.partial(recall, average="macro"),
    "f1_macro": functools.partial(f1, average="macro"),
    "mcc": matthews_corrcoef,
    "pearson": pearson,
    "spearman": spearman,
}


def compute(names: Iterable[str], predictions, labels) -> dict[str, float]:
    """Returns {name: score} for each metric name in `names`."""
    names = list(names)
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise UserError(
            f"unknown metric {unknown[0]!r}; known metrics: {', '.join(METRICS)}"
        )
    predictions, labels = _check(predictions, labels)
    return {name: float(METRICS[name](predictions, labels)) for name in names}
