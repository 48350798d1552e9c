"""What a new user meets first: --help, the comma form of tuple fields, one-line
errors for a bad config path, flag or column, offline TFDS failing fast, and an
exported model folder that others can read."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import time

import numpy as np
import pytest

from conftest import ROOT, device_env, finetune_command, run_finetune
from fmt.errors import UserError
from test_bad_input import error_line


def finetune(*args, env=None, umask=None) -> subprocess.CompletedProcess:
    """finetune.py without the conftest's failure check, with env and umask set."""
    return subprocess.run(finetune_command(*args), capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=env or device_env(1),
                          preexec_fn=None if umask is None else (lambda: os.umask(umask)))


# --- --help ------------------------------------------------------------------


def test_help_lists_config_fields_with_defaults_and_comments(tmp_path):
    result = finetune("--help")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rate = [line for line in lines if line.strip().startswith("--config.learning_rate=")]
    assert len(rate) == 1 and rate[0].split()[0] == "--config.learning_rate=5e-05"
    assert rate[0].split(None, 1)[1] == "peak learning rate"
    # A comment that continues on the next line is read whole.
    remat = result.stdout[result.stdout.index("--config.remat=false"):]
    assert " ".join(remat.split("--config.", 2)[1].split()[1:]).endswith(
        "less memory for about a third more compute")
    # The usage's second example keeps its line break, not a run of spaces.
    assert "classify.py \\\n      --config.train_file" in result.stdout

    # A config file's own defaults, and a field it adds, listed without help.
    config = tmp_path / "extra.py"
    config.write_text("from fmt.train.config import default_config\n\n\n"
                      "def get_config():\n    config = default_config()\n"
                      "    config.task = 'rte'\n    config.my_extra = 7\n    return config\n")
    result = finetune(f"--config={config}", "--help")
    assert result.returncode == 0, result.stderr[-3000:]
    stripped = [line.strip() for line in result.stdout.splitlines()]
    assert "--config.my_extra=7" in stripped
    assert any(line.startswith("--config.task=rte ") for line in stripped)


def test_field_comments_read_continuations_and_section_heads():
    from fmt.train.config_help import field_comments
    source = ("def default_config():\n"
              "    c = ml_collections.ConfigDict()\n"
              "    # Section about a, not a's help.\n"
              "    c.a = 1             # first line\n"
              "                        # second line\n"
              "    # Head of b: its help, as b has no comment of its own.\n"
              "    c.b = 'x'\n"
              "    c.c = (1, 2)        # a tuple\n"
              "    return c\n")
    assert field_comments(source) == {
        "a": "first line second line",
        "b": "Head of b: its help, as b has no comment of its own.",
        "c": "a tuple",
    }


# --- the comma form, exported files ------------------------------------------


def test_comma_form_reads_two_columns_and_export_is_shareable(tmp_path, tiny_model):
    """text_fields=title,body and bucket_lengths=32,64 on the command line; the
    exported folder has the modes of plain files (umask 022) and no stale
    transformers_version from the source checkpoint."""
    model = tmp_path / "model-4.8.2"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "transformers_version": "4.8.2"}))
    rows = ["title,body,topic"] + [f"{word} news {i},{word} things happened {i},{word}"
                                   for i in range(8) for word in ("sport", "music")]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    workdir = tmp_path / "run"
    result = finetune("--config=experiments/configs/classify.py", f"--workdir={workdir}",
                      f"--config.model={model}", f"--config.train_file={tmp_path / 'train.csv'}",
                      f"--config.eval_file={tmp_path / 'train.csv'}",
                      "--config.text_fields=title,body", "--config.label_field=topic",
                      "--config.bucket_lengths=32,64", "--config.max_steps=2",
                      "--config.batch_size=4", "--config.eval_batch_size=8", umask=0o022)
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((workdir / "config.json").read_text())
    assert saved["text_fields"] == ["title", "body"]
    assert saved["bucket_lengths"] == [32, 64]

    exported = workdir / "model"
    assert os.stat(exported).st_mode & 0o777 == 0o755
    for path in [*exported.rglob("*"), workdir / "results.json", workdir / "config.json"]:
        expected = 0o755 if path.is_dir() else 0o644
        assert os.stat(path).st_mode & 0o777 == expected, path
    version = json.loads((exported / "config.json").read_text()).get("transformers_version")
    assert version == importlib.metadata.version("transformers")


def test_old_tuple_form_and_missing_column_names_the_flag(tmp_path, tiny_model):
    (tmp_path / "train.csv").write_text("title,body,topic\na,b,c\nd,e,f\n")
    result = run_finetune("--config=experiments/configs/classify.py",
                          f"--workdir={tmp_path / 'run'}", f"--config.model={tiny_model}",
                          f"--config.train_file={tmp_path / 'train.csv'}",
                          f"--config.eval_file={tmp_path / 'train.csv'}",
                          "--config.text_fields=('title','body')", check=False)
    # The text columns were found (as two fields); the label column was not.
    line = error_line(result)
    assert "train.csv: no column 'label' (columns: title, body, topic)" in line
    assert "--config.label_field" in line


