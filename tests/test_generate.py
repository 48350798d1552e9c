"""Generation with a KV cache (fmt/generate.py, Model.generate) against `transformers`.

Small random decoders as tests/test_parity_decoders.py builds them: GPT-2,
Llama with grouped-query attention (4 query heads, 2 key/value heads) and
Llama-3 RoPE, Mistral with a window of 4 (far shorter than prompt + new
tokens), Qwen2 with a full and a windowed layer. Greedy ids equal to
`generate`'s token for token on a left-padded batch; the cache's logits equal
to the full forward's at every step; sampling's filters equal to transformers'
warpers; seeds, eos, compilations, errors; experiments/generate.py end to end.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import fmt  # noqa: E402
from conftest import ROOT, user_error  # noqa: E402
from fmt import generate  # noqa: E402
from test_parity_decoders import save_tokenizer, torch_model  # noqa: E402

VARIANTS = ["gpt2", "llama", "mistral", "qwen2_window"]
NEW = 32
LENGTHS = (12, 8, 5)  # the prompts' real tokens, left-padded to 12


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """variant -> (folder, torch model, fmt causal-LM model), built on first use."""
    cache = {}

    def get(variant):
        if variant not in cache:
            folder = tmp_path_factory.mktemp(f"generate_{variant}")
            tokenizer = save_tokenizer(folder)
            model = torch_model(variant, len(tokenizer))
            model.save_pretrained(str(folder))
            cache[variant] = folder, model, fmt.from_pretrained(str(folder), task="causal_lm")
        return cache[variant]

    return get


def prompts(vocab_size, lengths=LENGTHS, seed=0):
    """Left-padded rows of `lengths` real tokens (never EOS, id 0); pad id 0."""
    rng = np.random.default_rng(seed)
    width = max(lengths)
    ids, mask = np.zeros((len(lengths), width), np.int64), np.zeros((len(lengths), width),
                                                                    np.int64)
    for row, length in enumerate(lengths):
        ids[row, width - length:] = rng.integers(1, vocab_size, length)
        mask[row, width - length:] = 1
    return ids, mask


def hf_generate(model, ids, mask, **kwargs):
    with torch.no_grad():
        out = model.generate(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                             pad_token_id=0, **kwargs).numpy()
    # transformers stops once every row has ended; fmt pads to max_new_tokens.
    return np.pad(out, ((0, 0), (0, ids.shape[1] + NEW - out.shape[1])), constant_values=0)


@pytest.mark.parametrize("variant", VARIANTS)
def test_greedy_equals_transformers_on_left_padded_prompts(checkpoint, variant):
    _, hf_model, model = checkpoint(variant)
    ids, mask = prompts(model.config.vocab_size)
    got = model.generate(ids, mask, max_new_tokens=NEW)
    want = hf_generate(hf_model, ids, mask, do_sample=False, max_new_tokens=NEW)
    assert got.shape == (3, 12 + NEW)
    np.testing.assert_array_equal(got, want)
    # Not a degenerate run: most new tokens are real, and not one token repeated.
    assert (got[:, 12:] != 0).mean() > 0.5 and len(np.unique(got[:, 12:])) > 5


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_logits_equal_the_full_forward(checkpoint, variant):
    """Step t's logits, computed from the cache, are those of the whole sequence
    run through the model's plain forward, at the token before new token t."""
    _, _, model = checkpoint(variant)
    ids, mask = prompts(model.config.vocab_size, seed=1)
    out, logits = generate.generate(model, ids, mask, max_new_tokens=NEW, eos_token_id=[],
                                    return_logits=True)
    assert logits.shape == (3, NEW, model.config.vocab_size)
    full = np.asarray(model(out, np.concatenate([mask, np.ones((3, NEW), np.int64)], axis=1)))
    diff = np.abs(full[:, 11:-1] - logits).max()
    assert diff < 1e-4, diff
    np.testing.assert_array_equal(out[:, 12:], logits.argmax(-1))


def test_right_padded_prompts_are_moved_left(checkpoint):
    _, _, model = checkpoint("llama")
    ids, mask = prompts(model.config.vocab_size)
    shifts = mask.sum(1)
    right = [np.stack([np.roll(row, s) for row, s in zip(x, shifts)]) for x in (ids, mask)]
    got = model.generate(*right, max_new_tokens=8)
    np.testing.assert_array_equal(got, model.generate(ids, mask, max_new_tokens=8))


def test_filters_equal_transformers_warpers():
    from transformers.generation import logits_process as lp
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((4, 300)) * 3).astype(np.float32)
    for temperature, top_k, top_p in [(1.0, 0, 1.0), (0.7, 0, 1.0), (1.0, 5, 1.0),
                                      (1.0, 0, 0.9), (1.5, 40, 0.8), (0.5, 1, 0.3),
                                      (1.0, 500, 0.999)]:
        warpers = lp.LogitsProcessorList()
        if temperature != 1.0:
            warpers.append(lp.TemperatureLogitsWarper(temperature))
        if top_k:
            warpers.append(lp.TopKLogitsWarper(top_k))
        if top_p < 1.0:
            warpers.append(lp.TopPLogitsWarper(top_p))
        want = warpers(None, torch.from_numpy(logits)).numpy()
        got = np.asarray(generate.filter_logits(logits, np.float32(temperature),
                                                np.int32(top_k), np.float32(top_p)))
        settings = (temperature, top_k, top_p)
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=str(settings))
        kept = ~np.isinf(want)
        np.testing.assert_allclose(got[kept], want[kept], rtol=1e-6, err_msg=str(settings))


