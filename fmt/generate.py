"""Text generation with a KV cache (`Model.generate`), after flax's wmt `decode.py`.

The prompts are left-padded to a bucket length (a power of two, from 32), so
every row's last prompt token sits in the same slot and each step appends one
token per row at the same slot. One jitted function runs the whole decode: a
prefill over the prompts fills the decoder's 'cache' collection (each
attention layer's keys and values `[batch, slots, kv_heads, head_dim]`, the
decoder's slot index), then a `jax.lax.while_loop` feeds one token per step
until `max_new_tokens` or until every row has ended. It compiles once per
(batch size, bucket, max_new_tokens, do_sample, number of end ids);
temperature, top-k, top-p, the seed and the ids are traced values.

What matches `transformers`' `generate`: positions counted over real tokens
(a left-padded row starts at 0), padded slots never attended, greedy argmax,
sampling's logits processed by temperature, then top-k, then top-p as its
warpers do, and rows that have ended continuing with the pad id. Unlike it,
the result always has `max_new_tokens` new columns (pad after every row's
end), and top-k is off unless asked for (its generation config defaults 50).
"""


import jax
import jax.numpy as jnp
import numpy as np

from fmt.errors import UserError
from fmt.tracing import Traced
from fmt.models import heads, layers



def generate(model, input_ids, attention_mask=None, *, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, eos_token_id=None, pad_token_id: int | None = None,
             seed: int = 0, return_logits: bool = False):
    """The prompts `[batch, length]` followed by `max_new_tokens` generated ids.

    `attention_mask` marks real tokens (default: all); prompts padded on either
    side come back left-padded (unchanged when they were). `eos_token_id`
    (an id or a list; None: the model config's) ends a row, after which it
    gets `pad_token_id` (None: the config's, else the first end id, else the
    tokenizer's); pass [] to never stop early. With `return_logits`, also the
    float32 logits each new token was chosen from `[batch, max_new_tokens,
    vocab]` (zeros after every row ended), before sampling's processing.
    """
    check_decoder(model)
    ids, mask = as_batch(input_ids, attention_mask)
    lengths = mask.sum(axis=1)
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    if (lengths == 0).any():
        raise UserError(f"prompt {int(np.argmin(lengths))} has no tokens (its attention_mask is "
                        "all 0); give every prompt at least one token")
    longest, limit = int(lengths.max()), model.max_positions
    if longest + max_new_tokens > limit:
        raise UserError(f"max_new_tokens={max_new_tokens}: a prompt of {longest} tokens plus "
                        f"{max_new_tokens} new ones exceeds the model's {limit} positions; "
                        f"lower max_new_tokens or shorten the prompt")
    if do_sample:
        _check_sampling(temperature, top_k, top_p)
    eos = end_ids(model.config, eos_token_id)
    pad = padding_id(model, eos, pad_token_id)
    # Positions count real tokens only, so the bucket may pass the model's limit.
    bucket = prompt_bucket(longest)
    prompt_ids, prompt_mask = left_padded(ids, mask, bucket, pad)
    tokens, logits = _decode(
        decoding_module(model.module), model.params, jnp.asarray(prompt_ids),
        jnp.asarray(prompt_mask), jax.random.key(seed), jnp.float32(temperature),
        jnp.int32(top_k), jnp.float32(top_p), jnp.asarray(eos, jnp.int32), jnp.int32(pad),
        max_new_tokens=max_new_tokens, do_sample=bool(do_sample),
        return_logits=return_logits)
    # The prompts as given when already left-padded, else moved to the left.
    left_ids, left_mask = left_padded(ids, mask, ids.shape[1], pad)
    prompts = np.where((mask == left_mask).all(axis=1, keepdims=True), ids, left_ids)
    out = np.concatenate([prompts, np.asarray(tokens, ids.dtype)], axis=1)
    return (out, np.asarray(logits)) if return_logits else out


def prompt_bucket(length: int) -> int:
    """The padded width of inputs of `length` tokens: a power of two from 32, so
    that calls of similar lengths share a compilation."""
    return 1 << max(5, (length - 1).bit_length())


