"""Greedy and beam-search generation for encoder-decoders (T5, BART), equal token
for token to `transformers`' `generate`.

`search` is the pure core (jit it, or call it inside a jitted step): the
encoder runs once, beam search repeats its states along the batch (row
`b * num_beams + k`), and a `jax.lax.while_loop` feeds one token per row and
step through the decoder's KV cache (fmt/models/encdec.py) until every row
has ended or `max_new_tokens`. Beam search reorders the cache by the chosen
beams before each step (cross-attention's keys and values are the same for
every beam of a source, so they stay). `generate` is the host API.

What matches `transformers` (its `_sample` for greedy, its vectorized
`_beam_search` for beams; logits processors in its order):
- the decoder sequence starts with `decoder_start_token_id`, and every
  length counts it: `min_length` bans the end ids while the sequence is
  shorter (min_length 5: the end comes after 4 new tokens or more), n-grams
  of `no_repeat_ngram_size` include it, `forced_bos_token_id` is the first
  new token, `forced_eos_token_id` the last one `max_new_tokens` allows;
- beam search scores log-softmax sums; a finished hypothesis is ranked by its
  sum over (new tokens, its end included) ** length_penalty; `early_stopping`
  True stops a source once it has num_beams finished hypotheses, False and
  "never" stop by transformers' heuristics; the best finished hypothesis wins.
- After a row's end comes the pad id (transformers' beam search fills with
  the first end id instead when the pad id is 0, as T5's is).
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from fmt.errors import UserError
from fmt.generate import as_batch, decoding_module, end_ids, is_end, padding_id, prompt_bucket
from fmt.tracing import Traced

NEG = -1.0e9  # transformers' "very negative" score for beams that cannot be chosen


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything a compilation depends on besides shapes (hashable: static)."""
    max_new_tokens: int
    decoder_start_token_id: int
    eos_token_ids: tuple[int, ...] = ()
    pad_token_id: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False  # True, False or "never"
    no_repeat_ngram_size: int = 0
    min_length: int = 0
    forced_bos_token_id: int | None = None
    forced_eos_token_ids: tuple[int, ...] = ()


def search(module, params, input_ids, attention_mask, settings: Settings) -> jax.Array:
    """The new ids `[batch, max_new_tokens]` int32 (without the start token;
    the pad id after each row's end) for sources `[batch, source_len]`
    (`attention_mask` marks real tokens). `module` is the seq2seq TaskModel."""
    encoded = module.apply({"params": params}, input_ids, attention_mask, method=_encode)
    beams = settings.num_beams
    if beams > 1:
        encoded = jnp.repeat(encoded, beams, axis=0)
        attention_mask = jnp.repeat(attention_mask, beams, axis=0)
    decoder = decoding_module(module)
    rows = encoded.shape[0]
    slots = jnp.ones((rows, settings.max_new_tokens), jnp.int32)  # causality hides the rest

    def step(cache, tokens):
        variables = {"params": params} if cache is None else {"params": params, "cache": cache}
        logits, updated = decoder.apply(variables, encoded, attention_mask, tokens[:, None],
                                        slots, method=_next_logits, mutable=["cache"])
        return logits, updated["cache"]

    start = jnp.full((rows,), settings.decoder_start_token_id, jnp.int32)
    logits, cache = step(None, start)
    run = _greedy if beams == 1 else _beam_search
    return run(step, logits, cache, input_ids.shape[0], settings)


def _encode(module, input_ids, attention_mask):
    return module.encoder.encode(input_ids, attention_mask, True)


def _next_logits(module, encoded, attention_mask, tokens, decoder_mask):
    out = module.encoder.decode_from(encoded, attention_mask, tokens, decoder_mask, True)
    return module.head(out._replace(hidden=out.hidden[:, -1:]), True)[:, 0].astype(jnp.float32)


