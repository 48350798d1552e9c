"""Masked-LM: continued (domain-adaptive) pretraining, or pretraining from scratch.

Texts (lines, or blocks cut from their concatenation) are masked BERT's way,
15% of tokens, 80/10/10; the masks are a pure function of (seed, epoch,
example), so resume stays exact, and evaluation uses one fixed draw. The loss
is the mean over the masked tokens of the whole global batch (the step divides
the summed loss by their count). Evaluation reduces on device to each row's
summed loss, masked-token count and correct count: `[batch, seq, vocab]`
logits never leave the device.
"""

import jax.numpy as jnp
import numpy as np
import optax

from fmt.data import datasets, masking, text
from fmt.errors import UserError
from fmt.tasks.base import IGNORE, Splits, TaskKind, token_cross_entropy

EVAL_EPOCH = 2 ** 31 - 1  # the masks of evaluation: one draw, never a training epoch's


class MaskedLM(TaskKind):
    name = "masked_lm"
    head = "masked_lm"
    labels = None
    architecture_suffix = "ForMaskedLM"

    def __init__(self, config=None):
        super().__init__(config)
        self.metric_names = ("perplexity", "loss", "accuracy")

    @classmethod
    def num_outputs(cls, label_names, model_config) -> int:
        return model_config.vocab_size

    def load(self) -> Splits:
        c = self.config
        if c.tfds_dataset:
            train = text.read_tfds_texts(c.tfds_dataset, "train", c.text_field,
                                         c.tfds_data_dir or None)
            origin = f"TFDS {c.tfds_dataset}"
        elif c.train_file:
            train, origin = text.read_texts(c.train_file, c.text_field), c.train_file
        else:
            raise UserError("--config.train_file is empty; masked-LM reads .txt or .jsonl "
                            "files, or a TFDS text dataset (--config.tfds_dataset)")
        train, evals, eval_origin = datasets.validation_split(
            c, train, origin, lambda path: text.read_texts(path, c.text_field), "texts")
        return Splits("text", train, {"validation": evals},
                      {"train": origin, "validation": eval_origin})

    def featurize(self, model, records, split, source):
        c = self.config
        if model.tokenizer.mask_token_id is None:
            raise UserError(f"{c.model}: the tokenizer has no mask token; masked-LM needs one "
                            "(BERT's [MASK], RoBERTa's <mask>)")
        self.mask_id = model.tokenizer.mask_token_id
        self.vocab_size = model.config.vocab_size
        features = text.encode_texts(model.tokenizer, records, c.max_seq_length, c.text_mode,
                                     source)
        if split != "train":  # evaluation's masks are fixed: check them before training
            view = self.eval_view(features)
            if not any((view.example(i)[0]["labels"] != IGNORE).any() for i in range(len(view))):
                raise UserError(f"{source}: no token of the {split} texts is masked; give more "
                                "or longer texts, or raise --config.mlm_probability or "
                                "--config.eval_fraction")
        return features

    def _view(self, features, epoch):
        c = self.config
        return masking.MaskedView(features, c.seed, epoch, self.mask_id, self.vocab_size,
                                  c.mlm_probability, c.whole_word_masking)

    def train_view(self, features, epoch):
        return self._view(features, epoch)

    def eval_view(self, features):
        return self._view(features, EVAL_EPOCH)

    def loss(self, logits, batch):
        return token_cross_entropy(logits, batch["labels"], batch["weights"])

    def eval_outputs(self, logits, batch):
        labels = batch["labels"]
        valid = (labels != IGNORE) & (batch["weights"][:, None] > 0)
        target = jnp.where(valid, labels, 0)
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, target)
        correct = (jnp.argmax(logits, axis=-1) == target) & valid
        return {"loss_sum": jnp.where(valid, losses, 0.0).sum(-1),
                "count": valid.sum(-1), "correct": correct.sum(-1)}

    def evaluate(self, outputs, features):
        loss_sum = float(np.sum(outputs["loss_sum"], dtype=np.float64))
        count = int(np.sum(outputs["count"]))  # > 0: checked when the split was featurized
        loss = loss_sum / count
        return {"perplexity": float(np.exp(loss)), "loss": loss,
                "accuracy": int(np.sum(outputs["correct"])) / count}, None
