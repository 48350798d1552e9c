"""Packed batches: several examples share a row (`--config.packing`).

A packed batch holds `batch_size` examples, as an unpacked one does, so each
update averages over as many examples and the optimisation is the same. They
sit end to end in rows of one length, told apart by `segment_ids` (1, 2, ... in
a row; 0 on padding) and `positions` that restart at 0 with each example, so a
model that reads them attends within an example only and sees each as if alone.
Per-token fields are `[rows, length]`. Per-example fields (a class label) and
`weights` stay `[batch_size]`, one per slot, and `example_spans`
`[batch_size, 3]` gives each slot's (row, first token, last token): where a
pooling head reads it (an encoder's first token, a decoder's last).

Few shapes, little padding:
- Batches are stratified by length (`stratified_batches`): the epoch's examples,
  sorted by length, are cut into `batch_size` strata and every batch draws one
  example at random from each. All batches then hold near-identical length
  mixes, so they pack into the same number of rows with little room left (an
  unstratified random batch varies by about 12% in tokens on SST-2, which no
  few row counts can fit tightly).
- The row length is chosen (`choose`) among multiples of 8 from the longest
  example to `max_seq_length`, to pad least over the first epoch.
- A batch's row count is rounded up to one of at most `num_sizes` counts fitted
  over every epoch's batches, so the train step compiles at most that often.
"""

import dataclasses
import math

import numpy as np

from fmt.data.features import Features


@dataclasses.dataclass(frozen=True)
class Packed:
    """A packed batch: its examples, one per slot, and which slots each row
    holds, in order; `num_rows` (one of the few row counts) >= len(rows)."""
    examples: np.ndarray
    rows: tuple[np.ndarray, ...]
    num_rows: int

    def __len__(self) -> int:
        return len(self.examples)


@dataclasses.dataclass(frozen=True)
class Packing:
    """A run's packed shapes: the row length and the few row counts."""
    length: int
    row_counts: tuple[int, ...]

    def rows_for(self, needed: int) -> int:
        return self.row_counts[int(np.searchsorted(self.row_counts, needed))]


def pack_rows(lengths: np.ndarray, capacity: int) -> list[np.ndarray]:
    """Indices into `lengths` grouped into rows of at most `capacity` tokens, first
    fit by decreasing length (at most 11/9 of the fewest possible rows, plus
    one); each index in exactly one row, in increasing order within it."""
    lengths = np.asarray(lengths)
    if len(lengths) and lengths.max() > capacity:
        raise ValueError(f"an example of {lengths.max()} tokens does not fit a packed row "
                         f"of {capacity}; tokenize with max_seq_length <= {capacity}")
    rows: list[list[int]] = []
    free: list[int] = []
    for index in np.argsort(-lengths, kind="stable"):
        length = int(lengths[index])
        # The first row with room: rows are few, so a linear scan stays cheap.
        fits = next((r for r, room in enumerate(free) if room >= length), None)
        if fits is None:
            rows.append([])
            free.append(capacity)
            fits = len(rows) - 1
        rows[fits].append(int(index))
        free[fits] -= length
    return [np.sort(np.asarray(row, np.int64)) for row in rows]


def batches_per_epoch(count: int, batch_size: int) -> int:
    """How many batches `stratified_batches` makes of `count` examples."""
    return max(math.ceil(count / batch_size), 1)


def stratified_batches(lengths: np.ndarray, batch_size: int, seed: int,
                       epoch: int) -> list[np.ndarray]:
    """One epoch of batches that visit every example once, each drawing one
    example from each of `batch_size` length strata (a pure function of (seed,
    epoch)); when the count does not divide, some batches hold one fewer."""
    lengths = np.asarray(lengths)
    count = len(lengths)
    batches = batches_per_epoch(count, batch_size)
    rng = np.random.default_rng([seed, epoch, 7])
    order = np.lexsort((rng.random(count), lengths))  # by length, ties at random
    slots = np.empty(count, np.int64)  # the batch each sorted example joins
    for start in range(0, count, batches):
        stratum = slice(start, min(start + batches, count))
        slots[stratum] = rng.permutation(batches)[:stratum.stop - start]
    grouped = order[np.argsort(slots, kind="stable")]
    return np.split(grouped, np.cumsum(np.bincount(slots, minlength=batches))[:-1])