def process(scores, sequences, length, settings: Settings):
    """transformers' logits processors, in its order, on `scores` `[rows, vocab]`
    given the decoder sequences `[rows, 1 + max_new_tokens]` of which the first
    `length` (traced) are written."""
    vocab = jnp.arange(scores.shape[-1])
    total = sequences.shape[1]  # transformers' max_length
    n = settings.no_repeat_ngram_size
    if 0 < n <= total:
        scores = _ban_repeats(scores, sequences, length, n)
    if settings.min_length > 0 and settings.eos_token_ids:
        ends = jnp.isin(vocab, jnp.asarray(settings.eos_token_ids))
        scores = jnp.where((length < settings.min_length) & ends, -jnp.inf, scores)
    if settings.forced_bos_token_id is not None:
        forced = jnp.where(vocab == settings.forced_bos_token_id, 0.0, -jnp.inf)
        scores = jnp.where(length == 1, forced, scores)
    if settings.forced_eos_token_ids:
        forced = jnp.where(jnp.isin(vocab, jnp.asarray(settings.forced_eos_token_ids)),
                           0.0, -jnp.inf)
        scores = jnp.where(length == total - 1, forced, scores)
    return scores


def _ban_repeats(scores, sequences, length, n: int):
    """-inf for each token that would repeat an n-gram of the first `length` ids."""
    rows, total = sequences.shape
    count = total - n + 1  # windows that fit the buffer; those within `length` count
    windows = jnp.stack([sequences[:, j:j + count] for j in range(n)], axis=-1)
    prefix = jax.lax.dynamic_slice_in_dim(sequences, length - n + 1, n - 1, axis=1)
    match = (windows[..., :-1] == prefix[:, None]).all(axis=-1)
    match &= jnp.arange(count) + n <= length
    banned = jnp.where(match, windows[..., -1], scores.shape[-1])  # out of range: dropped
    mask = jnp.zeros(scores.shape, bool).at[jnp.arange(rows)[:, None], banned].set(
        True, mode="drop")
    return jnp.where(mask, -jnp.inf, scores)


def _greedy(step, logits, cache, batch: int, settings: Settings):
    """transformers' `_sample` without sampling: argmax of the processed logits."""
    eos = jnp.asarray(settings.eos_token_ids, jnp.int32)
    total = settings.max_new_tokens + 1
    sequences = jnp.full((batch, total), settings.pad_token_id, jnp.int32)
    sequences = sequences.at[:, 0].set(settings.decoder_start_token_id)

    def choose(length, sequences, ended, logits):
        token = jnp.argmax(process(logits, sequences, length, settings), axis=-1)
        token = jnp.where(ended, settings.pad_token_id, token.astype(jnp.int32))
        sequences = jax.lax.dynamic_update_slice_in_dim(sequences, token[:, None], length, 1)
        return length + 1, sequences, ended | is_end(token, eos)

    def more(state):
        length, _, ended, _ = state
        return (length < total) & ~jnp.all(ended)

    def body(state):
        length, sequences, ended, cache = state
        previous = jax.lax.dynamic_index_in_dim(sequences, length - 1, 1, keepdims=False)
        logits, cache = step(cache, previous)
        return (*choose(length, sequences, ended, logits), cache)

    state = (*choose(jnp.int32(1), sequences, jnp.zeros((batch,), bool), logits), cache)
    return jax.lax.while_loop(more, body, state)[1][:, 1:]


