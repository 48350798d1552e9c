"""Packed rows: every example once, within capacity, with segment ids and positions."""

import math

import numpy as np
import pytest

from fmt.data import batching
from fmt.data.features import IGNORE, Features


def features(lengths, seed=0) -> Features:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, 100, n).astype(np.int32) for n in lengths]
    return Features(tokens={"input_ids": ids, "labels": [i.copy() for i in ids]},
                    pad_values={"input_ids": 0, "labels": IGNORE})


@pytest.mark.parametrize("seed", range(5))
def test_pack_rows_holds_every_example_once_within_capacity(seed):
    lengths = np.random.default_rng(seed).integers(1, 65, 300)
    rows = batching.pack_rows(lengths, 64)
    members = np.concatenate(rows)
    assert sorted(members) == list(range(300))
    assert all(lengths[row].sum() <= 64 for row in rows)
    fewest = math.ceil(lengths.sum() / 64)
    assert len(rows) <= 11 / 9 * fewest + 1  # first fit decreasing's bound
    assert [r.tolist() for r in rows] == [r.tolist() for r in batching.pack_rows(lengths, 64)]
    with pytest.raises(ValueError, match="does not fit"):
        batching.pack_rows([10, 65], 64)


def test_packed_plan_is_a_function_of_seed_and_epoch():
    rows = batching.pack_rows(np.arange(1, 41) % 30 + 1, 32)
    plan = lambda seed, epoch: [[r.tolist() for r in p.rows]
                                for p, _ in batching.packed_plan(rows, 4, 32, seed, epoch)]
    assert plan(0, 0) == plan(0, 0) and plan(0, 0) != plan(0, 1)
    assert len(plan(0, 0)) == len(plan(3, 7)) == math.ceil(len(rows) / 4)
    covered = sorted(i for batch in plan(0, 1) for row in batch for i in row)
    assert covered == list(range(40))


def test_packed_batch_fields():
    data = features([3, 2, 4, 1])
    packed = batching.PackedRows((np.array([0, 1]), np.array([2, 3])))
    batch = batching.make_batch(data, packed, 6, batch_size=3)
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 2, 0],
                                             [0] * 6]
    assert batch["positions"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0], [0] * 6]
    assert batch["attention_mask"].tolist() == (batch["segment_ids"] > 0).astype(int).tolist()
    assert batch["weights"].tolist() == [1, 1, 0]  # the third row only fills the batch
    ids = data.tokens["input_ids"]
    assert batch["input_ids"][0, :5].tolist() == [*ids[0], *ids[1]]
    assert batch["labels"][1].tolist() == [*ids[2], *ids[3], IGNORE]
    assert batching.examples_in(packed).tolist() == [0, 1, 2, 3]
    # A process that holds only some rows builds only those.
    assert batching.make_batch(data, packed, 6, 3, rows=np.array([1]))["positions"].tolist() \
        == [[0, 1, 2, 3, 0, 0]]
    labelled = Features(tokens=data.tokens, examples={"label": np.zeros(4, np.int32)})
    with pytest.raises(ValueError, match="cannot be packed"):
        batching.make_batch(labelled, packed, 6, 3)
