r"""Answer questions with a fine-tuned extractive-QA model (experiments/predict.py
with a `*ForQuestionAnswering` model).

The questions (a SQuAD-format .json or a .jsonl file with `question` and
`context`; `answers` may be left out) become windows through the QA kind's own
`featurize`, go through evaluation's batches and step (fmt.train.evaluation),
and the kind's post-processing (fmt.tasks.spans) reads each example's windows
back into its answer: so a question gets the answer that the run's own
`predictions_<split>.json` gives it. The output is the official format, a JSON
object of id -> answer text ("" for no answer, with a no-answer threshold).
"""

import json
import pathlib

from fmt import model as model_lib
from fmt.data import batching, squad
from fmt.errors import UserError
from fmt.files import write_text_atomic
from fmt.tasks import spans
from fmt.tasks.question_answering import QuestionAnswering
from fmt.train.config import default_config
from fmt.train.evaluation import model_outputs


def answer_file(folder: str, input_path: str, output_path: str, batch_size: int = 64,
                max_seq_length: int = 384, doc_stride: int = 128, n_best_size: int = 20,
                max_answer_length: int = 30, null_score_diff_threshold: float | None = None,
                progress: bool = True) -> dict[str, str]:
    """Answer every question of `input_path` into `output_path`; with a
    `null_score_diff_threshold` (SQuAD v2 models) a question may get "" (no answer)."""
    model = model_lib.from_pretrained(str(pathlib.Path(folder).expanduser()),
                                      task="question_answering")
    if model.loading_info["missing_keys"]:
        raise UserError(f"--model={folder} has no trained question-answering head (missing "
                        f"{', '.join(model.loading_info['missing_keys'][:2])}); pass the model/ "
                        "folder of a finetune.py run with experiments/configs/squad.py")
    if max_seq_length > model.max_positions:
        raise UserError(f"--max_seq_length={max_seq_length} is longer than the model's "
                        f"{model.max_positions} positions; lower it")
    config = default_config()
    config.update(task_kind="question_answering", max_seq_length=max_seq_length,
                  doc_stride=doc_stride, n_best_size=n_best_size,
                  max_answer_length=max_answer_length,
                  version_2_with_negative=null_score_diff_threshold is not None,
                  null_score_diff_threshold=null_score_diff_threshold or 0.0)
    task = QuestionAnswering(config)
    records = squad.read_squad(input_path, answers=False)
    features = task.featurize(model, records, "predict", input_path)
    outputs = model_outputs(model, task, features, batch_size,
                            batching.bucket_lengths(max_seq_length), progress,
                            pathlib.Path(input_path).name)
    answers, _ = spans.best_answers(records, features.info["windows"], outputs["start_logits"],
                                    outputs["end_logits"], n_best_size, max_answer_length,
                                    config.version_2_with_negative,
                                    config.null_score_diff_threshold)
    write_text_atomic(output_path, json.dumps(answers, indent=2, ensure_ascii=False) + "\n")
    return answers
