"""BERT's masked-LM corruption, as a pure function of (seed, epoch, example).

As transformers' DataCollatorForLanguageModeling: each non-special token is
chosen with `probability`; a chosen token becomes the mask token 80% of the
time, a uniformly random id 10%, and stays itself 10%; the loss is taken at the
chosen tokens only (labels -100 elsewhere). Drawing the masks from a generator
seeded by (seed, epoch, example index) instead of a running one makes a resumed
run see exactly the masks an uninterrupted one would, whatever order or host
builds the example.
"""

import numpy as np

from fmt.data.features import IGNORE, Features

# Stream tag, so that these draws never equal another default_rng([seed, epoch, ...]).
_MASK_STREAM = 0x6D6C6D


def example_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of example `index`'s masks in `epoch`."""
    return np.random.default_rng([seed, epoch, index, _MASK_STREAM])


def mask_tokens(input_ids: np.ndarray, special_tokens_mask: np.ndarray,
                rng: np.random.Generator, mask_id: int, vocab_size: int,
                probability: float = 0.15,
                word_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(masked input ids, labels) of one example's 1-D ids.

    With `word_ids` (whole-word masking) the choice is made once per word (the
    tokens sharing an id) and the 80/10/10 draw per token, as transformers'
    whole-word collator does. Special tokens are never chosen. An example may
    end up with no chosen token; forcing one would bias short examples.
    """
    input_ids = np.asarray(input_ids)
    candidates = ~np.asarray(special_tokens_mask, bool)
    n = len(input_ids)
    if word_ids is None:
        chosen = (rng.random(n) < probability) & candidates
    else:
        _, word_of = np.unique(np.asarray(word_ids)[candidates], return_inverse=True)
        chosen = np.zeros(n, bool)
        chosen[candidates] = (rng.random(word_of.max(initial=-1) + 1) < probability)[word_of]
    # Drawn for every token, chosen or not, so that each draw depends only on the seed.
    to_mask = (rng.random(n) < 0.8) & chosen
    to_random = (rng.random(n) < 0.5) & chosen & ~to_mask
    random_ids = rng.integers(0, vocab_size, n)
    masked = np.where(to_mask, mask_id, np.where(to_random, random_ids, input_ids))
    labels = np.where(chosen, input_ids, IGNORE)
    return masked.astype(np.int32), labels.astype(np.int32)


class MaskedView:
    """One epoch of `Features` (from `encode_texts`) with their masks drawn.

    It batches like `Features`; the examples hold masked `input_ids`, their
    `labels` and `token_type_ids`, but not the special-token mask or word ids,
    which only choose the masks.
    """
    groups = ()  # no fields with a length of their own

    def __init__(self, features: Features, seed: int, epoch: int, mask_id: int,
                 vocab_size: int, probability: float = 0.15, whole_word: bool = False):
        self.features = features
        self.seed, self.epoch = seed, epoch
        self.mask_id, self.vocab_size = mask_id, vocab_size
        self.probability, self.whole_word = probability, whole_word

    def __len__(self) -> int:
        return len(self.features)

    @property
    def lengths(self) -> np.ndarray:
        return self.features.lengths

    @property
    def pad_id(self) -> int:
        return self.features.pad_id

    @property
    def pad_values(self) -> dict[str, int | float]:
        return {**self.features.pad_values, "labels": IGNORE}

    @property
    def info(self) -> dict:
        return self.features.info

    def example(self, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        tokens, examples = self.features.example(index)
        masked, labels = mask_tokens(
            tokens["input_ids"], tokens["special_tokens_mask"],
            example_rng(self.seed, self.epoch, int(index)), self.mask_id, self.vocab_size,
            self.probability, tokens["word_ids"] if self.whole_word else None)
        return ({"input_ids": masked, "labels": labels,
                 "token_type_ids": np.asarray(tokens["token_type_ids"], np.int32)}, examples)

    # Derived from an example and the pad values, as for `Features`.
    field_specs = Features.field_specs
