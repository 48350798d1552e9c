"""Plain texts for language modelling, and their tokens as `Features`.

Texts come from .txt files (one per line), JSON lines files (one field per
object) or TFDS text datasets. `encode_texts` makes examples in one of two
ways: "line" keeps each text its own example, truncated (run_mlm's
line_by_line); "block" joins all texts into one token stream and cuts it into
blocks of `max_seq_length`, each wrapped in the tokenizer's special tokens, so
that no token is lost to truncation or padding (as BERT's pretraining data).

Every example carries `special_tokens_mask` (never masked) and `word_ids`
(which word a token belongs to, -1 for special tokens) for whole-word masking.
"""

import logging

import numpy as np

from fmt.data.features import Features
from fmt.data.rows import file_extension, json_object, numbered_lines, read_text
from fmt.data.tokenize import pad_id
from fmt.errors import UserError

log = logging.getLogger("fmt")

TEXT_FORMATS = (".txt", ".jsonl", ".json")
NO_TEXT = "no text; it needs at least one non-blank line"
CHUNK = 4096  # texts tokenized at a time: the tokenizer's Python lists cost far more than arrays
MODES = ("line", "block")
# Stream tag of the held-out split's permutation, so that it never equals the
# training order's default_rng([seed, epoch]) draws.
_HELD_OUT_STREAM = 0x686F6C64


def read_texts(path: str, text_field: str = "text") -> list[str]:
    """Texts of a .txt file (one per non-blank line) or a JSON lines file
    (.jsonl/.json: the `text_field` string of each object)."""
    extension = file_extension(path, TEXT_FORMATS, "texts")
    text = read_text(path, empty=NO_TEXT)
    if extension == ".txt":
        texts = [line for _, line in numbered_lines(text)]
    else:
        texts = [_json_text(path, number, line, text_field) for number, line in numbered_lines(text)]
        texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError(f"{path}: {NO_TEXT}")
    return texts


def read_pairs(path: str, prompt_field: str, response_field: str) -> list[dict[str, str]]:
    """Prompt/response pairs of a JSON lines file: {"prompt": ..., "response": ...}
    per row (the fields as named); a row without a response is an error."""
    file_extension(path, (".jsonl", ".json"), "prompt/response pairs")
    pairs = []
    for number, line in numbered_lines(read_text(path, empty=NO_TEXT)):
        prompt = _json_text(path, number, line, prompt_field)
        response = _json_text(path, number, line, response_field)
        if not response.strip():
            raise UserError(f"{path}:{number}: the {response_field!r} is empty; every row "
                            f"needs a response to learn (--config.response_field names it)")
        pairs.append({"prompt": prompt, "response": response})
    if not pairs:
        raise UserError(f"{path}: {NO_TEXT}")
    return pairs


def _json_text(path: str, number: int, line: str, text_field: str) -> str:
    row = json_object(f"{path}:{number}", line)
    if text_field not in row:
        raise UserError(f"{path}:{number}: no field {text_field!r} (fields: "
                        f"{', '.join(row) or 'none'}); give every object a {text_field!r} "
                        f"or name the text field of the file")
    value = row[text_field]
    if not isinstance(value, str):
        raise UserError(f"{path}:{number}: field {text_field!r} must be a string, found "
                        f"{type(value).__name__}; write the text as a string")
    return value


