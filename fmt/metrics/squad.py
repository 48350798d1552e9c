"""SQuAD exact match and F1, as the official evaluation scripts define them.

Papers report SQuAD numbers from the official scripts (evaluate-v1.1.py and
evaluate-v2.0.py), so every rule here is theirs, quirks included, and the
scores are percentages (0-100) as those scripts print them, unlike the
fractions of fmt.metrics.numeric:
- an answer is normalised (lowercased, string.punctuation removed, the
  articles a/an/the removed as whole words, whitespace collapsed) before it is
  compared, and F1 counts the overlap of its whitespace tokens;
- a question scores the best of its gold answers, and the corpus score is the
  mean over questions;
- v2.0 adds unanswerable questions (no gold answers, so the gold is ""): an
  empty prediction matches only an empty gold, and the "no answer" odds of
  each question give a threshold, and the best threshold on these questions.

Two departures, both for questions the scripts cannot score: a question with
no prediction scores 0 and counts in every total (v1.1 does this; v2.0 would
drop it from the overall total and fail on the HasAns/NoAns ones), and a
v1.1 question without gold answers is an error (v1.1 would fail on max([])).
"""

import collections
import logging
import re
import string
from collections.abc import Callable, Mapping, Sequence

from fmt.errors import UserError

log = logging.getLogger("fmt")

# The keys each function returns, in order; squad_v2_scores leaves out a
# HasAns/NoAns group with no questions and the best_* keys without null odds.
V1_METRICS = ("exact_match", "f1")
V2_METRICS = ("exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total",
              "NoAns_exact", "NoAns_f1", "NoAns_total",
              "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")

_PUNCTUATION = frozenset(string.punctuation)
# Whole-word articles; \b is Unicode-aware on str, as in the official scripts.
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation, drop articles, collapse whitespace, in the
    official order: punctuation goes first, so "the-end" becomes "theend" and
    keeps its "the", while "the end" loses it."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    """1.0 when the normalised answers are equal (both versions)."""
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """v1.1 F1 of the normalised tokens: the harmonic mean of the shared token
    count (a multiset overlap, so a repeated word counts as often as both
    sides hold it) over the prediction's and the gold's lengths; 0.0 without
    overlap, so an empty answer never scores."""
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(gold_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = 1.0 * same / len(prediction_tokens)
    recall = 1.0 * same / len(gold_tokens)
    return (2 * precision * recall) / (precision + recall)


def token_f1_v2(prediction: str, gold: str) -> float:
    """v2.0 F1: as v1.1, except that when either side normalises to nothing
    (a "no answer") it is 1.0 if both do and 0.0 otherwise, so abstaining on
    an unanswerable question scores full marks."""
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not prediction_tokens or not gold_tokens:
        return float(prediction_tokens == gold_tokens)
    return token_f1(prediction, gold)


def squad_scores(predictions: Mapping[str, str],
                 references: Mapping[str, Sequence[str]]) -> dict[str, float]:
    """SQuAD v1.1 "exact_match" and "f1" in percent, the mean over the
    questions of `references` (id -> gold answer texts) of the best score over
    each question's gold answers.

    A question missing from `predictions` scores 0 (and is logged, as the
    official script warns); predictions for ids not in `references` are
    ignored, as there.
    """
    _check_references(references)
    for question_id, answers in references.items():
        if not answers:
            raise UserError(f"metrics: SQuAD v1.1 question {question_id!r} has no gold answers; "
                            f"score unanswerable questions with squad_v2_scores")
    _log_missing(predictions, references)
    exact_total = f1_total = 0.0
    for question_id, answers in references.items():
        if question_id not in predictions:
            continue
        prediction = predictions[question_id]
        # Summed one question at a time, as the official script does, so the
        # floats agree with it to the last bit.
        exact_total += _best_over_gold(exact_match, prediction, answers)
        f1_total += _best_over_gold(token_f1, prediction, answers)
    return {"exact_match": 100.0 * exact_total / len(references),
            "f1": 100.0 * f1_total / len(references)}


def squad_v2_scores(predictions: Mapping[str, str],
                    references: Mapping[str, Sequence[str]],
                    null_odds: Mapping[str, float] | None = None,
                    null_score_diff_threshold: float = 0.0) -> dict[str, float]:
    """SQuAD v2.0 scores in percent, with the official keys: "exact", "f1",
    "total" over all questions, the same three prefixed "HasAns_" and
    "NoAns_" for the questions with and without gold answers (a group with no
    questions is left out), and, given `null_odds`, "best_exact",
    "best_exact_thresh", "best_f1" and "best_f1_thresh".

    `references` maps id -> gold answer texts, empty for an unanswerable
    question. `null_odds` maps id -> the score of "no answer" minus that of
    the best span; a question whose odds exceed `null_score_diff_threshold`
    counts as answered "" whatever its prediction (where post-processing
    already applied the same threshold, this changes nothing). The best_*
    keys are the scores at the threshold that would have been best on these
    questions, found as the official find_all_best_thresh finds it.
    """
    _check_references(references)
    _log_missing(predictions, references)
    has_answer = {question_id: bool(answers) for question_id, answers in references.items()}
    exact_raw, f1_raw = {}, {}
    for question_id, answers in references.items():
        if question_id not in predictions:
            continue
        # A gold answer that normalises to nothing ("the", "!") counts as "no
        # answer", yet the question still counts as HasAns: both as officially.
        gold = [answer for answer in answers if normalize_answer(answer)] or [""]
        exact_raw[question_id] = _best_over_gold(exact_match, predictions[question_id], gold)
        f1_raw[question_id] = _best_over_gold(token_f1_v2, predictions[question_id], gold)

    exact, f1 = exact_raw, f1_raw
    if null_odds is not None:
        unscored = [question_id for question_id in exact_raw if question_id not in null_odds]
        if unscored:
            raise UserError(f"metrics: {len(unscored)} predicted question(s) have no null odds, "
                            f"e.g. {unscored[0]!r}; give null_odds for every prediction")
        exact = _apply_threshold(exact_raw, null_odds, has_answer, null_score_diff_threshold)
        f1 = _apply_threshold(f1_raw, null_odds, has_answer, null_score_diff_threshold)

    scores = _group_scores(exact, f1, list(references))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        group = [question_id for question_id in references if has_answer[question_id] == wanted]
        if group:
            for name, value in _group_scores(exact, f1, group).items():
                scores[f"{prefix}_{name}"] = value
    if null_odds is not None:
        for name, raw in (("exact", exact_raw), ("f1", f1_raw)):
            best, threshold = _best_threshold(predictions, raw, null_odds, has_answer,
                                              len(references))
            scores[f"best_{name}"] = best
            scores[f"best_{name}_thresh"] = threshold
    return scores


def _best_over_gold(score: Callable[[str, str], float], prediction: str,
                    gold: Sequence[str]) -> float:
    """A question's score: the best over its gold answers, because annotators
    disagree on span boundaries and any one of them is a right answer."""
    return max(score(prediction, answer) for answer in gold)


def _check_references(references: Mapping[str, Sequence[str]]) -> None:
    if not references:
        raise UserError("metrics: no questions to evaluate; check that the evaluation split "
                        "is not empty")
    for question_id, answers in references.items():
        # A bare string would be read as one gold answer per character.
        if isinstance(answers, str):
            raise ValueError(f"references[{question_id!r}] must be a list of answer texts, "
                             f"got the string {answers!r}")


def _log_missing(predictions: Mapping[str, str],
                 references: Mapping[str, Sequence[str]]) -> None:
    """One warning for all unanswered questions, instead of the official
    script's line per question."""
    missing = [question_id for question_id in references if question_id not in predictions]
    if missing:
        log.warning("SQuAD: %d of %d questions have no prediction and score 0 (e.g. %r)",
                    len(missing), len(references), missing[0])


