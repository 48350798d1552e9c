"""`train_and_evaluate(config, workdir)`: the whole fine-tuning run.

records -> token ids -> bucketed batches -> jitted train step -> metrics,
checkpoints, and at the end dev metrics (`results.json`) and the fine-tuned
model as a Hugging Face folder (`workdir/model`).

Rerunning the same command on the same workdir resumes from the latest
checkpoint and ends exactly as an uninterrupted run: the data order is a pure
function of (seed, epoch), dropout of (seed, step), and metric lines written
after the restored step are dropped and written again.
"""

import logging
import math
import pathlib
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmt import model as model_lib
from fmt.data import batching, datasets, tokenize
from fmt.errors import Preempted, UserError
from fmt.tasks.classification import ClassificationTask
from fmt.train import optim, sharding, step as step_lib
from fmt.train.checkpoint import BestParams, Checkpoints
from fmt.train.preemption import StopSignals
from fmt.train.workdir import prepare_workdir, read_results
from fmt.train.writers import MetricWriter, write_json_atomic

log = logging.getLogger("fmt")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def validate(config) -> None:
    """Reject settings that cannot work, naming the flag."""
    if config.num_buckets < 0:
        raise UserError(f"--config.num_buckets={config.num_buckets}: must be 0 (powers of "
                        "two) or a positive count")
    positive = ("learning_rate", "batch_size", "eval_batch_size", "max_seq_length",
                "log_every_steps", "checkpoint_every_steps")
    for name in positive:
        if not config[name] > 0:
            raise UserError(f"--config.{name}={config[name]}: must be positive")
    if config.max_steps <= 0 and not config.num_epochs > 0:
        raise UserError(f"--config.num_epochs={config.num_epochs}: must be positive "
                        "(or set --config.max_steps)")
    if config.dtype not in DTYPES:
        raise UserError(f"--config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")
    if config.early_stopping_patience and not config.early_stopping_metric:
        raise UserError("--config.early_stopping_patience needs --config.early_stopping_metric")


def _encode(model, data: datasets.TaskData, config):
    encode = lambda records, name: tokenize.encode(
        model.tokenizer, records, data.text_fields, config.max_seq_length,
        regression=data.is_regression, source=data.origins.get(name, f"{data.name} {name}"),
        allow_empty=data.name != "custom")
    return encode(data.train, "train"), {k: encode(v, k) for k, v in data.evals.items()}


def choose_buckets(config, train: tokenize.Encoded, evals: dict) -> tuple[int, ...]:
    """The padded lengths: given, fitted to the training lengths, or powers of two."""
    if config.bucket_lengths or not config.num_buckets:
        return batching.bucket_lengths(config.max_seq_length, tuple(config.bucket_lengths))
    longest = max(int(data.lengths.max()) for data in [train, *evals.values()])
    return batching.fit_bucket_lengths(train.lengths, config.num_buckets, longest)


def evaluate(eval_step, params, data: tokenize.Encoded, task, feed: sharding.BatchFeeder,
             buckets: tuple[int, ...]) -> tuple[dict, np.ndarray]:
    """Metrics over every example, and the predictions in the data's order."""
    outputs = []
    for indices, length in batching.eval_plan(data, feed.batch_size, buckets):
        outputs.append((indices, eval_step(params, feed(data, indices, length))))
    predictions = np.zeros(len(data), np.float32 if task.is_regression else np.int64)
    for indices, logits in outputs:
        predictions[indices] = task.predict(sharding.to_host(logits)[:len(indices)])
    return task.evaluate(predictions, data.labels), predictions


class Steps(NamedTuple):
    train_step: Callable  # (state, batch) -> (state, metrics), state donated
    eval_step: Callable   # (params, batch) -> logits
    train_feed: sharding.BatchFeeder
    eval_feed: sharding.BatchFeeder


