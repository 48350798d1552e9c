"""The PyTorch `transformers` peer of finetune.py, for accuracy and speed comparisons.

Same config file and flags, same examples and token ids (fmt's readers and
tokenization), same hyperparameters: AdamW without decay on biases and
LayerNorm, linear warmup and decay, global-norm clipping, the checkpoint's
dropout. What differs is what a PyTorch user would do: a random shuffle and
dynamic padding per batch. Writes `results.json` to --workdir.

  python experiments/torch_peer.py --config=experiments/configs/glue.py:rte \
      --config.data_dir=../shared/data/glue --workdir=DIR
"""

import contextlib
import json
import logging
import math
import pathlib
import time
import types

import numpy as np
import torch
from absl import app, flags
from ml_collections import config_flags

from fmt import hf
from fmt.data import datasets
from fmt.data.features import Features
from fmt.tasks.classification import Classification
from fmt.train.loop import log_interval
from fmt.train.optim import warmup_steps
from fmt.train.workdir import save_config
from fmt.train.writers import MetricWriter, write_json_atomic

_CONFIG = config_flags.DEFINE_config_file("config", None, "Run config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where results.json goes.")
flags.mark_flags_as_required(["config", "workdir"])


def padded(features: Features, indices) -> dict[str, torch.Tensor]:
    """Dynamic padding (to the longest row) of every per-token field, with its pad
    value, and the attention mask; per-example fields (labels) are left out."""
    ids = features.tokens["input_ids"]
    length = max(len(ids[i]) for i in indices)
    out = {}
    for name, values in features.tokens.items():
        array = np.full((len(indices), length), features.pad_values.get(name, 0), np.int64)
        for row, i in enumerate(indices):
            array[row, :len(values[i])] = values[i]
        out[name] = torch.from_numpy(array)
    mask = np.zeros((len(indices), length), np.int64)
    for row, i in enumerate(indices):
        mask[row, :len(ids[i])] = 1
    out["attention_mask"] = torch.from_numpy(mask)
    return out