def _beam_search(step, logits, cache, batch: int, settings: Settings):
    """transformers' `_beam_search`: each source keeps `num_beams` running
    hypotheses and the `num_beams` best finished ones, `[batch, beams, ...]`."""
    beams, vocab = settings.num_beams, logits.shape[-1]
    total = settings.max_new_tokens + 1
    eos = jnp.asarray(settings.eos_token_ids, jnp.int32)
    keep = max(2, 1 + len(settings.eos_token_ids)) * beams  # candidates per source
    early = settings.early_stopping
    # (new tokens) ** length_penalty as transformers divides by it: a Python
    # float (double) rounded to float32, for every length.
    penalty = jnp.asarray([1.0] + [n ** settings.length_penalty for n in range(1, total)],
                          jnp.float32)
    in_top = jnp.arange(keep) < beams
    row_offset = (jnp.arange(batch) * beams)[:, None]

    def gather(x, index):  # x [batch, n, ...], index [batch, m] -> [batch, m, ...]
        return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

    def choose(state, logits):
        length, running, running_scores, sequences, scores, finished, unsatisfied = state[:7]
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        log_probs = process(log_probs, running.reshape(batch * beams, total), length, settings)
        totals = log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]
        top_scores, top_index = jax.lax.top_k(totals.reshape(batch, beams * vocab), keep)
        parent, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        candidates = gather(running, parent)
        candidates = jax.lax.dynamic_update_slice_in_dim(candidates, token[..., None], length, 2)
        hits = is_end(token.reshape(-1), eos).reshape(batch, keep) | (length + 1 >= total)

        # The best `beams` candidates that have not ended run on.
        running_candidates = top_scores + hits.astype(jnp.float32) * NEG
        chosen = jax.lax.top_k(running_candidates, beams)[1]
        running = gather(candidates, chosen)
        running_scores = gather(running_candidates, chosen)
        parents = (gather(parent, chosen) + row_offset).reshape(-1)

        # Ended candidates among the top `beams` join the finished ones if better.
        just_finished = hits & in_top[None, :]
        ranked = top_scores / penalty[length]
        full = jnp.all(finished, axis=1, keepdims=True) & (early is True)
        ranked += full.astype(jnp.float32) * NEG
        ranked += (~unsatisfied).astype(jnp.float32) * NEG
        ranked += (~just_finished).astype(jnp.float32) * NEG
        merged_scores = jnp.concatenate([scores, ranked], axis=1)
        best = jax.lax.top_k(merged_scores, beams)[1]
        sequences = gather(jnp.concatenate([sequences, candidates], axis=1), best)
        scores = gather(merged_scores, best)
        finished = gather(jnp.concatenate([finished, just_finished], axis=1), best)

        # Could a running hypothesis still beat the worst finished one?
        length = length + 1
        if early == "never" and settings.length_penalty > 0.0:
            best_length = total - 1
        else:
            best_length = length - 1
        best_running = running_scores[:, :1] / penalty[best_length]
        worst = jnp.where(finished, jnp.min(scores, axis=1, keepdims=True), NEG)
        unsatisfied &= jnp.any(best_running > worst, axis=-1, keepdims=True)
        more = (jnp.any(unsatisfied) & ~(jnp.all(finished) & (early is True))
                & ~jnp.all(hits) & (length < total))
        return (length, running, running_scores, sequences, scores, finished, unsatisfied,
                parents, more)

    def body(state):
        *rest, parents, more, cache = state
        cache = _reorder(cache, parents, batch * beams)
        length, running = rest[0], rest[1]
        previous = jax.lax.dynamic_index_in_dim(running, length - 1, 2, keepdims=False)
        logits, cache = step(cache, previous.reshape(-1))
        return (*choose((*rest, parents, more), logits), cache)

    running = jnp.full((batch, beams, total), settings.pad_token_id, jnp.int32)
    running = running.at[:, :, 0].set(settings.decoder_start_token_id)
    initial = (jnp.int32(1), running,
               jnp.zeros((batch, beams), jnp.float32).at[:, 1:].set(NEG),
               running, jnp.full((batch, beams), NEG, jnp.float32),
               jnp.zeros((batch, beams), bool), jnp.ones((batch, 1), bool),
               jnp.arange(batch * beams), jnp.bool_(True))
    state = (*choose(initial, logits), cache)
    state = jax.lax.while_loop(lambda s: s[-2], body, state)
    return state[3][:, 0, 1:]


def _reorder(cache, parents, rows: int):
    """The cache's rows gathered by `parents` (the running beams' origins). The
    scalar `index` has no batch axis; cross-attention's keys and values are
    equal across a source's beams, so they are left."""
    def pick(path, x):
        name = getattr(path[-1], "key", "")
        if x.ndim == 0 or x.shape[0] != rows or str(name).startswith("cross_"):
            return x
        return jnp.take(x, parents, axis=0)
    return jax.tree_util.tree_map_with_path(pick, cache)


# Compiled once per (batch, source bucket, settings); `.count` (the traces) lets
# tests see that.
SEARCH = Traced(search)
_search = jax.jit(SEARCH, static_argnames=("module", "settings"))