def check_decoder(model) -> None:
    """Generation needs a decoder (its backbone has a cache) with its LM head."""
    backbone = model.module.encoder
    if not (isinstance(model.module.head, heads.CausalLMHead) and hasattr(backbone, "decode")
            and not getattr(backbone, "is_encoder_decoder", False)):
        raise UserError(f"generate needs a decoder loaded with task='causal_lm'; this is a "
                        f"{model.config.model_type} model for {model.task!r}")


def decoding_module(module):
    """The same TaskModel (same params) whose decoder keeps a KV cache."""
    return module.clone(encoder=module.encoder.clone(decode=True, remat=False))


def left_padded(ids: np.ndarray, mask: np.ndarray, width: int, pad: int):
    """Each row's real tokens (in order) at the right end of `width` slots."""
    out_ids = np.full((len(ids), width), pad, dtype=np.int32)
    out_mask = np.zeros((len(ids), width), dtype=np.int32)
    for row, (row_ids, row_mask) in enumerate(zip(ids, mask)):
        real = row_ids[row_mask.astype(bool)]
        out_ids[row, width - len(real):] = real
        out_mask[row, width - len(real):] = 1
    return out_ids, out_mask


def filter_logits(logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """Sampling's logits `[batch, vocab]` as transformers' warpers leave them:
    divided by `temperature`, then all but the `top_k` largest (ties kept;
    0: all) set to -inf, then all but the smallest set whose probabilities sum
    past `top_p` (the likeliest always kept; 1: all).

    One ascending sort serves both filters: top-k's survivors keep their order,
    so top-p's removed tokens are a prefix of it and one cut-off value says
    which survive. (Tokens tied with the cut-off all survive, where
    transformers keeps an arbitrary part of them.)
    """
    vocab = logits.shape[-1]
    scaled = logits / temperature
    ascending = jnp.sort(scaled, axis=-1)
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    kth = jnp.take(ascending, vocab - k, axis=-1)[:, None]
    ascending = jnp.where(ascending < kth, -jnp.inf, ascending)
    cumulative = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)
    removed = jnp.minimum(jnp.sum(cumulative <= 1 - top_p, axis=-1), vocab - 1)
    cutoff = jnp.take_along_axis(ascending, removed[:, None], axis=-1)
    threshold = jnp.where(top_p < 1, jnp.maximum(kth, cutoff), kth)
    return jnp.where(scaled < threshold, -jnp.inf, scaled)


def _choose(logits, key, settings, do_sample: bool):
    if not do_sample:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    filtered = filter_logits(logits, *settings)
    return jax.random.categorical(key, filtered, axis=-1).astype(jnp.int32)


def _last_logits(module, ids, mask, positions):
    """Float32 logits of each row's last token `[batch, vocab]`: prompts end in
    the last slot (left padding), so the head reads one token, not the bucket."""
    out = module.encoder(ids, mask, None, True, positions=positions)
    out = out._replace(hidden=out.hidden[:, -1:])
    return module.head(out, True)[:, 0].astype(jnp.float32)


def _forward(module, variables, ids, mask, positions):
    logits, updated = module.apply(variables, ids, mask, positions, method=_last_logits,
                                   mutable=["cache"])
    return logits, updated["cache"]


