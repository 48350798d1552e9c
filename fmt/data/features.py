"""Features: what a task kind makes of a split's records, ready to batch.

A split is a set of examples (a sentence, a block of text, a window of a
document). Each example has per-token fields (ragged: one array per example,
`input_ids` always among them) and per-example fields (one value or array per
example, such as a class label). `make_batch` pads per-token fields to the
bucket length with each field's pad value and derives `attention_mask` from the
lengths, so batching knows no task kind.

Some per-token fields have a length of their own (seq2seq's decoder side: its
inputs and labels). A `TokenGroup` names them, their mask field and their
bucket lengths; a batch pads them to the smallest of those buckets that holds
its longest, apart from the batch's own length.

`info` carries what evaluation needs back and batching never reads: the words
behind sub-tokens, offset mappings, which example a window came from.
"""

import dataclasses
import functools

import numpy as np

# Label of a token that no loss or metric counts (sub-tokens, padding, unmasked
# tokens), the value `transformers` uses.
IGNORE = -100


@dataclasses.dataclass(frozen=True)
class TokenGroup:
    """Per-token fields padded to a length of their own (the first field's tokens
    say how long each example is), with `mask` marking real tokens."""
    fields: tuple[str, ...]
    mask: str
    buckets: tuple[int, ...]

    def length_for(self, data: "Features", indices: np.ndarray) -> int:
        """The smallest bucket that holds the longest of these examples."""
        lengths = data.group_lengths(self)
        longest = int(lengths[indices].max()) if len(indices) else 1
        if longest > self.buckets[-1]:
            raise ValueError(f"a {self.fields[0]} of {longest} tokens exceeds the longest "
                             f"bucket {self.buckets[-1]}")
        return self.buckets[int(np.searchsorted(np.asarray(self.buckets), longest))]


@dataclasses.dataclass
class Features:
    tokens: dict[str, list[np.ndarray]]       # per-token fields; "input_ids" is required
    examples: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    pad_values: dict[str, int | float] = dataclasses.field(default_factory=dict)  # default 0
    info: dict = dataclasses.field(default_factory=dict)
    groups: tuple[TokenGroup, ...] = ()  # fields with a length of their own

    def __len__(self) -> int:
        return len(self.tokens["input_ids"])

    @functools.cached_property
    def lengths(self) -> np.ndarray:
        ids = self.tokens["input_ids"]
        return np.fromiter((len(x) for x in ids), np.int32, len(ids))

    def group_lengths(self, group: TokenGroup) -> np.ndarray:
        cache = self.__dict__.setdefault("_group_lengths", {})
        if group not in cache:
            cache[group] = np.fromiter((len(x) for x in self.tokens[group.fields[0]]), np.int32,
                                       len(self))
        return cache[group]

    @property
    def pad_id(self) -> int:
        return int(self.pad_values.get("input_ids", 0))

    def example(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """(per-token fields, per-example fields) of example `index`. Views that
        change examples on the fly (masked-LM's masks) override this."""
        return ({k: v[index] for k, v in self.tokens.items()},
                {k: v[index] for k, v in self.examples.items()})

    def field_specs(self) -> tuple[dict[str, tuple[np.dtype, float]], dict[str, tuple]]:
        """(per-token field -> (dtype, pad value), per-example field -> (dtype, shape)),
        read off the first example; views that batch like Features share it."""
        tokens, examples = self.example(0) if len(self) else ({}, {})
        token_specs = {k: (np.asarray(v).dtype, self.pad_values.get(k, 0))
                       for k, v in tokens.items()}
        example_specs = {k: (np.asarray(v).dtype, np.shape(v)) for k, v in examples.items()}
        return token_specs, example_specs