def _apply_threshold(raw: Mapping[str, float], null_odds: Mapping[str, float],
                     has_answer: Mapping[str, bool], threshold: float) -> dict[str, float]:
    """Scores with "no answer" predicted where the odds exceed `threshold`:
    then right (1.0) exactly when the question has no gold answer."""
    return {question_id: float(not has_answer[question_id])
            if null_odds[question_id] > threshold else score
            for question_id, score in raw.items()}


def _group_scores(exact: Mapping[str, float], f1: Mapping[str, float],
                  question_ids: list[str]) -> dict[str, float]:
    """exact, f1 (percent) and total over `question_ids`; an unanswered
    question (not in `exact`) adds 0."""
    total = len(question_ids)
    return {"exact": 100.0 * sum(exact.get(q, 0.0) for q in question_ids) / total,
            "f1": 100.0 * sum(f1.get(q, 0.0) for q in question_ids) / total,
            "total": float(total)}


def _best_threshold(predictions: Mapping[str, str], raw: Mapping[str, float],
                    null_odds: Mapping[str, float], has_answer: Mapping[str, bool],
                    total: int) -> tuple[float, float]:
    """(best score in percent, its threshold), by the official sweep: start
    with every question answered "" (each unanswerable one right), then, in
    increasing odds, switch one question at a time to its prediction (an
    answerable one gains its raw score, an unanswerable one loses 1 if the
    prediction is non-empty) and keep the best running score and the odds
    where it was reached.

    Official quirks kept so the numbers agree: the threshold starts at 0.0, so
    when answering nothing is best the threshold reported is 0.0, not one
    below every odds; questions with equal odds are switched one by one in
    `null_odds` order, so a tie can report a score no threshold gives; and
    "non-empty" tests the raw prediction, so "the" counts as an answer here
    though it normalises to "".
    """
    score = sum(1 for question_id in raw if not has_answer[question_id])
    best_score, best_threshold = score, 0.0
    for question_id in sorted(null_odds, key=lambda q: null_odds[q]):
        if question_id not in raw:
            continue
        if has_answer[question_id]:
            score += raw[question_id]
        elif predictions[question_id]:
            score -= 1
        if score > best_score:
            best_score, best_threshold = score, float(null_odds[question_id])
    return 100.0 * best_score / total, best_threshold