def _decode_loop(module, params, prompt_ids, prompt_mask, key, temperature, top_k, top_p, eos_ids,
            pad_id, *, max_new_tokens: int, do_sample: bool, return_logits: bool):
    """(new tokens `[batch, max_new_tokens]`, their logits or None)."""
    batch = prompt_ids.shape[0]
    settings = (temperature, top_k, top_p)
    # Every slot the new tokens will fill is real; a row's later slots stay
    # hidden from it by causality, not by this mask.
    mask = jnp.concatenate([prompt_mask, jnp.ones((batch, max_new_tokens), jnp.int32)], axis=1)
    first_position = prompt_mask.sum(axis=1)  # a row's first new token, counted as HF does
    logits, cache = _forward(module, {"params": params}, prompt_ids, mask,
                             layers.default_positions(prompt_mask))
    token = _choose(logits, jax.random.fold_in(key, 0), settings, do_sample)
    tokens = jnp.full((batch, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(token)
    saved = None
    if return_logits:
        saved = jnp.zeros((batch, max_new_tokens, logits.shape[-1])).at[:, 0].set(logits)
    ended = is_end(token, eos_ids)

    def more(state):
        step, _, _, ended, _ = state
        return (step < max_new_tokens) & ~jnp.all(ended)

    def one_token(state):
        step, cache, tokens, ended, saved = state
        previous = jax.lax.dynamic_slice_in_dim(tokens, step - 1, 1, axis=1)
        logits, cache = _forward(module, {"params": params, "cache": cache}, previous, mask,
                                 (first_position + step - 1)[:, None])
        token = _choose(logits, jax.random.fold_in(key, step), settings, do_sample)
        token = jnp.where(ended, pad_id, token)
        tokens = jax.lax.dynamic_update_slice_in_dim(tokens, token[:, None], step, axis=1)
        if saved is not None:
            saved = jax.lax.dynamic_update_slice_in_dim(saved, logits[:, None], step, axis=1)
        return step + 1, cache, tokens, ended | is_end(token, eos_ids), saved

    _, _, tokens, _, saved = jax.lax.while_loop(
        more, one_token, (jnp.int32(1), cache, tokens, ended, saved))
    return tokens, saved



# Compiled once per (batch, prompt bucket) and static setting; `.count` (the
# traces) lets tests see that.
DECODE = Traced(_decode_loop)
_decode = jax.jit(DECODE, static_argnames=("module", "max_new_tokens", "do_sample",
                                           "return_logits"))

def is_end(token, eos_ids):
    return (token[:, None] == eos_ids[None, :]).any(axis=1)


def as_batch(input_ids, attention_mask):
    ids = np.asarray(input_ids)
    if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
        raise UserError(f"input_ids must be integer token ids [batch, length], got "
                        f"{ids.dtype} of shape {ids.shape}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:
        raise UserError(f"attention_mask has shape {mask.shape}; it must match input_ids' "
                        f"{ids.shape}")
    return ids, (mask != 0).astype(np.int32)


def _check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature > 0:
        raise UserError(f"temperature={temperature}: must be positive (do_sample=False for "
                        "greedy decoding)")
    if top_k < 0:
        raise UserError(f"top_k={top_k}: must be 0 (off) or positive")
    if not 0 < top_p <= 1:
        raise UserError(f"top_p={top_p}: must be in (0, 1] (1: off)")


def end_ids(config, eos_token_id) -> list[int]:
    eos = config.eos_token_id if eos_token_id is None else eos_token_id
    if eos is None:
        return []
    return [int(eos)] if np.isscalar(eos) else [int(i) for i in eos]


def padding_id(model, eos: list[int], pad_token_id: int | None) -> int:
    """As transformers: the given id, the config's pad id, else the first end id;
    then the tokenizer's pad id, else 0 (padding is never attended)."""
    for candidate in (pad_token_id, model.config.pad_token_id, *eos[:1],
                      getattr(model.tokenizer, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return 0


def continuations(module, params, ids, prompt_mask, *, eos_ids: tuple[int, ...], pad_id: int,
                  max_new_tokens: int) -> jax.Array:
    """Greedy continuations `[batch, max_new_tokens]` (pad after a row's end) of
    the prompts that open each row of `ids`, where `prompt_mask` marks them
    (what follows, such as a training row's response, is ignored): pure, for
    a jitted step. Each prompt moves to the right end of its row, the layout
    the decode loop wants, and decodes against the KV cache."""
    length = ids.shape[1]
    source = jnp.arange(length)[None, :] - (length - prompt_mask.sum(axis=1))[:, None]
    real = source >= 0
    left = jnp.where(real, jnp.take_along_axis(ids, jnp.maximum(source, 0), axis=1), pad_id)
    tokens, _ = _decode_loop(
        decoding_module(module), params, left.astype(jnp.int32), real.astype(jnp.int32),
        jax.random.key(0), jnp.float32(1.0), jnp.int32(0), jnp.float32(1.0),
        jnp.asarray(eos_ids, jnp.int32), jnp.int32(pad_id), max_new_tokens=max_new_tokens,
        do_sample=False, return_logits=False)
    return tokens