def test_missing_column_or_field_in_own_files_names_the_flag(tmp_path):
    from fmt.data.sources import read_file
    (tmp_path / "a.csv").write_text("text,label\nfine,good\n")
    with pytest.raises(UserError, match=r"no column 'title'.*--config\.text_fields"):
        read_file(str(tmp_path / "a.csv"), ("title", "body"), "label")
    (tmp_path / "a.jsonl").write_text('{"text": "fine", "topic": "good"}\n')
    with pytest.raises(UserError, match=r"a\.jsonl:1: no field 'label'.*--config\.label_field"):
        read_file(str(tmp_path / "a.jsonl"), ("text",), "label")


# --- one-line errors for the config path and flags ---------------------------


@pytest.mark.parametrize("config, expected", [
    ("experiments/configs/nope.py:rte",
     "error: --config=experiments/configs/nope.py:rte: no such file"),
    ("experiments/configs/glue",
     "error: --config=experiments/configs/glue is not a .py file; "
     "did you mean --config=experiments/configs/glue.py?"),
    ("README.md", "error: --config=README.md is not a .py file; pass a Python config file"),
])
def test_bad_config_path_is_one_line(config, expected, tmp_path):
    result = finetune(f"--config={config}", f"--workdir={tmp_path / 'run'}")
    assert error_line(result).startswith(expected)


@pytest.mark.parametrize("flag, expected", [
    ("--config.batch_size=abc", "error: --config.batch_size=abc is not an integer; "
     "pass a whole number, e.g. --config.batch_size=32"),
    ("--config.learnin_rate=1", "error: --config has no key learnin_rate; "
     "did you mean --config.learning_rate?"),
])
def test_bad_flag_is_one_clean_sentence(flag, expected, tmp_path):
    result = finetune("--config=experiments/configs/glue.py:rte",
                      f"--workdir={tmp_path / 'run'}", flag)
    assert error_line(result) == expected


# --- offline TFDS ------------------------------------------------------------


def test_offline_tfds_fails_fast_whole_and_writes_nothing(tmp_path, tiny_model):
    """No data_dir and no network (a proxy on a closed port stands in for it,
    so that the test means the same on a machine that is online)."""
    tfds_dir = tmp_path / "tfds"
    tfds_dir.mkdir()
    env = {k: v for k, v in device_env(1).items() if k.lower() not in ("no_proxy",)}
    env.update(https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9")
    start = time.monotonic()
    result = finetune("--config=experiments/configs/glue.py:rte", f"--workdir={tmp_path / 'run'}",
                      f"--config.model={tiny_model}", f"--config.tfds_data_dir={tfds_dir}",
                      env=env)
    assert time.monotonic() - start < 30
    line = error_line(result)
    assert "TFDS glue/rte is not prepared" in line
    assert "dl.fbaipublicfiles.com is not reachable" in line
    assert "--config.data_dir=" in line and "RTE/" in line
    assert line.endswith("or prepare the dataset once with network access")
    assert list(tfds_dir.iterdir()) == []


# --- hf.write_folder on its own ----------------------------------------------


def test_write_folder_modes_follow_the_umask(tmp_path):
    from fmt import hf
    old = os.umask(0o027)
    try:
        folder = hf.write_folder(tmp_path / "out" / "model", {"w": np.zeros(2, np.float32)},
                                 {"model_type": "bert", "transformers_version": "4.8.2"})
    finally:
        os.umask(old)
    assert os.stat(folder).st_mode & 0o777 == 0o750
    for path in folder.iterdir():
        assert os.stat(path).st_mode & 0o777 == 0o640, path
    config = json.loads((folder / "config.json").read_text())
    assert config.get("transformers_version") == importlib.metadata.version("transformers")


def test_corrected_command_runs_on_the_failed_runs_workdir(tmp_path, tiny_model):
    """A run that fails before its first checkpoint binds no config to its workdir;
    a real conflict names every differing field, without '(and 0 more ...)'."""
    rows = ["text,label"] + [f"{w} film {i},{w}" for i in range(12) for w in ("good", "bad")]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    workdir = tmp_path / "run"
    common = ["--config=experiments/configs/classify.py", f"--workdir={workdir}",
              f"--config.model={tiny_model}", "--config.max_steps=2", "--config.batch_size=8",
              "--config.eval_fraction=0.25"]
    line = error_line(run_finetune(*common, f"--config.train_file={tmp_path / 'trian.csv'}",
                                   check=False))
    assert "trian.csv" in line
    result = run_finetune(*common, f"--config.train_file={tmp_path / 'train.csv'}")
    assert "held-out" in result.stderr  # no eval_file: a held-out share, said in the log
    assert json.loads((workdir / "config.json").read_text())["train_file"].endswith("train.csv")
    assert (workdir / "results.json").is_file()
    line = error_line(run_finetune(*common, f"--config.train_file={tmp_path / 'train.csv'}",
                                   "--config.seed=3", "--config.learning_rate=1e-3",
                                   check=False))
    assert "seed=0 there, seed=3 here" in line and "learning_rate=5e-05 there" in line
    assert "more" not in line and "0 more" not in line


def test_tfds_without_its_packages_is_one_line(monkeypatch):
    """TFDS is an optional extra (1.5 GB): without it, a TFDS config says how to
    install it or what to pass instead."""
    import sys
    from conftest import user_error
    from fmt.data import glue, sources, text
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
    user_error(lambda: sources.read_tfds(glue.get_task("sst2"), "train"),
               "pip install -e '.[tfds]'", "--config.data_dir")
    user_error(lambda: text.read_tfds_texts("tiny_shakespeare", "train"),
               "pip install -e '.[tfds]'", "--config.train_file")