def compile_steps(config, model, task, total_steps: int, mesh) -> tuple[dict, Steps]:
    """The train state, created sharded over `mesh`, and the jitted steps and
    batch feeders that go with it (the steps compile on their first call, once
    per batch shape)."""
    sharding.check_batch_size(mesh, config.batch_size, "batch_size", config.grad_accum_steps)
    sharding.check_batch_size(mesh, config.eval_batch_size, "eval_batch_size")
    optimizer, schedule = optim.make_optimizer(config, total_steps)
    state_sharding = sharding.state_shardings(mesh, model.params, model.logical_specs,
                                              optimizer)
    state = sharding.create_state(state_sharding, model.params, optimizer, config.seed)
    replicated = sharding.NamedSharding(mesh, sharding.P())
    train_feed = sharding.BatchFeeder(mesh, config.batch_size)
    eval_feed = sharding.BatchFeeder(mesh, config.eval_batch_size)
    train_step = jax.jit(
        step_lib.make_train_step(model.module, task, optimizer, schedule, config.l1, config.l2,
                                 config.grad_accum_steps),
        in_shardings=(state_sharding, train_feed.sharding),
        out_shardings=(state_sharding, replicated), donate_argnums=0)
    eval_step = jax.jit(step_lib.make_eval_step(model.module),
                        in_shardings=(state_sharding["params"], eval_feed.sharding),
                        out_shardings=replicated)
    return state, Steps(train_step, eval_step, train_feed, eval_feed)


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
                        tree)


def _summarize(window: list[dict]) -> dict:
    values = sharding.to_host({k: [m[k] for m in window] for k in window[0]})
    summary = {k: float(np.mean(v)) for k, v in values.items() if k != "nonfinite"}
    summary["nonfinite_steps"] = int(np.sum(values["nonfinite"]))
    return summary


def train_and_evaluate(config, workdir: str) -> dict:
    validate(config)
    workdir = prepare_workdir(workdir, config)
    finished = read_results(workdir)
    if finished is not None:
        log.info("%s already holds a finished run; delete it or pass another --workdir to "
                 "run again", workdir)
        return finished
    primary = jax.process_index() == 0
    data = datasets.load(config)
    model = model_lib.from_pretrained(
        config.model, num_labels=len(data.label_names) if data.label_names else 1,
        label_names=data.label_names, seed=config.seed, dtype=DTYPES[config.dtype],
        dropout=config.dropout if config.dropout >= 0 else None, remat=config.remat)
    train_data, eval_data = _encode(model, data, config)
    task = ClassificationTask(model.num_labels, data.metric_names)
    if config.early_stopping_metric and config.early_stopping_metric not in data.metric_names:
        raise UserError(f"--config.early_stopping_metric={config.early_stopping_metric!r}: "
                        f"this task reports {data.metric_names}")

    buckets = choose_buckets(config, train_data, eval_data)
    batch_size = config.batch_size
    # Only the current epoch's plan is held; every epoch has as many batches as the first.
    plans = {0: batching.train_plan(train_data, batch_size, buckets, config.seed, 0)}
    steps_per_epoch = len(plans[0])
    total_steps = config.max_steps or math.ceil(config.num_epochs * steps_per_epoch)
    log.info("%s: %d train examples, %s eval examples; %d steps (%d per epoch) of batch %d; "
             "bucket lengths %s", data.name, len(train_data),
             {k: len(v) for k, v in eval_data.items()}, total_steps, steps_per_epoch,
             batch_size, buckets)

    mesh = sharding.make_mesh(config.mesh)
    state, steps = compile_steps(config, model, task, total_steps, mesh)
    train_step, eval_step, train_feed, eval_feed = steps

    checkpoints = Checkpoints(workdir / "checkpoints", config.keep_checkpoints)
    restored = checkpoints.restore_latest(_abstract(state))
    if restored is not None:
        state = restored
        log.info("resumed from the checkpoint at step %d in %s", int(state["step"]), workdir)
    step = int(state["step"])
    best = BestParams(workdir / "best", config.early_stopping_metric) \
        if config.early_stopping_metric else None

    def run_eval(params) -> dict:
        return {split: evaluate(eval_step, params, encoded, task, eval_feed, buckets)[0]
                for split, encoded in eval_data.items()}

    def check_finite(window: list[dict]) -> None:
        bad = [i for i, flag in enumerate(sharding.to_host([m["nonfinite"] for m in window]))
               if flag]
        if bad and not config.skip_nonfinite_steps:
            first = step - len(window) + bad[0] + 1
            checkpoints.wait()
            kept = checkpoints.latest_step()
            raise UserError(
                f"step {first}: the loss or gradient norm is not finite; the update was not "
                f"applied and the run stopped (last checkpoint: step {kept} in "
                f"{checkpoints.directory}); lower --config.learning_rate or set "
                "--config.skip_nonfinite_steps=true")

    param_norm = jax.jit(optax.tree.norm)
    writer = MetricWriter(workdir, enabled=primary, resume_step=step)
    progress = _progress(config, total_steps, step, primary)
    window, window_start, examples, tokens = [], time.perf_counter(), 0.0, 0.0
    last_eval = None  # (step, results) of the latest evaluation
    try:
        with StopSignals() as signals:
            while step < total_steps:
                epoch, index = divmod(step, steps_per_epoch)
                if epoch not in plans:
                    plans = {epoch: batching.train_plan(train_data, batch_size, buckets,
                                                        config.seed, epoch)}
                indices, length = plans[epoch][index]
                examples += len(indices)
                tokens += float(train_data.lengths[indices].sum())
                state, metrics = train_step(state, train_feed(train_data, indices, length))
                window.append(metrics)
                step += 1
                progress.update(1)
                if step % config.log_every_steps == 0 or step == total_steps:
                    check_finite(window)
                    summary = _summarize(window)
                    seconds = time.perf_counter() - window_start
                    summary.update(l2_params=float(param_norm(state["params"])),
                                   compilations=train_step._cache_size(),
                                   epoch=step / steps_per_epoch,
                                   examples_per_s=examples / seconds,
                                   tokens_per_s=tokens / seconds)
                    writer.write(step, summary)
                    progress.set_postfix(loss=f"{summary['train_loss']:.4f}",
                                         ex_s=f"{summary['examples_per_s']:.0f}")
                    window, window_start, examples, tokens = [], time.perf_counter(), 0.0, 0.0
                stop_early = False
                if (config.eval_every_steps and step % config.eval_every_steps == 0) \
                        or step == total_steps:
                    last_eval = (step, run_eval(state["params"]))
                    writer.write(step, _flatten(last_eval[1], prefix="eval_"))
                    stop_early = _offer_best(best, config, step, state["params"], last_eval[1])
                if signals.requested or stop_early or step % config.checkpoint_every_steps == 0 \
                        or step == total_steps:
                    check_finite(window)
                    checkpoints.save(step, state)
                if signals.requested:
                    checkpoints.wait()
                    raise Preempted(f"{signals.requested.name} at step {step}: saved a checkpoint "
                                    f"in {checkpoints.directory}; rerun the same command to "
                                    "resume", signals.requested.value)
                if stop_early:
                    break
        progress.close()
        return _finish(config, workdir, primary, model, state, best, last_eval, run_eval, step)
    finally:
        checkpoints.close()
        if best is not None:
            best.close()
        writer.close()


