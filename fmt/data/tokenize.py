"""Text records -> token ids, with the checkpoint's fast tokenizer.

Sequences stay ragged here (one int32 array per example); batching pads them
to a bucket length. Pairs are truncated longest-first, as `transformers` does.
"""

import numpy as np

from fmt.data.features import Features
from fmt.errors import UserError

CHUNK = 4096  # records tokenized at a time


def encode(tokenizer, records: list[dict], text_fields: tuple[str, ...], max_seq_length: int,
           regression: bool = False, source: str = "data", allow_empty: bool = False) -> Features:
    """Tokenize one or two text fields per record (a pair when two) and their labels.

    A text with no tokens is an error in a user's file; official GLUE data keeps
    its few empty texts (`allow_empty`), as TFDS and the GLUE baselines do.
    """
    if not records:
        raise UserError(f"{source}: no examples to tokenize; check the file or split")
    if len(text_fields) not in (1, 2):
        raise UserError(f"text_fields={text_fields}: give one field or a pair of fields")
    columns = [[r[field] for r in records] for field in text_fields]
    input_ids, token_type_ids = [], []
    # In chunks: the tokenizer's Python lists of ints cost far more than the arrays.
    for start in range(0, len(records), CHUNK):
        encoding = tokenizer(*[c[start:start + CHUNK] for c in columns], truncation=True,
                             max_length=max_seq_length, padding=False,
                             return_token_type_ids=True, return_attention_mask=False)
        ids = [np.asarray(i, np.int32) for i in encoding["input_ids"]]
        types = encoding.get("token_type_ids") or [np.zeros_like(i) for i in ids]
        input_ids += ids
        token_type_ids += [np.asarray(t, np.int32) for t in types]
    if not allow_empty:
        _check_not_empty(tokenizer, text_fields, columns, source)
    labels = np.asarray([r["label"] for r in records],
                        np.float32 if regression else np.int32)
    return Features({"input_ids": input_ids, "token_type_ids": token_type_ids},
                    {"labels": labels}, {"input_ids": pad_id(tokenizer)})


def pad_id(tokenizer) -> int:
    """The id that pads inputs: the tokenizer's pad token, else its end-of-text
    token (GPT-2 has no pad token; padded positions are masked out anyway).
    Never an arbitrary id such as 0: that is a real token, which an exported
    decoder classifier would take for padding."""
    for token_id in (tokenizer.pad_token_id, getattr(tokenizer, "eos_token_id", None)):
        if token_id is not None:
            return int(token_id)
    raise UserError(f"{getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'}: it has "
                    "neither a pad nor an end-of-text token to pad batches with; add one "
                    "(tokenizer.add_special_tokens({'pad_token': '[PAD]'})) and save it")


def _check_not_empty(tokenizer, text_fields, columns, source: str) -> None:
    for field, column in zip(text_fields, columns):
        pieces = tokenizer(column, add_special_tokens=False)["input_ids"]
        empty = next((i for i, ids in enumerate(pieces) if not ids), None)
        if empty is not None:
            raise UserError(f"{source}: data row {empty + 1} has no tokens in {field!r} after "
                            "tokenization; remove the row or fix its text")
