"""`train_and_evaluate(config, workdir)`: the whole fine-tuning run.

records -> features -> bucketed batches -> jitted train step -> metrics,
checkpoints, and at the end dev metrics (`results.json`), predictions and the
fine-tuned model as a Hugging Face folder (`workdir/model`). The task kind
(`--config.task_kind`, fmt.tasks) supplies every kind-specific piece.

Rerunning the same command on the same workdir resumes from the latest
checkpoint and ends exactly as an uninterrupted run: the data order is a pure
function of (seed, epoch), dropout of (seed, step), and metric lines written
after the restored step are dropped and written again.
"""

import logging
import math
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from fmt import compile_cache, metrics as metrics_lib, model as model_lib, tasks
from fmt.data import batching, datasets, packing
from fmt.data.features import Features
from fmt.errors import Preempted, UserError
from fmt.train import optim, sharding, step as step_lib
from fmt.train.checkpoint import BestParams, Checkpoints
from fmt.train.preemption import StopSignals
from fmt.tracing import Traced
from fmt.train.evaluation import evaluate
from fmt.train.trainable import Trainable
from fmt.train.workdir import check_workdir, read_results, save_config
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
    if config.max_steps < 0 or not config.num_epochs >= 0:  # num_epochs=0: evaluate only
        raise UserError(f"--config.num_epochs={config.num_epochs}, --config.max_steps="
                        f"{config.max_steps}: set one of them, or num_epochs=0 to evaluate only")
    if config.dtype not in DTYPES:
        raise UserError(f"--config.dtype={config.dtype!r}: choose one of {sorted(DTYPES)}")
    step_lib.check_rng_impl(config.rng_impl)
    if config.early_stopping_patience and not config.early_stopping_metric:
        raise UserError("--config.early_stopping_patience needs --config.early_stopping_metric")


def load_model(config, task, splits):
    """The checkpoint with the head the task kind needs, sized to the data's labels."""
    labels = {}
    if task.labels:  # the data's label names; none for classification is regression
        labels = (dict(label_names=splits.label_names) if splits.label_names
                  else dict(num_labels=1))
    scratch = None
    if config.from_scratch:
        scratch = dict(num_hidden_layers=config.scratch_layers, hidden_size=config.scratch_hidden,
                       num_attention_heads=config.scratch_heads,
                       intermediate_size=config.scratch_intermediate,
                       max_position_embeddings=config.scratch_positions,
                       family=config.scratch_family)
    return model_lib.from_pretrained(
        config.model, task=task.name, seed=config.seed, dtype=DTYPES[config.dtype],
        dropout=config.dropout if config.dropout >= 0 else None, remat=config.remat,
        new_head_note="this run trains them", scratch=scratch, lazy=True, **labels)


def featurize(task, model, splits) -> tuple[Features, dict[str, Features]]:
    make = lambda records, name: task.featurize(
        model, records, name, splits.origins.get(name, f"{splits.name} {name}"))
    return make(splits.train, "train"), {k: make(v, k) for k, v in splits.evals.items()}


def choose_buckets(config, train: Features, evals: dict) -> tuple[int, ...]:
    """The padded lengths: given, fitted to the training lengths, or powers of two."""
    if config.bucket_lengths or not config.num_buckets:
        return batching.bucket_lengths(config.max_seq_length, tuple(config.bucket_lengths))
    longest = max(int(data.lengths.max()) for data in [train, *evals.values()])
    return batching.fit_bucket_lengths(train.lengths, config.num_buckets, longest)


class Steps(NamedTuple):
    train_step: Callable  # (state, batch) -> (state, metrics), state donated
    eval_step: Callable   # (params, batch) -> the task's per-row eval outputs
    train_feed: sharding.BatchFeeder
    eval_feed: sharding.BatchFeeder
    trainable: Trainable
    whole: Callable       # (trained params, state) -> the model's params
    train_traces: Traced  # .count: the train step's compiled shapes so far


