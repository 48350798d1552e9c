"""The PyTorch peer for extractive QA: `BertForQuestionAnswering` (or any
`AutoModelForQuestionAnswering`) fine-tuned with `transformers` on exactly the
windows fmt trains on (fmt's task kind reads the SQuAD file and cuts the
windows), with the same optimizer, schedule, clipping and seed, its answers
read back and scored by the same post-processing and official EM/F1.

  python experiments/torch_peer_qa.py --config=experiments/configs/squad.py --workdir=DIR \\
      --config.train_file=... --config.eval_file=...

results.json adds `train_features_per_s`: windows trained on per second.
"""

import math
import pathlib

import torch
from absl import app

from fmt.tasks.question_answering import QuestionAnswering

import torch_peer


def run(config, workdir: pathlib.Path) -> dict:
    from transformers import AutoModelForQuestionAnswering
    torch.manual_seed(config.seed)
    task = QuestionAnswering(config)
    _, folder, train, evals = torch_peer.features(task, config)
    model = AutoModelForQuestionAnswering.from_pretrained(str(folder),
                                                          **torch_peer.dropout_kwargs(config))

    def batch_of(indices):
        targets = {k: torch.from_numpy(train.examples[k][indices]).long()
                   for k in ("start_positions", "end_positions")}
        return torch_peer.padded(train, indices), targets

    step, seconds = torch_peer.fit(model, config, len(train), batch_of, workdir)
    results = torch_peer.report(model, task, evals, config, workdir, step, seconds,
                                lambda logits: {"start_logits": logits[..., 0],
                                                "end_logits": logits[..., 1]})
    epochs, rest = divmod(step, math.ceil(len(train) / config.batch_size))
    seen = epochs * len(train) + min(rest * config.batch_size, len(train))
    results["train_features_per_s"] = seen / seconds
    from fmt.train.writers import write_json_atomic
    write_json_atomic(workdir / "results.json", results)
    return results


if __name__ == "__main__":
    app.run(torch_peer.main_of(run))
