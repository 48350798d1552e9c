"""Extractive QA on the host: question/context pairs cut into windows, and the
windows' start/end logits read back into one answer per example.

A context longer than a window is cut into several, each sharing `doc_stride`
tokens with the next (the tokenizer's overflow), so that every answer lies
whole inside at least one window. Each window keeps its offset mapping: the
characters of the context each token covers, (-1, -1) for the question,
special tokens and padding, which can never be part of an answer.
"""

import dataclasses

import numpy as np

from fmt.errors import UserError

NO_SPAN = (-1, -1)


@dataclasses.dataclass
class Windows:
    """The windows of a list of examples, in order: each window's token ids and
    types, the example it belongs to, its offsets and its gold span (token
    indices; (0, 0) at the first token when the answer is not inside it)."""
    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    example: np.ndarray        # [windows] -> index of its example
    offsets: list[np.ndarray]  # [tokens, 2] character spans in the context, -1 outside it
    starts: np.ndarray         # [windows] gold start token
    ends: np.ndarray           # [windows] gold end token


def cut_windows(tokenizer, records: list[dict], max_length: int, doc_stride: int,
                source: str) -> Windows:
    """Tokenize question and context as a pair, truncating only the context, into
    windows of at most `max_length` tokens that overlap by `doc_stride`."""
    _check_lengths(tokenizer, records, max_length, doc_stride, source)
    # Questions go first; right padding is assumed by the offsets below (every
    # encoder fmt has pads on the right).
    encoding = tokenizer([r["question"].lstrip() for r in records],
                         [r["context"] for r in records], truncation="only_second",
                         max_length=max_length, stride=doc_stride,
                         return_overflowing_tokens=True, return_offsets_mapping=True,
                         return_token_type_ids=True, padding=False)
    example = np.asarray(encoding["overflow_to_sample_mapping"], np.int32)
    ids, types, offsets, starts, ends = [], [], [], [], []
    for window, index in enumerate(example):
        sequence = encoding.sequence_ids(window)
        spans = np.asarray(encoding["offset_mapping"][window], np.int32).reshape(-1, 2)
        spans[np.asarray([s != 1 for s in sequence])] = NO_SPAN
        start, end = _gold_tokens(records[index].get("answers") or [], spans)
        ids.append(np.asarray(encoding["input_ids"][window], np.int32))
        types.append(np.asarray(encoding["token_type_ids"][window], np.int32))
        offsets.append(spans)
        starts.append(start)
        ends.append(end)
    return Windows(ids, types, example, offsets, np.asarray(starts, np.int32),
                   np.asarray(ends, np.int32))


def _check_lengths(tokenizer, records, max_length: int, doc_stride: int, source: str) -> None:
    """A question must leave room for context, and the stride must be shorter than
    the context's share of a window, or the windows would never advance."""
    questions = tokenizer([r["question"].lstrip() for r in records],
                          add_special_tokens=False)["input_ids"]
    specials = len(tokenizer("a", "b")["input_ids"]) - 2
    for record, question in zip(records, questions):
        room = max_length - len(question) - specials
        if room < 1:
            raise UserError(f"{source}: question {record['id']!r} has {len(question)} tokens, "
                            f"which leaves no room for its context in --config.max_seq_length="
                            f"{max_length}; raise it or shorten the question")
        if doc_stride >= room:
            raise UserError(f"{source}: --config.doc_stride={doc_stride} is not shorter than "
                            f"the {room} context tokens that fit beside question "
                            f"{record['id']!r} in --config.max_seq_length={max_length}, so "
                            "long contexts would never advance; lower doc_stride (e.g. to a "
                            "quarter of max_seq_length) or raise max_seq_length")


def _gold_tokens(answers: list[dict], spans: np.ndarray) -> tuple[int, int]:
    """The token span of the first answer if it lies whole in this window, else
    (0, 0): the first token, which training reads as "not in this window"."""
    if not answers:
        return 0, 0
    first = answers[0]
    start_char = int(first["answer_start"])
    end_char = start_char + len(first["text"])
    inside = np.flatnonzero(spans[:, 0] >= 0)
    if not len(inside) or spans[inside[0], 0] > start_char or spans[inside[-1], 1] < end_char:
        return 0, 0
    start = inside[np.flatnonzero(spans[inside, 0] <= start_char)[-1]]
    end = inside[np.flatnonzero(spans[inside, 1] >= end_char)[0]]
    return int(start), int(end)


def best_answers(records: list[dict], windows: Windows, start_logits: list[np.ndarray],
                 end_logits: list[np.ndarray], n_best: int, max_answer_length: int,
                 with_no_answer: bool, threshold: float) -> tuple[dict, dict]:
    """(id -> answer text, id -> null odds) over every window of each example.

    A span is a pair of the `n_best` highest start and end logits of a window
    with both tokens inside the context, start <= end and at most
    `max_answer_length` tokens, scored start + end logit; the best over all the
    example's windows wins. With no-answer questions (SQuAD v2), the null score
    is the lowest first-token score over the windows; its margin over the best
    span is the null odds, and above `threshold` the answer is "".
    """
    by_example: dict[int, list[int]] = {}
    for window, index in enumerate(windows.example):
        by_example.setdefault(int(index), []).append(window)
    answers, null_odds = {}, {}
    for index, record in enumerate(records):
        best, best_text, null = -np.inf, "", np.inf
        for window in by_example.get(index, []):
            spans = windows.offsets[window]
            starts = np.asarray(start_logits[window][:len(spans)], np.float64)
            ends = np.asarray(end_logits[window][:len(spans)], np.float64)
            null = min(null, starts[0] + ends[0])
            score, span = _best_in_window(starts, ends, spans, n_best, max_answer_length)
            if span is not None and score > best:
                best, best_text = score, record["context"][span[0]:span[1]]
        if with_no_answer:
            odds = float(null - best) if np.isfinite(best) else float("inf")
            null_odds[record["id"]] = odds
            if odds > threshold:
                best_text = ""
        answers[record["id"]] = best_text
    return answers, null_odds


def _best_in_window(starts, ends, spans, n_best: int, max_answer_length: int):
    """(score, (start char, end char)) of the window's best valid span, or (-inf, None)."""
    inside = spans[:, 0] >= 0
    top_starts = np.argsort(starts)[::-1][:n_best]
    top_ends = np.argsort(ends)[::-1][:n_best]
    best, span = -np.inf, None
    for s in top_starts:
        if not inside[s]:
            continue
        for e in top_ends:
            if not inside[e] or e < s or e - s + 1 > max_answer_length:
                continue
            score = starts[s] + ends[e]
            if score > best:
                best, span = score, (int(spans[s, 0]), int(spans[e, 1]))
    return best, span
