r"""How fast an encoder-decoder generates with fmt and with `transformers`' generate.

  python experiments/bench_generate_seq2seq.py --model=runs/s2s/mt/model \
      --input=../shared/data/translation/val.en --num_examples=256 --batch_size=32

Both peers write a target for the same real sources (the first --num_examples
lines of --input, in batches of --batch_size, each batch right-padded), greedy
and with --num_beams beams, up to --new_tokens, each row stopping at its end
token as `generate` stops it:

  fmt    Model.generate: the encoder once, then one jitted while_loop over the
         decoder's KV cache (fmt/generate_seq2seq.py)
  torch  transformers' `generate` on the same folder, on the CPU, float32

tokens/s counts the generated tokens up to and including each row's end (the
same for both peers when their outputs agree, which the table shows). Each
peer runs the whole input once to warm up (fmt compiles then; not timed),
then --repeats times; the table gives the median.
"""

import logging
import os
import statistics
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "A seq2seq (T5, BART) folder.")
_INPUT = flags.DEFINE_string("input", None, "Text file: one source per line.")
_NUM_EXAMPLES = flags.DEFINE_integer("num_examples", 256, "Sources to generate for.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 32, "Sources generated for at once.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 64, "The most tokens generated per source.")
_NUM_BEAMS = flags.DEFINE_list("num_beams", ["1", "4"], "Searches to time: 1 = greedy.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed runs per peer (the median is reported).")
_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads; 0 = its default.")
flags.mark_flags_as_required(["model", "input"])


def new_tokens(out, start_columns: int, eos: int, pad: int):
    """Per row, the generated ids up to and including the first end id."""
    rows = []
    for row in out[:, start_columns:]:
        row = [int(t) for t in row]
        rows.append(row[:row.index(eos) + 1] if eos in row else
                    [t for t in row if t != pad])
    return rows


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger("jax").setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import jax
    import numpy as np
    import torch
    import transformers

    import fmt
    if _THREADS.value:
        torch.set_num_threads(_THREADS.value)
    lines = open(_INPUT.value, encoding="utf-8").read().splitlines()[:_NUM_EXAMPLES.value]
    model = fmt.from_pretrained(_MODEL.value, task="seq2seq_lm")
    model.params = jax.device_put(model.host_params())
    peer = transformers.AutoModelForSeq2SeqLM.from_pretrained(_MODEL.value).eval()
    tokenizer = model.tokenizer
    size = _BATCH_SIZE.value
    batches = [tokenizer(lines[i:i + size], padding=True, return_tensors="np")
               for i in range(0, len(lines), size)]
    eos, pad = model.config.eos_token_id, tokenizer.pad_token_id

    def run_fmt(beams):
        return [new_tokens(model.generate(b["input_ids"], b["attention_mask"],
                                          max_new_tokens=_NEW_TOKENS.value,
                                          num_beams=beams), 1, eos, pad) for b in batches]

    def run_torch(beams):
        with torch.inference_mode():
            return [new_tokens(peer.generate(
                input_ids=torch.as_tensor(b["input_ids"]),
                attention_mask=torch.as_tensor(b["attention_mask"]), do_sample=False,
                num_beams=beams, max_new_tokens=_NEW_TOKENS.value).numpy(), 1, eos, pad)
                for b in batches]

    params = sum(x.size for x in jax.tree.leaves(model.params))
    print(f"\n{model.config.model_type}, {params / 1e6:.1f}M params; {len(lines)} sources of "
          f"{_INPUT.value} in batches of {size}; at most {_NEW_TOKENS.value} new tokens; fmt on "
          f"{jax.devices()[0].device_kind}, torch on CPU ({torch.get_num_threads()} threads); "
          f"median of {_REPEATS.value} runs after a warm-up\n")
    print("| search | peer | tokens/s | median s | first run s | tokens | same output as "
          "torch | fmt / torch |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for beams in (int(b) for b in _NUM_BEAMS.value):
        results = {}
        for name, run in (("fmt", run_fmt), ("torch", run_torch)):
            start = time.perf_counter()
            out = run(beams)
            first = time.perf_counter() - start
            times = []
            for _ in range(_REPEATS.value):
                start = time.perf_counter()
                out = run(beams)
                times.append(time.perf_counter() - start)
            rows = [row for batch in out for row in batch]
            results[name] = (first, statistics.median(times), rows)
        reference = results["torch"][2]
        search = "greedy" if beams == 1 else f"beam {beams}"
        speed = {}
        for name, (first, median, rows) in results.items():
            tokens = sum(len(r) for r in rows)
            speed[name] = tokens / median
            same = np.mean([a == b for a, b in zip(rows, reference)])
            ratio = f"{speed['fmt'] / speed['torch']:.2f}x" if name == "torch" else ""
            print(f"| {search} | {name} | {speed[name]:,.0f} | {median:.2f} | {first:.2f} | "
                  f"{tokens} | {same:.0%} | {ratio} |")


if __name__ == "__main__":
    app.run(main)
