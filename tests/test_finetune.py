"""End-to-end runs of experiments/finetune.py: real data, own files, TFDS."""

import json
from conftest import GLUE, run_finetune as finetune


def test_sst2_slice_learns_well_above_chance(tmp_path):
    """The real MiniLM on 1,600 real SST-2 sentences: dev accuracy far above 0.5."""
    workdir = tmp_path / "run"
    result = finetune("--config=experiments/configs/glue.py:sst2", f"--workdir={workdir}",
                      f"--config.data_dir={GLUE}", "--config.max_train_examples=1600",
                      "--config.max_eval_examples=400", "--config.num_epochs=1",
                      "--config.max_seq_length=64", "--config.learning_rate=1e-4",
                      "--config.log_every_steps=10", "--config.checkpoint_every_steps=1000")
    results = json.loads((workdir / "results.json").read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == results
    assert results["step"] == 50
    assert results["accuracy"] > 0.75, results
    lines = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    train_lines = [line for line in lines if "train_loss" in line]
    assert [line["step"] for line in train_lines] == [10, 20, 30, 40, 50]
    for key in ("learning_rate", "examples_per_s", "tokens_per_s", "l2_grads"):
        assert all(key in line for line in train_lines), key
    assert train_lines[-1]["train_loss"] < train_lines[0]["train_loss"]
    assert lines[-1] == {"step": 50, "eval_accuracy": results["accuracy"]}
    assert json.loads((workdir / "config.json").read_text())["learning_rate"] == 1e-4
    assert list((workdir / "tensorboard").iterdir())
    assert (workdir / "checkpoints" / "50").is_dir()
    exported = json.loads((workdir / "model" / "config.json").read_text())
    assert exported["id2label"] == {"0": "negative", "1": "positive"}


def test_own_files_and_tfds_paths(tmp_path, tiny_model):
    """Own CSV files with string labels: names are saved with the model."""
    rows = ["text,sentiment"] + [f"{w} movie {i},{'good' if w == 'great' else 'bad'}"
                                 for i in range(24) for w in ("great", "awful")]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "dev.csv").write_text("\n".join(rows[:9]) + "\n")
    workdir = tmp_path / "run"
    finetune("--config=experiments/configs/classify.py", f"--workdir={workdir}",
             f"--config.model={tiny_model}", f"--config.train_file={tmp_path / 'train.csv'}",
             f"--config.eval_file={tmp_path / 'dev.csv'}", "--config.label_field=sentiment",
             "--config.batch_size=8", "--config.max_steps=4", "--config.log_every_steps=2")
    results = json.loads((workdir / "results.json").read_text())
    assert set(results) == {"step", "main_metric", "accuracy", "f1_macro"}
    assert results["main_metric"] == "accuracy"
    exported = json.loads((workdir / "model" / "config.json").read_text())
    assert exported["id2label"] == {"0": "bad", "1": "good"}


def test_tfds_path_under_mock_data(tmp_path, tiny_model):
    """`data_dir` empty reads glue/stsb through TFDS (mocked: no download here)."""
    import tensorflow_datasets as tfds
    from fmt.train.config import default_config
    from fmt.train.loop import train_and_evaluate
    config = default_config()
    config.update(model=str(tiny_model), task="stsb", max_steps=3, batch_size=8,
                  eval_batch_size=8, log_every_steps=1, progress_bar=False)
    with tfds.testing.mock_data(num_examples=24, policy=tfds.testing.MockPolicy.USE_CODE):
        results = train_and_evaluate(config, str(tmp_path))
    assert results["step"] == 3 and set(results) == {"step", "main_metric", "pearson", "spearman"}
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines[:3]] == [1, 2, 3]
    assert json.loads((tmp_path / "model" / "config.json").read_text())["problem_type"] == \
        "regression"