def settings_for(model, *, max_new_tokens: int, num_beams: int = 1, length_penalty: float = 1.0,
                 early_stopping=False, no_repeat_ngram_size: int = 0, min_length: int = 0,
                 eos_token_id=None, pad_token_id: int | None = None) -> Settings:
    """The checked `Settings` for `model`; token ids from its config (as
    transformers reads them from config.json / generation_config.json)."""
    if isinstance(num_beams, bool) or not isinstance(num_beams, (int, np.integer)) \
            or num_beams < 1:
        raise UserError(f"num_beams={num_beams!r}: must be a whole number >= 1 (pass 1 for "
                        f"greedy decoding, e.g. 4 for beam search)")
    if max_new_tokens < 1:
        raise UserError(f"max_new_tokens={max_new_tokens}: must be at least 1")
    if not np.isfinite(length_penalty):
        raise UserError(f"length_penalty={length_penalty}: must be a finite number "
                        "(1.0: scores divided by the length; 0: no penalty)")
    if no_repeat_ngram_size < 0:
        raise UserError(f"no_repeat_ngram_size={no_repeat_ngram_size}: must be 0 (off) or "
                        "positive")
    if min_length < 0:
        raise UserError(f"min_length={min_length}: must be 0 (off) or positive")
    if not (isinstance(early_stopping, bool) or early_stopping == "never"):
        raise UserError(f"early_stopping={early_stopping!r}: must be True, False or 'never'")
    limit = model.max_positions
    if limit and max_new_tokens > limit:
        raise UserError(f"max_new_tokens={max_new_tokens} exceeds the decoder's {limit} "
                        "positions; lower it")
    config = model.config
    start = _config_id(model, "decoder_start_token_id")
    if start is None:
        start = _config_id(model, "bos_token_id")
    if start is None:
        raise UserError(f"the {config.model_type} config has no decoder_start_token_id (nor "
                        "bos_token_id); set decoder_start_token_id in its config.json")
    eos = end_ids(config, eos_token_id)
    forced_bos = _config_id(model, "forced_bos_token_id")
    forced_eos = _config_id(model, "forced_eos_token_id")
    forced_eos = () if forced_eos is None else tuple(end_ids(config, forced_eos))
    return Settings(
        max_new_tokens=int(max_new_tokens), decoder_start_token_id=int(start),
        eos_token_ids=tuple(eos), pad_token_id=padding_id(model, eos, pad_token_id),
        num_beams=int(num_beams), length_penalty=float(length_penalty),
        early_stopping=early_stopping, no_repeat_ngram_size=int(no_repeat_ngram_size),
        min_length=int(min_length),
        forced_bos_token_id=None if forced_bos is None else int(forced_bos),
        forced_eos_token_ids=forced_eos)


def _config_id(model, name):
    """A token id (or ids) from the family config, else the folder's config.json."""
    value = getattr(model.config, name, None)
    return model.hf_config.get(name) if value is None else value


def generate(model, input_ids, attention_mask=None, *, max_new_tokens: int, **options):
    """`[batch, 1 + generated]` ids as transformers' `generate` returns them: the
    decoder start token, then the new tokens, columns kept up to the longest
    row's end (pad after each row's end). Sources `[batch, length]` may be
    padded on either side (`attention_mask`); they are right-padded to a bucket
    (a power of two, from 32), so one compilation serves each (batch, bucket,
    settings). `options`: those of `settings_for`."""
    if model.task != "seq2seq_lm":
        raise UserError(f"generate needs an encoder-decoder loaded with task='seq2seq_lm'; "
                        f"this {model.config.model_type} model is for {model.task!r}")
    settings = settings_for(model, max_new_tokens=max_new_tokens, **options)
    ids, mask = as_batch(input_ids, attention_mask)
    lengths = mask.sum(axis=1)
    if (lengths == 0).any():
        raise UserError(f"source {int(np.argmin(lengths))} has no tokens (its attention_mask is "
                        "all 0); give every source at least one token")
    width, limit = ids.shape[1], model.max_positions
    if limit and width > limit:
        raise UserError(f"sources of {width} tokens (padding included) exceed the model's "
                        f"{limit} positions; shorten them")
    bucket = prompt_bucket(width)
    bucket = min(bucket, limit) if limit else bucket
    padded = np.full((len(ids), bucket), settings.pad_token_id, np.int32)
    padded_mask = np.zeros((len(ids), bucket), np.int32)
    padded[:, :width], padded_mask[:, :width] = ids, mask
    new = np.asarray(_search(model.module, model.host_params(), jnp.asarray(padded),
                             jnp.asarray(padded_mask), settings=settings))
    ends = np.isin(new, settings.eos_token_ids)
    row_lengths = np.where(ends.any(axis=1), ends.argmax(axis=1) + 1, new.shape[1])
    start = np.full((len(ids), 1), settings.decoder_start_token_id, np.int32)
    return np.concatenate([start, new[:, :int(row_lengths.max())]], axis=1)
