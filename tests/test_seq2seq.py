"""The seq2seq kind end to end through finetune.py: small BART and T5 models
trained from scratch on the shipped Multi30k and SciTLDR slices; the decoded
predictions equal `transformers`' generate on the exported folder; decoder
fields padded to buckets of their own; label smoothing as `transformers`
computes it; exact resume; one-line errors for bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_finetune
from test_bad_input import error_line
from test_resume import killed_then_resumed

TRANSLATION = ROOT / "tests/data/translation"
SUMMARIZATION = ROOT / "tests/data/summarization"
TINY = ["--config.scratch_layers=2", "--config.scratch_hidden=64", "--config.scratch_heads=4",
        "--config.scratch_intermediate=128", "--config.progress_bar=false"]


@pytest.fixture(scope="module")
def bpe_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer (BART's special ids: <s> 0, <pad> 1, </s> 2) trained
    on both sides of the translation slice and the summaries."""
    from fmt.data.tokenizer_training import train_tokenizer
    texts = []
    for name in ("train.en", "train.de"):
        texts += (TRANSLATION / name).read_text(encoding="utf-8").splitlines()
    for line in (SUMMARIZATION / "train.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        texts += [row["document"], row["summary"]]
    return train_tokenizer(texts, "bpe", 1500, tmp_path_factory.mktemp("bpe") / "tokenizer")


def translate_args(tokenizer, workdir, *extra):
    return ["--config=experiments/configs/translate.py:scratch", f"--workdir={workdir}",
            f"--config.model={tokenizer}", *TINY, "--config.max_train_examples=512",
            "--config.max_eval_examples=24", "--config.batch_size=16",
            "--config.eval_batch_size=8", "--config.max_target_length=40",
            "--config.learning_rate=3e-3", "--config.log_every_steps=4", *extra]


def rows(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_translation_end_to_end_matches_transformers_generate(tmp_path, bpe_tokenizer):
    """Train a BART from scratch, evaluate BLEU/chrF on generated text; the exported
    folder, opened by `transformers`, generates the same text for the same sources."""
    import torch
    import transformers
    workdir = tmp_path / "run"  # big enough to say more than "<s><s><s>..." after 80 steps
    run_finetune(*translate_args(bpe_tokenizer, workdir, "--config.scratch_hidden=128",
                                 "--config.scratch_intermediate=256", "--config.batch_size=32",
                                 "--config.max_train_examples=2000", "--config.max_steps=80",
                                 "--config.learning_rate=2e-3", "--config.dropout=0",
                                 "--config.label_smoothing=0", "--config.eval_every_steps=40"))
    results = json.loads((workdir / "results.json").read_text())
    assert results["main_metric"] == "bleu"
    assert 0 <= results["bleu"] <= 1 and 0 < results["chrf"] <= 1
    assert results["bleu_signature"].startswith("nrefs:1|")
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    perplexities = [line["eval_perplexity"] for line in lines if "eval_perplexity" in line]
    assert len(perplexities) == 2 and perplexities[1] < perplexities[0], perplexities

    predicted = rows(workdir / "predictions_validation.jsonl")
    sources = (TRANSLATION / "val.en").read_text(encoding="utf-8").splitlines()[:24]
    targets = (TRANSLATION / "val.de").read_text(encoding="utf-8").splitlines()[:24]
    assert [p["source"] for p in predicted] == sources
    assert [p["references"] for p in predicted] == [[t] for t in targets]
    assert sum(bool(p["prediction"]) for p in predicted) >= 12, predicted[:3]

    folder = workdir / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    model = transformers.BartForConditionalGeneration.from_pretrained(folder).eval()
    batch = tokenizer(sources, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=40, num_beams=1, do_sample=False)
    expected = [t.strip() for t in tokenizer.batch_decode(out, skip_special_tokens=True)]
    assert [p["prediction"] for p in predicted] == expected

    # experiments/predict.py writes the same targets for the same sources.
    sources_file, output = tmp_path / "val.en", tmp_path / "val.de"
    sources_file.write_text("\n".join(sources) + "\n", encoding="utf-8")
    subprocess.run([sys.executable, "experiments/predict.py", f"--model={folder}",
                    f"--input={sources_file}", f"--output={output}", "--max_new_tokens=40",
                    "--batch_size=8", "--progress_bar=false"], check=True, cwd=ROOT,
                   capture_output=True)
    assert output.read_text(encoding="utf-8").splitlines() == expected


def test_summarization_with_t5_and_several_references(tmp_path, bpe_tokenizer):
    """A T5 (v1.1 shape) from scratch on SciTLDR: ROUGE against every reference,
    label smoothing and beam search through the same configs."""
    workdir = tmp_path / "run"
    run_finetune("--config=experiments/configs/summarize.py:scratch", f"--workdir={workdir}",
                 f"--config.model={bpe_tokenizer}", *TINY, "--config.scratch_family=t5",
                 "--config.max_train_examples=64", "--config.max_eval_examples=8",
                 "--config.max_seq_length=128", "--config.max_target_length=24",
                 "--config.max_steps=6", "--config.batch_size=8", "--config.eval_batch_size=8",
                 "--config.num_beams=3", "--config.no_repeat_ngram_size=2",
                 "--config.learning_rate=3e-3")
    results = json.loads((workdir / "results.json").read_text())
    assert results["main_metric"] == "rouge1"
    assert {"rouge1", "rouge2", "rougeL", "rougeLsum", "perplexity"} <= set(results)
    predicted = rows(workdir / "predictions_validation.jsonl")
    validation = rows(SUMMARIZATION / "validation.jsonl")[:8]
    assert [p["references"] for p in predicted] == [v["references"] for v in validation]
    assert any(len(p["references"]) > 1 for p in predicted)
    exported = json.loads((workdir / "model" / "config.json").read_text())
    assert exported["architectures"] == ["T5ForConditionalGeneration"]


def test_decoder_fields_pad_to_buckets_of_their_own():
    from fmt.data import batching
    from fmt.data.features import Features, TokenGroup
    sources = [np.arange(1, n + 1, dtype=np.int32) for n in (5, 9, 3)]
    labels = [np.arange(10, 10 + n, dtype=np.int32) for n in (2, 6, 17)]
    group = TokenGroup(("decoder_input_ids", "labels"), "decoder_attention_mask", (4, 8, 32))
    data = Features({"input_ids": sources, "decoder_input_ids": labels, "labels": labels},
                    pad_values={"labels": -100}, groups=(group,))
    batch = batching.make_batch(data, np.array([0, 1]), 16, 4)
    assert batch["input_ids"].shape == (4, 16) and batch["labels"].shape == (4, 8)
    assert batch["decoder_attention_mask"].tolist()[:2] == [[1] * 2 + [0] * 6, [1] * 6 + [0] * 2]
    assert batch["labels"][0].tolist() == [10, 11] + [-100] * 6
    assert batch["attention_mask"][1].sum() == 9 and batch["weights"].tolist() == [1, 1, 0, 0]
    # A process building only some rows pads them to the whole batch's group length.
    part = batching.make_batch(data, np.array([0, 2]), 16, 4, rows=np.array([0]))
    assert part["labels"].shape == (1, 32)


def test_label_smoothing_matches_transformers():
    import torch
    from transformers.trainer_pt_utils import LabelSmoother
    from fmt.tasks.base import token_cross_entropy
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(3, 5))
    labels[0, 3:] = labels[2, 1] = -100
    total, count = token_cross_entropy(logits, labels, smoothing=0.1)
    expected = LabelSmoother(epsilon=0.1)({"logits": torch.tensor(logits)},
                                          torch.tensor(labels), shift_labels=False)
    assert abs(float(total / count) - float(expected)) < 1e-5


@pytest.mark.slow
def test_seq2seq_resume_after_sigkill_is_identical(tmp_path, bpe_tokenizer):
    extra = ["--config.max_steps=24", "--config.checkpoint_every_steps=4",
             "--config.eval_every_steps=12", "--config.max_train_examples=256"]
    clean, resumed = killed_then_resumed(lambda w: translate_args(bpe_tokenizer, w, *extra),
                                         tmp_path, 10)
    assert resumed == clean


def test_bad_seq2seq_input(tmp_path, bpe_tokenizer):
    short = tmp_path / "short"
    (tmp_path / "short.en").write_text("one\ntwo\nthree\n")
    (tmp_path / "short.de").write_text("eins\nzwei\n")
    line = error_line(run_finetune(*translate_args(bpe_tokenizer, tmp_path / "a",
                                                   f"--config.train_file={short}"), check=False))
    assert "short.en has 3 lines" in line and "short.de has 2" in line, line
    line = error_line(run_finetune(*translate_args(bpe_tokenizer, tmp_path / "b",
                                                   "--config.num_beams=0"), check=False))
    assert "num_beams=0" in line, line
    line = error_line(run_finetune(*translate_args(bpe_tokenizer, tmp_path / "c",
                                                   "--config.generation_metrics=('blue',)"),
                                   check=False))
    assert "'blue'" in line and "bleu" in line, line
    result = run_finetune(*translate_args(bpe_tokenizer, tmp_path / "d", "--config.max_steps=1",
                                          "--config.max_eval_examples=4",
                                          "--config.source_prefix=translate: "))
    assert "--config.source_prefix" in result.stderr and "bart" in result.stderr, \
        result.stderr[-2000:]


def test_decoder_only_translation_matches_transformers_generate(tmp_path, bpe_tokenizer):
    """The same translate.py config with a GPT-2 from scratch: the source as prompt,
    the target as continuation; its greedy continuations equal `transformers`'
    generate on the exported GPT2LMHeadModel."""
    import torch
    import transformers
    workdir = tmp_path / "run"
    run_finetune(*translate_args(bpe_tokenizer, workdir, "--config.scratch_family=gpt2",
                                 "--config.scratch_hidden=128", "--config.scratch_intermediate=256",
                                 "--config.batch_size=32", "--config.max_train_examples=2000",
                                 "--config.max_steps=60", "--config.learning_rate=2e-3",
                                 "--config.dropout=0", "--config.max_seq_length=96"))
    results = json.loads((workdir / "results.json").read_text())
    assert {"bleu", "chrf", "perplexity"} <= set(results)
    predicted = rows(workdir / "predictions_validation.jsonl")
    sources = [p["source"] for p in predicted]
    assert len(sources) == 24 and sum(bool(p["prediction"]) for p in predicted) >= 12

    folder = workdir / "model"
    assert json.loads((folder / "config.json").read_text())["architectures"] == \
        ["GPT2LMHeadModel"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, padding_side="left")
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    batch = tokenizer([s + "\n" for s in sources], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=40, do_sample=False)
    expected = [t.strip() for t in tokenizer.batch_decode(out[:, batch["input_ids"].shape[1]:],
                                                          skip_special_tokens=True)]
    assert [p["prediction"] for p in predicted] == expected


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bart", "t5"])
def test_bfloat16_training(family, tmp_path, bpe_tokenizer):
    """bf16 compute (float32 params and loss): the loss falls as in float32."""
    workdir = tmp_path / "run"
    run_finetune(*translate_args(bpe_tokenizer, workdir, f"--config.scratch_family={family}",
                                 "--config.dtype=bfloat16", "--config.max_steps=24",
                                 "--config.max_eval_examples=8", "--config.dropout=0",
                                 "--config.generation_metrics=()"))
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [line["train_loss"] for line in lines if "train_loss" in line]
    assert np.isfinite(losses).all() and losses[-1] < 0.9 * losses[0], losses
    assert set(json.loads((workdir / "results.json").read_text())) == {
        "step", "main_metric", "perplexity", "loss", "accuracy"}
