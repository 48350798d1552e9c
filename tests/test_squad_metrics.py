"""fmt.metrics.squad on hand-made cases worked out in the comments, against the
definitions of the official evaluate-v1.1.py and evaluate-v2.0.py scripts."""

import logging
import random

import pytest

from fmt import metrics
from fmt.errors import UserError
from fmt.metrics.squad import (V1_METRICS, V2_METRICS, exact_match, normalize_answer,
                               squad_scores, squad_v2_scores, token_f1, token_f1_v2)


@pytest.mark.parametrize("text,normalised", [
    ("The Cat", "cat"),                          # lowercase; leading article
    ("  Hello,   World!\t\n", "hello world"),    # punctuation; runs of whitespace
    ("a theory of the atom", "theory of atom"),  # "the" inside "theory" stays
    ("An apple and a banana", "apple and banana"),  # "an" inside "and"/"banana" stays
    ("other Theatre", "other theatre"),
    ("THE", ""),
    ("the-end", "theend"),   # punctuation goes first, so no whole word "the" is left
    ("the.", ""),            # ... and here it leaves one, which then goes
    ("U.S.A.", "usa"),
    ("Levi's Stadium", "levis stadium"),
    ("\u201cquoted\u201d", "\u201cquoted\u201d"),  # curly quotes are not string.punctuation
])
def test_normalize_answer(text, normalised):
    assert normalize_answer(text) == normalised


def test_exact_match_compares_normalised_answers():
    assert exact_match("The Cat!", "cat") == 1.0          # would be 0 without articles removed
    assert exact_match("a theory", "theory") == 1.0
    assert exact_match("theory", "ory") == 0.0            # would be 1 without \b around "the"
    assert exact_match("Denver", "Denver Broncos") == 0.0
    assert exact_match("", "") == 1.0


def test_token_f1_partial_overlap():
    # "quick brown fox jumped" (4 tokens) against "quick red fox" (3): 2 shared,
    # P = 2/4, R = 2/3, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7. Keeping the articles
    # would give P = 2/5, R = 2/4, F1 = 4/9 instead.
    assert token_f1("the quick brown fox jumped", "a quick red fox") == pytest.approx(4 / 7)
    # A multiset overlap: "dog" is shared twice, P = 2/2, R = 2/3, F1 = (4/3)/(5/3)
    # = 4/5 (counting shared distinct words, 1, would give P = 1/2, R = 1/3, 2/5).
    assert token_f1("dog dog", "dog dog cat") == pytest.approx(4 / 5)
    # ... and no more often than both sides hold it: 1 shared, P = 1/3, R = 1, 1/2.
    assert token_f1("dog dog dog", "dog") == pytest.approx(1 / 2)
    assert token_f1("Denver", "Denver Broncos") == pytest.approx(2 / 3)  # P = 1, R = 1/2
    assert token_f1("Broncos", "Denver") == 0.0
    # v1.1 gives an empty answer 0 even against an empty gold: no token is shared.
    assert token_f1("", "") == 0.0
    assert token_f1("", "cat") == 0.0


def test_token_f1_v2_scores_no_answer():
    assert token_f1_v2("", "") == 1.0
    assert token_f1_v2("The!", "") == 1.0       # normalises to nothing: a no-answer
    assert token_f1_v2("", "cat") == 0.0
    assert token_f1_v2("cat", "") == 0.0
    assert token_f1_v2("the quick brown fox jumped", "a quick red fox") == pytest.approx(4 / 7)


