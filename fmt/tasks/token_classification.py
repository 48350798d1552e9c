"""Token classification (NER, POS, chunking): a tag per word.

Words are split into sub-tokens by the checkpoint's tokenizer; the first
sub-token of each word carries its tag and the rest are ignored (or, with
`--config.label_all_tokens`, carry it too, B- turned I-). Predictions are read
back at each word's first sub-token, so metrics are on words, as seqeval
scores them; a word cut off by `max_seq_length` is predicted "O" and reported.
"""

import logging
import pathlib

import jax.numpy as jnp
import numpy as np

from fmt.data import conll, datasets, tokenize
from fmt.data.features import Features
from fmt.errors import UserError
from fmt.metrics import entities
from fmt.tasks.base import IGNORE, Splits, TaskKind, token_cross_entropy

log = logging.getLogger("fmt")
CHUNK = 2048  # sentences tokenized at a time


class TokenClassification(TaskKind):
    name = "token_classification"
    head = "token_classification"
    labels = "classes"
    architecture_suffix = "ForTokenClassification"
    packable = True

    def __init__(self, config=None, label_names: tuple[str, ...] = ()):
        super().__init__(config)
        self.label_names = tuple(label_names)
        self.metric_names = ("f1", "precision", "recall", "accuracy")

    @staticmethod
    def hf_config_fields(label_names) -> dict:
        return dict(id2label={str(i): name for i, name in enumerate(label_names)},
                    label2id={name: i for i, name in enumerate(label_names)})

    def load(self) -> Splits:
        c = self.config
        if not c.train_file:
            raise UserError("--config.train_file is empty; token classification reads CoNLL "
                            "or jsonl files (see experiments/configs/ner.py)")
        read = lambda path: conll.read_tagged(path, c.tokens_field, c.tags_field)
        train = read(c.train_file)
        self.label_names = conll.label_names(train, c.train_file)
        train, validation, origin = datasets.validation_split(c, train, c.train_file, read,
                                                              "sentences")
        evals = {"validation": validation}
        origins = {"train": c.train_file, "validation": origin}
        if c.test_file:
            evals["test"], origins["test"] = read(c.test_file), c.test_file
        for split, records in evals.items():
            conll.check_known(records, self.label_names, origins[split])
        return Splits("tagged", train, evals, origins, self.label_names)

    def featurize(self, model, records, split, source) -> Features:
        tokenizer, max_length = model.tokenizer, self.config.max_seq_length
        tag_id = {name: i for i, name in enumerate(model.label_names)}
        inside = {i: tag_id.get("I-" + name[2:], i) for name, i in tag_id.items()
                  if name.startswith("B-")}
        ids, types, labels, first_tokens = [], [], [], []
        cut_words = cut_sentences = 0
        for start in range(0, len(records), CHUNK):
            chunk = records[start:start + CHUNK]
            # A space before every word: byte-level BPE (RoBERTa, GPT-2) then reads each
            # as the mid-sentence word it is ("Ġworld"), as transformers' add_prefix_space
            # does; WordPiece and SentencePiece tokenize the same words either way.
            encoding = tokenizer([[" " + w for w in r["tokens"]] for r in chunk],
                                 is_split_into_words=True,
                                 truncation=True, max_length=max_length, padding=False,
                                 return_token_type_ids=True, return_attention_mask=False)
            for row, record in enumerate(chunk):
                word_ids = encoding.word_ids(row)
                tags = [tag_id[t] for t in record["tags"]]
                first = np.full(len(tags), -1, np.int32)  # first sub-token of each word
                token_labels = np.full(len(word_ids), IGNORE, np.int32)
                for position, word in enumerate(word_ids):
                    if word is None:
                        continue
                    if first[word] < 0:
                        first[word] = position
                        token_labels[position] = tags[word]
                    elif self.config.label_all_tokens:
                        token_labels[position] = inside.get(tags[word], tags[word])
                seen = max((w for w in word_ids if w is not None), default=-1)
                if seen < len(tags) - 1:
                    cut_words += len(tags) - 1 - seen
                    cut_sentences += 1
                ids.append(np.asarray(encoding["input_ids"][row], np.int32))
                types.append(np.asarray(encoding["token_type_ids"][row], np.int32))
                labels.append(token_labels)
                first_tokens.append(first)
        if cut_words:
            log.warning("%s: %d words in %d sentences lie past --config.max_seq_length=%d; "
                        "they are predicted 'O' (raise it to keep them)", source, cut_words,
                        cut_sentences, max_length)
        return Features({"input_ids": ids, "token_type_ids": types, "labels": labels}, {},
                        {"input_ids": tokenize.pad_id(tokenizer), "labels": IGNORE},
                        {"records": records, "first_tokens": first_tokens,
                         "label_names": tuple(model.label_names)})

    def loss(self, logits, batch):
        return token_cross_entropy(logits, batch["labels"])

    def eval_outputs(self, logits, batch):
        return {"predictions": jnp.argmax(logits, axis=-1).astype(jnp.int32)}

    def evaluate(self, outputs, features):
        names = features.info["label_names"]
        gold, predicted = [], []
        for record, first, row in zip(features.info["records"], features.info["first_tokens"],
                                      outputs["predictions"]):
            gold.append(list(record["tags"]))
            predicted.append([names[row[p]] if p >= 0 else "O" for p in first])
        return entities.entity_scores(gold, predicted), predicted

    def write_predictions(self, folder: pathlib.Path, split, features, predictions):
        records = features.info["records"]
        conll.write_conll(str(folder / f"predictions_{split}.conll"),
                          [r["tokens"] for r in records], [r["tags"] for r in records],
                          predictions)
