"""Encoder-decoder generation (fmt/generate_seq2seq.py, Model.generate) against
`transformers`' generate, token for token.

Small random T5 (v1.1: gated-GELU, its own LM head) and BART (untied head)
checkpoints as tests/test_parity_t5.py and tests/test_parity_bart.py build
them, made likely to end (T5: the end token's LM-head row scaled by -2.5;
BART: its `final_logits_bias` raised), so that rows end at different steps,
some not before `max_new_tokens`: where beam search's bookkeeping shows. A padded batch
of sources of different lengths; greedy, beam search with length penalties,
no-repeat n-grams, min_length, early stopping True / False / "never",
BART's forced end token (its config's) and a forced first token; one
compilation for calls of one shape; the UserErrors.
"""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
import test_parity_bart as bart_tests  # noqa: E402
import test_parity_t5 as t5_tests  # noqa: E402
from conftest import user_error  # noqa: E402
from fmt import generate_seq2seq  # noqa: E402

NEW = 16
SOURCE_LENGTHS = (9, 5, 12, 3)
# family -> (first ordinary id, end id, pad id)
IDS = {"bart": (len(bart_tests.SPECIALS), 2, 1), "t5": (3, 1, 0)}
EOS_BOOST = {"bart": 4.6, "t5": -2.5}  # BART: added to the end's bias; T5: its row's scale


def build(family, folder):
    """(torch model, fmt model) of a checkpoint likely to end early."""
    if family == "bart":
        tokenizer = bart_tests.save_tokenizer(folder)
        model = bart_tests.torch_model("untied", len(tokenizer))
        with torch.no_grad():
            model.final_logits_bias[0, IDS["bart"][1]] += EOS_BOOST["bart"]
        model.save_pretrained(str(folder))
    else:
        from safetensors.torch import load_file, save_file
        t5_tests.write_checkpoint(folder, "v1_1")
        weights = load_file(str(folder / "model.safetensors"))
        weights["lm_head.weight"][IDS["t5"][1]] *= EOS_BOOST["t5"]
        save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
        model = t5_tests.hf_load(folder)[0]
    return model.eval(), fmt.from_pretrained(str(folder), task="seq2seq_lm")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """family -> (torch model, fmt model, source ids, source mask), built on first use."""
    cache = {}

    def get(family):
        if family not in cache:
            hf_model, model = build(family, tmp_path_factory.mktemp(f"generate_{family}"))
            cache[family] = (hf_model, model, *sources(family, model.config.vocab_size))
        return cache[family]

    return get


