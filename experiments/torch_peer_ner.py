"""The PyTorch peer for token classification: `BertForTokenClassification` (or any
`AutoModelForTokenClassification`) fine-tuned with `transformers` on exactly the
features fmt trains on (fmt's task kind reads and aligns the words), with the
same optimizer, schedule, clipping and seed, scored by the same word-level
seqeval metrics.

  python experiments/torch_peer_ner.py --config=experiments/configs/ner.py --workdir=DIR \\
      --config.train_file=... --config.eval_file=... --config.test_file=...
"""

import pathlib

import torch
from absl import app

from fmt.tasks.token_classification import TokenClassification

import torch_peer


def run(config, workdir: pathlib.Path) -> dict:
    from transformers import AutoModelForTokenClassification
    torch.manual_seed(config.seed)
    task = TokenClassification(config)
    splits, folder, train, evals = torch_peer.features(task, config)
    names = splits.label_names
    model = AutoModelForTokenClassification.from_pretrained(
        str(folder), num_labels=len(names), id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)}, **torch_peer.dropout_kwargs(config))

    def batch_of(indices):
        batch = torch_peer.padded(train, indices)
        return batch, batch.pop("labels")

    step, seconds = torch_peer.fit(model, config, len(train), batch_of, workdir)
    return torch_peer.report(model, task, evals, config, workdir, step, seconds,
                             lambda logits: {"predictions": logits.argmax(-1)})


if __name__ == "__main__":
    app.run(torch_peer.main_of(run))
