"""Masked-LM and token classification end to end through finetune.py: the masked
loss normalised over the global batch, exact resume with masks, from-scratch
pretraining into a classifier, NER predictions and exports, and bad input."""

import json
import pathlib

import pytest

from conftest import ROOT, run_finetune
from test_bad_input import error_line
from test_resume import killed_then_resumed

TEXT = ROOT / "tests/data/text/tinyshakespeare_first3000.txt"
NER = ROOT / "tests/data/ner"


def mlm_args(model, workdir, *extra):
    """Line-by-line MLM on the shipped Shakespeare slice: rows of very different
    numbers of masked tokens, so a per-microbatch mean would differ from the
    global one."""
    return ["--config=experiments/configs/mlm.py", f"--workdir={workdir}",
            f"--config.model={model}", "--config.text_mode=line", "--config.max_seq_length=32",
            "--config.max_train_examples=0", "--config.batch_size=16",
            "--config.eval_batch_size=16", "--config.max_steps=8", "--config.log_every_steps=1",
            "--config.learning_rate=1e-3", "--config.dropout=0", *extra]


def losses(workdir):
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [line["train_loss"] for line in lines if "train_loss" in line]


@pytest.fixture(scope="module")
def mlm_reference(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("mlm-one-device")
    run_finetune(*mlm_args(tiny_model, workdir))
    result = losses(workdir)
    assert len(result) == 8 and max(result) - min(result) > 1e-3, result
    return result


@pytest.mark.parametrize("mesh, accum, devices", [("data=8", 1, 8), ("data=4,fsdp=2", 1, 8),
                                                  ("data=1", 4, 1)])
def test_masked_loss_is_normalised_over_the_global_batch(mesh, accum, devices, mlm_reference,
                                                         tmp_path, tiny_model):
    run_finetune(*mlm_args(tiny_model, tmp_path, f"--config.mesh={mesh}",
                           f"--config.grad_accum_steps={accum}"), devices=devices)
    got = losses(tmp_path)
    assert max(abs(a - b) for a, b in zip(got, mlm_reference)) < 1e-5, (got, mlm_reference)


@pytest.mark.slow
def test_mlm_resume_after_sigkill_is_identical(tmp_path, tiny_model):
    """Masks are a pure function of (seed, epoch, example): a killed and resumed run
    (dropout on) ends with the same params, metrics and results."""
    extra = ["--config.max_steps=24", "--config.checkpoint_every_steps=4",
             "--config.dropout=0.1", "--config.eval_every_steps=12"]
    clean, resumed = killed_then_resumed(lambda w: mlm_args(tiny_model, w, *extra), tmp_path, 10)
    assert resumed == clean
    results = json.loads((tmp_path / "clean/results.json").read_text())
    assert set(results) == {"step", "main_metric", "perplexity", "loss", "accuracy"}


def test_pretrain_from_scratch_then_classify(tmp_path):
    """A trained tokenizer + a new small BERT pretrained on the text slice (held-out
    perplexity falls), then its export fine-tuned as a classifier."""
    import subprocess
    import sys
    tokenizer = tmp_path / "tokenizer"
    subprocess.run([sys.executable, str(ROOT / "experiments/train_tokenizer.py"),
                    f"--input={TEXT}", "--kind=wordpiece", "--vocab_size=800",
                    f"--output={tokenizer}"], check=True, cwd=ROOT, capture_output=True)
    workdir = tmp_path / "scratch"
    run_finetune("--config=experiments/configs/mlm.py:scratch", f"--workdir={workdir}",
                 f"--config.model={tokenizer}", "--config.scratch_layers=2",
                 "--config.scratch_hidden=64", "--config.scratch_heads=2",
                 "--config.scratch_intermediate=128", "--config.scratch_positions=64",
                 "--config.max_seq_length=64", "--config.num_epochs=6",
                 "--config.eval_every_steps=10", "--config.batch_size=16",
                 "--config.learning_rate=2e-3")
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    perplexities = [line["eval_perplexity"] for line in lines if "eval_perplexity" in line]
    assert len(perplexities) >= 3 and perplexities[-1] < 0.7 * perplexities[0], perplexities
    exported = json.loads((workdir / "model" / "config.json").read_text())
    assert exported["architectures"] == ["BertForMaskedLM"] and exported["num_hidden_layers"] == 2
    classify = tmp_path / "classify"
    run_finetune("--config=experiments/configs/glue.py:sst2", f"--workdir={classify}",
                 f"--config.data_dir={ROOT / 'tests/data/glue'}", f"--config.model={workdir / 'model'}",
                 "--config.max_train_examples=64", "--config.max_eval_examples=32",
                 "--config.max_steps=4", "--config.batch_size=16", "--config.max_seq_length=64")
    assert "accuracy" in json.loads((classify / "results.json").read_text())


def test_ner_end_to_end(tmp_path, tiny_model):
    workdir = tmp_path / "ner"
    result = run_finetune("--config=experiments/configs/ner.py", f"--workdir={workdir}",
                          f"--config.model={tiny_model}", "--config.max_train_examples=64",
                          f"--config.test_file={NER / 'dev.conll'}", "--config.max_eval_examples=40",
                          "--config.max_steps=6", "--config.learning_rate=1e-3")
    results = json.loads((workdir / "results.json").read_text())
    for key in ("f1", "precision", "recall", "accuracy", "test/f1", "f1/person"):
        assert key in results, key
    predicted = (workdir / "predictions_validation.conll").read_text().split("\n\n")
    assert len([s for s in predicted if s.strip()]) == 40
    token, gold = (NER / "dev.conll").read_text().splitlines()[0].split("\t")
    first = predicted[0].splitlines()[0].split(" ")
    assert first[:2] == [token, gold] and len(first) == 3  # token, gold, predicted
    assert (workdir / "predictions_test.conll").is_file()
    exported = json.loads((workdir / "model" / "config.json").read_text())
    assert exported["architectures"] == ["BertForTokenClassification"]
    assert exported["id2label"]["0"] == "O" and "B-person" in exported["label2id"]
    assert "Traceback" not in result.stderr


def _conll(tmp_path, text):
    path = tmp_path / "bad.conll"
    path.write_text(text)
    return path


BAD_NER = {
    "no_tag": ("Hello B-PER\nworld\n\n", "bad.conll:2"),
    "tag_outside_scheme": ("Hello PER\nworld O\n\n", "bad.conll:1"),
}


@pytest.mark.parametrize("case", sorted(BAD_NER))
def test_bad_ner_input(case, tmp_path, tiny_model):
    text, expected = BAD_NER[case]
    path = _conll(tmp_path, text)
    line = error_line(run_finetune("--config=experiments/configs/ner.py",
                                   f"--workdir={tmp_path / 'run'}", f"--config.model={tiny_model}",
                                   f"--config.train_file={path}", f"--config.eval_file={path}",
                                   check=False))
    assert expected in line, line


def test_bad_mlm_input(tmp_path, tiny_model):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    line = error_line(run_finetune(*mlm_args(tiny_model, tmp_path / "a",
                                             f"--config.train_file={empty}"), check=False))
    assert "empty.txt" in line
    line = error_line(run_finetune(*mlm_args(tiny_model, tmp_path / "b",
                                             "--config.max_seq_length=4096"), check=False))
    assert "--config.max_seq_length=4096" in line and "512 positions" in line
    no_mask = tmp_path / "no-mask"
    _copy_without_mask_token(tiny_model, no_mask)
    line = error_line(run_finetune(*mlm_args(no_mask, tmp_path / "c"), check=False))
    assert "mask token" in line
    assert not (tmp_path / "a" / "config.json").exists()  # a failed start binds no workdir


def _copy_without_mask_token(source: pathlib.Path, folder: pathlib.Path):
    import shutil
    shutil.copytree(source, folder)
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        path = folder / name
        if path.is_file():
            values = json.loads(path.read_text())
            values.pop("mask_token", None)
            path.write_text(json.dumps(values))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["content"] != "[MASK]"]
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
