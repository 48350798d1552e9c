r"""Label texts with a fine-tuned classification model, write a GLUE submission, or
answer questions with an extractive-QA model.

  python experiments/predict.py --model=runs/mine/model --input=new.csv --output=labelled.csv
  python experiments/predict.py --model=runs/mrpc/model --input=pairs.jsonl \
      --text_fields=sentence1,sentence2 --output=labelled.jsonl
  python experiments/predict.py --model=runs/sst2/model --glue_task=sst2 \
      --data_dir=path/to/glue_data --output=submission/
  python experiments/predict.py --model=runs/squad/model --input=questions.json \
      --output=answers.json
  python experiments/predict.py --model=runs/translate/model --input=test.en \
      --output=test.de --num_beams=4

--model is the model/ folder that finetune.py wrote. With --input (.csv, .tsv or
.jsonl) the output has the input's format, every column, and `label` (the
class name, or a regression model's score) and `score` (the probability of that
class; classifiers only) added. With --glue_task the output is the GLUE
leaderboard file of the task's test split(s) (`index\tprediction`); a folder
gets the leaderboard's file names (SST-2.tsv, MNLI-m.tsv and MNLI-mm.tsv, ...).
A question-answering model (a squad.py run's) reads --input as SQuAD .json or
.jsonl (question, context; answers not needed) and writes id -> answer as JSON.
A seq2seq model (T5/BART, or a decoder trained with --task=seq2seq) reads
sources from a .jsonl file (--source_field) or one per line from any other text
file, and writes .jsonl rows with `prediction` added, or one prediction per line.
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
_TASK = flags.DEFINE_enum("task", "auto", ["auto", "classification", "question_answering",
                                           "seq2seq"],
                          "What the model does; auto reads it from its config.json "
                          "(a decoder fine-tuned for seq2seq needs --task=seq2seq).")
_SOURCE_FIELD = flags.DEFINE_string("source_field", "source", "Seq2seq, .jsonl input: the "
                                    "field holding the source text.")
_SOURCE_PREFIX = flags.DEFINE_string("source_prefix", "", "Seq2seq: put before every source, "
                                     "as in training (T5: 'summarize: ').")
_MAX_NEW_TOKENS = flags.DEFINE_integer("max_new_tokens", 128, "Seq2seq: the most tokens "
                                       "generated per source.")
_NUM_BEAMS = flags.DEFINE_integer("num_beams", 1, "Seq2seq: 1 = greedy, else beam search.")
_LENGTH_PENALTY = flags.DEFINE_float("length_penalty", 1.0, "Seq2seq beam search: scores are "
                                     "divided by length ** length_penalty.")
_NO_REPEAT = flags.DEFINE_integer("no_repeat_ngram_size", 0, "Seq2seq: never repeat an n-gram "
                                  "of this size; 0 = off.")
_MIN_LENGTH = flags.DEFINE_integer("min_length", 0, "Seq2seq: no end token before this many "
                                   "decoder tokens.")
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
        task = _TASK.value if _TASK.value != "auto" else _task_of(_MODEL.value)
        if task == "seq2seq":
            if not _INPUT.value:
                raise UserError("a seq2seq model writes targets for --input=FILE (.jsonl or "
                                "one source per line); --glue_task is for classifiers")
            from fmt import predict_seq2seq
            predict_seq2seq.generate_file(
                _MODEL.value, _INPUT.value, _OUTPUT.value, source_field=_SOURCE_FIELD.value,
                source_prefix=_SOURCE_PREFIX.value, batch_size=_BATCH_SIZE.value,
                max_seq_length=_MAX_SEQ_LENGTH.value or 512,
                max_new_tokens=_MAX_NEW_TOKENS.value, num_beams=_NUM_BEAMS.value,
                length_penalty=_LENGTH_PENALTY.value, no_repeat_ngram_size=_NO_REPEAT.value,
                min_length=_MIN_LENGTH.value, progress=_PROGRESS_BAR.value)
            print(_OUTPUT.value)
            return
        if task == "question_answering":
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


def _task_of(folder: str) -> str:
    """The task a model folder's config.json names by its architecture's suffix."""
    import json
    import pathlib
    config = pathlib.Path(folder).expanduser() / "config.json"
    if not config.is_file():
        return "classification"  # load_classifier says what is wrong with the folder
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    from fmt.tasks import KINDS
    for kind, task in (("question_answering", "question_answering"), ("seq2seq_lm", "seq2seq")):
        if any(a.endswith(KINDS[kind].architecture_suffix) for a in architectures):
            return task
    return "classification"


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
    from fmt import huge_pages
    huge_pages.reexec()  # before JAX loads; fmt/huge_pages.py says why
    app.run(main)