def test_squad_scores_max_over_gold_and_missing_prediction(caplog):
    references = {
        "q1": ["Denver Broncos", "Broncos"],
        "q2": ["Broncos", "Denver Broncos"],
        "q3": ["a quick red fox"],
        "q4": ["Santa Clara"],
    }
    predictions = {
        "q1": "the Denver Broncos",           # EM 1 (first gold), F1 1
        "q2": "Denver",                       # EM 0; F1 max(0, 2/3) = 2/3 (mean 1/3, first 0)
        "q3": "the quick brown fox jumped",   # EM 0; F1 4/7
        "elsewhere": "ignored",               # not a question: ignored, as officially
    }                                         # q4 unanswered: 0 and 0, still counted
    with caplog.at_level(logging.WARNING, logger="fmt"):
        scores = squad_scores(predictions, references)
    assert list(scores) == list(V1_METRICS)
    assert scores["exact_match"] == 25.0    # 100 * 1/4 (100 * 1/3 if q4 were dropped)
    # 100 * (1 + 2/3 + 4/7) / 4 = 100 * (47/21) / 4 = 4700/84
    assert scores["f1"] == pytest.approx(4700 / 84)
    assert ["1 of 4 questions have no prediction" in r.getMessage()
            for r in caplog.records] == [True]


def test_squad_scores_every_gold_counts():
    # Only the third gold answer matches exactly; the best (not the first, not
    # the mean) decides: EM 100, F1 100.
    scores = squad_scores({"q": "Super Bowl 50"},
                          {"q": ["Bowl", "Super Bowl", "super bowl 50!"]})
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_squad_scores_bad_input():
    with pytest.raises(UserError, match="no questions"):
        squad_scores({}, {})
    with pytest.raises(UserError, match="'q' has no gold answers"):
        squad_scores({"q": "x"}, {"q": []})
    with pytest.raises(ValueError, match="list of answer texts"):
        squad_scores({"q": "x"}, {"q": "x"})


# Answerable (h*) and unanswerable (n*) questions: (gold answers, prediction).
V2_CASE = {
    "h1": (["Denver Broncos"], "Denver Broncos"),              # EM 1, F1 1
    "h2": (["Denver Broncos", "Broncos"], "Denver"),           # EM 0, F1 max(2/3, 0) = 2/3
    "h3": (["Broncos"], ""),                                   # EM 0, F1 0 (empty vs non-empty)
    "n1": ([], ""),                                            # EM 1, F1 1 (empty vs empty)
    "n2": ([], "Carolina Panthers"),                           # EM 0, F1 0
}


def test_squad_v2_scores_has_answer_and_no_answer_groups():
    references = {q: gold for q, (gold, _) in V2_CASE.items()}
    predictions = {q: prediction for q, (_, prediction) in V2_CASE.items()}
    scores = squad_v2_scores(predictions, references)
    # Without null odds no best_* keys; no key holds a "/", which results.json
    # readers take for a split.
    assert list(scores) == list(V2_METRICS[:9])
    assert all("/" not in name for name in scores)
    expected = {
        "exact": 40.0,             # 100 * (1 + 0 + 0 + 1 + 0) / 5
        "f1": 160 / 3,             # 100 * (1 + 2/3 + 0 + 1 + 0) / 5
        "total": 5.0,
        "HasAns_exact": 100 / 3,   # 100 * 1/3
        "HasAns_f1": 500 / 9,      # 100 * (5/3) / 3
        "HasAns_total": 3.0,
        "NoAns_exact": 50.0,       # 100 * 1/2
        "NoAns_f1": 50.0,
        "NoAns_total": 2.0,
    }
    assert scores == pytest.approx(expected)


def test_squad_v2_scores_leaves_out_an_empty_group():
    scores = squad_v2_scores({"n1": "", "n2": "x"}, {"n1": [], "n2": []})
    assert scores == {"exact": 50.0, "f1": 50.0, "total": 2.0,
                      "NoAns_exact": 50.0, "NoAns_f1": 50.0, "NoAns_total": 2.0}
    scores = squad_v2_scores({"h": "cat"}, {"h": ["a cat"]})
    assert set(scores) == {"exact", "f1", "total", "HasAns_exact", "HasAns_f1", "HasAns_total"}


def test_squad_v2_gold_that_normalises_to_nothing():
    # Officially such a gold answer is dropped (gold [""] if none is left), yet
    # the question stays HasAns, because it has answers.
    scores = squad_v2_scores({"q1": "", "q2": ""}, {"q1": ["The", "Broncos"], "q2": ["the"]})
    # q1: gold ["Broncos"] against "": 0, 0. q2: gold [""] against "": 1, 1.
    assert scores["exact"] == 50.0 and scores["f1"] == 50.0
    assert scores["HasAns_total"] == 2.0 and "NoAns_total" not in scores