def make_optimizer(model, config) -> torch.optim.Optimizer:
    """AdamW, with no weight decay on biases and LayerNorm (as fmt.train.optim)."""
    no_decay = lambda name: name.endswith("bias") or "LayerNorm" in name
    groups = [
        {"params": [p for n, p in model.named_parameters() if not no_decay(n)],
         "weight_decay": config.weight_decay},
        {"params": [p for n, p in model.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=config.learning_rate,
                             betas=(config.adam_b1, config.adam_b2), eps=config.adam_eps)


def train_step(model, optimizer, scheduler, batch: dict, labels, max_grad_norm: float,
               autocast=contextlib.nullcontext()) -> torch.Tensor:
    """One update as a `transformers` fine-tuning script does it; returns the loss.
    `labels` is a tensor, or a dict of targets by keyword (QA's start/end positions)."""
    targets = labels if isinstance(labels, dict) else {"labels": labels}
    with autocast:
        loss = model(**batch, **targets).loss
    loss.backward()
    if max_grad_norm:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss


def evaluate(model, task, features: Features, batch_size: int, outputs_of) -> dict:
    """The task's metrics on `features`: `outputs_of(logits)` gives the per-row
    arrays that fmt's eval step gives, so fmt's own `task.evaluate` scores them."""
    model.eval()
    outputs: dict[str, list] = {}
    order = np.argsort(features.lengths, kind="stable")
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            indices = order[start:start + batch_size]
            batch = padded(features, indices)
            batch.pop("labels", None)
            out = model(**batch)
            # QA models answer start and end logits: stacked on a last axis of 2.
            logits = (out.logits if "logits" in out else
                      torch.stack([out.start_logits, out.end_logits], -1)).float().numpy()
            for name, values in outputs_of(logits).items():
                column = outputs.setdefault(name, [None] * len(features))
                for row, i in enumerate(indices):
                    column[i] = values[row]
    model.train()
    return task.evaluate(outputs, features)[0]


def fit(model, config, count: int, batch_of, workdir=None) -> tuple[int, float]:
    """The `transformers` fine-tuning loop over `count` examples: AdamW, the
    schedule, clipping, a seeded shuffle each epoch; `batch_of(indices)` gives
    (model inputs, labels). Returns the steps taken and the seconds they took.

    Every `log_every_steps` (lowered for short runs, as fmt's loop does) it
    writes `workdir/metrics.jsonl` lines as fmt's loop does: train_loss and
    learning_rate as the window's means, epoch and examples_per_s. So
    `table.py --plots` draws both sides' learning curves."""
    from transformers import get_scheduler
    optimizer = make_optimizer(model, config)
    steps_per_epoch = math.ceil(count / config.batch_size)
    total = config.max_steps or math.ceil(config.num_epochs * steps_per_epoch)
    scheduler = get_scheduler(config.lr_decay, optimizer, warmup_steps(config, total), total)
    generator = torch.Generator().manual_seed(config.seed)
    log_every = log_interval(config.log_every_steps, total)  # fmt's cadence
    writer = MetricWriter(workdir, enabled=workdir is not None)
    model.train()
    step, start = 0, time.perf_counter()
    losses, rates, window_start, examples = [], [], start, 0
    while step < total:
        for indices in torch.randperm(count, generator=generator).split(config.batch_size):
            if step == total:
                break
            rates.append(scheduler.get_last_lr()[0])  # the rate this update uses
            batch, labels = batch_of(indices.numpy())
            loss = train_step(model, optimizer, scheduler, batch, labels, config.max_grad_norm)
            losses.append(loss.item())
            examples += len(indices)
            step += 1
            if step % log_every == 0 or step == total:
                now, train_loss = time.perf_counter(), sum(losses) / len(losses)
                writer.write(step, dict(train_loss=train_loss,
                                        learning_rate=sum(rates) / len(rates),
                                        epoch=step / steps_per_epoch,
                                        examples_per_s=examples / (now - window_start)))
                logging.info("step %d/%d loss %.4f (%.1f steps/s)", step, total, train_loss,
                             step / (now - start))
                losses, rates, window_start, examples = [], [], now, 0
    writer.close()
    return step, time.perf_counter() - start


def features(task, config):
    """(splits, checkpoint folder, train features, eval features by split): the
    records fmt's task kind reads, featurized by fmt with the checkpoint's own
    tokenizer, so that both sides train and score on exactly the same features."""
    data = datasets.limit(task.load(), config)
    folder = hf.resolve_folder(config.model)
    facts = types.SimpleNamespace(tokenizer=hf.load_tokenizer(folder),
                                  label_names=data.label_names)
    train = task.featurize(facts, data.train, "train", data.origins["train"])
    evals = {k: task.featurize(facts, v, k, data.origins[k]) for k, v in data.evals.items()}
    return data, folder, train, evals


def run(config, workdir: pathlib.Path) -> dict:
    from transformers import AutoModelForSequenceClassification
    torch.manual_seed(config.seed)
    task = Classification(config)
    data, folder, train, evals = features(task, config)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), num_labels=task.num_outputs(data.label_names, None),
        problem_type="regression" if task.regression else "single_label_classification",
        **dropout_kwargs(config))

    def batch_of(indices):
        labels = torch.from_numpy(train.examples["labels"][indices])
        return padded(train, indices), labels.float() if task.regression else labels.long()

    step, seconds = fit(model, config, len(train), batch_of, workdir)
    return report(model, task, evals, config, workdir, step, seconds,
                  lambda logits: {"logits": logits})


def dropout_kwargs(config) -> dict:
    """`--config.dropout`, when set, as the HF config's hidden and attention dropout."""
    if config.dropout < 0:
        return {}
    return dict(hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)


def report(model, task, evals: dict, config, workdir, step: int, seconds: float,
           outputs_of) -> dict:
    """Every eval split's metrics, as fmt names them (the first plain, the rest
    `split/metric`), with the steps and train seconds, into results.json."""
    results = {"step": step, "train_seconds": seconds, "main_metric": task.main_metric}
    for i, (split, features) in enumerate(evals.items()):
        values = evaluate(model, task, features, config.eval_batch_size, outputs_of)
        results.update({(k if i == 0 else f"{split}/{k}"): v for k, v in values.items()})
    write_json_atomic(workdir / "results.json", results)
    return results


def main_of(run):
    """An absl main that runs `run(config, workdir)` and prints its results."""
    def main(argv):
        del argv
        logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
        workdir = pathlib.Path(_WORKDIR.value)
        save_config(workdir, _CONFIG.value)  # what tables group and label runs by
        print(json.dumps(run(_CONFIG.value, workdir), sort_keys=True))
    return main


if __name__ == "__main__":
    app.run(main_of(run))