def _needed_rows(lengths, batches, length: int, quantum: int) -> np.ndarray:
    return np.asarray([math.ceil(len(pack_rows(lengths[b], length)) / quantum) * quantum
                       for b in batches])


def _fit_counts(needed: np.ndarray, num_sizes: int) -> tuple[int, ...]:
    from fmt.data.batching import fit_bucket_lengths  # the same exact fit as buckets
    return tuple(int(c) for c in fit_bucket_lengths(needed, num_sizes, int(needed.max())))


def choose(lengths: np.ndarray, batch_size: int, limit: int, seed: int, epochs: int,
           quantum: int = 1, num_sizes: int = 3) -> Packing:
    """The row length (a multiple of 8 from the longest example up to `limit`, or
    `limit`) that pads least over epoch 0, and at most `num_sizes` row counts,
    each a multiple of `quantum` (the data-parallel devices), that hold every
    batch of `epochs` epochs."""
    lengths = np.asarray(lengths)
    longest = int(lengths.max()) if len(lengths) else 1
    if longest > limit:
        raise ValueError(f"an example of {longest} tokens does not fit a packed row of "
                         f"{limit}; tokenize with max_seq_length <= {limit}")
    candidates = sorted({*range(math.ceil(longest / 8) * 8, limit + 1, 8), limit})
    first = stratified_batches(lengths, batch_size, seed, 0)

    def padded(length: int) -> int:
        needed = _needed_rows(lengths, first, length, quantum)
        counts = np.asarray(_fit_counts(needed, num_sizes))
        return int(counts[np.searchsorted(counts, needed)].sum()) * length

    length = min((c for c in candidates if c >= longest), key=lambda c: (padded(c), c))
    needed = np.concatenate([_needed_rows(lengths, stratified_batches(
        lengths, batch_size, seed, epoch), length, quantum) for epoch in range(max(epochs, 1))])
    return Packing(length, _fit_counts(needed, num_sizes))


def plan(lengths: np.ndarray, batch_size: int, packing: Packing, seed: int, epoch: int):
    """One epoch of `(Packed, row length)` batches (fmt.data.batching.Plan)."""
    out = []
    for examples in stratified_batches(lengths, batch_size, seed, epoch):
        rows = tuple(pack_rows(np.asarray(lengths)[examples], packing.length))
        out.append((Packed(examples, rows, packing.rows_for(len(rows))), packing.length))
    return out


def make_batch(data: Features, packed: Packed, length: int, batch_size: int) -> dict:
    """The arrays of a packed batch: per-token fields `[num_rows, length]` with
    `segment_ids` and `positions`, per-example fields, `weights` and
    `example_spans` `[batch_size, ...]`; filler rows and slots are padding with
    weight 0."""
    token_specs, example_specs = data.field_specs()
    if data.groups:
        raise ValueError(f"token groups {[g.fields for g in data.groups]} have lengths of "
                         "their own and cannot be packed")
    rows = packed.num_rows
    batch = {name: np.full((rows, length), pad, dtype)
             for name, (dtype, pad) in token_specs.items()}
    batch.update({name: np.zeros((batch_size, *shape), dtype)
                  for name, (dtype, shape) in example_specs.items()})
    segment_ids = np.zeros((rows, length), np.int32)
    positions = np.zeros((rows, length), np.int32)
    spans = np.zeros((batch_size, 3), np.int32)
    weights = np.zeros((batch_size,), np.float32)
    for row, slots in enumerate(packed.rows):
        start = 0
        for segment, slot in enumerate(slots, start=1):
            tokens, example = data.example(packed.examples[slot])
            n = len(tokens["input_ids"])
            for name, values in tokens.items():
                batch[name][row, start:start + n] = values
            for name, value in example.items():
                batch[name][slot] = value
            segment_ids[row, start:start + n] = segment
            positions[row, start:start + n] = np.arange(n)
            spans[slot] = (row, start, start + n - 1)
            weights[slot] = 1.0
            start += n
    return dict(batch, attention_mask=(segment_ids > 0).astype(np.int32),
                segment_ids=segment_ids, positions=positions, example_spans=spans,
                weights=weights)
