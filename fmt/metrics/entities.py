"""Entity-level precision, recall and F1 on tag sequences, equal to seqeval's.

NER papers report seqeval (or conlleval, which its default mode follows), so
these scores must agree with it to the last bit, yet seqeval stays a test-only
dependency: the chunking rules are written out here and checked against it.

Two ways of reading entities from tags:
- default (scheme=None, conlleval's): every non-O tag belongs to an entity. A
  tag I-X or E-X continues the entity of the tag before it only when that tag
  is B-X or I-X; any other tag (B-, S-, an I- after O, E- or S-, a change of
  type) starts a new entity, so IOB1 data and sloppy predictions still count.
- strict (scheme="IOB2" or "IOBES", seqeval's mode="strict"): an entity is a
  complete B-X I-X* (IOB2) or B-X I-X* E-X / S-X (IOBES) pattern; tags that do
  not complete one (an I- without its B-, a B- without its E- in IOBES) form
  no entity at all.
An entity is matched only by one of the same type with the same first and last
token in the same sentence.
"""

from collections.abc import Iterable, Sequence

from fmt.errors import UserError

SCHEMES = ("IOB2", "IOBES")

# Prefixes each strict scheme accepts; seqeval raises on any other.
_STRICT_PREFIXES = {"IOB2": "BIO", "IOBES": "BIOES"}

# (sentence index, entity type, first token, last token)
_Entity = tuple[int, str, int, int]


def entity_scores(
    gold: Sequence[Sequence[str]],
    predicted: Sequence[Sequence[str]],
    scheme: str | None = None,
) -> dict[str, float]:
    """Micro-averaged entity precision, recall and F1, token accuracy, and per
    entity type "precision/<type>", "recall/<type>", "f1/<type>" and
    "support/<type>" (the type's count of gold entities).

    `gold` and `predicted` hold one tag list per sentence. A ratio with a zero
    denominator scores 0.0, as seqeval's default zero_division does. Types are
    those of any gold or predicted entity, so a type only ever predicted scores
    0.0 with support 0.0.
    """
    if scheme is not None and scheme not in SCHEMES:
        raise ValueError(f"scheme must be None or one of {', '.join(SCHEMES)}, got {scheme!r}")
    if len(gold) != len(predicted) or any(len(g) != len(p) for g, p in zip(gold, predicted)):
        raise ValueError(
            f"gold and predicted must have the same sentences and lengths, got "
            f"{[len(g) for g in gold]} and {[len(p) for p in predicted]}"
        )
    tokens = sum(len(sentence) for sentence in gold)
    if tokens == 0:
        raise UserError(
            "metrics: no tokens to evaluate; check that the evaluation split is not empty"
        )
    correct = sum(g == p for gold_tags, predicted_tags in zip(gold, predicted)
                  for g, p in zip(gold_tags, predicted_tags))

    gold_entities = _entities(gold, scheme)
    predicted_entities = _entities(predicted, scheme)
    matched = gold_entities & predicted_entities
    scores = _prf(len(matched), len(predicted_entities), len(gold_entities))
    scores["accuracy"] = correct / tokens

    types = sorted({entity[1] for entity in gold_entities | predicted_entities})
    for kind in types:
        type_scores = _prf(_count(matched, kind), _count(predicted_entities, kind),
                           _count(gold_entities, kind))
        for name, value in type_scores.items():
            scores[f"{name}/{kind}"] = value
        scores[f"support/{kind}"] = float(_count(gold_entities, kind))
    return scores


def _prf(true_positives: int, predicted: int, gold: int) -> dict[str, float]:
    """Precision, recall and F1 from counts, written as seqeval evaluates them
    (F1 from the rounded precision and recall, 2*p*r/(p+r)) so the floats agree."""
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def _count(entity_set: set[_Entity], kind: str) -> int:
    return sum(entity[1] == kind for entity in entity_set)


def _entities(sentences: Iterable[Sequence[str]], scheme: str | None) -> set[_Entity]:
    found = set()
    for index, tags in enumerate(sentences):
        parsed = [_split(tag, strict=scheme is not None) for tag in tags]
        if scheme is None:
            spans = _default_spans(parsed)
        else:
            for tag, (prefix, _) in zip(tags, parsed):
                if prefix not in _STRICT_PREFIXES[scheme]:
                    raise ValueError(f"tag {tag!r} is not allowed in scheme {scheme}")
            spans = _strict_spans(parsed, complete_with_end=scheme == "IOBES")
        found.update((index, kind, first, last) for kind, first, last in spans)
    return found


def _split(tag: str, strict: bool) -> tuple[str, str]:
    """(prefix, type) of one tag.

    seqeval names the type of a bare "B" or "B-" "_", and in strict mode reads
    the type with surrounding dashes stripped; both are kept so that any tag it
    accepts as B/I/E/S/O gets the same entities here.
    """
    if tag == "O":
        return "O", ""
    if tag[:1] in ("B", "I", "E", "S") and tag[1:2] in ("", "-"):
        kind = tag[2:].strip("-") if strict else tag[2:]
        return tag[0], kind or "_"
    raise ValueError(f"tag {tag!r} is neither O nor B-, I-, E- or S- followed by a type")


def _default_spans(parsed: list[tuple[str, str]]) -> list[tuple[str, int, int]]:
    """Maximal runs in which each I-X or E-X follows a B-X or I-X."""
    spans = []
    first = None
    for position, (prefix, kind) in enumerate(parsed):
        continues = (position > 0 and prefix in ("I", "E")
                     and parsed[position - 1][0] in ("B", "I")
                     and parsed[position - 1][1] == kind)
        if continues:
            continue
        if first is not None:
            spans.append((parsed[first][1], first, position - 1))
            first = None
        if prefix != "O":
            first = position
    if first is not None:
        spans.append((parsed[first][1], first, len(parsed) - 1))
    return spans


def _strict_spans(
    parsed: list[tuple[str, str]], complete_with_end: bool
) -> list[tuple[str, int, int]]:
    """Complete B I* (IOB2) or B I* E and S (IOBES, `complete_with_end`) patterns."""
    spans = []
    position = 0
    while position < len(parsed):
        prefix, kind = parsed[position]
        if prefix == "S":
            spans.append((kind, position, position))
        elif prefix == "B":
            last = position
            while last + 1 < len(parsed) and parsed[last + 1] == ("I", kind):
                last += 1
            if last + 1 < len(parsed) and parsed[last + 1] == ("E", kind):
                spans.append((kind, position, last + 1))
                last += 1
            elif not complete_with_end:
                spans.append((kind, position, last))
            position = last
        position += 1
    return spans
