"""fmt.metrics.entities against seqeval itself: hand-made edge cases and
thousands of random tag sequences, in the default mode and strict IOB2/IOBES."""

import random
import warnings

import pytest
from seqeval import metrics as seqeval
from seqeval.scheme import IOB2, IOBES

from fmt.errors import UserError
from fmt.metrics.entities import entity_scores

SEQEVAL_SCHEMES = {"IOB2": IOB2, "IOBES": IOBES}
AVERAGES = ("micro avg", "macro avg", "weighted avg")


def seqeval_scores(gold, predicted, scheme=None) -> dict[str, float]:
    """The flat dict entity_scores returns, computed by seqeval."""
    options = {} if scheme is None else {"mode": "strict", "scheme": SEQEVAL_SCHEMES[scheme]}
    with warnings.catch_warnings():
        # seqeval warns on every zero division, then scores it 0.
        warnings.simplefilter("ignore")
        scores = {
            "precision": seqeval.precision_score(gold, predicted, **options),
            "recall": seqeval.recall_score(gold, predicted, **options),
            "f1": seqeval.f1_score(gold, predicted, **options),
            "accuracy": seqeval.accuracy_score(gold, predicted),
        }
        report = seqeval.classification_report(gold, predicted, output_dict=True, **options)
    for kind, row in report.items():
        if kind in AVERAGES:
            continue
        scores[f"precision/{kind}"] = row["precision"]
        scores[f"recall/{kind}"] = row["recall"]
        scores[f"f1/{kind}"] = row["f1-score"]
        scores[f"support/{kind}"] = row["support"]
    return {name: float(value) for name, value in scores.items()}


def assert_agrees(gold, predicted, scheme=None):
    ours = entity_scores(gold, predicted, scheme)
    theirs = seqeval_scores(gold, predicted, scheme)
    assert sorted(ours) == sorted(theirs), (gold, predicted)
    for name, value in theirs.items():
        assert type(ours[name]) is float
        # Bit-equal, not merely within 1e-12: the same counts go through the same
        # float operations in the same order.
        assert ours[name] == value, (name, ours[name], value, gold, predicted)
    return ours


