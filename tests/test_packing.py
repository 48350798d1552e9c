"""Packed batches (fmt.data.packing): every example once per epoch, batch_size
examples per batch in few row counts, the batch's fields, per-example outputs
equal to the unpacked ones for every packable kind and family, and runs."""

import json
import math

import numpy as np
import pytest

import fmt
from fmt.data import batching, packing
from fmt.data.features import IGNORE, Features

from conftest import GLUE, TEXT, run_finetune


def features(lengths, seed=0, labels=False) -> Features:
    rng = np.random.default_rng(seed)
    ids = [rng.integers(5, 100, n).astype(np.int32) for n in lengths]
    examples = {"labels": np.arange(len(lengths), dtype=np.int32)} if labels else {}
    return Features(tokens={"input_ids": ids, "token_labels": [i.copy() for i in ids]},
                    examples=examples, pad_values={"input_ids": 0, "token_labels": IGNORE})


@pytest.mark.parametrize("seed", range(5))
def test_pack_rows_holds_every_example_once_within_capacity(seed):
    lengths = np.random.default_rng(seed).integers(1, 65, 300)
    rows = packing.pack_rows(lengths, 64)
    assert sorted(np.concatenate(rows)) == list(range(300))
    assert all(lengths[row].sum() <= 64 for row in rows)
    assert len(rows) <= 11 / 9 * math.ceil(lengths.sum() / 64) + 1  # first fit decreasing
    with pytest.raises(ValueError, match="does not fit"):
        packing.pack_rows([10, 65], 64)


def test_stratified_batches_visit_every_example_once_with_even_token_counts():
    lengths = np.random.default_rng(0).integers(3, 60, 1003)
    batches = packing.stratified_batches(lengths, 32, seed=1, epoch=2)
    assert len(batches) == math.ceil(1003 / 32)
    assert sorted(np.concatenate(batches)) == list(range(1003))
    assert {len(b) for b in batches} <= {31, 32}
    again = packing.stratified_batches(lengths, 32, seed=1, epoch=2)
    assert all((a == b).all() for a, b in zip(batches, again))
    other = packing.stratified_batches(lengths, 32, seed=1, epoch=3)
    assert any((a != b).any() for a, b in zip(batches, other))
    # One example per length stratum: token totals vary far less than in random batches.
    full = [lengths[b].sum() for b in batches if len(b) == 32]
    shuffled = np.random.default_rng(0).permutation(1003)[:992].reshape(31, 32)
    assert np.std(full) < np.std(lengths[shuffled].sum(1)) / 4


@pytest.mark.parametrize("quantum", [1, 2])
def test_choose_fits_every_batch_of_every_epoch_in_few_row_counts(quantum):
    lengths = np.random.default_rng(5).integers(3, 70, 2000)
    shapes = packing.choose(lengths, 32, limit=128, seed=0, epochs=3, quantum=quantum)
    assert lengths.max() <= shapes.length <= 128 and shapes.length % 8 == 0
    assert 1 <= len(shapes.row_counts) <= 3
    assert all(count % quantum == 0 for count in shapes.row_counts)
    real = computed = 0
    for epoch in range(3):
        for packed, length in packing.plan(lengths, 32, shapes, seed=0, epoch=epoch):
            assert len(packed.rows) <= packed.num_rows in shapes.row_counts
            assert all(lengths[packed.examples[row]].sum() <= length for row in packed.rows)
            real += lengths[packed.examples].sum()
            computed += packed.num_rows * length
    assert real / computed > 0.9
    with pytest.raises(ValueError, match="does not fit"):
        packing.choose(lengths, 32, limit=64, seed=0, epochs=1)