# (gold answers, prediction, null odds); raw EM/F1 worked out per question.
THRESHOLD_CASE = {
    "h1": (["Denver Broncos"], "Denver Broncos", -1.0),   # raw EM 1, F1 1
    "n1": ([], "Carolina", 0.5),                          # raw 0, 0
    "h2": (["Santa Clara"], "Santa Clara", 1.5),          # raw 1, 1
    "h3": (["Levi's Stadium"], "Stadium", 2.0),           # raw 0, F1 2/3 (P 1, R 1/2)
    "n2": ([], "Panthers", 3.0),                          # raw 0, 0
}


def _threshold_case():
    references = {q: gold for q, (gold, _, _) in THRESHOLD_CASE.items()}
    predictions = {q: prediction for q, (_, prediction, _) in THRESHOLD_CASE.items()}
    odds = {q: odds for q, (_, _, odds) in THRESHOLD_CASE.items()}
    return predictions, references, odds


def test_squad_v2_null_threshold():
    predictions, references, odds = _threshold_case()
    # Without odds, the raw scores: EM 100 * 2/5, F1 100 * (1 + 1 + 2/3) / 5 = 160/3.
    raw = squad_v2_scores(predictions, references)
    assert raw["exact"] == 40.0 and raw["f1"] == pytest.approx(160 / 3)

    # Default threshold 0: n1, h2, h3, n2 (odds > 0) count as answered "":
    # h1 1, n1 1, h2 0, h3 0, n2 1 for both EM and F1 -> 60.
    scores = squad_v2_scores(predictions, references, odds)
    assert scores["exact"] == 60.0 and scores["f1"] == 60.0
    assert scores["HasAns_exact"] == pytest.approx(100 / 3)   # h1 only
    assert scores["NoAns_exact"] == 100.0 and scores["NoAns_f1"] == 100.0

    # Threshold 2.0: only n2 (3.0 > 2.0) is answered ""; h3's odds equal the
    # threshold, so it keeps its answer (">" not ">="):
    # EM 1 + 0 + 1 + 0 + 1 = 3 -> 60, F1 1 + 0 + 1 + 2/3 + 1 = 11/3 -> 220/3.
    at_two = squad_v2_scores(predictions, references, odds, null_score_diff_threshold=2.0)
    assert at_two["exact"] == 60.0 and at_two["f1"] == pytest.approx(220 / 3)


def test_squad_v2_best_threshold():
    predictions, references, odds = _threshold_case()
    scores = squad_v2_scores(predictions, references, odds)
    assert list(scores) == list(V2_METRICS)
    # The sweep starts with every question answered "": the 2 unanswerable right.
    # In increasing odds, each question switches to its prediction:
    #   EM: h1 +1 -> 3 (best, at -1.0), n1 -1 -> 2, h2 +1 -> 3, h3 +0 -> 3, n2 -1 -> 2
    #   F1: h1 +1 -> 3 (best, at -1.0), n1 -1 -> 2, h2 +1 -> 3, h3 +2/3 -> 11/3
    #       (best, at 2.0), n2 -1 -> 8/3
    assert scores["best_exact"] == 60.0              # 100 * 3/5
    assert scores["best_exact_thresh"] == -1.0
    assert scores["best_f1"] == pytest.approx(220 / 3)   # 100 * (11/3) / 5
    assert scores["best_f1_thresh"] == 2.0
    # The best thresholds, applied, give the best scores.
    at_best = squad_v2_scores(predictions, references, odds,
                              null_score_diff_threshold=scores["best_f1_thresh"])
    assert at_best["f1"] == pytest.approx(scores["best_f1"])
    at_best = squad_v2_scores(predictions, references, odds,
                              null_score_diff_threshold=scores["best_exact_thresh"])
    assert at_best["exact"] == scores["best_exact"]


