"""`train_and_evaluate(config, workdir)`: the whole fine-tuning run.

records -> token ids -> bucketed batches -> jitted train step -> metrics,
checkpoints, and at the end dev metrics (`results.json`) and the fine-tuned
model as a Hugging Face folder (`workdir/model`). Rerunning the same command
on the same workdir resumes from the latest checkpoint.
"""

import logging
import math
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from fmt import model as model_lib
from fmt.data import batching, datasets, tokenize
from fmt.errors import UserError
from fmt.tasks.classification import ClassificationTask
from fmt.train import optim, sharding, step as step_lib
from fmt.train.checkpoint import Checkpoints
from fmt.train.writers import MetricWriter, write_json_atomic

log = logging.getLogger("fmt")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def validate(config) -> None:
    """Reject settings that cannot work, naming the flag."""
    positive = ("learning_rate", "batch_size", "eval_batch_size", "max_seq_length")
    for name in positive:
        if not config[name] > 0:
            raise UserError(f"--config.{name}={config[name]}: must be positive")
    if config.max_steps <= 0 and not config.num_epochs > 0:
        raise UserError(f"--config.num_epochs={config.num_epochs}: must be positive "
                        "(or set --config.max_steps)")
    if config.dtype not in DTYPES:
        raise UserError(f"--config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")
    for name in ("log_every_steps", "checkpoint_every_steps"):
        if config[name] <= 0:
            raise UserError(f"--config.{name}={config[name]}: must be positive")


def _prepare_workdir(workdir: str, config) -> pathlib.Path:
    path = pathlib.Path(workdir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / "config.json", config.to_dict())
    except OSError as e:
        raise UserError(f"--workdir={workdir}: cannot write there ({e.strerror})") from None
    return path


def _encode(model, data: datasets.TaskData, config):
    encode = lambda records, name: tokenize.encode(
        model.tokenizer, records, data.text_fields, config.max_seq_length,
        regression=data.is_regression, source=f"{data.name} {name}")
    return encode(data.train, "train"), {k: encode(v, k) for k, v in data.evals.items()}


def evaluate(eval_step, params, data: tokenize.Encoded, task, batch_size: int,
             buckets: tuple[int, ...], put_batch) -> tuple[dict, np.ndarray]:
    """Metrics over every example, and the predictions in the data's order."""
    outputs = []
    for indices, length in batching.eval_plan(data, batch_size, buckets):
        batch = batching.make_batch(data, indices, length, batch_size)
        outputs.append((indices, eval_step(params, put_batch(batch))))
    predictions = np.zeros(len(data), np.float32 if task.is_regression else np.int64)
    for indices, logits in outputs:
        predictions[indices] = task.predict(jax.device_get(logits)[:len(indices)])
    return task.evaluate(predictions, data.labels), predictions