def test_packed_batch_fields():
    data = features([3, 2, 4, 1], labels=True)
    packed = packing.Packed(np.array([2, 0, 3, 1]), (np.array([1, 3]), np.array([0, 2])), 3)
    batch = batching.make_batch(data, packed, 6, batch_size=5)
    assert batch["segment_ids"].tolist() == [[1, 1, 1, 2, 2, 0], [1, 1, 1, 1, 2, 0], [0] * 6]
    assert batch["positions"].tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 2, 3, 0, 0], [0] * 6]
    assert batch["attention_mask"].tolist() == (batch["segment_ids"] > 0).astype(int).tolist()
    ids = data.tokens["input_ids"]
    assert batch["input_ids"][0, :5].tolist() == [*ids[0], *ids[1]]
    assert batch["token_labels"][1].tolist() == [*ids[2], *ids[3], IGNORE]
    # Per-example fields, weights and spans follow the slots; slot 4 only fills the batch.
    assert batch["labels"].tolist() == [2, 0, 3, 1, 0]
    assert batch["weights"].tolist() == [1, 1, 1, 1, 0]
    assert batch["example_spans"].tolist() == [[1, 0, 3], [0, 0, 2], [1, 4, 4], [0, 3, 4],
                                               [0, 0, 0]]
    assert batching.examples_in(packed).tolist() == [2, 0, 3, 1]


# --- per-example outputs equal the unpacked ones ------------------------------------

def packed_and_alone(model, data: Features, length: int):
    """The model's outputs on all of `data` packed into rows of `length`, and on
    each example alone in an unpacked batch of its own."""
    shapes = packing.choose(data.lengths, len(data), length, seed=0, epochs=1)
    [(packed, length)] = packing.plan(data.lengths, len(data), shapes, seed=0, epoch=0)
    assert max(len(row) for row in packed.rows) > 1, "nothing shared a row"
    batch = batching.make_batch(data, packed, length, len(data))
    inputs = ("input_ids", "attention_mask", "token_type_ids", "positions", "segment_ids",
              "example_spans")
    together = np.asarray(model(**{k: batch[k] for k in inputs if k in batch}))
    alone = []
    for index in packed.examples:
        single = batching.make_batch(data, np.array([index]), int(data.lengths[index]), 1)
        alone.append(np.asarray(model(single["input_ids"], single["attention_mask"],
                                      single.get("token_type_ids")))[0])
    return packed, batch, together, alone


def text_features(model, count=12, pairs=False) -> Features:
    from fmt.data import tokenize
    lines = [line for line in TEXT.read_text().splitlines() if line.strip()][:count * 2]
    if pairs:
        records = [{"a": lines[i], "b": lines[i + 1], "label": 0} for i in range(0, 2 * count, 2)]
        fields = ("a", "b")
    else:
        records, fields = [{"a": line, "label": 0} for line in lines[:count]], ("a",)
    return tokenize.encode(model.tokenizer, records, fields, 64)


@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2", "llama"])
def test_packed_classification_logits_equal_unpacked(family, tiny_model, tiny_decoder,
                                                     tmp_path):
    if family in ("gpt2", "llama"):
        folder = tiny_decoder(family)
    elif family == "roberta":
        import torch
        import transformers
        torch.manual_seed(0)
        folder = tmp_path / "roberta"
        transformers.RobertaModel(transformers.RobertaConfig(
            vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, pad_token_id=0)).save_pretrained(folder)
        transformers.AutoTokenizer.from_pretrained(str(tiny_model)).save_pretrained(folder)
    else:
        folder = tiny_model
    model = fmt.from_pretrained(str(folder), task="classification", num_labels=3)
    packed, _, together, alone = packed_and_alone(model, text_features(model, pairs=True), 64)
    assert together.shape == (len(packed), 3)
    assert np.abs(together - np.stack(alone)).max() < 1e-5


@pytest.mark.parametrize("task", ["token_classification", "masked_lm", "causal_lm"])
def test_packed_token_outputs_equal_unpacked(task, tiny_model, tiny_decoder):
    folder = tiny_decoder("gpt2") if task == "causal_lm" else tiny_model
    labels = dict(label_names=("O", "B-X", "I-X")) if task == "token_classification" else {}
    model = fmt.from_pretrained(str(folder), task=task, **labels)
    packed, batch, together, alone = packed_and_alone(model, text_features(model), 64)
    spans = batch["example_spans"]
    for slot, own in enumerate(alone):
        row, first, last = spans[slot]
        assert np.abs(together[row, first:last + 1] - own).max() < 1e-5


