r"""Continue prompts with a causal-LM decoder (GPT-2, Llama, Mistral, Qwen2).

  python experiments/generate.py --model=runs/clm/model --prompts=prompts.txt \
      --output=completions.jsonl --max_new_tokens=64
  python experiments/generate.py --model=gpt2 --prompts=rows.jsonl --prompt_field=question \
      --output=out.jsonl --do_sample --temperature=0.8 --top_p=0.95 --seed=1

--prompts is a .txt file (one prompt per non-blank line) or a JSON lines file
(.jsonl/.json: the --prompt_field string of each object). Each output line is
{"prompt": ..., "completion": ...}, in the order of the prompts: the new text up
to the model's end-of-text token, special tokens left out. Prompts are batched
by length (--batch_size rows, the last batch filled up), so each batch
compiles once per prompt bucket; batch i samples with --seed + i.
Mistakes end with one line naming what to fix (--verbose shows the traceback).
"""

import json
import sys

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "A decoder folder (finetune.py's model/ of a "
                             "causal_lm run), hub id or packaged model.")
_PROMPTS = flags.DEFINE_string("prompts", None, "A .txt (a prompt per line) or .jsonl file.")
_PROMPT_FIELD = flags.DEFINE_string("prompt_field", "prompt", "The prompt's field in .jsonl.")
_OUTPUT = flags.DEFINE_string("output", None, "The .jsonl file written: prompt, completion.")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 64, "Tokens generated per prompt.")
_DO_SAMPLE = flags.DEFINE_bool("do_sample", False, "Sample; greedy decoding otherwise.")
_TEMPERATURE = flags.DEFINE_float("temperature", 1.0, "Sampling: logits are divided by it.")
_TOP_K = flags.DEFINE_integer("top_k", 0, "Sampling: only the k likeliest tokens (0: all).")
_TOP_P = flags.DEFINE_float("top_p", 1.0, "Sampling: only the likeliest tokens whose "
                            "probabilities sum to top_p (1: all).")
_SEED = flags.DEFINE_integer("seed", 0, "Sampling's random seed.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts per batch.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks for errors in input.")
flags.mark_flags_as_required(["model", "prompts", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fmt.train.cli import quiet_logging
    quiet_logging()
    from fmt.errors import UserError
    try:
        written = run(UserError)
    except UserError as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"{_OUTPUT.value}: {written} completions")


def run(error) -> int:
    import numpy as np

    import fmt
    from fmt import hf
    from fmt.data.text import read_texts
    from fmt.files import write_text_atomic
    from fmt.models import FAMILIES
    if _BATCH_SIZE.value < 1:
        raise error(f"--batch_size={_BATCH_SIZE.value}: must be positive")
    if not _OUTPUT.value.endswith(".jsonl"):
        raise error(f"--output={_OUTPUT.value}: write a .jsonl file")
    prompts = read_texts(_PROMPTS.value, _PROMPT_FIELD.value)
    folder = hf.resolve_folder(_MODEL.value)
    model_type = hf.read_config(folder).get("model_type")
    decoders = [name for name, (family, _) in FAMILIES.items()
                if "causal_lm" in family.HEAD_KINDS]
    if model_type not in decoders:
        raise error(f"--model={_MODEL.value}: a {model_type} model, not a decoder; generation "
                    f"needs one of {', '.join(decoders)}")
    model = fmt.from_pretrained(str(folder), task="causal_lm")
    tokenizer = model.tokenizer
    encoded = [np.asarray(ids, np.int32) for ids in tokenizer(prompts)["input_ids"]]
    for number, ids in enumerate(encoded, start=1):
        if len(ids) == 0:
            raise error(f"{_PROMPTS.value}: prompt {number} has no tokens")
        if len(ids) + _MAX_NEW_TOKENS.value > model.max_positions:
            raise error(f"{_PROMPTS.value}: prompt {number} has {len(ids)} tokens; with "
                        f"--max_new_tokens={_MAX_NEW_TOKENS.value} that passes the model's "
                        f"{model.max_positions} positions; lower --max_new_tokens")
    eos = model.config.eos_token_id
    eos = set() if eos is None else {eos} if np.isscalar(eos) else set(eos)
    completions = [None] * len(prompts)
    order = np.argsort([len(ids) for ids in encoded], kind="stable")  # few buckets per batch
    size = _BATCH_SIZE.value
    for number, start in enumerate(range(0, len(order), size)):
        rows = list(order[start:start + size])
        rows += rows[:1] * (size - len(rows))  # the last batch filled up: one shape
        width = max(len(encoded[r]) for r in rows)
        ids = np.zeros((size, width), np.int32)
        mask = np.zeros((size, width), np.int32)
        for i, r in enumerate(rows):
            ids[i, width - len(encoded[r]):] = encoded[r]
            mask[i, width - len(encoded[r]):] = 1
        out = model.generate(ids, mask, max_new_tokens=_MAX_NEW_TOKENS.value,
                             do_sample=_DO_SAMPLE.value, temperature=_TEMPERATURE.value,
                             top_k=_TOP_K.value, top_p=_TOP_P.value, seed=_SEED.value + number)
        for i, r in enumerate(rows):
            new = [int(t) for t in out[i, width:]]
            end = next((j for j, t in enumerate(new) if t in eos), len(new))
            completions[r] = tokenizer.decode(new[:end], skip_special_tokens=True)
    write_text_atomic(_OUTPUT.value, "".join(
        json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n"
        for p, c in zip(prompts, completions)))
    return len(prompts)


if __name__ == "__main__":
    from fmt import huge_pages
    huge_pages.reexec()  # before JAX loads; fmt/huge_pages.py says why
    app.run(main)