def read_tfds_texts(name: str, split: str, text_field: str = "text",
                    data_dir: str | None = None) -> list[str]:
    """The `text_field` strings of a TFDS split (e.g. tiny_shakespeare,
    wikitext/wikitext-103-raw-v1, imdb_reviews), blank ones left out as blank
    lines of a .txt file are (wikitext's paragraph breaks)."""
    from fmt.data import tfds_ready
    tf, tfds, dataset = tfds_ready.load(
        name, split, data_dir, "pass --config.train_file=<.txt or .jsonl file>",
        "Hub datasets are huggingface:NAME/CONFIG, e.g. huggingface:wikitext/wikitext-103-raw-v1")
    spec = dataset.element_spec
    if not isinstance(spec, dict) or text_field not in spec:
        fields = ", ".join(spec) if isinstance(spec, dict) else "none"
        raise UserError(f"TFDS {name} has no field {text_field!r} (fields: {fields}); "
                        f"name its text field")
    field = spec[text_field]
    if not isinstance(field, tf.TensorSpec) or field.dtype != tf.string or field.shape.rank:
        held = (f"{field.dtype.name} of shape {tuple(field.shape)}"
                if isinstance(field, tf.TensorSpec) else "nested features")
        raise UserError(f"TFDS {name} field {text_field!r} holds {held}, not one string per "
                        f"example; name its text field")
    texts = []
    # Batched, because one Python step per example is slow on wikitext-103's 1.8M lines.
    for batch in tfds.as_numpy(dataset.map(lambda example: example[text_field]).batch(CHUNK)):
        texts += [value.decode("utf-8") for value in batch]
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise UserError(f"TFDS {name} split {split!r}: no text in field {text_field!r}; "
                        f"check the split and the field")
    return texts


