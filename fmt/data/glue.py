"""The nine GLUE tasks: names, labels, metrics and where their data lives.

Each task is described once, in both of the forms we read it from: the TFDS
`glue/<task>` builder (feature names, label order) and the original
`glue_data/<TASK>/*.tsv` folders (file names, columns). Records use the TFDS
feature names everywhere, so a model never needs to know which source fed it.
"""

import dataclasses

from fmt.errors import UserError

_TRAIN_DEV = (("train", "train.tsv"), ("validation", "dev.tsv"))


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One GLUE task.

    Attributes:
        name: short TFDS config name, e.g. "sst2".
        text_fields: record keys holding text, named as in TFDS glue.
        label_names: class names in TFDS order (label id = index); None for
            regression.
        metrics: the GLUE paper's metrics for this task, the one runs are judged by
            (the paper's headline metric) first.
        eval_splits: splits reported at evaluation time.
        tfds_name: TFDS dataset name, e.g. "glue/sst2".
        glue_dir: folder name inside glue_data, e.g. "SST-2".
        text_columns: glue_data column holding each of `text_fields`, in order.
        label_column: glue_data column holding the label.
        column_names: column names for glue_data files without a header row
            (CoLA); None when the first row of each file is the header.
        split_files: (split, file name) pairs inside the task folder.
        test_files: (split, file name, leaderboard file name) of each unlabelled
            test split: the glue_data file, whose first row is always a header
            (CoLA's too), and the file the GLUE submission zip holds for it.
        index_column: the test files' column of example ids (QQP: "id").
        submission_ids: whether the GLUE leaderboard takes class ids (0/1, as
            glue_data files write these tasks' labels) rather than class names.
    """

    name: str
    text_fields: tuple[str, ...]
    label_names: tuple[str, ...] | None
    tfds_name: str
    glue_dir: str
    text_columns: tuple[str, ...]
    metrics: tuple[str, ...] = ("accuracy",)
    eval_splits: tuple[str, ...] = ("validation",)
    label_column: str = "label"
    column_names: tuple[str, ...] | None = None
    # Pairs rather than a dict keep the frozen spec hashable.
    split_files: tuple[tuple[str, str], ...] = _TRAIN_DEV
    test_files: tuple[tuple[str, str, str], ...] = ()
    index_column: str = "index"
    submission_ids: bool = True

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_regression(self) -> bool:
        """True when the label is a float score rather than a class id."""
        return self.label_names is None

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits that have labelled glue_data files."""
        return tuple(split for split, _ in self.split_files)

    def file_name(self, split: str) -> str:
        """File name of `split` inside the task folder, e.g. "dev.tsv"."""
        for known, file_name in self.split_files:
            if known == split:
                return file_name
        raise UserError(
            f"task {self.name} has no labelled split {split!r}; "
            f"use one of: {', '.join(self.splits)}"
        )

    @property
    def test_splits(self) -> tuple[str, ...]:
        """The unlabelled test splits, e.g. ("test",)."""
        return tuple(split for split, _, _ in self.test_files)

    def test_file(self, split: str) -> tuple[str, str]:
        """(glue_data file name, leaderboard file name) of test split `split`."""
        for known, file_name, submission in self.test_files:
            if known == split:
                return file_name, submission
        raise UserError(f"task {self.name} has no test split {split!r}; "
                        f"use one of: {', '.join(self.test_splits)}")

    def submission_label(self, label: str) -> str | None:
        """A class, by its name or its glue_data id ("0"), as the GLUE leaderboard
        takes it: the id or the name (`submission_ids`); None if the task has no
        such class."""
        names = self.label_names or ()
        ids = {name: i for i, name in enumerate(names)} | {str(i): i for i in range(len(names))}
        if label not in ids:
            return None
        return str(ids[label]) if self.submission_ids else names[ids[label]]


def _glue(name: str, glue_dir: str, **kwargs) -> TaskSpec:
    kwargs.setdefault("test_files", (("test", "test.tsv", f"{glue_dir}.tsv"),))
    return TaskSpec(name=name, tfds_name=f"glue/{name}", glue_dir=glue_dir, **kwargs)


_NLI = ("entailment", "not_entailment")

TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue(
            "cola", "CoLA",
            text_fields=("sentence",),
            label_names=("unacceptable", "acceptable"),
            metrics=("mcc",),
            text_columns=("sentence",),
            # CoLA's train and dev files are the only ones without a header.
            column_names=("source", "label", "original_label", "sentence"),
        ),
        _glue(
            "sst2", "SST-2",
            text_fields=("sentence",),
            label_names=("negative", "positive"),
            text_columns=("sentence",),
        ),
        _glue(
            "mrpc", "MRPC",
            text_fields=("sentence1", "sentence2"),
            label_names=("not_equivalent", "equivalent"),
            metrics=("f1", "accuracy"),
            text_columns=("#1 String", "#2 String"),
            label_column="Quality",
        ),
        _glue(
            "qqp", "QQP",
            text_fields=("question1", "question2"),
            label_names=("not_duplicate", "duplicate"),
            metrics=("f1", "accuracy"),
            text_columns=("question1", "question2"),
            label_column="is_duplicate",
            index_column="id",  # QQP's test.tsv alone names its ids "id"
        ),
        _glue(
            "stsb", "STS-B",
            text_fields=("sentence1", "sentence2"),
            label_names=None,
            metrics=("pearson", "spearman"),
            text_columns=("sentence1", "sentence2"),
            label_column="score",
        ),
        _glue(
            "mnli", "MNLI",
            text_fields=("premise", "hypothesis"),
            label_names=("entailment", "neutral", "contradiction"),
            eval_splits=("validation_matched", "validation_mismatched"),
            text_columns=("sentence1", "sentence2"),
            # MNLI train has label1 only, dev has label1..label5: the
            # adjudicated label is always the last column, gold_label.
            label_column="gold_label",
            split_files=(
                ("train", "train.tsv"),
                ("validation_matched", "dev_matched.tsv"),
                ("validation_mismatched", "dev_mismatched.tsv"),
            ),
            test_files=(
                ("test_matched", "test_matched.tsv", "MNLI-m.tsv"),
                ("test_mismatched", "test_mismatched.tsv", "MNLI-mm.tsv"),
            ),
            submission_ids=False,
        ),
        _glue(
            "qnli", "QNLI",
            text_fields=("question", "sentence"),
            label_names=_NLI,
            text_columns=("question", "sentence"),
            submission_ids=False,
        ),
        _glue(
            "rte", "RTE",
            text_fields=("sentence1", "sentence2"),
            label_names=_NLI,
            text_columns=("sentence1", "sentence2"),
            submission_ids=False,
        ),
        _glue(
            "wnli", "WNLI",
            text_fields=("sentence1", "sentence2"),
            # WNLI is the one task whose TFDS order puts not_entailment first.
            label_names=("not_entailment", "entailment"),
            text_columns=("sentence1", "sentence2"),
        ),
    )
}


def get_task(name: str) -> TaskSpec:
    """Return the spec of GLUE task `name` (e.g. "sst2"), case-insensitively."""
    spec = TASKS.get(name.lower())
    if spec is None:
        raise UserError(
            f"unknown GLUE task {name!r}; use one of: {', '.join(TASKS)}"
        )
    return spec
