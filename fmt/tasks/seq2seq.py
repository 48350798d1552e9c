"""Seq2seq: an encoder-decoder (T5, BART) learns to write a target text from a
source text (summarisation, translation).

Sources (after `--config.source_prefix`, T5's "summarize: ") are the encoder's
`input_ids`; targets, tokenized as the tokenizer tokenizes targets, are the
`labels`, and the decoder reads them shifted right behind the family's
`decoder_start_token_id` (teacher forcing). The decoder's fields form a
`TokenGroup`, padded to target buckets of their own. The loss is the mean
(optionally label-smoothed) cross-entropy over the global batch's target tokens.

A decoder-only model (GPT-2, Llama) takes the same data as prompt and
continuation: `--config.source_prefix`, the source and a line break, then the
target and the end token, learnt on the target only; it generates greedily.

Evaluation keeps each row's summed loss (perplexity) and, unless
`--config.generation_metrics` is empty, generates inside the eval step with
the search `--config.num_beams` etc. ask for (fmt/generate_seq2seq.py); the
decoded text is scored by ROUGE and/or sacreBLEU against every reference of
the example, and `predictions_<split>.jsonl` keeps (source, references,
prediction). Scores are fractions, as every fmt metric (tables show x100).
"""

import json
import logging
import pathlib

import numpy as np

from fmt import generate, generate_seq2seq
from fmt.data import batching, datasets, seq2seq as readers
from fmt.data.features import IGNORE, Features, TokenGroup
from fmt.data.tokenize import pad_id
from fmt.errors import UserError
from fmt.files import write_text_atomic
from fmt.metrics import generation as text_metrics
from fmt.model import is_encoder_decoder
from fmt.models.encdec import shift_right
from fmt.tasks.base import Splits, TokenLM, token_cross_entropy, token_lm_metrics, \
    token_lm_outputs
from fmt.tasks.causal_lm import pair_features

log = logging.getLogger("fmt")

DECODER = ("decoder_input_ids", "labels")