# (name, gold, predicted, schemes to check besides the default mode)
EDGE_CASES = [
    ("entities at sentence ends",
     [["O", "B-PER", "I-PER"], ["B-LOC"], ["O", "B-ORG"]],
     [["O", "B-PER", "I-PER"], ["B-LOC"], ["B-ORG", "I-ORG"]], ("IOB2",)),
    ("I- without B- (IOB1 style)",
     [["I-PER", "I-PER", "O", "I-LOC"], ["O", "I-ORG", "B-ORG"]],
     [["B-PER", "I-PER", "O", "I-LOC"], ["O", "I-ORG", "I-ORG"]], ("IOB2",)),
    ("I- after O inside a run",
     [["B-PER", "O", "I-PER", "I-PER"]],
     [["B-PER", "I-PER", "I-PER", "I-PER"]], ("IOB2",)),
    ("type switches inside a run",
     [["B-PER", "I-LOC", "I-LOC", "B-ORG", "I-PER"]],
     [["B-PER", "I-PER", "I-LOC", "B-ORG", "I-ORG"]], ("IOB2",)),
    ("B- after B- of the same type",
     [["B-PER", "B-PER", "I-PER"]],
     [["B-PER", "I-PER", "I-PER"]], ("IOB2",)),
    ("IOBES with S- and E-",
     [["S-PER", "B-LOC", "I-LOC", "E-LOC", "O", "S-ORG"], ["B-PER", "E-PER"]],
     [["S-PER", "B-LOC", "E-LOC", "E-LOC", "O", "B-ORG"], ["B-PER", "E-PER"]], ("IOBES",)),
    ("IOBES fragments: E- alone, B- without E-, I- after E-",
     [["E-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG", "E-ORG", "I-ORG", "E-ORG"]],
     [["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "B-ORG", "E-ORG", "E-ORG", "S-ORG"]],
     ("IOBES",)),
    ("IOBES entity cut by the sentence end",
     [["O", "B-PER", "I-PER"], ["S-LOC"]],
     [["O", "B-PER", "E-PER"], ["B-LOC"]], ("IOBES",)),
    ("all O", [["O", "O"], ["O"]], [["O", "O"], ["O"]], ("IOB2", "IOBES")),
    ("no predicted entities",
     [["B-PER", "I-PER", "O"], ["B-LOC"]],
     [["O", "O", "O"], ["O"]], ("IOB2", "IOBES")),
    ("no gold entities",
     [["O", "O", "O"], ["O"]],
     [["B-PER", "I-PER", "O"], ["B-LOC"]], ("IOB2", "IOBES")),
    ("a type only in predictions",
     [["B-PER", "O", "O"]],
     [["B-PER", "O", "B-MISC"]], ("IOB2", "IOBES")),
    ("empty sentences among others",
     [[], ["B-PER"], []],
     [[], ["B-PER"], []], ("IOB2", "IOBES")),
    ("bare prefixes and odd types",
     [["B", "I", "O", "B-", "I-", "B-ORG-X", "I-ORG-X", "B--Y-", "I--Y"]],
     [["B", "O", "O", "B-", "I-", "B-ORG-X", "I-ORG-X", "B--Y-", "I--Y"]], ("IOB2", "IOBES")),
]


@pytest.mark.parametrize("name,gold,predicted,schemes", EDGE_CASES,
                         ids=[case[0] for case in EDGE_CASES])
def test_edge_cases_agree_with_seqeval(name, gold, predicted, schemes):
    for scheme in (None, *schemes):
        assert_agrees(gold, predicted, scheme)
        assert_agrees(predicted, gold, scheme)


def test_hand_worked_values():
    # Default mode: gold PER(0-1), LOC(3-4) from I- without B-; predicted PER(0-1),
    # LOC(3), LOC(4). Strict IOB2 drops the gold LOC, whose run has no B-.
    gold = [["B-PER", "I-PER", "O", "I-LOC", "I-LOC"]]
    predicted = [["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]]
    default = assert_agrees(gold, predicted)
    assert (default["precision"], default["recall"]) == (1 / 3, 1 / 2)
    assert default["support/LOC"] == 1.0 and default["f1/LOC"] == 0.0
    assert default["accuracy"] == 3 / 5
    strict = assert_agrees(gold, predicted, "IOB2")
    assert (strict["precision"], strict["recall"], strict["support/LOC"]) == (1 / 3, 1.0, 0.0)


def test_no_entities_anywhere_scores_zero():
    scores = assert_agrees([["O", "O"]], [["O", "O"]])
    assert scores == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 1.0}


def _random_tags(rng: random.Random, length: int, prefixes: str) -> list[str]:
    types = ("PER", "LOC", "ORG")
    return ["O" if (prefix := rng.choice(prefixes)) == "O" else f"{prefix}-{rng.choice(types)}"
            for _ in range(length)]


def _structured_tags(rng: random.Random, length: int, scheme: str) -> list[str]:
    """Well-formed entities in `scheme`, so that predictions often match."""
    tags = []
    while len(tags) < length:
        if rng.random() < 0.5:
            tags.append("O")
            continue
        kind, size = rng.choice(("PER", "LOC", "ORG")), rng.randint(1, 3)
        if scheme == "IOBES" and size == 1:
            tags.append(f"S-{kind}")
        elif scheme == "IOBES":
            tags += [f"B-{kind}", *[f"I-{kind}"] * (size - 2), f"E-{kind}"]
        else:
            tags += [f"B-{kind}", *[f"I-{kind}"] * (size - 1)]
    return tags[:length]


def _random_corpus(rng: random.Random, scheme: str | None):
    prefixes = {None: "BIESO", "IOB2": "BIO", "IOBES": "BIESO"}[scheme]
    gold, predicted = [], []
    for _ in range(rng.randint(1, 12)):
        length = rng.choice((0, 1, 2, 3, 5, 8, 13))
        if rng.random() < 0.5:
            tags = _structured_tags(rng, length, scheme or rng.choice(("IOB2", "IOBES")))
        else:
            tags = _random_tags(rng, length, prefixes)
        noise = _random_tags(rng, length, prefixes)
        error_rate = rng.choice((0.0, 0.1, 0.3, 1.0))
        guess = [n if rng.random() < error_rate else t for t, n in zip(tags, noise)]
        gold.append(tags)
        predicted.append(guess)
    if not any(gold):
        gold.append(["O"])
        predicted.append([rng.choice(("O", "B-PER"))])
    return gold, predicted


@pytest.mark.parametrize("scheme", [None, "IOB2", "IOBES"])
def test_random_sequences_agree_with_seqeval(scheme):
    rng = random.Random(f"entities-{scheme}")
    sentences = 0
    for _ in range(300):
        gold, predicted = _random_corpus(rng, scheme)
        assert_agrees(gold, predicted, scheme)
        sentences += len(gold)
    assert sentences > 1500


def test_input_errors():
    with pytest.raises(ValueError, match="scheme"):
        entity_scores([["O"]], [["O"]], scheme="BILOU")
    with pytest.raises(ValueError, match="same sentences"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="same sentences"):
        entity_scores([["O"]], [["O"], ["O"]])
    with pytest.raises(UserError, match="no tokens"):
        entity_scores([[]], [[]])
    for bad in ("X-PER", "PER", "U-PER", "b-PER", "BPER", ""):
        with pytest.raises(ValueError, match="neither O nor"):
            entity_scores([["O", bad]], [["O", "O"]])
    # seqeval refuses E- and S- in strict IOB2 as well.
    with pytest.raises(ValueError, match="not allowed in scheme IOB2"):
        entity_scores([["B-PER", "E-PER"]], [["O", "O"]], scheme="IOB2")
    with pytest.raises(ValueError):
        seqeval.f1_score([["B-PER", "E-PER"]], [["O", "O"]], mode="strict", scheme=IOB2)