def test_sampling(checkpoint):
    _, _, model = checkpoint("gpt2")
    ids, mask = prompts(model.config.vocab_size)
    sample = dict(max_new_tokens=16, do_sample=True, temperature=1.5, top_p=0.95)
    first = model.generate(ids, mask, seed=1, **sample)
    np.testing.assert_array_equal(model.generate(ids, mask, seed=1, **sample), first)
    assert (model.generate(ids, mask, seed=2, **sample)[:, 12:] != first[:, 12:]).mean() > 0.3
    greedy = model.generate(ids, mask, max_new_tokens=16)
    assert (first[:, 12:] != greedy[:, 12:]).any()
    np.testing.assert_array_equal(
        model.generate(ids, mask, max_new_tokens=16, do_sample=True, top_k=1, seed=3), greedy)
    # top_k=3: every sampled token is among the 3 likeliest of its step.
    out, logits = generate.generate(model, ids, mask, max_new_tokens=16, do_sample=True,
                                    top_k=3, temperature=3.0, eos_token_id=[],
                                    return_logits=True)
    top3 = np.argsort(logits, axis=-1)[..., -3:]
    assert (top3 == out[:, 12:, None]).any(-1).all()
    assert (out[:, 12:] != logits.argmax(-1)).any()  # and not always the likeliest


def test_eos_ends_a_row_and_pads_it(checkpoint):
    _, _, model = checkpoint("gpt2")
    ids, mask = prompts(model.config.vocab_size)
    greedy = model.generate(ids, mask, max_new_tokens=16)
    eos = int(greedy[0, 12 + 3])  # row 0's fourth new token
    got = model.generate(ids, mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=7)
    want = greedy.copy()
    for row in range(3):
        ends = np.flatnonzero(greedy[row, 12:] == eos)
        if len(ends):
            want[row, 12 + ends[0] + 1:] = 7
    assert (want[0, 12 + 4:] == 7).all()
    np.testing.assert_array_equal(got, want)
    # Every row ended at once: the loop stops early, the rest is padding all the same.
    one = model.generate(ids[:1], mask[:1], max_new_tokens=16, eos_token_id=eos, pad_token_id=7)
    np.testing.assert_array_equal(one, want[:1])


def test_compiles_once_per_batch_and_bucket(checkpoint):
    _, _, model = checkpoint("llama")
    vocab = model.config.vocab_size
    before = generate.DECODE.count
    # Two rows (no other test uses two), prompts of 5 to 20 tokens: one bucket (32).
    model.generate(*prompts(vocab, (5, 9)), max_new_tokens=4)
    model.generate(*prompts(vocab, (20, 3), seed=1), max_new_tokens=4, seed=5)
    model.generate(*prompts(vocab, (7, 7), seed=2), max_new_tokens=4, do_sample=False,
                   eos_token_id=9)
    assert generate.DECODE.count - before == 1
    model.generate(*prompts(vocab, (40, 2)), max_new_tokens=4)  # bucket 64
    assert generate.DECODE.count - before == 2


def test_user_errors(checkpoint, tiny_model):
    folder, _, model = checkpoint("gpt2")
    ids, mask = prompts(model.config.vocab_size)
    user_error(lambda: model.generate(ids, mask, max_new_tokens=60), "max_new_tokens=60",
               "12 tokens", "64 positions")
    user_error(lambda: model.generate(ids, mask, do_sample=True, top_p=0.0), "top_p=0.0")
    user_error(lambda: model.generate(ids, np.zeros_like(mask)), "no tokens")
    classifier = fmt.from_pretrained(str(folder), task="classification")
    user_error(lambda: classifier.generate(ids, mask), "task='causal_lm'", "'classification'")
    bert = fmt.from_pretrained(str(tiny_model), task="classification")
    user_error(lambda: bert.generate(ids, mask), "task='causal_lm'", "bert")


def run_script(*args):
    return subprocess.run([sys.executable, str(ROOT / "experiments/generate.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_generate_script(tiny_decoder, tiny_model, tmp_path):
    folder = tiny_decoder("gpt2")
    lines = ["First Citizen:", "", "Before we proceed any further, hear me speak.", "All:"]
    (tmp_path / "prompts.txt").write_text("\n".join(lines) + "\n")
    output = tmp_path / "out.jsonl"
    result = run_script(f"--model={folder}", f"--prompts={tmp_path / 'prompts.txt'}",
                        f"--output={output}", "--max_new_tokens=6", "--batch_size=2",
                        "--do_sample", "--top_k=20")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    assert [row["prompt"] for row in rows] == [line for line in lines if line]
    assert all(isinstance(row["completion"], str) for row in rows)
    assert any(row["completion"] for row in rows)

    def fails(*args, fragments):
        result = run_script(*args)
        assert result.returncode == 2, result.stderr[-3000:]
        message = result.stderr.strip().splitlines()
        assert len(message) == 1 and all(f in message[0] for f in fragments), message

    fails(f"--model={folder}", f"--prompts={tmp_path / 'missing.txt'}", f"--output={output}",
          fragments=["missing.txt", "no such file"])
    (tmp_path / "prompts.csv").write_text("prompt\nhello\n")
    fails(f"--model={folder}", f"--prompts={tmp_path / 'prompts.csv'}", f"--output={output}",
          fragments=["'.csv'", ".txt"])
    fails(f"--model={tiny_model}", f"--prompts={tmp_path / 'prompts.txt'}", f"--output={output}",
          fragments=["bert", "not a decoder", "gpt2"])
