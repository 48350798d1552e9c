"""Extractive question answering (SQuAD v1.1 and v2.0): the answer is a span of
the context, predicted as a start and an end token.

An example (a question with its context) becomes one or more windows
(fmt.tasks.spans): the loop batches and evaluates windows, and `evaluate`
gathers each example's windows back into its answer, so the loop never learns
that one example made several features. Training labels are each window's
answer span, or its first token where the answer is not inside it. Metrics are
the official SQuAD EM/F1 (v2: with HasAns/NoAns and the best no-answer
threshold); predictions are written in the official format.
"""

import json
import pathlib

import jax
import jax.numpy as jnp
import optax

from fmt.data import datasets, squad, tokenize
from fmt.data.features import Features
from fmt.errors import UserError
from fmt.files import write_text_atomic
from fmt.metrics import squad as squad_metrics
from fmt.tasks import spans
from fmt.tasks.base import Splits, TaskKind

# The lowest logit a float32 softmax handles: padding can never be a start or end.
_NEVER = -1e9


class QuestionAnswering(TaskKind):
    name = "question_answering"
    head = "question_answering"
    architecture_suffix = "ForQuestionAnswering"
    targets = ("start_positions", "end_positions", "weights")

    def __init__(self, config=None):
        super().__init__(config)
        self.metric_names = ("f1", "exact_match")

    @classmethod
    def num_outputs(cls, label_names, model_config) -> int:
        return 2

    # --- data -----------------------------------------------------------------
    def load(self) -> Splits:
        c = self.config
        if c.tfds_dataset:
            name = c.tfds_dataset
            train = squad.read_tfds_squad(name, "train", c.tfds_data_dir or None)
            validation = squad.read_tfds_squad(name, "validation", c.tfds_data_dir or None)
            origins = {"train": f"TFDS {name} train", "validation": f"TFDS {name} validation"}
        elif c.train_file:
            train = squad.read_squad(c.train_file)
            train, validation, origin = datasets.validation_split(c, train, c.train_file,
                                                                  squad.read_squad, "questions")
            origins = {"train": c.train_file, "validation": origin}
        else:
            raise UserError("--config.train_file is empty; extractive QA reads SQuAD-format "
                            ".json or .jsonl files, or --config.tfds_dataset=squad/v1.1 (see "
                            "experiments/configs/squad.py)")
        if not c.version_2_with_negative:
            for split, records in (("train", train), ("validation", validation)):
                unanswered = next((r["id"] for r in records if not r["answers"]), None)
                if unanswered is not None:
                    raise UserError(f"{origins[split]}: question {unanswered!r} has no answer; "
                                    "for SQuAD v2 data set --config.version_2_with_negative="
                                    "true")
        return Splits("squad", train, {"validation": validation}, origins)

    def featurize(self, model, records, split, source) -> Features:
        c = self.config
        windows = spans.cut_windows(model.tokenizer, records, c.max_seq_length, c.doc_stride,
                                    source)
        return Features({"input_ids": windows.input_ids,
                         "token_type_ids": windows.token_type_ids},
                        {"start_positions": windows.starts, "end_positions": windows.ends},
                        {"input_ids": tokenize.pad_id(model.tokenizer)},
                        {"records": records, "windows": windows})

    # --- model side -------------------------------------------------------------
    def loss(self, outputs, batch):
        """Mean of the start and end cross-entropies per window (as
        BertForQuestionAnswering), over the real tokens only."""
        start, end = (_masked(x, batch["attention_mask"]) for x in outputs)
        per_window = 0.5 * (
            optax.softmax_cross_entropy_with_integer_labels(start, batch["start_positions"])
            + optax.softmax_cross_entropy_with_integer_labels(end, batch["end_positions"]))
        weights = batch["weights"]
        return jnp.where(weights > 0, per_window, 0.0).dot(weights), weights.sum()

    def eval_outputs(self, outputs, batch):
        start, end = (_masked(x, batch["attention_mask"]) for x in outputs)
        return {"start_logits": start, "end_logits": end}

    # --- host side ----------------------------------------------------------------
    def evaluate(self, outputs, features):
        c = self.config
        records = features.info["records"]
        answers, null_odds = spans.best_answers(
            records, features.info["windows"], outputs["start_logits"],
            outputs["end_logits"], c.n_best_size, c.max_answer_length,
            c.version_2_with_negative, c.null_score_diff_threshold)
        gold = {r["id"]: [a["text"] for a in r["answers"]] for r in records}
        if c.version_2_with_negative:
            scores = squad_metrics.squad_v2_scores(answers, gold, null_odds,
                                                   c.null_score_diff_threshold)
            scores["exact_match"] = scores.pop("exact")
        else:
            scores = squad_metrics.squad_scores(answers, gold)
        # fmt reports scores as fractions (as accuracy and F1 elsewhere); the official
        # scripts' percentages are divided here, counts and thresholds kept.
        metrics = {k: v if k.endswith(("total", "_thresh")) else v / 100
                   for k, v in scores.items()}
        return metrics, (answers, null_odds)

    def write_predictions(self, folder: pathlib.Path, split, features, predictions):
        """`predictions_<split>.json` (id -> answer, the official format) and, for
        v2, `null_odds_<split>.json` (id -> no-answer score minus best span's)."""
        answers, null_odds = predictions
        write_text_atomic(folder / f"predictions_{split}.json", json.dumps(answers, indent=2))
        if self.config.version_2_with_negative:
            write_text_atomic(folder / f"null_odds_{split}.json", json.dumps(null_odds, indent=2))


def _masked(logits: jax.Array, attention_mask: jax.Array) -> jax.Array:
    return jnp.where(attention_mask > 0, logits.astype(jnp.float32), _NEVER)

