"""Masked-LM: continued (domain-adaptive) pretraining, or pretraining from scratch.

Texts (lines, or blocks cut from their concatenation) are masked BERT's way,
15% of tokens, 80/10/10; the masks are a pure function of (seed, epoch,
example), so resume stays exact, and evaluation uses one fixed draw. The loss
is the mean over the masked tokens of the whole global batch (the step divides
the summed loss by their count). Evaluation reduces on device to each row's
summed loss, masked-token count and correct count: `[batch, seq, vocab]`
logits never leave the device.
"""

from fmt.data import masking, text
from fmt.errors import UserError
from fmt.tasks.base import IGNORE, TokenLM, token_cross_entropy, token_lm_outputs

EVAL_EPOCH = 2 ** 31 - 1  # the masks of evaluation: one draw, never a training epoch's


class MaskedLM(TokenLM):
    name = "masked_lm"
    head = "masked_lm"
    architecture_suffix = "ForMaskedLM"
    packable = True

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
        return token_cross_entropy(logits, batch["labels"])

    def eval_outputs(self, logits, batch):
        return token_lm_outputs(logits, batch["labels"])
