"""Checks fmt.data.batching: bucket lengths, train and eval plans, padded batches."""

import itertools

import numpy as np
import pytest

from fmt.data.batching import (bucket_lengths, eval_plan, fit_bucket_lengths, make_batch,
                                train_plan)
from fmt.data.features import Features


def _encoded(n: int = 103, max_len: int = 128, seed: int = 0, pad_id: int = 0) -> Features:
    """Ragged random examples with lengths in [2, max_len]; ids never equal pad_id."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, max_len + 1, n)
    input_ids = [rng.integers(2, 50, k).astype(np.int32) for k in lengths]
    token_type_ids = [(np.arange(k) >= k // 2).astype(np.int32) for k in lengths]
    labels = rng.integers(0, 3, n).astype(np.int32)
    return Features({"input_ids": input_ids, "token_type_ids": token_type_ids},
                    {"labels": labels}, {"input_ids": pad_id})


# --- bucket_lengths -----------------------------------------------------------

@pytest.mark.parametrize("max_len, expected", [
    (128, (32, 64, 128)),
    (100, (32, 64, 100)),
    (512, (32, 64, 128, 256, 512)),
    (64, (32, 64)),
    (33, (32, 33)),
    (32, (32,)),
    (16, (16,)),
])
def test_bucket_lengths_defaults(max_len, expected):
    assert bucket_lengths(max_len) == expected


@pytest.mark.parametrize("lengths, expected", [
    ((16, 48, 256), (16, 48, 128)),
    ((64, 16, 16), (16, 64, 128)),
    ((128,), (128,)),
    ((200, 300), (128,)),
])
def test_bucket_lengths_explicit_capped_at_max(lengths, expected):
    assert bucket_lengths(128, lengths) == expected


# --- train_plan -----------------------------------------------------------------

def _padded(lengths, buckets) -> int:
    return int(np.asarray(buckets)[np.searchsorted(buckets, lengths)].sum())


def test_fit_bucket_lengths_pads_least_among_all_choices():
    """Against every choice of up to `count` lengths, by brute force."""
    rng = np.random.default_rng(0)
    for _ in range(150):
        lengths = rng.integers(1, 12, rng.integers(1, 30))
        longest = int(lengths.max()) + int(rng.integers(0, 3))
        count = int(rng.integers(1, 4))
        buckets = fit_bucket_lengths(lengths, count, longest)
        best = min(_padded(lengths, tuple(c) + (longest,)) for r in range(count)
                   for c in itertools.combinations(range(1, longest), r))
        assert len(buckets) <= count and buckets[-1] == longest
        assert list(buckets) == sorted(set(buckets))
        assert _padded(lengths, buckets) == best, (lengths, count, buckets)


def test_fit_bucket_lengths_drops_empty_buckets_and_rejects_long_sequences():
    assert fit_bucket_lengths(np.array([5, 5, 5]), 4, 8) == (5, 8)
    assert fit_bucket_lengths(np.array([3, 7]), 10, 7) == (3, 7)
    with pytest.raises(ValueError, match="longer than 6"):
        fit_bucket_lengths(np.array([3, 7]), 2, 6)


def _check_plan(data: Features, plan, batch_size: int, buckets: tuple[int, ...]):
    seen = np.concatenate([indices for indices, _ in plan])
    assert np.array_equal(np.sort(seen), np.arange(len(data))), "each example exactly once"
    lengths = data.lengths
    for indices, length in plan:
        assert 1 <= len(indices) <= batch_size
        assert length in buckets
        assert lengths[indices].max() <= length


@pytest.mark.parametrize("batch_size", [1, 8, 16, 200])
def test_train_plan_visits_every_example_once(batch_size):
    data = _encoded()
    buckets = bucket_lengths(128)
    for epoch in range(3):
        _check_plan(data, train_plan(data, batch_size, buckets, seed=5, epoch=epoch),
                    batch_size, buckets)


@pytest.mark.parametrize("low, high, expected", [(2, 32, 32), (33, 64, 64), (65, 128, 128)])
def test_train_plan_pads_one_bucket_to_its_length(low, high, expected):
    rng = np.random.default_rng(1)
    lengths = rng.integers(low, high + 1, 37)
    data = Features({"input_ids": [np.ones(k, np.int32) for k in lengths],
                     "token_type_ids": [np.zeros(k, np.int32) for k in lengths]},
                    {"labels": np.zeros(37, np.int32)})
    plan = train_plan(data, 8, bucket_lengths(128), seed=0, epoch=0)
    assert {length for _, length in plan} == {expected}
    assert sorted(len(indices) for indices, _ in plan) == [5] + [8] * 4


def _flat(plan):
    return [(tuple(indices.tolist()), length) for indices, length in plan]


def test_train_plan_is_a_function_of_seed_and_epoch():
    data = _encoded()
    buckets = bucket_lengths(128)
    plan = _flat(train_plan(data, 8, buckets, seed=3, epoch=1))
    assert plan == _flat(train_plan(data, 8, buckets, seed=3, epoch=1))
    order = [i for indices, _ in plan for i in indices]
    other_epoch = [i for indices, _ in _flat(train_plan(data, 8, buckets, 3, 2)) for i in indices]
    other_seed = [i for indices, _ in _flat(train_plan(data, 8, buckets, 4, 1)) for i in indices]
    assert order != other_epoch
    assert order != other_seed


def test_train_plan_has_the_same_number_of_batches_every_epoch():
    data = _encoded(n=157)
    buckets = bucket_lengths(128)
    counts = {len(train_plan(data, 8, buckets, seed=0, epoch=e)) for e in range(6)}
    counts |= {len(train_plan(data, 8, buckets, seed=9, epoch=e)) for e in range(3)}
    assert len(counts) == 1


def test_train_plan_single_bucket_batch_count():
    data = _encoded(n=50, max_len=30)
    plan = train_plan(data, 8, (32,), seed=0, epoch=0)
    assert len(plan) == 7  # ceil(50 / 8)
    assert all(length == 32 for _, length in plan)
    assert sorted(len(indices) for indices, _ in plan) == [2] + [8] * 6


# --- eval_plan --------------------------------------------------------------------

@pytest.mark.parametrize("batch_size", [1, 7, 64, 500])
def test_eval_plan_covers_every_example_once(batch_size):
    data = _encoded()
    buckets = bucket_lengths(128)
    plan = eval_plan(data, batch_size, buckets)
    _check_plan(data, plan, batch_size, buckets)
    assert len(plan) == -(-len(data) // batch_size)
    # Sorted by length: padded lengths never decrease.
    padded = [length for _, length in plan]
    assert padded == sorted(padded)


# --- make_batch ---------------------------------------------------------------------

def test_make_batch_pads_and_weights():
    data = _encoded(n=10, max_len=20, pad_id=1)
    indices = np.array([4, 0, 7])
    batch = make_batch(data, indices, length=32, batch_size=5)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids", "labels", "weights"}
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].shape == (5, 32)
        assert batch[key].dtype == np.int32
    assert batch["labels"].shape == (5,)
    assert batch["labels"].dtype == np.int32
    np.testing.assert_array_equal(batch["weights"], [1, 1, 1, 0, 0])
    assert batch["weights"].dtype == np.float32
    np.testing.assert_array_equal(batch["labels"][:3], data.examples["labels"][indices])
    for row, i in enumerate(indices):
        n = len(data.tokens["input_ids"][i])
        np.testing.assert_array_equal(batch["input_ids"][row, :n], data.tokens["input_ids"][i])
        np.testing.assert_array_equal(batch["input_ids"][row, n:], 1)
        np.testing.assert_array_equal(batch["token_type_ids"][row, :n], data.tokens["token_type_ids"][i])
        np.testing.assert_array_equal(batch["token_type_ids"][row, n:], 0)
        np.testing.assert_array_equal(batch["attention_mask"][row], np.arange(32) < n)
    # Filler rows: all padding, masked out, weight 0.
    np.testing.assert_array_equal(batch["input_ids"][3:], 1)
    np.testing.assert_array_equal(batch["attention_mask"][3:], 0)
    np.testing.assert_array_equal(batch["attention_mask"].sum(1)[:3], data.lengths[indices])


def test_make_batch_float_labels_for_regression():
    data = _encoded(n=4, max_len=10)
    data.examples["labels"] = np.array([0.5, 1.5, 2.5, 3.5], np.float32)
    batch = make_batch(data, np.array([3, 1]), length=16, batch_size=4)
    assert batch["labels"].dtype == np.float32
    np.testing.assert_array_equal(batch["labels"], [3.5, 1.5, 0.0, 0.0])
    np.testing.assert_array_equal(batch["weights"], [1, 1, 0, 0])


def test_make_batch_from_a_train_plan():
    data = _encoded(n=40, pad_id=1)
    buckets = bucket_lengths(128)
    for indices, length in train_plan(data, 8, buckets, seed=0, epoch=0):
        batch = make_batch(data, indices, length, 8)
        assert batch["input_ids"].shape == (8, length)
        assert batch["weights"].sum() == len(indices)
        np.testing.assert_array_equal(batch["attention_mask"].sum(1)[:len(indices)],
                                      data.lengths[indices])