def test_squad_v2_best_threshold_official_quirks():
    # Answering nothing is best here (100), and the official sweep then reports
    # its starting threshold 0.0, not one below every odds.
    scores = squad_v2_scores({"n1": "x", "n2": "y"}, {"n1": [], "n2": []},
                             {"n1": 1.0, "n2": 2.0})
    assert scores["best_exact"] == 100.0 and scores["best_exact_thresh"] == 0.0
    # "the" normalises to "" and so scores 1 on an unanswerable question, but
    # the sweep tests the raw text: non-empty, so switching to it costs 1.
    # Start 1 (n right); n -1 -> 0; h +1 -> 1, not above 1: best 100 * 1/2 at
    # 0.0 (testing the normalised text would give 1, 2 at -4.0: 100).
    scores = squad_v2_scores({"n": "the", "h": "cat"}, {"n": [], "h": ["cat"]},
                             {"n": -5.0, "h": -4.0})
    assert scores["exact"] == 100.0   # both odds <= 0: both answers kept, and right
    assert scores["best_exact"] == 50.0 and scores["best_exact_thresh"] == 0.0


def test_squad_v2_best_threshold_is_the_best_of_every_threshold():
    """On random cases with distinct odds: best_* is the maximum over every
    threshold that changes anything (one below all odds, and each odds), and
    applying the reported threshold gives it back (unless answering nothing is
    best, reported at 0.0)."""
    words = ["Denver", "Broncos", "Santa", "Clara", "Levi's", "Stadium"]
    rng = random.Random(0)
    for _ in range(50):
        references, predictions, odds = {}, {}, {}
        # Distinct and never 0.0, the threshold reported when answering nothing is best.
        values = rng.sample([v for v in range(-40, 41) if v], 12)
        for i, value in enumerate(values):
            gold = [] if rng.random() < 0.4 else [" ".join(rng.sample(words, rng.randint(1, 3)))]
            references[f"q{i}"] = gold
            predictions[f"q{i}"] = "" if rng.random() < 0.2 else \
                " ".join(rng.sample(words, rng.randint(1, 3)))
            odds[f"q{i}"] = value / 4
        scores = squad_v2_scores(predictions, references, odds)
        candidates = [min(odds.values()) - 1, *odds.values()]
        at = {t: squad_v2_scores(predictions, references, odds, null_score_diff_threshold=t)
              for t in candidates}
        for name in ("exact", "f1"):
            assert scores[f"best_{name}"] == pytest.approx(max(s[name] for s in at.values()))
            threshold = scores[f"best_{name}_thresh"]
            if threshold in at:
                assert at[threshold][name] == pytest.approx(scores[f"best_{name}"])
            else:
                assert threshold == 0.0
                assert at[candidates[0]][name] == pytest.approx(scores[f"best_{name}"])


def test_squad_v2_missing_prediction_scores_zero():
    # n1 is unanswered: 0 even though "" would have been right, and it still
    # counts in every total. h1: 1, 1.
    references = {"h1": ["cat"], "n1": []}
    scores = squad_v2_scores({"h1": "the cat"}, references, {"h1": -1.0})
    assert scores["exact"] == 50.0 and scores["total"] == 2.0
    assert scores["NoAns_exact"] == 0.0 and scores["NoAns_total"] == 1.0
    # The sweep starts at 0 right (n1 cannot be), h1 +1 -> 1 at -1.0: 100 * 1/2.
    assert scores["best_exact"] == 50.0 and scores["best_exact_thresh"] == -1.0


def test_squad_v2_bad_input():
    with pytest.raises(UserError, match="no null odds, e.g. 'q2'"):
        squad_v2_scores({"q1": "a", "q2": "b"}, {"q1": [], "q2": []}, {"q1": 0.0})
    with pytest.raises(UserError, match="no questions"):
        squad_v2_scores({}, {})


def test_every_squad_metric_is_higher_is_better():
    for name in V1_METRICS + V2_METRICS:
        assert metrics.higher_is_better(name) and metrics.higher_is_better(f"eval_{name}")
    assert metrics.squad_scores is squad_scores and metrics.squad_v2_scores is squad_v2_scores
