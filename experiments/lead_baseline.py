r"""ROUGE of the lead baseline: the first --sentences sentences of each source,
scored as a summary against the example's references, exactly as the
seq2seq kind scores generated summaries (fmt.metrics.generation.rouge).

  python experiments/lead_baseline.py --input=../shared/data/summarization/test.jsonl \
      --source_field=document --target_field=summary --references_field=references

Sentences are split as ROUGE-Lsum splits them (fmt.metrics.generation.split_sentences).
Prints one JSON line: the ROUGE scores (fractions, as fmt reports them) and the count.
"""

import json

from absl import app, flags

_INPUT = flags.DEFINE_string("input", None, "A .jsonl file (or DIR/split for parallel text).")
_SOURCE_FIELD = flags.DEFINE_string("source_field", "source", "The source text's field.")
_TARGET_FIELD = flags.DEFINE_string("target_field", "target", "The reference summary's field.")
_REFERENCES_FIELD = flags.DEFINE_string("references_field", "", "A field holding a list of "
                                        "references; '' = the target alone.")
_SENTENCES = flags.DEFINE_integer("sentences", 1, "Leading sentences that make the summary.")
flags.mark_flags_as_required(["input"])


def lead(text: str, sentences: int) -> str:
    from fmt.metrics.generation import split_sentences
    return " ".join(split_sentences(text).split("\n")[:sentences])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fmt.data import seq2seq
    from fmt.metrics.generation import rouge
    records = seq2seq.read_files(_INPUT.value, _SOURCE_FIELD.value, _TARGET_FIELD.value,
                                 _REFERENCES_FIELD.value or None)
    scores = rouge([lead(r["source"], _SENTENCES.value) for r in records],
                   [r.get("references") or [r["target"]] for r in records])
    print(json.dumps({**{k: v / 100 for k, v in scores.items()}, "examples": len(records),
                      "sentences": _SENTENCES.value}))


if __name__ == "__main__":
    app.run(main)
