"""What a run trains and evaluates on: a GLUE task or the user's own files.

Returns records (untokenized) plus the facts the rest of the run needs: the
text fields, label names (None for regression) and metric names.
"""

import dataclasses
import logging

import numpy as np

from fmt.data import glue, sources, text
from fmt.errors import UserError

log = logging.getLogger("fmt")
_FOLD_STREAM = 0x6b666f6c64  # seeds the fold permutation, apart from every run seed


@dataclasses.dataclass
class TaskData:
    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metric_names: tuple[str, ...]
    train: list[dict]
    evals: dict[str, list[dict]]  # split name -> records; the first is the main one
    origins: dict[str, str] = dataclasses.field(default_factory=dict)  # split -> where from

    @property
    def is_regression(self) -> bool:
        return self.label_names is None


def limit(data, config):
    """Keep the first --config.max_train_examples / max_eval_examples records of
    `data` (anything with `train` and `evals`, of any task kind); 0 keeps all."""
    if config.max_train_examples > 0:
        data.train = data.train[:config.max_train_examples]
    if config.max_eval_examples > 0:
        data.evals = {k: v[:config.max_eval_examples] for k, v in data.evals.items()}
    return data


def validation_split(config, train: list, origin: str, read, what: str):
    """(train, validation records, where they came from): fold `--config.cv_fold`
    of `--config.cv_folds` in cross-validation, `--config.eval_file` read by `read`,
    or else a held-out share of `train` (`--config.eval_fraction`), which the log
    says; `what` names the records ("rows", "sentences")."""
    if config.cv_folds:
        if config.eval_file:
            raise UserError("--config.cv_folds evaluates each run on a fold of the training "
                            "file; drop --config.eval_file (or pass it as --config.test_file)")
        train, held = k_fold(train, config.cv_folds, config.cv_fold)
        return train, held, f"{origin} (fold {config.cv_fold} of {config.cv_folds})"
    if config.eval_file:
        return train, read(config.eval_file), config.eval_file
    train, held = text.held_out(train, config.eval_fraction, config.seed)
    log.info("no --config.eval_file: evaluating on %d held-out %s of %s (set "
             "--config.eval_file to evaluate on a file of your own)", len(held), what, origin)
    return train, held, f"{origin} (held out: --config.eval_fraction)"


def k_fold(records: list, folds: int, fold: int) -> tuple[list, list]:
    """(train, held out) for fold `fold` of `folds`: the records are dealt into
    `folds` parts of sizes differing by at most one, by a permutation that is
    the same for every run (every seed and setting sees the same folds), so the
    held-out parts of folds 0..folds-1 cover the records exactly once. Both
    sides keep the records' order."""
    if folds < 2 or not 0 <= fold < folds:
        raise UserError(f"--config.cv_folds={folds} --config.cv_fold={fold}: give at least 2 "
                        f"folds and a fold index from 0 to folds - 1")
    if len(records) < folds:
        raise UserError(f"{len(records)} training records cannot be cut into "
                        f"--config.cv_folds={folds} folds; give fewer folds")
    order = np.random.default_rng(_FOLD_STREAM).permutation(len(records))
    held = np.zeros(len(records), bool)
    held[np.array_split(order, folds)[fold]] = True
    return ([r for r, h in zip(records, held) if not h], [r for r, h in zip(records, held) if h])


def text_records(config) -> tuple[list[str], list[str], dict[str, str]]:
    """(train texts, validation texts, where each came from) of a language-model
    run: .txt/.jsonl files or a TFDS text dataset, validated on --config.eval_file
    or a held-out share; prompt/response pairs (dicts) from .jsonl files when
    --config.response_field is set."""
    if config.get("response_field"):
        read = lambda path: text.read_pairs(path, config.prompt_field, config.response_field)
    else:
        read = lambda path: text.read_texts(path, config.text_field)
    if config.tfds_dataset:
        train = text.read_tfds_texts(config.tfds_dataset, "train", config.text_field,
                                     config.tfds_data_dir or None)
        origin = f"TFDS {config.tfds_dataset}"
    elif config.train_file:
        train, origin = read(config.train_file), config.train_file
    else:
        raise UserError(f"--config.train_file is empty; {config.task_kind} reads .txt or .jsonl "
                        "files, or a TFDS text dataset (--config.tfds_dataset)")
    train, evals, eval_origin = validation_split(config, train, origin, read, "texts")
    return train, evals, {"train": origin, "validation": eval_origin}


def load(config) -> TaskData:
    if config.train_file:
        data = _load_files(config)
    else:
        data = _load_glue(config)
    return data


def _load_glue(config) -> TaskData:
    spec = glue.get_task(config.task)
    if config.cv_folds:
        raise UserError(f"--config.cv_folds: GLUE {spec.name} has a dev split to evaluate on; "
                        "cross-validation is for own files without one (--config.train_file)")
    if config.data_dir:
        read = lambda split: sources.read_glue_dir(spec, config.data_dir, split)
        origin = lambda split: f"{config.data_dir}/{spec.glue_dir}/{spec.file_name(split)}"
    else:
        read = lambda split: sources.read_tfds(spec, split, config.tfds_data_dir or None)
        origin = lambda split: f"TFDS {spec.tfds_name} {split}"
    splits = ("train", *spec.eval_splits)
    return TaskData(spec.name, spec.text_fields, spec.label_names, spec.metrics,
                    read("train"), {split: read(split) for split in spec.eval_splits},
                    {split: origin(split) for split in splits})


def _load_files(config) -> TaskData:
    fields = tuple(config.text_fields)
    train, names = sources.read_file(config.train_file, fields, config.label_field,
                                     regression=config.regression)
    read = lambda path: sources.read_file(path, fields, config.label_field, label_names=names,
                                          regression=config.regression)[0]
    train, evals, eval_origin = validation_split(config, train, config.train_file, read, "rows")
    origins = {"train": config.train_file, "validation": eval_origin}
    splits = {"validation": evals}
    if config.test_file:
        splits["test"] = read(config.test_file)
        origins["test"] = config.test_file
    metric_names = ("pearson", "spearman") if config.regression else tuple(config.metrics)
    return TaskData("custom", fields, None if config.regression else names, metric_names,
                    train, splits, origins)
