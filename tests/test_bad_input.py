"""The bad-input catalog: each mistake ends finetune.py with one line that names
the file and line, the weight or the flag, a non-zero exit, and no traceback."""

import json
import pathlib

import pytest

from conftest import GLUE, run_finetune


def error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


@pytest.fixture
def rte(tmp_path) -> pathlib.Path:
    """A small RTE glue_data folder that each test corrupts as it needs."""
    folder = tmp_path / "RTE"
    folder.mkdir()
    rows = (GLUE / "RTE" / "train.tsv").read_text().splitlines()
    (folder / "train.tsv").write_text("\n".join(rows[:6]) + "\n")
    (folder / "dev.tsv").write_text("\n".join(rows[:3]) + "\n")
    return folder


def rte_args(tmp_path, data_dir, model, *extra):
    return ["--config=experiments/configs/glue.py:rte", f"--workdir={tmp_path / 'run'}",
            f"--config.data_dir={data_dir}", f"--config.model={model}", "--config.max_steps=1",
            "--config.batch_size=2", "--config.eval_batch_size=2", *extra]


def edit_line(path: pathlib.Path, number: int, edit) -> None:
    lines = path.read_text().splitlines()
    lines[number - 1] = edit(lines[number - 1])
    path.write_text("\n".join(lines) + "\n")


# (case, how to break the RTE folder or the flags, what the one line must name)
GLUE_CASES = {
    "missing_file": (lambda d: (d / "dev.tsv").unlink(), "dev.tsv: no such file"),
    "unreadable_file": (lambda d: ((d / "dev.tsv").unlink(), (d / "dev.tsv").mkdir()),
                        "dev.tsv"),
    "wrong_column_count": (lambda d: edit_line(d / "train.tsv", 4, lambda l: l + "\textra"),
                           "train.tsv:4"),
    "unknown_label": (lambda d: edit_line(d / "train.tsv", 3,
                                          lambda l: l.rsplit("\t", 1)[0] + "\tmaybe"),
                      "train.tsv:3"),
    "missing_label": (lambda d: edit_line(d / "train.tsv", 5,
                                          lambda l: l.rsplit("\t", 1)[0] + "\t"),
                      "train.tsv:5"),
    "empty_split": (lambda d: (d / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n"),
                    "dev.tsv"),
    "non_utf8": (lambda d: (d / "train.tsv").write_bytes(
        (d / "train.tsv").read_bytes().replace(b"\n", b"\xe9\n", 2).replace(b"\xe9", b"", 1)),
        "train.tsv:2"),
}


@pytest.mark.parametrize("case", sorted(GLUE_CASES))
def test_bad_glue_data(case, rte, tmp_path, tiny_model):
    corrupt, expected = GLUE_CASES[case]
    corrupt(rte)
    assert expected in error_line(run_finetune(*rte_args(tmp_path, rte, tiny_model),
                                               check=False))


def test_text_empty_after_tokenization(tmp_path, tiny_model):
    rows = ["text,label", "fine film,good", "\u200b\u200b,bad", "bad film,bad"]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    result = run_finetune("--config=experiments/configs/classify.py",
                          f"--workdir={tmp_path / 'run'}", f"--config.model={tiny_model}",
                          f"--config.train_file={tmp_path / 'train.csv'}",
                          f"--config.eval_file={tmp_path / 'train.csv'}", check=False)
    line = error_line(result)
    assert "train.csv" in line and "data row 2" in line and "'text'" in line


def test_model_folder_without_config_or_weights(rte, tmp_path, tiny_model):
    no_weights = tmp_path / "no-weights"
    no_weights.mkdir()
    (no_weights / "config.json").write_text((tiny_model / "config.json").read_text())
    line = error_line(run_finetune(*rte_args(tmp_path, rte, no_weights), check=False))
    assert str(no_weights) in line and "no weights" in line
    no_config = tmp_path / "no-config"
    no_config.mkdir()
    line = error_line(run_finetune(*rte_args(tmp_path, rte, no_config),
                                   f"--workdir={tmp_path / 'run2'}", check=False))
    assert str(no_config) in line and "config.json" in line


def test_checkpoint_head_with_other_labels_is_replaced_and_said(rte, tmp_path, tiny_model):
    """A head trained for other labels (another count, or the same count in another
    order) would predict the wrong classes: the run trains a new one and says so."""
    import fmt
    three = tmp_path / "three-labels"
    fmt.from_pretrained(str(tiny_model), num_labels=3).save_pretrained(three)
    result = run_finetune(*rte_args(tmp_path, rte, three))
    assert "its head was trained for the labels ('LABEL_0', 'LABEL_1', 'LABEL_2'), not " \
        "('entailment', 'not_entailment'); a new head is initialized" in result.stderr
    exported = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert exported["id2label"] == {"0": "entailment", "1": "not_entailment"}


@pytest.mark.parametrize("flag, expected", [
    ("--config.learning_rat=1e-4", "--config has no key learning_rat"),
    ("--config.learning_rate=0", "--config.learning_rate=0"),
    ("--config.learning_rate=-1e-5", "--config.learning_rate=-1e-05"),
    ("--config.batch_size=0", "--config.batch_size=0"),
    ("--config.batch_size=-8", "--config.batch_size=-8"),
    ("--config.num_epochs=-1", "--config.num_epochs=-1"),
    ("--config.num_epochs=-1", "--config.num_epochs=-1"),
    ("--config.learning_rate=fast", "--config.learning_rate=fast"),
])
def test_bad_flags(flag, expected, rte, tmp_path, tiny_model):
    args = rte_args(tmp_path, rte, tiny_model, flag)
    if "num_epochs" in flag:
        args.append("--config.max_steps=0")  # epochs count only without max_steps
    assert expected in error_line(run_finetune(*args, check=False))


def test_batch_size_not_divisible_by_devices(rte, tmp_path, tiny_model):
    line = error_line(run_finetune(*rte_args(tmp_path, rte, tiny_model, "--config.batch_size=3"),
                                   check=False, devices=2))
    assert "--config.batch_size=3" in line and "2 data-parallel devices" in line


def test_unwritable_workdir(rte, tmp_path, tiny_model):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = rte_args(tmp_path, rte, tiny_model) + [f"--workdir={blocker / 'run'}"]
    line = error_line(run_finetune(*args, check=False))
    assert f"--workdir={blocker / 'run'}" in line and "cannot write" in line


def test_incompatible_workdir_is_refused_and_kept(rte, tmp_path, tiny_model):
    args = rte_args(tmp_path, rte, tiny_model, "--config.max_steps=2")
    run_finetune(*args)
    results = (tmp_path / "run" / "results.json").read_text()
    line = error_line(run_finetune(*args, "--config.seed=1", check=False))
    assert "seed=0" in line and "seed=1" in line and "delete" in line
    assert (tmp_path / "run" / "results.json").read_text() == results
    assert json.loads((tmp_path / "run" / "config.json").read_text())["seed"] == 0
