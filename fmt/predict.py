r"""Label new texts with a fine-tuned classification model (experiments/predict.py).

A model folder that finetune.py wrote (`WORKDIR/model`) is loaded with its
trained head. Texts become features through the classification kind's own
`featurize`, are batched as evaluation batches them (sorted by length, padded
to the power-of-two bucket lengths up to `max_seq_length`, the last batch
filled with zero-weight rows) and go through evaluation's step; the kind's
prediction rule (`Classification.predict`: argmax, or the regression value)
and its label names turn the logits into labels. So a text gets the label that
the run's own `predictions_<split>.jsonl` gives it.

Two outputs:
- `label_file`: a .csv, .tsv or .jsonl file written back in the same format,
  every column and row kept in order, with `label` added (the class name; for
  a regression model the score) and, for a classifier, `score` (the softmax
  probability of that class). A regression model gets no `score` column: its
  label is already the score. Both are rounded to DECIMALS places.
- `glue_submission`: the GLUE leaderboard file of a task's test split(s),
  header `index\tprediction`, each class written as the leaderboard takes it
  (fmt.data.glue: ids for CoLA/SST-2/MRPC/QQP/WNLI, names for MNLI/QNLI/RTE,
  a float for STS-B).
"""

import collections
import csv
import dataclasses
import io
import json
import logging
import os
import pathlib
import types

import jax
import numpy as np
from scipy.special import softmax
from tqdm import tqdm

from fmt import hf, model as model_lib
from fmt.data import batching, glue, rows, sources
from fmt.errors import UserError
from fmt.files import write_text_atomic
from fmt.tasks.classification import Classification
from fmt.train import sharding, step

log = logging.getLogger("fmt")
DECIMALS = 6          # places of the scores (and regression labels) written to files
IN_FLIGHT = 4         # batches dispatched to the devices ahead of the one collected
_JSON_LINES = (".jsonl", ".json")


@dataclasses.dataclass
class Predictions:
    labels: list                    # class names, or float scores (regression)
    scores: np.ndarray | None       # each predicted class's probability; None: regression


class Classifier:
    """A fine-tuned classification (or regression) model ready to label records:
    its params on the devices and evaluation's jitted step, compiled once per
    bucket length."""

    def __init__(self, model, batch_size: int = 64, max_seq_length: int = 128):
        for flag, value in (("batch_size", batch_size), ("max_seq_length", max_seq_length)):
            if value <= 0:
                raise UserError(f"--{flag}={value}: must be positive")
        if max_seq_length > model.max_positions:
            raise UserError(f"--max_seq_length={max_seq_length} is longer than the model's "
                            f"{model.max_positions} positions; lower it")
        mesh = sharding.make_mesh("data=-1")
        devices = sharding.batch_devices(mesh)
        if batch_size % devices:
            raise UserError(f"--batch_size={batch_size} is not divisible by the {devices} "
                            "devices; pick a multiple")
        self.model, self.batch_size, self.max_seq_length = model, batch_size, max_seq_length
        self.regression = model.label_names is None
        self._feed = sharding.BatchFeeder(mesh, batch_size)
        replicated = sharding.NamedSharding(mesh, sharding.P())
        self._params = jax.device_put(model.params, replicated)
        # The step reads no text fields: one step serves every file and split.
        self._step = jax.jit(step.make_eval_step(model.module, self.task(())),
                             in_shardings=(replicated, self._feed.sharding),
                             out_shardings=replicated)

    def task(self, text_fields, allow_empty: bool = False):
        """The classification kind, set up as a run's `load` sets it up: to featurize
        `text_fields` and to name this model's predictions."""
        task = Classification(types.SimpleNamespace(max_seq_length=self.max_seq_length),
                              regression=self.regression)
        task.text_fields, task.label_names = tuple(text_fields), self.model.label_names
        task.allow_empty = allow_empty
        return task

    def predict(self, records: list[dict], text_fields, source: str,
                allow_empty: bool = False, progress: bool = True) -> Predictions:
        """Labels (and probabilities) of `records`, in their order; `source` names
        them in errors and on the progress bar."""
        task = self.task(text_fields, allow_empty)
        # Rows to label have no gold label; featurize wants one, and nothing reads it.
        features = task.featurize(self.model, [dict(r, label=0) for r in records], "predict",
                                  source)
        logits = self._logits(features, source, progress)
        predictions = task.predict(logits)
        labels = [task.label_of(p) for p in predictions]
        if task.regression:
            return Predictions(labels, None)
        return Predictions(labels, softmax(logits, axis=-1)[np.arange(len(logits)), predictions])

    def _logits(self, features, source: str, progress: bool) -> np.ndarray:
        """Every feature's logits, in order, through evaluation's batches and step."""
        plan = batching.eval_plan(features, self.batch_size,
                                  batching.bucket_lengths(self.max_seq_length))
        logits = np.zeros((len(features), self.model.num_labels), np.float32)
        pending = collections.deque()

        def collect():
            indices, outputs = pending.popleft()
            logits[indices] = sharding.to_host(outputs)["logits"][:len(indices)]
            bar.update(1)

        with tqdm(total=len(plan), unit="batch", desc=os.path.basename(source),
                  dynamic_ncols=True, disable=not progress) as bar:
            for indices, length in plan:
                pending.append((indices, self._step(self._params,
                                                    self._feed(features, indices, length))))
                if len(pending) > IN_FLIGHT:
                    collect()
            while pending:
                collect()
        return logits