# --- runs ------------------------------------------------------------------------------

def sst2_args(model, workdir, *extra):
    return ["--config=experiments/configs/glue.py:sst2", f"--workdir={workdir}",
            f"--config.data_dir={GLUE}", f"--config.model={model}", "--config.batch_size=16",
            "--config.eval_batch_size=16", "--config.max_seq_length=64",
            "--config.max_train_examples=160", "--config.max_eval_examples=48",
            "--config.log_every_steps=2", "--config.num_epochs=2", "--config.packing=true",
            *extra]


def test_packed_run_compiles_few_shapes_and_evaluates_packed(tiny_model, tmp_path):
    workdir = tmp_path / "packed"
    result = run_finetune(*sst2_args(tiny_model, workdir))
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert max(line.get("compilations", 0) for line in lines) <= 3
    assert "packed rows of" in result.stderr
    results = json.loads((workdir / "results.json").read_text())
    predictions = (workdir / "predictions_validation.jsonl").read_text().splitlines()
    assert len(predictions) == 48 and 0 <= results["accuracy"] <= 1
    # The packed evaluation's predictions are the unpacked one's, in the data's order.
    again = tmp_path / "unpacked"
    run_finetune(*sst2_args(workdir / "model", again, "--config.num_epochs=0",
                            "--config.packing=false"))
    assert (again / "predictions_validation.jsonl").read_text().splitlines() == predictions


def test_packing_refuses_what_it_cannot_do(tiny_model, tmp_path):
    accum = run_finetune(*sst2_args(tiny_model, tmp_path / "a", "--config.grad_accum_steps=2"),
                         check=False)
    assert accum.returncode == 2 and "--config.grad_accum_steps" in accum.stderr.splitlines()[-1]
    seq2seq = run_finetune("--config=experiments/configs/translate.py", f"--workdir={tmp_path}/s",
                           f"--config.model={tiny_model}", "--config.packing=true", check=False)
    message = seq2seq.stderr.splitlines()[-1]
    assert seq2seq.returncode == 2 and "--config.packing" in message and "seq2seq" in message


@pytest.mark.slow
def test_packed_run_on_a_mesh_matches_one_device(tiny_model, tmp_path):
    """Rows and slots split over 4 devices (row counts rounded to a multiple of 4):
    the same losses and dev metrics as one device."""
    extra = ("--config.dropout=0", "--config.learning_rate=1e-3", "--config.log_every_steps=1")
    one, four = tmp_path / "one", tmp_path / "four"
    run_finetune(*sst2_args(tiny_model, one, *extra))
    run_finetune(*sst2_args(tiny_model, four, *extra, "--config.mesh=data=2,fsdp=2"),
                 devices=4)
    lines = {w: [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
             for w in (one, four)}
    loss = {w: [line["train_loss"] for line in lines[w] if "train_loss" in line] for w in lines}
    assert len(loss[one]) == 20 and max(loss[one]) - min(loss[one]) > 1e-3
    assert max(abs(a - b) for a, b in zip(loss[one], loss[four])) < 1e-5
    results = {w: json.loads((w / "results.json").read_text()) for w in (one, four)}
    assert results[one]["accuracy"] == results[four]["accuracy"]


@pytest.mark.slow
def test_packed_run_killed_and_resumed_is_identical(tiny_model, tmp_path):
    """kill -9 mid-run, then the same command: the same metric lines, results and
    params as an uninterrupted packed run, dropout on (Philox bits by default)."""
    from test_resume import killed_then_resumed
    extra = ("--config.max_steps=16", "--config.checkpoint_every_steps=3",
             "--config.dropout=0.1", "--config.log_every_steps=1", "--config.eval_every_steps=8")
    clean, resumed = killed_then_resumed(lambda w: sst2_args(tiny_model, w, *extra), tmp_path, 7)
    assert resumed == clean