def _offer_best(best, config, step: int, params, results: dict) -> bool:
    """Keep the params if this evaluation is the best; True when patience has run out."""
    if best is None:
        return False
    value = next(iter(results.values()))[config.early_stopping_metric]
    if best.offer(step, params, value) or not config.early_stopping_patience:
        return False
    best_step = best.best()[0]
    evals_since = (step - best_step) // max(config.eval_every_steps, 1)
    if evals_since >= config.early_stopping_patience:
        log.info("early stopping at step %d: %s has not improved on step %d for %d evaluations",
                 step, config.early_stopping_metric, best_step, evals_since)
        return True
    return False


def _finish(config, workdir, primary, model, state, best, last_eval, run_eval, step) -> dict:
    """Write results.json and the exported model: the best params when they are kept."""
    if last_eval is None:  # Resumed from the final checkpoint: its eval line is written.
        last_eval = (step, run_eval(state["params"]))
    params, results, result_step = state["params"], last_eval[1], step
    if best is not None and best.best() is not None:
        result_step = best.best()[0]
        params = best.restore(_abstract(state["params"]))
        results = run_eval(params) if result_step != last_eval[0] else last_eval[1]
    final = {"step": result_step, **_flatten(results)}
    if result_step != step:
        final["last_step"] = step
    params = sharding.gather_to_host(params)  # every process joins the gather
    if primary:
        if config.export_model:
            model.params = params
            model.save_pretrained(workdir / "model")
        write_json_atomic(workdir / "results.json", final)
    return final


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