def load_classifier(folder: str, batch_size: int = 64, max_seq_length: int = 128) -> Classifier:
    """The fine-tuned classification model in `folder` (a finetune.py `WORKDIR/model`)."""
    path = pathlib.Path(folder).expanduser()
    if not path.is_dir():
        raise UserError(f"--model={folder}: no such folder; pass the model/ folder that "
                        "finetune.py wrote (WORKDIR/model)")
    if (path / "model" / "config.json").is_file():  # a workdir: config.json is the run's
        raise UserError(f"--model={folder} is a finetune.py workdir; pass its model folder: "
                        f"--model={path / 'model'}")
    architectures = hf.read_config(path).get("architectures") or []
    if not any(a.endswith(Classification.architecture_suffix) for a in architectures):
        raise UserError(f"--model={folder}: not a fine-tuned sequence classification model "
                        f"(architectures: {', '.join(architectures) or 'none'}); pass the "
                        "model/ folder of a finetune.py classification or regression run")
    model = model_lib.from_pretrained(str(path), task="classification")
    missing = model.loading_info.get("missing_keys") or []
    if missing:
        raise UserError(f"--model={folder}: its checkpoint lacks {len(missing)} weights of the "
                        f"classifier ({missing[0]}, ...); pass a fine-tuned model folder")
    return Classifier(model, batch_size, max_seq_length)


def label_file(classifier: Classifier, input_path: str, output_path: str, text_fields,
               label_column: str = "label", score_column: str = "score",
               progress: bool = True) -> int:
    """Label every row of a .csv, .tsv or .jsonl file and write the rows, in the
    input's format, with `label_column` (and `score_column`) added; returns the
    number of rows."""
    text_fields = tuple(text_fields)
    if len(text_fields) not in (1, 2):
        raise UserError(f"--text_fields={','.join(text_fields)}: give one text column, or "
                        "two for a pair")
    extension = _check_output(input_path, output_path)
    header, rows, records = sources.read_rows(input_path, text_fields, _text_fields_fix(
        text_fields))
    added = {label_column: "label_column"}
    if not classifier.regression:
        added[score_column] = "score_column"
    if len(added) == 2 and label_column == score_column:
        raise UserError(f"--label_column and --score_column are both {label_column!r}; "
                        "give them different names")
    columns = header if header is not None else list(dict.fromkeys(k for r in rows for k in r))
    for column, flag in added.items():
        if column in columns:
            raise UserError(f"{input_path}: already has a column {column!r}; name the added "
                            f"one with --{flag}=predicted_{column}")
    predictions = classifier.predict(records, text_fields, input_path, progress=progress)
    values = {label_column: [_rounded(label) for label in predictions.labels]}
    if predictions.scores is not None:
        values[score_column] = [_rounded(score) for score in predictions.scores]
    _write_rows(output_path, extension, columns, rows, values)
    log.info("%s: labelled %d rows", output_path, len(rows))
    return len(rows)