def held_out(texts: list[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, held out): `fraction` of the texts, at least one, chosen by a
    permutation seeded by `seed`; each side keeps the texts' order, so blocks
    still join neighbouring lines."""
    if not 0 < fraction < 1:
        raise UserError(f"--config.eval_fraction={fraction}: give a fraction between 0 and 1 "
                        f"(e.g. 0.05)")
    if len(texts) < 2:
        raise UserError(f"{len(texts)} text(s) cannot be split into training and held-out "
                        f"texts by --config.eval_fraction; give at least two texts or an "
                        f"eval file")
    count = min(max(int(round(len(texts) * fraction)), 1), len(texts) - 1)
    chosen = np.zeros(len(texts), bool)
    order = np.random.default_rng([seed, _HELD_OUT_STREAM]).permutation(len(texts))
    chosen[order[:count]] = True
    return ([t for t, c in zip(texts, chosen) if not c], [t for t, c in zip(texts, chosen) if c])


def encode_texts(tokenizer, texts: list[str], max_seq_length: int, mode: str,
                 source: str = "data") -> Features:
    """Tokenize `texts` into examples, each text one ("line") or in blocks ("block").

    Per-token fields: input_ids, token_type_ids (zeros), special_tokens_mask
    (bool) and word_ids (int32, -1 on special tokens).
    """
    if mode not in MODES:
        raise UserError(f"--config.text_mode={mode!r}: use one of {', '.join(MODES)}")
    if not getattr(tokenizer, "is_fast", True):
        raise UserError(f"{source}: masked-LM data needs a fast tokenizer (tokenizer.json) "
                        f"for word ids; save the tokenizer with transformers' fast class")
    before, after = special_tokens_around(tokenizer)
    if max_seq_length - len(before) - len(after) < 1:
        raise UserError(f"--config.max_seq_length={max_seq_length} leaves no room for text "
                        f"beside {len(before) + len(after)} special tokens; raise it")
    if mode == "line":
        ids, special, words = _lines_of(tokenizer, texts, max_seq_length)
    else:
        ids, special, words = _blocks_of(tokenizer, texts, max_seq_length, before, after)
    if not ids:
        raise UserError(f"{source}: no tokens in any text; check the file or split")
    return Features(
        tokens={"input_ids": ids, "token_type_ids": [np.zeros_like(i) for i in ids],
                "special_tokens_mask": special, "word_ids": words},
        pad_values={"input_ids": pad_id(tokenizer)},
        info={"source": source, "mode": mode},
    )


def _encodings(tokenizer, texts: list[str], special: bool, max_seq_length: int | None):
    """(ids, special mask, word ids with -1 for None) of each text, in chunks."""
    for start in range(0, len(texts), CHUNK):
        # verbose=False: whole documents exceed model_max_length on purpose in block mode.
        encoding = tokenizer(texts[start:start + CHUNK], add_special_tokens=special,
                             truncation=max_seq_length is not None, max_length=max_seq_length,
                             padding=False, return_special_tokens_mask=True,
                             return_attention_mask=False, return_token_type_ids=False,
                             verbose=False)
        for i, ids in enumerate(encoding["input_ids"]):
            words = [-1 if w is None else w for w in encoding.word_ids(i)]
            special_mask = encoding["special_tokens_mask"][i]
            yield (np.asarray(ids, np.int32), np.asarray(special_mask, bool),
                   np.asarray(words, np.int64))


def _lines_of(tokenizer, texts, max_seq_length):
    ids, special, words, skipped = [], [], [], 0
    for text_ids, text_special, text_words in _encodings(tokenizer, texts, True, max_seq_length):
        if text_special.all():
            skipped += 1
            continue
        ids.append(text_ids)
        special.append(text_special)
        words.append(np.where(text_special, -1, text_words).astype(np.int32))
    if skipped:
        log.info("%d of %d texts have no tokens and were skipped", skipped, len(texts))
    return ids, special, words


def special_tokens_around(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """The ids the tokenizer puts before and after one sequence ([CLS], [SEP]).

    Read off an encoding, because transformers 5's tokenizers-backed class has
    no build_inputs_with_special_tokens.
    """
    encoding = tokenizer("a", return_special_tokens_mask=True)
    ids, mask = np.asarray(encoding["input_ids"], np.int32), np.asarray(
        encoding["special_tokens_mask"], bool)
    if mask.all():
        raise UserError("the tokenizer gives no tokens for the text 'a'; use a tokenizer "
                        "that can encode text")
    first, last = np.flatnonzero(~mask)[[0, -1]]
    return ids[:first], ids[last + 1:]


def _blocks_of(tokenizer, texts, max_seq_length, before, after):
    size = max_seq_length - len(before) - len(after)
    blocks = ([], [], [])
    pending_ids, pending_words, pending, next_word = [], [], 0, 0
    for text_ids, _, text_words in _encodings(tokenizer, texts, False, None):
        # Numbered globally, so that a text's last word and the next text's
        # first word stay two words when they meet in one block.
        unnumbered = text_words < 0
        text_words[unnumbered] = text_words.max(initial=-1) + 1 + np.arange(unnumbered.sum())
        pending_ids.append(text_ids)
        pending_words.append(text_words + next_word)
        next_word += int(text_words.max(initial=-1)) + 1
        pending += len(text_ids)
        if pending >= CHUNK * size:
            pending_ids, pending_words = _cut(pending_ids, pending_words, size, before, after,
                                              blocks, final=False)
            pending = len(pending_ids[0])
    _cut(pending_ids, pending_words, size, before, after, blocks, final=True)
    return blocks


def _cut(pending_ids, pending_words, size, before, after, blocks, final):
    """Append the full blocks of the pending stream (and its tail when `final`)
    to `blocks`; return what is left over."""
    if not pending_ids:
        return [], []
    ids, words = np.concatenate(pending_ids), np.concatenate(pending_words)
    end = len(ids) if final else len(ids) // size * size
    for start in range(0, end, size):
        block_ids, block_words = ids[start:start + size], words[start:start + size]
        # Renumbered from 0 within the block; words run in order, so a change starts a new one.
        local = np.r_[0, np.cumsum(np.diff(block_words) != 0)]
        blocks[0].append(np.r_[before, block_ids, after].astype(np.int32))
        blocks[1].append(np.r_[np.ones(len(before), bool), np.zeros(len(block_ids), bool),
                               np.ones(len(after), bool)])
        blocks[2].append(np.r_[np.full(len(before), -1), local,
                               np.full(len(after), -1)].astype(np.int32))
    return [ids[end:]], [words[end:]]