class Seq2SeqLM(TokenLM):
    name = "seq2seq_lm"
    head = "seq2seq_lm"
    architecture_suffix = "ForConditionalGeneration"

    def __init__(self, config=None):
        super().__init__(config)
        generated = metric_names(config.generation_metrics) if config is not None else ()
        self.metric_names = (*generated, "perplexity", "loss", "accuracy")
        self.search = None      # the generation settings, once a model is known
        self.tokenizer = None
        self.decoder_only = False  # a GPT-2/Llama model, prompted with the source

    # --- data -----------------------------------------------------------------
    def load(self) -> Splits:
        c = self.config
        read = lambda path: readers.read_files(
            path, c.source_field, c.target_field, c.references_field or None,
            c.source_lang, c.target_lang)
        if c.tfds_dataset:
            tfds = lambda split: readers.read_tfds(c.tfds_dataset, split, source_lang=c.source_lang,
                                                   target_lang=c.target_lang,
                                                   data_dir=c.tfds_data_dir or None)
            train, validation = tfds("train"), tfds("validation")
            origins = {"train": f"TFDS {c.tfds_dataset} train",
                       "validation": f"TFDS {c.tfds_dataset} validation"}
        elif c.train_file:
            train = read(c.train_file)
            train, validation, origin = datasets.validation_split(c, train, c.train_file, read,
                                                                  "pairs")
            origins = {"train": c.train_file, "validation": origin}
        else:
            raise UserError("--config.train_file is empty; seq2seq reads .jsonl files with "
                            "--config.source_field and target_field, parallel text files "
                            "(DIR/train for DIR/train.en and DIR/train.de), or "
                            "--config.tfds_dataset (see experiments/configs/translate.py)")
        evals = {"validation": validation}
        if c.test_file:
            evals["test"], origins["test"] = read(c.test_file), c.test_file
        return Splits("seq2seq", train, evals, origins)

    @classmethod
    def head_for(cls, family) -> str:
        """An encoder-decoder's seq2seq head; a decoder-only family (GPT-2, Llama)
        continues a prompt with its causal-LM head."""
        return cls.head if cls.head in family.HEAD_KINDS else "causal_lm"

    def featurize(self, model, records, split, source) -> Features:
        c, tokenizer = self.config, model.tokenizer
        if not records:
            raise UserError(f"{source}: no {split} pairs")
        self.tokenizer = tokenizer
        self.decoder_only = not is_encoder_decoder(model.module)
        info = {"sources": [r["source"] for r in records],
                "references": [r.get("references") or [r["target"]] for r in records]}
        if self.decoder_only:
            return self._prompted(model, records, split, source, info)
        if c.generation_metrics and self.search is None:
            self.search = generate_seq2seq.settings_for(
                model, max_new_tokens=c.max_target_length, num_beams=c.num_beams,
                length_penalty=c.length_penalty, early_stopping=c.early_stopping,
                no_repeat_ngram_size=c.no_repeat_ngram_size, min_length=c.min_length)
        if c.source_prefix and split == "train" and not getattr(model.family, "TASK_PREFIXES",
                                                                False):
            log.warning("--config.source_prefix=%r: %s models were not trained with task "
                        "prefixes (T5's are), so the prefix is only more input; drop it unless "
                        "you mean it", c.source_prefix, model.config.model_type)
        start = model.config.decoder_start_token_id
        pad = pad_id(tokenizer)
        sources = _tokenized(tokenizer, [c.source_prefix + r["source"] for r in records],
                             c.max_seq_length, "max_seq_length", f"{split} source", source)
        labels = _tokenized(tokenizer, [r["target"] for r in records], c.max_target_length,
                            "max_target_length", f"{split} target", source, target=True)
        return Features(
            tokens={"input_ids": sources,
                    "decoder_input_ids": [shift_right(t, start, pad) for t in labels],
                    "labels": labels},
            pad_values={"input_ids": pad, "decoder_input_ids": pad, "labels": IGNORE},
            info=info, groups=(TokenGroup(DECODER, "decoder_attention_mask",
                                          batching.bucket_lengths(c.max_target_length)),))

    def _prompted(self, model, records, split, source, info) -> Features:
        """A decoder-only model's rows: the prompt (prefix, source, line break), then
        the target and the end token, learnt on the target only; evaluation
        continues the prompt greedily."""
        c = self.config
        if (c.num_beams, c.no_repeat_ngram_size, c.min_length) != (1, 0, 0):
            raise UserError(f"--config.num_beams={c.num_beams}, no_repeat_ngram_size="
                            f"{c.no_repeat_ngram_size}, min_length={c.min_length}: a decoder-only "
                            f"{model.config.model_type} model generates greedily here; set them "
                            "to 1, 0 and 0")
        prompts = [f"{c.source_prefix}{r['source']}\n" for r in records]
        features = pair_features(model.tokenizer, prompts, [r["target"] for r in records],
                                 c.max_seq_length, split, source)
        longest = max(int((label == IGNORE).sum()) for label in features.tokens["labels"])
        if longest + c.max_target_length > model.max_positions:
            raise UserError(f"--config.max_target_length={c.max_target_length}: a prompt of "
                            f"{longest} tokens plus that many generated exceeds the model's "
                            f"{model.max_positions} positions; lower it or --config."
                            "max_seq_length")
        if c.generation_metrics:
            eos = generate.end_ids(model.config, None)
            self.search = (tuple(eos), generate.padding_id(model, eos, None),
                           c.max_target_length)
        features.info.update(info)
        return features

    # --- model side -------------------------------------------------------------
    def _targets(self, logits, batch):
        """(logits, labels) that line up: a decoder-only model predicts the next token."""
        if self.decoder_only:
            return logits[:, :-1], batch["labels"][:, 1:]
        return logits, batch["labels"]

    def loss(self, logits, batch):
        return token_cross_entropy(*self._targets(logits, batch),
                                   self.config.label_smoothing)

    def eval_outputs(self, logits, batch):
        return token_lm_outputs(*self._targets(logits, batch))

    def eval_apply(self, module, params, batch):
        outputs = super().eval_apply(module, params, batch)
        if self.search is None:
            return outputs
        if self.decoder_only:
            eos, pad, new = self.search
            prompt = (batch["labels"] == IGNORE) & (batch["attention_mask"] > 0)
            outputs["generated"] = generate.continuations(
                module, params, batch["input_ids"], prompt, eos_ids=eos, pad_id=pad,
                max_new_tokens=new)
        else:
            outputs["generated"] = generate_seq2seq.search(
                module, params, batch["input_ids"], batch["attention_mask"], self.search)
        return outputs

    # --- host side ----------------------------------------------------------------
    def evaluate(self, outputs, features):
        metrics = token_lm_metrics(outputs)
        if "generated" not in outputs:
            return metrics, None
        texts = self.texts(outputs)
        references = features.info["references"]
        scores = text_metrics.generation_metrics(texts, references,
                                                 self.config.generation_metrics)
        metrics.update({k: v if k.endswith("_signature") else v / 100
                        for k, v in scores.items()})
        return metrics, [{"source": s, "references": r, "prediction": p}
                         for s, r, p in zip(features.info["sources"], references, texts)]

    def texts(self, outputs) -> list[str]:
        """The generated text of every example (eval outputs' `generated` ids)."""
        return [t.strip() for t in self.tokenizer.batch_decode(
            np.stack(outputs["generated"]), skip_special_tokens=True)]

    def write_predictions(self, folder: pathlib.Path, split, features, predictions):
        """`predictions_<split>.jsonl`: source, references and the generated text."""
        if predictions is not None:
            write_text_atomic(folder / f"predictions_{split}.jsonl", "".join(
                json.dumps(p, ensure_ascii=False) + "\n" for p in predictions))


def metric_names(families) -> tuple[str, ...]:
    """The metrics that `--config.generation_metrics` families report, the main one first."""
    names = {"bleu": ("bleu", "chrf"), "rouge": text_metrics.ROUGE_TYPES}
    unknown = [f for f in families if f not in names]
    if unknown:
        raise UserError(f"--config.generation_metrics={','.join(families)}: {unknown[0]!r} is "
                        f"not one; choose from {', '.join(names)}")
    return tuple(n for f in families for n in names[f])


def _tokenized(tokenizer, texts, limit: int, flag: str, what: str, source: str,
               target: bool = False) -> list[np.ndarray]:
    """Each text's ids (as targets when `target`), cut to `limit` tokens with the
    tokenizer's own truncation (special tokens kept); the log says how many were
    cut. One pass: the cut-off parts come back as extra rows, which are dropped."""
    encoded = tokenizer(**{"text_target" if target else "text": texts}, truncation=True,
                        max_length=limit, return_overflowing_tokens=True)
    rows = np.asarray(encoded["overflow_to_sample_mapping"])
    first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    if len(rows) > len(texts):
        log.warning("%s: %d of %d %ss are longer than --config.%s=%d tokens and are cut",
                    source, len(np.unique(rows[np.flatnonzero(rows[1:] == rows[:-1]) + 1])),
                    len(texts), what, flag, limit)
    return [np.asarray(encoded["input_ids"][i], np.int32) for i in first]
