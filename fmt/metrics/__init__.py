"""Metrics: `numeric` (accuracy, F1, MCC, Pearson/Spearman, perplexity) on 1-D
arrays, `entities` (seqeval's entity-level scores) on tag sequences, `squad`
(the official SQuAD v1.1 and v2.0 exact match and F1, in percent) on answer
texts.

`compute` and `METRICS` are the numeric ones, by name; `higher_is_better`
says which way each metric any task reports improves, for early stopping and
best-model keeping.
"""

from fmt.metrics.entities import entity_scores
from fmt.metrics.numeric import (METRICS, accuracy, compute, f1, matthews_corrcoef, pearson,
                                 precision, recall, spearman)
from fmt.metrics.squad import (exact_match, normalize_answer, squad_scores, squad_v2_scores,
                               token_f1, token_f1_v2)

# Metrics where lower is better; every other metric improves upwards (SQuAD's
# exact_match, f1, exact, HasAns_*/NoAns_* and best_* included).
LOWER_IS_BETTER = frozenset({"loss", "perplexity"})


def higher_is_better(name: str) -> bool:
    """Whether a larger value of metric `name` is better ("eval_loss", "loss",
    "perplexity" and "<type>/loss" are not)."""
    return name.rsplit("/", 1)[-1].removeprefix("eval_") not in LOWER_IS_BETTER


__all__ = ["METRICS", "accuracy", "compute", "entity_scores", "exact_match", "f1",
           "higher_is_better", "matthews_corrcoef", "normalize_answer", "pearson", "precision",
           "recall", "spearman", "squad_scores", "squad_v2_scores", "token_f1", "token_f1_v2"]
