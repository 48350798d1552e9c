r"""How fast greedy generation is with fmt's KV cache, without it, and in PyTorch.

  python experiments/bench_generate.py                       # a random ~10M GPT-2
  python experiments/bench_generate.py --model=gpt2 --batch_size=8 --prompt_length=128 \
      --new_tokens=128

Three peers generate --new_tokens greedy tokens after the same random prompts
(--batch_size rows of --prompt_length tokens, no padding, no early end):

  fmt_cache      Model.generate: a prefill, then one token per step against the
                 KV cache, the whole loop one jitted function (fmt/generate.py)
  fmt_recompute  the same model's plain forward, no cache: the ids padded to
                 prompt + new tokens once, and every step runs the forward over
                 all of them (causality hides the slots not yet filled) and
                 reads the next token's logits; one jitted fori_loop, so one
                 compilation, but each step costs a full-length forward
  torch          transformers' `generate` (its own KV cache) on the same
                 folder, on the CPU, in float32

Each peer runs once to warm up (compilation; not timed), then --repeats times;
the table gives the median. fmt's params are placed on the device first, so
no run copies them. Also printed: how many of each peer's tokens equal
fmt_cache's (random models have near-tied logits, so a few may differ).
"""

import logging
import os
import pathlib
import statistics
import tempfile
import time

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "A causal-LM folder or hub id; default: a random "
                             "GPT-2 of ~10M params (10 layers of 256, 8192 ids) built in a temp "
                             "folder.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 8, "Prompts generated for at once.")
_PROMPT_LENGTH = flags.DEFINE_integer("prompt_length", 64, "Tokens per prompt.")
_NEW_TOKENS = flags.DEFINE_integer("new_tokens", 64, "Tokens generated per prompt.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per peer (the median is reported).")
_PEERS = flags.DEFINE_list("peers", ["fmt_cache", "fmt_recompute", "torch"], "What to run.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the prompts (and of the default model).")


def random_gpt2(folder: pathlib.Path, seed: int) -> None:
    """A GPT-2 of ~10M params with a word-level tokenizer of 8192 made-up words:
    generation speed depends on the shapes, not on what the weights learnt."""
    import torch
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    vocab = {"<|endoftext|>": 0, **{f"w{i}": i for i in range(1, 8192)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
        unk_token="<|endoftext|>").save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=8192, n_positions=1024, n_embd=256, n_layer=10,
                                     n_head=8, bos_token_id=0, eos_token_id=0)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(folder))


def recompute_generate(model, new_tokens: int):
    """Greedy decoding without a cache: the full forward at every step."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def run(params, prompt):
        batch, length = prompt.shape
        ids = jnp.zeros((batch, length + new_tokens), jnp.int32).at[:, :length].set(prompt)

        def step(t, ids):
            logits = model.module.apply({"params": params}, ids, jnp.ones_like(ids))
            token = jnp.argmax(logits[:, length + t - 1], axis=-1).astype(jnp.int32)
            return ids.at[:, length + t].set(token)

        return jax.lax.fori_loop(0, new_tokens, step, ids)[:, length:]

    return lambda prompt: jax.device_get(run(model.params, prompt))


def timed(generate, prompt, repeats: int):
    """(first run's seconds, median of the timed runs, the ids)."""
    start = time.perf_counter()
    out = generate(prompt)
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = generate(prompt)
        times.append(time.perf_counter() - start)
    return first, statistics.median(times), out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    logging.getLogger("jax").setLevel(logging.WARNING)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import jax
    import numpy as np

    import fmt
    with tempfile.TemporaryDirectory() as temporary:
        folder = _MODEL.value
        if folder is None:
            folder = temporary
            random_gpt2(pathlib.Path(folder), _SEED.value)
        model = fmt.from_pretrained(folder, task="causal_lm")
        model.params = jax.device_put(model.params)
        batch, length, new = _BATCH_SIZE.value, _PROMPT_LENGTH.value, _NEW_TOKENS.value
        eos = model.config.eos_token_id
        eos = [] if eos is None else [eos] if np.isscalar(eos) else list(eos)
        allowed = np.setdiff1d(np.arange(model.config.vocab_size), eos)
        prompt = np.random.default_rng(_SEED.value).choice(allowed, (batch, length))
        peers = {  # each makes the function that generates for a prompt
            "fmt_cache": lambda: lambda ids: model.generate(ids, max_new_tokens=new,
                                                            eos_token_id=[])[:, length:],
            "fmt_recompute": lambda: recompute_generate(model, new),
            "torch": lambda: torch_generate(folder, new),
        }
        unknown = set(_PEERS.value) - set(peers)
        if unknown:
            raise app.UsageError(f"--peers: unknown {sorted(unknown)}; known: {list(peers)}")
        results = {name: timed(peers[name](), prompt, _REPEATS.value) for name in _PEERS.value}
        params = sum(x.size for x in jax.tree.leaves(model.params))
        print(f"\n{model.config.model_type}, {params / 1e6:.1f}M params; batch {batch}, prompt "
              f"{length}, {new} new tokens; fmt on {jax.devices()[0].device_kind}, torch on "
              f"CPU; median of {_REPEATS.value} runs after a warm-up\n")
        print("| peer | tokens/s | median s | first run s (compile) | same tokens as fmt_cache |")
        print("|---|---:|---:|---:|---:|")
        reference = results.get("fmt_cache", (None, None, None))[2]
        for name, (first, median, out) in results.items():
            same = "" if reference is None else f"{(out == reference).mean():.0%}"
            print(f"| {name} | {batch * new / median:,.0f} | {median:.3f} | {first:.2f} | "
                  f"{same} |")


def torch_generate(folder, new_tokens):
    """transformers' greedy `generate`, every row to the full length."""
    import torch
    import transformers
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0

    def run(prompt):
        with torch.inference_mode():
            ids = torch.as_tensor(prompt)
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 do_sample=False, max_new_tokens=new_tokens,
                                 min_new_tokens=new_tokens)
        return out[:, prompt.shape[1]:].numpy()

    return run


if __name__ == "__main__":
    app.run(main)
