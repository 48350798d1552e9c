"""Checks fmt.metrics against scikit-learn / scipy and small hand-worked cases."""

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from fmt import metrics
from fmt.errors import UserError


def _classification_cases():
    """(name, predictions, labels) pairs, random and degenerate."""
    cases = []
    for seed, (n, k) in enumerate([(50, 2), (7, 2), (200, 2), (60, 3), (300, 3), (100, 5)]):
        rng = np.random.default_rng(seed)
        cases.append((f"random-{n}x{k}", rng.integers(0, k, n), rng.integers(0, k, n)))
    rng = np.random.default_rng(len(cases))
    labels = rng.integers(0, 2, 80)
    cases += [
        ("imbalanced", (rng.random(80) < 0.1).astype(int), (rng.random(80) < 0.9).astype(int)),
        ("all-predicted-0", np.zeros(80, int), labels),
        ("all-predicted-1", np.ones(40, int), labels[:40]),
        ("all-labels-0", rng.integers(0, 2, 30), np.zeros(30, int)),
        ("all-0-both", np.zeros(10, int), np.zeros(10, int)),
        ("all-1-both", np.ones(10, int), np.ones(10, int)),
        ("perfect", labels, labels.copy()),
        ("inverted", 1 - labels, labels),
        ("single-example", np.array([1]), np.array([0])),
        ("3-class-all-predicted-2", np.full(30, 2), rng.integers(0, 3, 30)),
        ("3-class-1-never-predicted", np.array([0, 2, 2, 0, 2]), np.array([0, 1, 1, 0, 0])),
    ]
    return cases


CLASSIFICATION = _classification_cases()
BINARY = [case for case in CLASSIFICATION if set(case[1]) | set(case[2]) <= {0, 1}]


def _ids(cases):
    return [case[0] for case in cases]


# sklearn warns that its confusion matrix is 1x1 when only one class occurs.
@pytest.mark.filterwarnings("ignore:A single label was found")
@pytest.mark.parametrize("name,predictions,labels", CLASSIFICATION, ids=_ids(CLASSIFICATION))
def test_accuracy_and_mcc_match_sklearn(name, predictions, labels):
    assert metrics.accuracy(predictions, labels) == pytest.approx(
        sklearn.metrics.accuracy_score(labels, predictions)
    )
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions), abs=1e-12
    )


@pytest.mark.parametrize("name,predictions,labels", CLASSIFICATION, ids=_ids(CLASSIFICATION))
def test_macro_scores_match_sklearn(name, predictions, labels):
    for ours, theirs in [
        (metrics.precision, sklearn.metrics.precision_score),
        (metrics.recall, sklearn.metrics.recall_score),
        (metrics.f1, sklearn.metrics.f1_score),
    ]:
        expected = theirs(labels, predictions, average="macro", zero_division=0)
        assert ours(predictions, labels, average="macro") == pytest.approx(expected)


@pytest.mark.parametrize("name,predictions,labels", BINARY, ids=_ids(BINARY))
def test_binary_scores_match_sklearn(name, predictions, labels):
    for ours, theirs in [
        (metrics.precision, sklearn.metrics.precision_score),
        (metrics.recall, sklearn.metrics.recall_score),
        (metrics.f1, sklearn.metrics.f1_score),
    ]:
        expected = theirs(labels, predictions, average="binary", zero_division=0)
        assert ours(predictions, labels) == pytest.approx(expected)


def _regression_cases():
    rng = np.random.default_rng(1)
    x = rng.normal(size=100)
    return [
        ("independent", rng.normal(size=100), rng.normal(size=100)),
        ("correlated", x + 0.5 * rng.normal(size=100), x),
        ("anticorrelated", -x + 0.1 * rng.normal(size=100), x),
        # STS-B style: gold scores on a 0-5 grid, many ties on both sides.
        ("ties", rng.integers(0, 6, 80).astype(float), rng.integers(0, 11, 80) / 2),
        ("ties-rounded", np.round(x, 0), np.round(x + rng.normal(size=100), 1)),
        ("two-examples", np.array([0.3, 0.1]), np.array([1.0, 2.0])),
    ]


REGRESSION = _regression_cases()


@pytest.mark.parametrize("name,predictions,labels", REGRESSION, ids=_ids(REGRESSION))
def test_correlations_match_scipy(name, predictions, labels):
    assert metrics.pearson(predictions, labels) == pytest.approx(
        scipy.stats.pearsonr(predictions, labels).statistic
    )
    assert metrics.spearman(predictions, labels) == pytest.approx(
        scipy.stats.spearmanr(predictions, labels).statistic
    )


def test_binary_hand_worked():
    # tp=1 (index 0), fp=2 (indices 1, 2), fn=1 (index 3), tn=0.
    predictions, labels = np.array([1, 1, 1, 0]), np.array([1, 0, 0, 1])
    assert metrics.accuracy(predictions, labels) == pytest.approx(1 / 4)
    assert metrics.precision(predictions, labels) == pytest.approx(1 / 3)
    assert metrics.recall(predictions, labels) == pytest.approx(1 / 2)
    assert metrics.f1(predictions, labels) == pytest.approx(2 / 5)
    # (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = -2 / sqrt(3*2*2*1)
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(-1 / math.sqrt(3))