def sources(family, vocab_size, lengths=SOURCE_LENGTHS, seed=0):
    """Right-padded rows of `lengths` ordinary tokens, and their mask."""
    first, _, pad = IDS[family]
    rng = np.random.default_rng(seed)
    width = max(lengths)
    mask = (np.arange(width) < np.array(lengths)[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(first, vocab_size, (len(lengths), width)), pad)
    return ids, mask


def after_end_padded(out, family):
    """`out` with every id after a row's first end (past the start token) set to
    the pad id: transformers' beam search fills with the end id when the pad id
    is 0 (T5), fmt always with the pad id."""
    _, eos, pad = IDS[family]
    ended = np.cumsum(out[:, 1:] == eos, axis=1) - (out[:, 1:] == eos) > 0
    return np.concatenate([out[:, :1], np.where(ended, pad, out[:, 1:])], axis=1)


def hf_generate(hf_model, ids, mask, **options):
    with torch.no_grad():
        return hf_model.generate(input_ids=torch.as_tensor(ids),
                                 attention_mask=torch.as_tensor(mask), **options).numpy()


def assert_equal_to_transformers(family, checkpoint, max_new_tokens=NEW, model=None,
                                 hf_options=None, **options):
    hf_model, loaded, ids, mask = checkpoint(family)
    got = (model or loaded).generate(ids, mask, max_new_tokens=max_new_tokens, **options)
    want = hf_generate(hf_model, ids, mask, max_new_tokens=max_new_tokens,
                       **options, **(hf_options or {}))
    np.testing.assert_array_equal(got, after_end_padded(got, family))
    assert got.shape == want.shape, (got, want)
    np.testing.assert_array_equal(got, after_end_padded(want, family))
    return got


def row_lengths(out, family):
    """New tokens of each row, its end included."""
    ends = out[:, 1:] == IDS[family][1]
    return np.where(ends.any(axis=1), ends.argmax(axis=1) + 1, out.shape[1] - 1)


FAMILIES = ["bart", "t5"]
CASES = {
    "greedy": {},
    "greedy_min_length_no_repeat": dict(min_length=7, no_repeat_ngram_size=2),
    "beams_lp_0.6_no_repeat_3": dict(num_beams=4, length_penalty=0.6, no_repeat_ngram_size=3),
    "beams_lp_2": dict(num_beams=4, length_penalty=2.0),
    "beams_min_length_early_stopping": dict(num_beams=4, min_length=6, early_stopping=True),
    "beams_early_stopping_never": dict(num_beams=3, length_penalty=1.5, early_stopping="never"),
    "beams_negative_lp_early_stopping_false": dict(num_beams=4, length_penalty=-0.5,
                                                   early_stopping=False),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_equals_transformers(checkpoint, family, case):
    got = assert_equal_to_transformers(family, checkpoint, **CASES[case])
    assert (got[:, 0] == checkpoint(family)[1].config.decoder_start_token_id).all()
    if case == "greedy":  # rows end at different steps, some not at all
        lengths = row_lengths(got, family)
        assert lengths.min() < NEW and lengths.max() == NEW, lengths
    if "min_length" in case:  # the start token counts: min_length - 1 new tokens, then the end
        assert (row_lengths(got, family) >= CASES[case]["min_length"]).all()


def test_beam_search_differs_from_greedy(checkpoint):
    """Not a degenerate check: beams find other, longer-scored targets."""
    greedy = assert_equal_to_transformers("bart", checkpoint)
    beams = assert_equal_to_transformers("bart", checkpoint, num_beams=4, length_penalty=2.0)
    assert greedy.shape != beams.shape or (greedy != beams).any()


def test_forced_first_token(checkpoint):
    """A config's forced_bos_token_id (bart-large's 0) is the first new token."""
    _, model, _, _ = checkpoint("bart")
    forced = dataclasses.replace(
        model, config=dataclasses.replace(model.config, forced_bos_token_id=0))
    for options in ({}, dict(num_beams=4, no_repeat_ngram_size=2)):
        got = assert_equal_to_transformers("bart", checkpoint, model=forced,
                                           hf_options=dict(forced_bos_token_id=0), **options)
        assert (got[:, 1] == 0).all()


def test_forced_end_token_at_the_last_step(checkpoint):
    """BART's config forces its end token as the last new token: a row that has
    not ended by then ends there; max_new_tokens=1 forces it at once."""
    got = assert_equal_to_transformers("bart", checkpoint, max_new_tokens=4)
    assert got.shape[1] == 5 and (got[:, 1:] == 2).any(axis=1).all(), got
    got = assert_equal_to_transformers("bart", checkpoint, max_new_tokens=1, num_beams=2)
    np.testing.assert_array_equal(got[:, 1], 2)


def test_compiles_once_per_shape_and_settings(checkpoint):
    _, model, ids, mask = checkpoint("t5")
    before = generate_seq2seq.SEARCH.count
    first = model.generate(ids, mask, max_new_tokens=5, num_beams=2)
    other_ids, other_mask = sources("t5", model.config.vocab_size, (20, 4, 7, 15), seed=1)
    model.generate(other_ids, other_mask, max_new_tokens=5, num_beams=2)  # same bucket, 32
    again = model.generate(ids, mask, max_new_tokens=5, num_beams=2)
    assert generate_seq2seq.SEARCH.count == before + 1
    np.testing.assert_array_equal(first, again)


def test_search_inside_a_jitted_function(checkpoint):
    """The core is pure: another jitted function calls it (as an eval step does)."""
    import jax
    _, model, ids, mask = checkpoint("bart")
    settings = generate_seq2seq.settings_for(model, max_new_tokens=6, num_beams=2)
    step = jax.jit(lambda params, ids, mask: generate_seq2seq.search(
        model.module, params, ids, mask, settings))
    new = np.asarray(step(model.params, ids, mask))
    want = model.generate(ids, mask, max_new_tokens=6, num_beams=2)
    assert new.shape == (len(ids), 6)
    np.testing.assert_array_equal(new[:, :want.shape[1] - 1], want[:, 1:])
    assert (new[:, want.shape[1] - 1:] == IDS["bart"][2]).all()


def test_user_errors(checkpoint):
    _, model, ids, mask = checkpoint("bart")
    user_error(lambda: model.generate(ids, mask, num_beams=0), "num_beams=0", "pass 1")
    user_error(lambda: model.generate(ids, mask, max_new_tokens=0), "max_new_tokens=0")
    user_error(lambda: model.generate(ids, mask, length_penalty=float("nan")),
               "length_penalty=nan", "finite")
    user_error(lambda: model.generate(ids, mask, no_repeat_ngram_size=-1),
               "no_repeat_ngram_size=-1")
    user_error(lambda: model.generate(ids, mask, early_stopping="sometimes"),
               "early_stopping='sometimes'", "'never'")
    user_error(lambda: model.generate(ids, mask, do_sample=True), "do_sample=True")
    user_error(lambda: model.generate(ids, np.zeros_like(mask)), "source 0 has no tokens")
    user_error(lambda: model.generate(ids[0], mask[0]), "input_ids must be")


def test_decoder_only_beam_search_is_a_user_error(tmp_path):
    from test_parity_decoders import save_tokenizer, torch_model
    tokenizer = save_tokenizer(tmp_path)
    torch_model("gpt2", len(tokenizer)).save_pretrained(str(tmp_path))
    model = fmt.from_pretrained(str(tmp_path), task="causal_lm")
    ids = np.ones((1, 4), np.int64)
    user_error(lambda: model.generate(ids, num_beams=2), "num_beams=2", "decoder-only")
