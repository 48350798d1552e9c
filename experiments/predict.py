r"""Label texts with a fine-tuned classification model, write a GLUE submission, or
answer questions with an extractive-QA model.

  python experiments/predict.py --model=runs/mine/model --input=new.csv --output=labelled.csv
  python experiments/predict.py --model=runs/mrpc/model --input=pairs.jsonl \
      --text_fields=sentence1,sentence2 --output=labelled.jsonl
  python experiments/predict.py --model=runs/sst2/model --glue_task=sst2 \
      --data_dir=path/to/glue_data --output=submission/
  python experiments/predict.py --model=runs/squad/model --input=questions.json \
      --output=answers.json

--model is the model/ folder that finetune.py wrote. With --input (.csv, .tsv or
.jsonl) the output has the input's format, every column, and `label` (the
class name, or a regression model's score) and `score` (the probability of that
class; classifiers only) added. With --glue_task the output is the GLUE
leaderboard file of the task's test split(s) (`index\tprediction`); a folder
gets the leaderboard's file names (SST-2.tsv, MNLI-m.tsv and MNLI-mm.tsv, ...).
A question-answering model (a squad.py run's) reads --input as SQuAD .json or
.jsonl (question, context; answers not needed) and writes id -> answer as JSON.
Mistakes end with one line naming what to fix (--verbose shows the traceback).
"""

import sys

from absl import app, flags

_MODEL = flags.DEFINE_string("model", None, "The model/ folder that finetune.py wrote.")
_INPUT = flags.DEFINE_string("input", None, "A .csv, .tsv (header row) or .jsonl file to label.")
_OUTPUT = flags.DEFINE_string("output", None, "The labelled file (the input's format), or the "
                              "GLUE submission file or folder.")
_TEXT_FIELDS = flags.DEFINE_list("text_fields", ["sentence"], "The input's text column, or two "
                                 "for a pair (sentence1,sentence2).")
_LABEL_COLUMN = flags.DEFINE_string("label_column", "label", "The column added for the label.")
_SCORE_COLUMN = flags.DEFINE_string("score_column", "score", "The column added for the "
                                    "probability of the label (classifiers only).")
_GLUE_TASK = flags.DEFINE_string("glue_task", None, "A GLUE task (sst2, rte, ...): write its "
                                 "test split's leaderboard file instead of labelling --input.")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "With --glue_task: the glue_data folder "
                                "(holding e.g. SST-2/test.tsv) or the task's folder.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Texts per batch.")
_MAX_SEQ_LENGTH = flags.DEFINE_integer("max_seq_length", None, "Longer inputs are truncated "
                                       "(pairs longest-first), as in training; QA contexts "
                                       "are cut into windows (default 128; QA 384).")
_DOC_STRIDE = flags.DEFINE_integer("doc_stride", 128, "QA: tokens shared by neighbouring windows.")
_MAX_ANSWER_LENGTH = flags.DEFINE_integer("max_answer_length", 30, "QA: longest answer, tokens.")
_NULL_THRESHOLD = flags.DEFINE_float("null_score_diff_threshold", None, "QA, SQuAD v2 models: "
                                     "answer '' when no-answer beats the best span by more.")
_PROGRESS_BAR = flags.DEFINE_bool("progress_bar", True, "tqdm progress bar on stderr.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks for errors in input.")
flags.mark_flags_as_required(["model", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from fmt.train.cli import quiet_logging
    quiet_logging()
    from fmt import predict
    from fmt.errors import UserError
    try:
        check_flags(UserError)
        if _is_question_answering(_MODEL.value):
            if not _INPUT.value:
                raise UserError("a question-answering model answers --input=FILE (SQuAD .json "
                                "or .jsonl); --glue_task is for classifiers")
            from fmt import predict_qa
            predict_qa.answer_file(_MODEL.value, _INPUT.value, _OUTPUT.value, _BATCH_SIZE.value,
                                   _MAX_SEQ_LENGTH.value or 384, _DOC_STRIDE.value,
                                   max_answer_length=_MAX_ANSWER_LENGTH.value,
                                   null_score_diff_threshold=_NULL_THRESHOLD.value,
                                   progress=_PROGRESS_BAR.value)
            print(_OUTPUT.value)
            return
        classifier = predict.load_classifier(_MODEL.value, _BATCH_SIZE.value,
                                             _MAX_SEQ_LENGTH.value or 128)
        if _GLUE_TASK.value:
            written = predict.glue_submission(classifier, _GLUE_TASK.value, _DATA_DIR.value,
                                              _OUTPUT.value, _PROGRESS_BAR.value)
        else:
            predict.label_file(classifier, _INPUT.value, _OUTPUT.value, _TEXT_FIELDS.value,
                               _LABEL_COLUMN.value, _SCORE_COLUMN.value, _PROGRESS_BAR.value)
            written = [_OUTPUT.value]
    except UserError as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(written))


def _is_question_answering(folder: str) -> bool:
    """Whether the folder's config.json names a `*ForQuestionAnswering` architecture."""
    import json
    import pathlib
    config = pathlib.Path(folder).expanduser() / "config.json"
    if not config.is_file():
        return False  # load_classifier says what is wrong with the folder
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return any(a.endswith("ForQuestionAnswering") for a in architectures)


def check_flags(error) -> None:
    """Either --input or --glue_task with --data_dir."""
    if bool(_INPUT.value) == bool(_GLUE_TASK.value):
        raise error("pass either --input=FILE (texts to label) or --glue_task=TASK with "
                    "--data_dir=GLUE_DIR (a GLUE submission)")
    if _GLUE_TASK.value and not _DATA_DIR.value:
        raise error(f"--glue_task={_GLUE_TASK.value} needs --data_dir: the glue_data folder "
                    "holding the task's test.tsv")
    if _INPUT.value and _DATA_DIR.value:
        raise error("--data_dir goes with --glue_task; for --input, leave it out")


if __name__ == "__main__":
    app.run(main)