def glue_submission(classifier: Classifier, task: str, data_dir: str, output: str,
                    progress: bool = True) -> list[str]:
    """Write the GLUE leaderboard file of each test split of `task` (a glue_data
    folder's test.tsv, MNLI's test_matched.tsv and test_mismatched.tsv); returns
    the files written. `output` is the file, or a folder (existing, or ending in
    "/") in which each gets its leaderboard name (SST-2.tsv, MNLI-m.tsv, ...)."""
    spec = glue.get_task(task)
    _check_glue_model(classifier, spec)
    written = []
    for split, target in submission_paths(spec, output):
        path, records = sources.read_glue_test(spec, data_dir, split)
        if os.path.exists(target) and os.path.samefile(target, path):
            raise UserError(f"--output={output} is the test file {path}; write the "
                            "submission to another file")
        predictions = classifier.predict(records, spec.text_fields, path, allow_empty=True,
                                         progress=progress)
        if classifier.regression:
            labels = [str(_rounded(label)) for label in predictions.labels]
        else:
            labels = [spec.submission_label(label) for label in predictions.labels]
        lines = ["index\tprediction", *(f"{record['idx']}\t{label}"
                                        for record, label in zip(records, labels))]
        _write_text(target, "\n".join(lines) + "\n")
        log.info("%s: %d %s predictions for the GLUE leaderboard", target, len(records), split)
        written.append(target)
    return written


def submission_paths(spec: glue.TaskSpec, output: str) -> list[tuple[str, str]]:
    """(test split, file to write) for each of the task's test splits."""
    if os.path.isdir(output) or output.endswith(("/", os.sep)):
        return [(split, os.path.join(output, spec.test_file(split)[1]))
                for split in spec.test_splits]
    if len(spec.test_splits) > 1:
        names = " and ".join(spec.test_file(split)[1] for split in spec.test_splits)
        raise UserError(f"--output={output}: {spec.name} has {len(spec.test_splits)} test "
                        f"splits ({', '.join(spec.test_splits)}); pass a folder "
                        f"(--output=DIR/) to get {names}")
    return [(spec.test_splits[0], output)]


def _check_glue_model(classifier: Classifier, spec: glue.TaskSpec) -> None:
    """The model must predict the task's labels (by name, or as glue_data ids)."""
    def labels(names):
        return "a score (regression)" if names is None else f"the labels {', '.join(names)}"

    names = classifier.model.label_names
    fits = spec.is_regression and names is None or (
        not spec.is_regression and names is not None and len(names) == spec.num_labels
        and all(spec.submission_label(name) is not None for name in names))
    if not fits:
        raise UserError(f"--model predicts {labels(names)}, but --glue_task={spec.name} asks "
                        f"for {labels(spec.label_names)}; pass a model fine-tuned on "
                        f"{spec.name}")


def _check_output(input_path: str, output_path: str) -> str:
    """The input's extension, which the output must share; the output must not
    be the input."""
    extension = rows.file_extension(input_path, sources.FILE_FORMATS)
    same = os.path.abspath(input_path) == os.path.abspath(output_path) or (
        os.path.exists(input_path) and os.path.exists(output_path)
        and os.path.samefile(input_path, output_path))
    if same:
        raise UserError(f"--output={output_path} is the input file; write the labels to "
                        "another file")
    def format_of(extension: str) -> str:  # .json is JSON lines too
        return ".jsonl" if extension in _JSON_LINES else extension

    if format_of(os.path.splitext(output_path)[1].lower()) != format_of(extension):
        raise UserError(f"--output={output_path}: the labelled rows keep the input's format "
                        f"({extension}); name the output file with {extension}")
    return extension


def _text_fields_fix(text_fields: tuple[str, ...]):
    def fix(column: str) -> str:
        return (f"set --text_fields to the text column, or two for a pair (now "
                f"--text_fields={','.join(text_fields)})")
    return fix


def _rounded(value):
    return value if isinstance(value, str) else round(float(value), DECIMALS)


def _write_rows(path: str, extension: str, columns: list[str], rows: list[dict],
                added: dict[str, list]) -> None:
    """The rows, each with its `added` values, in the format of `extension`."""
    if extension in _JSON_LINES:
        lines = [json.dumps({**row, **{k: v[i] for k, v in added.items()}}, ensure_ascii=False)
                 for i, row in enumerate(rows)]
        _write_text(path, "\n".join(lines) + "\n")
        return
    table = [[*columns, *added]] + [
        [row[c] for c in columns] + [str(values[i]) for values in added.values()]
        for i, row in enumerate(rows)]
    if extension == ".tsv":  # read with quoting off, so written so too
        _write_text(path, "".join("\t".join(cells) + "\n" for cells in table))
        return
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table)
    _write_text(path, buffer.getvalue())


def _write_text(path: str, text: str) -> None:
    """Write the whole file at once, in a folder made if missing."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text_atomic(path, text)
