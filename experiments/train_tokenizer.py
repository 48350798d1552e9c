"""Train a tokenizer for pretraining from scratch, on your own text files.

  python experiments/train_tokenizer.py --input=wiki.txt --kind=wordpiece \
      --vocab_size=30522 --output=DIR
  python experiments/train_tokenizer.py --input=a.jsonl,b.jsonl --text_field=body \
      --kind=bpe --vocab_size=50265 --output=DIR

.txt files give one text per line, .jsonl/.json files the --text_field of each
object. DIR loads with AutoTokenizer.from_pretrained(DIR) and as a model
folder's tokenizer.
"""

import sys

from absl import app, flags

_INPUT = flags.DEFINE_list("input", None, "Text files (.txt, .jsonl), comma-separated.")
_TEXT_FIELD = flags.DEFINE_string("text_field", "text", "The text field of .jsonl objects.")
_KIND = flags.DEFINE_enum("kind", "wordpiece", ["wordpiece", "bpe"],
                          "wordpiece: BERT (lowercased); bpe: RoBERTa (byte-level).")
_VOCAB_SIZE = flags.DEFINE_integer("vocab_size", 30522, "Entries in the vocabulary.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder to write the tokenizer to.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks for errors in input.")
flags.mark_flags_as_required(["input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fmt.data.text import read_texts
    from fmt.data.tokenizer_training import train_tokenizer
    from fmt.errors import UserError
    try:
        texts = (text for path in _INPUT.value for text in read_texts(path, _TEXT_FIELD.value))
        folder = train_tokenizer(texts, _KIND.value, _VOCAB_SIZE.value, _OUTPUT.value)
    except UserError as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(folder)


if __name__ == "__main__":
    app.run(main)