def compile_steps(config, model, task, total_steps: int, mesh) -> tuple[dict, Steps]:
    """The train state, created sharded over `mesh`, and the jitted steps and
    batch feeders that go with it (the steps compile on their first call, once
    per batch shape)."""
    sharding.check_batch_size(mesh, config.batch_size, "batch_size", config.grad_accum_steps)
    sharding.check_batch_size(mesh, config.eval_batch_size, "eval_batch_size")
    optimizer, schedule = optim.make_optimizer(config, total_steps)
    trainable = Trainable(config, model, task)
    params, frozen = trainable.split(model.params)
    specs, frozen_specs = trainable.specs(model.logical_specs)
    state_sharding = sharding.state_shardings(mesh, params, specs, optimizer)
    model_sharding = sharding.param_shardings(mesh, model.logical_specs, model.params)
    if frozen is not None:
        state_sharding["frozen"] = sharding.param_shardings(mesh, frozen_specs, frozen)
    state = sharding.create_state(state_sharding, params, optimizer, config.seed, frozen,
                                  rng_impl=config.rng_impl)
    if jax.process_index() == 0:
        trainable.report(model.params, state["params"], state["opt_state"], optimizer)
    replicated = sharding.NamedSharding(mesh, sharding.P())
    train_feed = sharding.BatchFeeder(mesh, config.batch_size)
    eval_feed = sharding.BatchFeeder(mesh, config.eval_batch_size)
    traced = Traced(step_lib.make_train_step(model.module, task, optimizer, schedule, config.l1,
                                             config.l2, config.grad_accum_steps,
                                             trainable.materialize, config.rng_impl))
    train_step = jax.jit(traced,
        in_shardings=(state_sharding, train_feed.sharding),
        out_shardings=(state_sharding, replicated), donate_argnums=0)
    eval_step = jax.jit(step_lib.make_eval_step(model.module, task),
                        in_shardings=(model_sharding, eval_feed.sharding),
                        out_shardings=replicated)
    # The model's params from the trained ones (the state's `frozen`, if any, joins).
    whole = jax.jit(trainable.materialize, out_shardings=model_sharding)
    return state, Steps(train_step, eval_step, train_feed, eval_feed, trainable,
                        lambda trained, state: whole(trained, state.get("frozen")), traced)


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
    workdir = check_workdir(workdir, config)
    finished = read_results(workdir)
    if finished is not None:
        log.info("%s already holds a finished run; delete it or pass another --workdir to "
                 "run again", workdir)
        return finished
    primary = jax.process_index() == 0
    task = tasks.create(config)
    if config.packing and not task.packable:
        raise UserError(f"--config.packing: {task.name} examples cannot share a row (packing "
                        f"is for {', '.join(k for k, v in tasks.KINDS.items() if v.packable)}); "
                        "drop --config.packing")
    if config.packing and config.grad_accum_steps > 1:
        raise UserError(f"--config.packing does not split into --config.grad_accum_steps="
                        f"{config.grad_accum_steps} microbatches yet; drop one of them")
    splits = datasets.limit(task.load(), config)
    model = load_model(config, task, splits)
    if config.max_seq_length > model.max_positions:
        raise UserError(f"--config.max_seq_length={config.max_seq_length} is longer than the "
                        f"{model.max_positions} positions of {config.model}; lower it")
    train_data, eval_data = featurize(task, model, splits)
    if config.early_stopping_metric and config.early_stopping_metric not in task.metric_names:
        raise UserError(f"--config.early_stopping_metric={config.early_stopping_metric!r}: "
                        f"this task reports {task.metric_names}")

    buckets = choose_buckets(config, train_data, eval_data)
    batch_size = config.batch_size
    mesh = sharding.make_mesh(config.mesh)
    # Only the current epoch's view and plan are held; every epoch has as many batches
    # as the first. Plans are made from the view: what the batches really read.
    total_for = lambda per_epoch: config.max_steps or math.ceil(config.num_epochs * per_epoch)
    shapes = None
    if config.packing:  # the row shapes must hold every epoch's batches, known up front
        per_epoch = packing.batches_per_epoch(len(train_data), batch_size)
        shapes = packing.choose(train_data.lengths, batch_size, config.max_seq_length,
                                config.seed, math.ceil(total_for(per_epoch) / per_epoch),
                                sharding.batch_devices(mesh))

    def epoch_plan(epoch: int):
        view = task.train_view(train_data, epoch)
        if shapes is not None:
            return view, packing.plan(view.lengths, batch_size, shapes, config.seed, epoch)
        return view, batching.train_plan(view, batch_size, buckets, config.seed, epoch)

    plans = {0: epoch_plan(0)}
    steps_per_epoch = len(plans[0][1])
    total_steps = total_for(steps_per_epoch)
    log_every = log_interval(config.log_every_steps, total_steps)
    log.info("%s (%s): %d train examples, %s eval examples; %d steps (%d per epoch) of batch "
             "%d; %s; train metrics every %d steps", splits.name, task.name,
             len(train_data), {k: len(v) for k, v in eval_data.items()}, total_steps,
             steps_per_epoch, batch_size,
             f"packed rows of {shapes.length} tokens, {shapes.row_counts} per batch" if shapes
             else f"bucket lengths {buckets}", log_every)
    if 0 < total_steps < FEW_STEPS and not config.max_steps:
        log.warning("only %d update steps: on data this small, more epochs "
                    "(--config.num_epochs) or a higher --config.learning_rate usually help; "
                    "the defaults are the usual ones for full-size data", total_steps)
    save_config(workdir, config)  # the run has really started: bind the workdir to it

    state, steps = compile_steps(config, model, task, total_steps, mesh)
    train_step, eval_step, train_feed, eval_feed, trainable, whole = steps[:6]

    # Checkpoints hold what training changes; LoRA's frozen params are the model
    # folder's, loaded again by every run.
    checkpoints = Checkpoints(workdir / "checkpoints", config.keep_checkpoints)
    saved = lambda state: {k: v for k, v in state.items() if k != "frozen"}
    restored = checkpoints.restore_latest(_abstract(saved(state)))
    if restored is not None:
        state = dict(restored, **{k: v for k, v in state.items() if k == "frozen"})
        log.info("resumed from the checkpoint at step %d in %s", int(state["step"]), workdir)
    step = int(state["step"])
    best = BestParams(workdir / "best", config.early_stopping_metric,
                      metrics_lib.higher_is_better(config.early_stopping_metric)) \
        if config.early_stopping_metric else None
    predictions = {}  # split -> the latest evaluation's predictions

    def run_eval(trained) -> dict:
        params = whole(trained, state)  # the current state's frozen part, if any
        results = {}
        for split, features in eval_data.items():
            with _progress(config, _eval_batches(features, eval_feed), 0, primary,
                           f"eval {split}", leave=False) as bar:
                results[split], predictions[split] = evaluate(
                    eval_step, params, features, task, eval_feed, buckets, bar,
                    pack=config.packing and task.per_example_outputs)
        return results

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
    progress = _progress(config, total_steps, step, primary, "train")
    window, window_start, examples, tokens = [], time.perf_counter(), 0.0, 0.0
    last_eval = None  # (step, results) of the latest evaluation
    try:
        with StopSignals() as signals:
            while step < total_steps:
                epoch, index = divmod(step, steps_per_epoch)
                if epoch not in plans:
                    plans = {epoch: epoch_plan(epoch)}
                view, plan = plans[epoch]
                indices, length = plan[index]
                members = batching.examples_in(indices)
                examples += len(members)
                tokens += float(view.lengths[members].sum())
                state, metrics = train_step(state, train_feed(view, indices, length))
                window.append(metrics)
                step += 1
                progress.update(1)
                if step % log_every == 0 or step == total_steps:
                    check_finite(window)
                    summary = _summarize(window)
                    seconds = time.perf_counter() - window_start
                    summary.update(l2_params=float(param_norm(state["params"])),
                                   compilations=steps.train_traces.count,
                                   **compile_cache.stats(),
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
                    checkpoints.save(step, saved(state))
                if signals.requested:
                    checkpoints.wait()
                    raise Preempted(f"{signals.requested.name} at step {step}: saved a checkpoint "
                                    f"in {checkpoints.directory}; rerun the same command to "
                                    "resume", signals.requested.value)
                if stop_early:
                    break
        progress.close()
        return _finish(config, workdir, primary, model, state, best, last_eval, run_eval, step,
                       task, eval_data, predictions, steps)
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


def _finish(config, workdir, primary, model, state, best, last_eval, run_eval, step, task,
            eval_data, predictions, steps: Steps) -> dict:
    """Write results.json, predictions and the exported model (with LoRA merged,
    and the adapter as a PEFT folder): the best params when they are kept."""
    if last_eval is None:  # Resumed from the final checkpoint: its eval line is written.
        last_eval = (step, run_eval(state["params"]))
    params, results, result_step = state["params"], last_eval[1], step
    if best is not None and best.best() is not None:
        result_step = best.best()[0]
        params = best.restore(_abstract(state["params"]))
        if result_step != last_eval[0]:
            results = run_eval(params)  # also the best params' predictions
    final = {"step": result_step, "main_metric": task.main_metric, **_flatten(results)}
    if result_step != step:
        final["last_step"] = step
    adapters = None
    if config.export_model:  # every process joins the gathers, param by param; process 0 writes
        model.params = steps.whole(params, state)
        model.save_pretrained(workdir / "model")
        if steps.trainable.lora:
            adapters = sharding.gather_to_host(params)
    if primary:
        for split, features in eval_data.items():
            task.write_predictions(workdir, split, features, predictions[split])
        if adapters is not None:
            steps.trainable.export_adapter(workdir / "adapter", adapters, model, task.name)
        write_json_atomic(workdir / "results.json", final)
    return final


def _flatten(results: dict[str, dict], prefix: str = "") -> dict:
    """The first eval split under plain metric names, others as `split/metric`."""
    flat = {}
    for i, (split, values) in enumerate(results.items()):
        for name, value in values.items():
            flat[prefix + (name if i == 0 else f"{split}/{name}")] = value
    return flat


def _progress(config, total: int, initial: int, primary: bool, phase: str, leave=True):
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, desc=phase,
                leave=leave, disable=not (config.progress_bar and primary))


def _eval_batches(features, feed) -> int:
    return math.ceil(len(features) / feed.batch_size)


# Below this many steps a run is short for the default hyperparameters.
FEW_STEPS = 100
# A run writes at least this many train lines to metrics.jsonl.
MIN_LOG_LINES = 5


def log_interval(every: int, total_steps: int) -> int:
    """`log_every_steps`, lowered for short runs so that they still get
    MIN_LOG_LINES train lines (a 21-step run with the default 50 got one)."""
    return max(1, min(every, total_steps // MIN_LOG_LINES))