def train_and_evaluate(config, workdir: str) -> dict:
    validate(config)
    workdir = _prepare_workdir(workdir, config)
    primary = jax.process_index() == 0
    data = datasets.load(config)
    model = model_lib.from_pretrained(
        config.model, num_labels=len(data.label_names) if data.label_names else 1,
        label_names=data.label_names, seed=config.seed, dtype=DTYPES[config.dtype],
        dropout=config.dropout if config.dropout >= 0 else None)
    train_data, eval_data = _encode(model, data, config)
    task = ClassificationTask(model.num_labels, data.metric_names)

    buckets = batching.bucket_lengths(config.max_seq_length, tuple(config.bucket_lengths))
    batch_size = config.batch_size
    steps_per_epoch = len(batching.train_plan(train_data, batch_size, buckets, config.seed, 0))
    total_steps = config.max_steps or math.ceil(config.num_epochs * steps_per_epoch)
    log.info("%s: %d train examples, %s eval examples; %d steps (%d per epoch) of batch %d; "
             "bucket lengths %s", data.name, len(train_data),
             {k: len(v) for k, v in eval_data.items()}, total_steps, steps_per_epoch,
             batch_size, buckets)

    mesh = sharding.make_mesh()
    sharding.check_batch_size(mesh, batch_size, "batch_size")
    sharding.check_batch_size(mesh, config.eval_batch_size, "eval_batch_size")
    optimizer, schedule = optim.make_optimizer(config, total_steps)
    state = sharding.create_state(mesh, model.params, optimizer, config.seed)
    state_sharding = jax.tree.map(lambda x: x.sharding, state)
    put_batch = sharding.batch_putter(mesh)

    checkpoints = Checkpoints(workdir / "checkpoints", config.keep_checkpoints)
    latest = checkpoints.latest_step()
    if latest is not None:
        state = checkpoints.restore(latest, jax.tree.map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state))
        log.info("resumed from the checkpoint at step %d in %s", latest, workdir)

    train_step = jax.jit(
        step_lib.make_train_step(model.module, task, optimizer, schedule, config.l1, config.l2),
        in_shardings=(state_sharding, None), out_shardings=(state_sharding, None),
        donate_argnums=0)
    eval_step = jax.jit(step_lib.make_eval_step(model.module))
    run_eval = lambda params: {
        split: evaluate(eval_step, params, encoded, task, config.eval_batch_size, buckets,
                        put_batch)[0]
        for split, encoded in eval_data.items()}

    writer = MetricWriter(workdir, enabled=primary)
    progress = _progress(config, total_steps, int(state["step"]), primary)
    step = int(state["step"])
    plans: dict[int, batching.Plan] = {}
    window, window_start, examples, tokens = [], time.perf_counter(), 0.0, 0.0
    try:
        while step < total_steps:
            epoch, index = divmod(step, steps_per_epoch)
            if epoch not in plans:
                plans = {epoch: batching.train_plan(train_data, batch_size, buckets,
                                                    config.seed, epoch)}
            indices, length = plans[epoch][index]
            batch = batching.make_batch(train_data, indices, length, batch_size)
            examples += len(indices)
            tokens += float(batch["attention_mask"].sum())
            state, metrics = train_step(state, put_batch(batch))
            window.append(metrics)
            step += 1
            progress.update(1)
            if step % config.log_every_steps == 0 or step == total_steps:
                summary = {k: float(np.mean(v)) for k, v in
                           jax.device_get({k: [m[k] for m in window] for k in window[0]}).items()}
                if not all(np.isfinite(v) for v in summary.values()):
                    raise UserError(f"step {step}: the loss or gradient norm is not finite "
                                    f"({summary}); lower --config.learning_rate")
                seconds = time.perf_counter() - window_start
                summary.update(epoch=step / steps_per_epoch, examples_per_s=examples / seconds,
                               tokens_per_s=tokens / seconds)
                writer.write(step, summary)
                progress.set_postfix(loss=f"{summary['train_loss']:.4f}",
                                     ex_s=f"{summary['examples_per_s']:.0f}")
                window, window_start, examples, tokens = [], time.perf_counter(), 0.0, 0.0
            if config.eval_every_steps and step % config.eval_every_steps == 0 \
                    and step != total_steps:
                writer.write(step, _flatten(run_eval(state["params"]), prefix="eval_"))
            if step % config.checkpoint_every_steps == 0 or step == total_steps:
                checkpoints.save(step, state)
        progress.close()
        results = run_eval(state["params"])
        writer.write(step, _flatten(results, prefix="eval_"))
        final = {"step": step, **_flatten(results)}
        if primary:
            write_json_atomic(workdir / "results.json", final)
            if config.export_model:
                model.params = jax.device_get(state["params"])
                model.save_pretrained(workdir / "model")
        return final
    finally:
        checkpoints.close()
        writer.close()


def _flatten(results: dict[str, dict], prefix: str = "") -> dict:
    """The first eval split under plain metric names, others as `split/metric`."""
    flat = {}
    for i, (split, values) in enumerate(results.items()):
        for name, value in values.items():
            flat[prefix + (name if i == 0 else f"{split}/{name}")] = value
    return flat


def _progress(config, total: int, initial: int, primary: bool):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True,
                disable=not (config.progress_bar and primary))


