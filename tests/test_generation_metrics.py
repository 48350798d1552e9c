"""fmt.metrics.generation against rouge-score and sacrebleu called directly on
fixed texts, and one BLEU worked out by hand."""

import math

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from fmt.errors import UserError
from fmt.metrics.generation import (ROUGE_TYPES, generation_metrics, rouge, sacrebleu_scores,
                                    split_sentences)

PREDICTIONS = [
    "The cat sat on the mat. It looked happy!",
    "Stocks fell sharply on Monday after the report.",
    "",
    "A new bridge opens in the city next year.",
]
# Rows with 2, 1, 1 and 3 references.
REFERENCES = [
    ["The cat was sitting on the mat. It seemed happy.", "A cat sat on a mat."],
    ["Shares dropped steeply on Monday following the report."],
    ["Nothing was predicted for this one."],
    ["A bridge is planned.", "The city will open a new bridge next year.",
     "Next year a bridge opens."],
]


def _rouge_direct(predictions, references, stem=True):
    """The mean over predictions of the best F-measure over references, each
    pair scored by rouge-score itself; Lsum fed the newline-split texts."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=stem)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, targets in zip(predictions, references):
        for rouge_type in ROUGE_TYPES:
            if rouge_type == "rougeLsum":
                pairs = [(split_sentences(t), split_sentences(prediction)) for t in targets]
            else:
                pairs = [(t, prediction) for t in targets]
            totals[rouge_type] += max(scorer.score(t, p)[rouge_type].fmeasure for t, p in pairs)
    return {key: 100.0 * total / len(predictions) for key, total in totals.items()}


def _streams(references, pad):
    most = max(map(len, references))
    return [[row[i] if i < len(row) else pad(row) for row in references] for i in range(most)]


def test_identical_texts_score_100():
    texts = ["The quick brown fox jumps over the lazy dog.", "Hello there, general Kenobi!"]
    references = [[text] for text in texts]
    for value in rouge(texts, references).values():
        assert value == pytest.approx(100.0)
    scores = sacrebleu_scores(texts, references)
    assert scores["bleu"] == pytest.approx(100.0)
    assert scores["chrf"] == pytest.approx(100.0)


def test_rouge_equals_rouge_score_with_uneven_references_and_an_empty_prediction():
    got = rouge(PREDICTIONS, REFERENCES)
    assert set(got) == set(ROUGE_TYPES)
    expected = _rouge_direct(PREDICTIONS, REFERENCES)
    for key in ROUGE_TYPES:
        assert got[key] == pytest.approx(expected[key], abs=1e-9)
    # Each row scores its best reference: the second reference of row 0 is
    # worse for rouge2, so scoring only the first leaves the score unchanged.
    first_only = [REFERENCES[0][:1]] + REFERENCES[1:]
    assert rouge(PREDICTIONS, first_only)["rouge2"] == pytest.approx(got["rouge2"])
    # ... while the first reference of row 3 alone is worse than the best of three.
    worst = REFERENCES[:3] + [REFERENCES[3][:1]]
    assert rouge(PREDICTIONS, worst)["rouge1"] < got["rouge1"]


def test_empty_prediction_scores_zero():
    scores = generation_metrics([""], [["Some reference text here."]])
    for key in ROUGE_TYPES + ("bleu", "chrf"):
        assert scores[key] == 0.0
    # Among others it adds 0 to the mean: dropping it scales the mean by 4/3.
    without = rouge(PREDICTIONS[:2] + PREDICTIONS[3:], REFERENCES[:2] + REFERENCES[3:])
    with_empty = rouge(PREDICTIONS, REFERENCES)
    for key in ROUGE_TYPES:
        assert with_empty[key] == pytest.approx(without[key] * 3 / 4)


def test_sacrebleu_equals_sacrebleu_with_missing_references_as_none():
    got = sacrebleu_scores(PREDICTIONS, REFERENCES)
    streams = _streams(REFERENCES, lambda row: None)
    bleu, chrf = sacrebleu.metrics.BLEU(), sacrebleu.metrics.CHRF()
    assert got["bleu"] == bleu.corpus_score(PREDICTIONS, streams).score
    assert got["chrf"] == chrf.corpus_score(PREDICTIONS, streams).score
    assert got["bleu_signature"] == str(bleu.get_signature())
    assert got["chrf_signature"] == str(chrf.get_signature())
    for key in ("bleu_signature", "chrf_signature"):
        assert got[key].startswith("nrefs:var|")
    # None means "no reference": repeating a row's first reference instead
    # gives the same scores (each row matches its best reference), while ""
    # would add an empty reference and change BLEU's brevity penalty.
    repeated = _streams(REFERENCES, lambda row: row[0])
    assert got["bleu"] == pytest.approx(
        sacrebleu.metrics.BLEU().corpus_score(PREDICTIONS, repeated).score)
    assert got["chrf"] == pytest.approx(
        sacrebleu.metrics.CHRF().corpus_score(PREDICTIONS, repeated).score)
    empty = _streams(REFERENCES, lambda row: "")
    assert got["bleu"] != pytest.approx(
        sacrebleu.metrics.BLEU().corpus_score(PREDICTIONS, empty).score)


def test_sacrebleu_signatures_name_the_reference_count():
    predictions = ["the cat sat", "a dog barked"]
    for count in (1, 2):
        references = [["the cat sat down", "a cat sat"][:count],
                      ["the dog barked", "dogs bark"][:count]]
        scores = sacrebleu_scores(predictions, references)
        assert scores["bleu_signature"].startswith(f"nrefs:{count}|")
        assert scores["chrf_signature"].startswith(f"nrefs:{count}|")
        assert "tok:13a" in scores["bleu_signature"]
        assert "nc:6" in scores["chrf_signature"]


def test_bleu_by_hand():
    # Clipped n-gram matches of "the cat sat on the mat" against "the cat sat
    # on a mat": 1-grams 5/6 (one "the" only), 2-grams 3/5, 3-grams 2/4,
    # 4-grams 1/3; equal lengths, so no brevity penalty. BLEU is their
    # geometric mean: (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = (1/12) ** (1/4).
    scores = sacrebleu_scores(["the cat sat on the mat"], [["the cat sat on a mat"]])
    assert scores["bleu"] == pytest.approx(100 * (1 / 12) ** 0.25)
    assert scores["bleu"] == pytest.approx(53.728, abs=1e-3)


def test_rouge_lsum_scores_sentences_where_rouge_l_scores_the_whole_text():
    # Same sentences in the other order: one LCS over the whole text can
    # match only one sentence, the summary-level LCS matches both.
    prediction = "The storm hit the coast overnight. Thousands lost power in the city."
    reference = "Thousands lost power in the city. The storm hit the coast overnight."
    scores = rouge([prediction], [[reference]])
    assert scores["rougeLsum"] == pytest.approx(100.0)
    assert scores["rougeL"] < 60.0
    assert scores["rouge1"] == pytest.approx(100.0)

    scorer = rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=True)
    split = scorer.score(reference.replace(". ", ".\n"), prediction.replace(". ", ".\n"))
    unsplit = scorer.score(reference, prediction)
    assert scores["rougeLsum"] == pytest.approx(100 * split["rougeLsum"].fmeasure)
    assert scores["rougeL"] == pytest.approx(100 * split["rougeL"].fmeasure)
    # Unsplit, rouge-score's Lsum is just rougeL: the splitting is what counts.
    assert unsplit["rougeLsum"].fmeasure == pytest.approx(unsplit["rougeL"].fmeasure)


def test_rouge_lsum_keeps_existing_line_breaks():
    # Already one sentence per line (as CNN/DailyMail highlights come): the
    # "." inside the second line must not split it again.
    reference = "Storm hits coast\nThousands lose power. City dark"
    prediction = "City dark. Thousands lose power\nStorm hits coast"
    scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=True)
    expected = 100 * scorer.score(reference, prediction)["rougeLsum"].fmeasure
    assert rouge([prediction], [[reference]])["rougeLsum"] == pytest.approx(expected)
    resplit = scorer.score(reference.replace(". ", ".\n"), prediction.replace(". ", ".\n"))
    assert expected != pytest.approx(100 * resplit["rougeLsum"].fmeasure)


def test_rouge_stems_by_default():
    prediction, reference = "running dogs", "runs dog"
    stemmed = rouge([prediction], [[reference]])
    plain = rouge([prediction], [[reference]], stem=False)
    assert stemmed["rouge1"] == pytest.approx(100.0)
    assert stemmed["rouge2"] == pytest.approx(100.0)
    assert plain["rouge1"] == 0.0
    for stem, got in ((True, stemmed), (False, plain)):
        scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=stem)
        direct = scorer.score(reference, prediction)
        for key in ROUGE_TYPES:
            assert got[key] == pytest.approx(100 * direct[key].fmeasure)


@pytest.mark.parametrize("text,split", [
    ("One. Two! Three? Four", "One.\nTwo!\nThree?\nFour"),
    ("  Padded.   Spaces.  ", "Padded.\nSpaces."),
    ('He said "stop." Then left.', 'He said "stop."\nThen left.'),   # closing quote
    ("(See above.) Next.", "(See above.)\nNext."),                   # closing bracket
    ("Pi is 3.14 today.", "Pi is 3.14 today."),                      # no whitespace after "."
    ("Dr. Smith came.", "Dr.\nSmith came."),                         # abbreviations split
    ("First line. Still first\nSecond. line", "First line. Still first\nSecond. line"),
    ("", ""),
])
def test_split_sentences(text, split):
    assert split_sentences(text) == split


def test_generation_metrics_merges_the_chosen_families():
    both = generation_metrics(PREDICTIONS, REFERENCES)
    assert set(both) == set(ROUGE_TYPES) | {"bleu", "chrf", "bleu_signature", "chrf_signature"}
    assert both == {**rouge(PREDICTIONS, REFERENCES), **sacrebleu_scores(PREDICTIONS, REFERENCES)}
    for key, value in both.items():
        assert isinstance(value, str if key.endswith("_signature") else float), key
        if isinstance(value, float):
            assert math.isfinite(value) and 0.0 <= value <= 100.0
    assert set(generation_metrics(PREDICTIONS, REFERENCES, metrics=("rouge",))) == set(ROUGE_TYPES)
    assert set(generation_metrics(PREDICTIONS, REFERENCES, metrics=["bleu"])) == {
        "bleu", "chrf", "bleu_signature", "chrf_signature"}


@pytest.mark.parametrize("function", [rouge, sacrebleu_scores, generation_metrics])
def test_errors_the_user_can_fix(function):
    with pytest.raises(UserError, match="no predictions"):
        function([], [])
    with pytest.raises(UserError, match=r"3 predictions but 2 reference rows"):
        function(["a", "b", "c"], [["a"], ["b"]])
    with pytest.raises(UserError, match="example 1 has no reference"):
        function(["a", "b"], [["a"], []])
    with pytest.raises(ValueError, match="must be a list of reference texts"):
        function(["a", "b"], ["a", "b"])


def test_unknown_family():
    with pytest.raises(UserError,
                       match="unknown generation metric 'meteor'; choose from rouge, bleu"):
        generation_metrics(["a"], [["a"]], metrics=("rouge", "meteor"))
    with pytest.raises(ValueError, match="got the string 'rouge'"):
        generation_metrics(["a"], [["a"]], metrics="rouge")
