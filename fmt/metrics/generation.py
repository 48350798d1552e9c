"""ROUGE, BLEU and chrF of generated texts, for the seq2seq task kind
(summarisation, translation).

Papers report these from two reference implementations, so the scores are
theirs, not rewritten here: ROUGE from Google's `rouge-score` (what Hugging
Face's run_summarization reports), BLEU and chrF from `sacrebleu` (the WMT
standard), all in percent (0-100) as those report them.

- ROUGE-1/2/L/Lsum are F-measures. With several references a prediction
  scores its best reference, picked per ROUGE type by F-measure
  (`RougeScorer.score_multi`), and the corpus score is the plain mean over
  predictions (Hugging Face `evaluate` reports a bootstrap median by default,
  which differs from it in the last digits). rouge-score keeps only the ASCII
  letters and digits of a text, so ROUGE means nothing for other scripts.
- ROUGE-Lsum takes one sentence per line. run_summarization splits sentences
  with nltk's punkt, a model download; `split_sentences` splits after ".",
  "!" and "?" instead, so Lsum can differ slightly from its numbers.
- BLEU and chrF are corpus scores with sacrebleu's defaults (BLEU: the 13a
  tokeniser, exponential smoothing; chrF: character 6-grams, beta 2). Their
  signatures say how they were computed and belong next to the numbers in a
  report.
"""

import re
from collections.abc import Callable, Sequence

from rouge_score import rouge_scorer
from sacrebleu.metrics import BLEU, CHRF

from fmt.errors import UserError

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")

# A sentence ends at ".", "!" or "?" (with any closing quotes or brackets)
# followed by whitespace, which becomes the line break.
_SENTENCE_END = re.compile(r"([.!?][\"')\]\u2019\u201d]*)\s+")


def rouge(predictions: list[str], references: list[list[str]], *,
          stem: bool = True) -> dict[str, float]:
    """ROUGE-1/2/L/Lsum F-measure x100 as `rouge-score` computes them, the mean
    over predictions of the best over each prediction's references: keys
    rouge1, rouge2, rougeL, rougeLsum.

    `stem` applies rouge-score's Porter stemmer (to words of 4 letters or
    more), as run_summarization does. rouge1/2/L score the texts as given;
    rougeLsum scores them split by `split_sentences`. An empty prediction
    scores 0.
    """
    _check(predictions, references)
    # Lsum has its own scorer: given only rougeLsum, rouge-score skips
    # tokenising the unsplit texts.
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES[:3]), use_stemmer=stem)
    sum_scorer = rouge_scorer.RougeScorer(["rougeLsum"], use_stemmer=stem)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, targets in zip(predictions, references):
        scores = scorer.score_multi(targets, prediction)
        scores.update(sum_scorer.score_multi([split_sentences(t) for t in targets],
                                             split_sentences(prediction)))
        for rouge_type in ROUGE_TYPES:
            totals[rouge_type] += scores[rouge_type].fmeasure
    return {rouge_type: 100.0 * total / len(predictions) for rouge_type, total in totals.items()}


def sacrebleu_scores(predictions: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU and chrF (x100 as sacrebleu reports) and their signatures:
    keys bleu, chrf, bleu_signature, chrf_signature.

    Rows may have different numbers of references: sacrebleu takes one
    stream per reference index, and a stream holds None where a row has no
    reference of that index, which sacrebleu drops (an "" would count as an
    empty reference and change BLEU's brevity penalty). The signatures then
    say "nrefs:var".
    """
    _check(predictions, references)
    most = max(len(targets) for targets in references)
    streams = [[targets[index] if index < len(targets) else None for targets in references]
               for index in range(most)]
    bleu, chrf = BLEU(), CHRF()
    return {"bleu": bleu.corpus_score(predictions, streams).score,
            "chrf": chrf.corpus_score(predictions, streams).score,
            "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature())}


def split_sentences(text: str) -> str:
    """`text` with one sentence per line, for ROUGE-Lsum: a line break replaces
    the whitespace after each ".", "!" or "?". Text that already holds a line
    break is taken as split and returned as is. Abbreviations ("Dr. Smith")
    split too, which punkt would avoid."""
    if "\n" in text:
        return text
    return _SENTENCE_END.sub(r"\1\n", text.strip())


# Metric families by name, as the seq2seq task kind's config names them.
FAMILIES: dict[str, Callable[[list[str], list[list[str]]], dict]] = {
    "rouge": rouge,
    "bleu": sacrebleu_scores,
}


def generation_metrics(predictions: list[str], references: list[list[str]],
                       metrics: Sequence[str] = ("rouge", "bleu")) -> dict:
    """The chosen families merged into one flat dict of floats (signatures as
    strings): "rouge" gives `rouge`'s keys, "bleu" gives `sacrebleu_scores`'
    (BLEU and chrF both)."""
    if isinstance(metrics, str):
        raise ValueError(f"metrics must be a sequence of family names, got the string {metrics!r}")
    unknown = [name for name in metrics if name not in FAMILIES]
    if unknown:
        raise UserError(f"unknown generation metric {unknown[0]!r}; "
                        f"choose from {', '.join(FAMILIES)}")
    _check(predictions, references)
    scores = {}
    for name in metrics:
        scores.update(FAMILIES[name](predictions, references))
    return scores


def _check(predictions: list[str], references: list[list[str]]) -> None:
    if not predictions:
        raise UserError("metrics: no predictions to evaluate; check that the evaluation split "
                        "is not empty")
    if len(predictions) != len(references):
        raise UserError(f"metrics: {len(predictions)} predictions but {len(references)} "
                        f"reference rows; give one row of references per prediction")
    for index, targets in enumerate(references):
        # A bare string would be read as one reference per character.
        if isinstance(targets, str):
            raise ValueError(f"references[{index}] must be a list of reference texts, "
                             f"got the string {targets!r}")
        if not targets:
            raise UserError(f"metrics: example {index} has no reference text; give every "
                            f"example at least one")