def test_macro_hand_worked():
    # class 0: P=1, R=1/2, F=2/3; class 1: P=1/3, R=1, F=1/2;
    # class 2 is never predicted: P=0 (zero division), R=0, F=0.
    predictions, labels = np.array([0, 1, 1, 1]), np.array([0, 0, 1, 2])
    assert metrics.precision(predictions, labels, average="macro") == pytest.approx(4 / 9)
    assert metrics.recall(predictions, labels, average="macro") == pytest.approx(1 / 2)
    assert metrics.f1(predictions, labels, average="macro") == pytest.approx(7 / 18)


def test_degenerate_scores_are_zero_not_nan():
    zeros, ones = np.zeros(5, int), np.ones(5, int)
    assert metrics.precision(zeros, ones) == 0.0
    assert metrics.recall(ones, zeros) == 0.0
    assert metrics.f1(zeros, zeros) == 0.0
    assert metrics.matthews_corrcoef(ones, ones) == 0.0
    assert metrics.matthews_corrcoef(ones, np.array([0, 1, 0, 1, 1])) == 0.0


def test_perfect_scores():
    labels = np.array([0, 1, 2, 1, 0, 2])
    assert metrics.matthews_corrcoef(labels, labels) == pytest.approx(1.0)
    assert metrics.f1(labels, labels, average="macro") == pytest.approx(1.0)
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert metrics.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    # Monotone but not linear: rank correlation is exactly +-1.
    assert metrics.spearman(x, x**3) == pytest.approx(1.0)
    assert metrics.spearman(x, -np.exp(x)) == pytest.approx(-1.0)


def test_correlation_of_constant_is_zero():
    constant = np.full(6, 0.1)  # its float mean is not exactly 0.1
    varying = np.arange(6.0)
    for fn in (metrics.pearson, metrics.spearman):
        assert fn(constant, varying) == 0.0
        assert fn(varying, constant) == 0.0
        assert fn(np.array([2.5]), np.array([1.0])) == 0.0


def test_mcc_does_not_overflow_on_large_inputs():
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 200_000)
    predictions = np.where(rng.random(labels.size) < 0.7, labels, rng.integers(0, 3, labels.size))
    assert metrics.matthews_corrcoef(predictions, labels) == pytest.approx(
        sklearn.metrics.matthews_corrcoef(labels, predictions)
    )


def test_registry_names_and_compute():
    assert set(metrics.METRICS) == {
        "accuracy", "precision", "recall", "f1", "precision_macro", "recall_macro",
        "f1_macro", "mcc", "pearson", "spearman",
    }
    predictions, labels = np.array([0, 1, 1, 1]), np.array([0, 0, 1, 2])
    scores = metrics.compute(["accuracy", "f1_macro", "mcc"], predictions, labels)
    assert list(scores) == ["accuracy", "f1_macro", "mcc"]
    assert all(type(score) is float for score in scores.values())
    assert scores["accuracy"] == pytest.approx(1 / 2)
    assert scores["f1_macro"] == pytest.approx(7 / 18)
    assert scores["mcc"] == pytest.approx(sklearn.metrics.matthews_corrcoef(labels, predictions))


def test_compute_every_registered_metric():
    predictions, labels = np.array([1, 0, 1, 1, 0]), np.array([1, 0, 0, 1, 1])
    scores = metrics.compute(metrics.METRICS, predictions, labels)
    assert set(scores) == set(metrics.METRICS)
    assert scores["precision_macro"] == pytest.approx(
        sklearn.metrics.precision_score(labels, predictions, average="macro")
    )
    assert scores["spearman"] == pytest.approx(
        scipy.stats.spearmanr(predictions, labels).statistic
    )


def test_unknown_metric_lists_known_names():
    with pytest.raises(UserError) as error:
        metrics.compute(["accuracy", "f2"], np.array([1]), np.array([1]))
    message = str(error.value)
    assert "'f2'" in message and "\n" not in message
    assert all(name in message for name in metrics.METRICS)


@pytest.mark.parametrize("name", sorted(metrics.METRICS))
def test_empty_inputs_raise(name):
    empty = np.array([], dtype=int)
    with pytest.raises(UserError, match="no examples to evaluate"):
        metrics.METRICS[name](empty, empty)
    with pytest.raises(UserError, match="no examples to evaluate"):
        metrics.compute([name], empty, empty)


def test_binary_average_rejects_multiclass_ids():
    with pytest.raises(UserError, match="f1_macro"):
        metrics.f1(np.array([0, 1, 2]), np.array([0, 1, 1]))


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same length"):
        metrics.accuracy(np.array([0, 1]), np.array([0, 1, 1]))
