r"""Prompt/response pairs (JSONL, for `clm.py:pairs`) from two parallel text files.

  python experiments/make_pairs.py --source=train.en --target=train.de \
      --prompt='Translate English to German: {source}\nGerman:' --output=runs/pairs/train.jsonl

Line i of --source and line i of --target make row i: {"prompt": the --prompt
template with {source} filled in, "response": " " + the target line}. The
response starts with a space so that byte-level BPE tokenizers (GPT-2, Llama)
read its first word as the mid-sentence word it is. --limit keeps the first N.
"""

import json
import pathlib
import sys

from absl import app, flags

_SOURCE = flags.DEFINE_string("source", None, "Text file: a prompt's source text per line.")
_TARGET = flags.DEFINE_string("target", None, "Text file: the response per line, aligned.")
_PROMPT = flags.DEFINE_string("prompt", "{source}", "Prompt template; {source} is the line.")
_OUTPUT = flags.DEFINE_string("output", None, "The .jsonl file to write.")
_LIMIT = flags.DEFINE_integer("limit", 0, "Keep the first N pairs; 0 = all.")
flags.mark_flags_as_required(["source", "target", "output"])


def make_pairs(sources: list[str], targets: list[str], template: str) -> list[dict]:
    return [{"prompt": template.replace("\\n", "\n").format(source=s), "response": " " + t}
            for s, t in zip(sources, targets)]


def main(argv):
    del argv
    from fmt.data.rows import read_text
    from fmt.errors import UserError
    try:
        if "{source}" not in _PROMPT.value:
            raise UserError(f"--prompt={_PROMPT.value!r} has no {{source}} to fill in")
        sources = read_text(_SOURCE.value).rstrip("\n").split("\n")
        targets = read_text(_TARGET.value).rstrip("\n").split("\n")
        if len(sources) != len(targets):
            raise UserError(f"--source has {len(sources)} lines and --target {len(targets)}; "
                            "give aligned files (line i translates line i)")
        pairs = make_pairs(sources, targets, _PROMPT.value)
        pairs = pairs[:_LIMIT.value] if _LIMIT.value > 0 else pairs
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    output = pathlib.Path(_OUTPUT.value)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs),
                      encoding="utf-8")
    print(f"{len(pairs)} pairs -> {output}")


if __name__ == "__main__":
    app.run(main)
