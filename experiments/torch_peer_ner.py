"""The PyTorch peer for token classification: `BertForTokenClassification` (or any
`AutoModelForTokenClassification`) fine-tuned with `transformers` on exactly the
features fmt trains on (fmt's task kind reads and aligns the words), with the
same optimizer, schedule, clipping and seed, scored by the same word-level
seqeval metrics.

  python experiments/torch_peer_ner.py --config=experiments/configs/ner.py --workdir=DIR \\
      --config.train_file=... --config.eval_file=... --config.test_file=...
"""

import json
import logging
import pathlib
import types

import torch
from absl import app

from fmt import hf
from fmt.data import datasets
from fmt.tasks.token_classification import TokenClassification
from fmt.train.writers import write_json_atomic

import torch_peer
from torch_peer import _CONFIG, _WORKDIR  # the same --config and --workdir flags


def run(config, workdir: pathlib.Path) -> dict:
    from transformers import AutoModelForTokenClassification
    torch.manual_seed(config.seed)
    task = TokenClassification(config)
    splits = datasets.limit(task.load(), config)
    folder = hf.resolve_folder(config.model)
    tokenizer = hf.load_tokenizer(folder)
    model_facts = types.SimpleNamespace(tokenizer=tokenizer, label_names=splits.label_names)
    train = task.featurize(model_facts, splits.train, "train", splits.origins["train"])
    evals = {k: task.featurize(model_facts, v, k, splits.origins[k])
             for k, v in splits.evals.items()}
    names = splits.label_names
    kwargs = {}
    if config.dropout >= 0:
        kwargs = dict(hidden_dropout_prob=config.dropout,
                      attention_probs_dropout_prob=config.dropout)
    model = AutoModelForTokenClassification.from_pretrained(
        str(folder), num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, **kwargs)
    def batch_of(indices):
        batch = torch_peer.padded(train, indices)
        return batch, batch.pop("labels")

    step, train_seconds = torch_peer.fit(model, config, len(train), batch_of)
    results = {"step": step, "train_seconds": train_seconds}
    for i, (split, features) in enumerate(evals.items()):
        values = torch_peer.evaluate(model, task, features, config.eval_batch_size,
                                     lambda logits: {"predictions": logits.argmax(-1)})
        results.update({(k if i == 0 else f"{split}/{k}"): v for k, v in values.items()})
    write_json_atomic(workdir / "results.json", results)
    return results


def main(argv):
    del argv
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    workdir = pathlib.Path(_WORKDIR.value)
    workdir.mkdir(parents=True, exist_ok=True)
    print(json.dumps(run(_CONFIG.value, workdir), sort_keys=True))


if __name__ == "__main__":
    app.run(main)
