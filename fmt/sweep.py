"""A sweep: every combination of a grid of config settings, over seeds (and
folds), run as separate training processes, one after another or N at a time
on shares of the machine's devices.

Each run is an ordinary workdir (`DIR[/<task>]/<setting>,seed=<k>`), so the
training script's own workdir logic applies: a finished run is skipped, an
interrupted one resumes. A failing run is recorded with its error and the
others go on. `DIR/sweep.json` describes the grid and every run's state; it is
rewritten as runs finish.
"""

import dataclasses
import itertools
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

from fmt.errors import UserError
from fmt.report import runs as runs_lib
from fmt.train.writers import write_json_atomic

POLL_SECONDS = 1.0
ATTEMPT = "--- sweep: run started"  # heads each attempt's part of a run's sweep.log


@dataclasses.dataclass
class Run:
    task: str                 # the config file's argument ("rte"); "" when it takes none
    setting: dict[str, str]   # swept field -> value, as given on the command line
    seed: int
    fold: int | None
    workdir: str              # relative to the sweep's folder
    status: str = "pending"   # pending, running, done, failed or interrupted
    error: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.task + ' ' if self.task else ''}{self.workdir.rsplit('/', 1)[-1]}"


def parse_grid(text: str, config) -> dict[str, list[str]]:
    """`learning_rate=1e-4,5e-5;batch_size=16,32` -> {field: [values]}, each field a
    field of `config` and each value of its type."""
    grid: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip().removeprefix("config.")
        values = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not values:
            raise UserError(f"--sweep: {part!r} is not FIELD=VALUE[,VALUE...]; e.g. "
                            f"--sweep='learning_rate=5e-5,3e-5;batch_size=16,32'")
        if key not in config:
            raise UserError(f"--sweep: {key!r} is no field of --config; see --help for them")
        if key in ("seed", "cv_fold", "cv_folds"):
            raise UserError(f"--sweep: {key} is set by --seeds / --folds; leave it out of --sweep")
        for value in values:
            _check_value(key, value, config[key])
        grid[key] = values
    return grid


def _check_value(key: str, value: str, default) -> None:
    kinds = {bool: "true or false", int: "a whole number", float: "a number"}
    kind = type(default)
    try:
        if kind is bool:
            if value.lower() not in ("true", "false", "1", "0"):
                raise ValueError
        elif kind in (int, float):
            kind(value)
    except ValueError:
        raise UserError(f"--sweep: {key}={value} is not {kinds[kind]}") from None


def plan(tasks: list[str], grid: dict[str, list[str]], seeds: list[int],
         folds: int) -> list[Run]:
    """Every (task, setting, seed, fold), tasks outermost and seeds innermost."""
    runs = []
    for task in tasks:
        for values in itertools.product(*grid.values()):
            setting = dict(zip(grid, values))
            for seed, fold in itertools.product(seeds, range(folds) if folds else [None]):
                parts = [f"{k}={v}" for k, v in setting.items()] + [f"seed={seed}"]
                parts += [f"fold={fold}"] if fold is not None else []
                name = ",".join(parts)
                runs.append(Run(task, setting, seed, fold, f"{task}/{name}" if task else name))
    return runs


def run_args(run: Run, script: str, config_file: str, folder: pathlib.Path,
             overrides: list[str], folds: int) -> list[str]:
    """The training command of one run: the sweep's overrides, then its own."""
    config = f"{config_file}:{run.task}" if run.task else config_file
    # No progress bars in the runs' logs, unless the overrides ask for them.
    args = [sys.executable, script, f"--config={config}", f"--workdir={folder / run.workdir}",
            "--config.progress_bar=false", *overrides, *[f"--config.{k}={v}" for k, v in run.setting.items()],
            f"--config.seed={run.seed}"]
    if run.fold is not None:
        args += [f"--config.cv_folds={folds}", f"--config.cv_fold={run.fold}"]
    return args


# --- devices ------------------------------------------------------------------

@dataclasses.dataclass
class Share:
    """One run slot's devices: environment variables and, on CPU, the cores."""
    env: dict[str, str]
    cpus: set[int] | None = None
    label: str = ""


def device_shares(parallel: int) -> list[Share]:
    """`parallel` disjoint shares of this machine's accelerators (GPUs by
    CUDA_VISIBLE_DEVICES, TPU chips by libtpu's process bounds) or, without
    any, of its CPU cores. Found without starting a JAX backend, which on TPU
    would hold every chip."""
    if parallel == 1:
        return [Share({}, None, "all devices")]
    gpus = _gpus()
    if gpus:
        return [Share({"CUDA_VISIBLE_DEVICES": ",".join(part)}, None, f"GPU {','.join(part)}")
                for part in _split(gpus, parallel, "GPUs")]
    chips = _tpu_chips()
    if chips:
        bounds = {1: "1,1,1", 2: "1,2,1", 4: "2,2,1"}
        parts = _split(chips, parallel, "TPU chips")
        if len(parts[0]) not in bounds or len({len(p) for p in parts}) > 1:
            raise UserError(f"--parallel={parallel}: {len(chips)} TPU chips do not split into "
                            f"{parallel} equal shares of 1, 2 or 4 chips")
        return [Share({"TPU_VISIBLE_CHIPS": ",".join(part), "TPU_VISIBLE_DEVICES": ",".join(part),
                       "TPU_CHIPS_PER_PROCESS_BOUNDS": bounds[len(part)],
                       "TPU_PROCESS_BOUNDS": "1,1,1", "TPU_PROCESS_PORT": str(8476 + i),
                       "TPU_MESH_CONTROLLER_ADDRESS": f"localhost:{8476 + i}",
                       "TPU_MESH_CONTROLLER_PORT": str(8476 + i)}, None,
                      f"TPU chips {','.join(part)}") for i, part in enumerate(parts)]
    cores = sorted(os.sched_getaffinity(0))
    return [Share({}, {int(c) for c in part}, f"CPU cores {','.join(part)}")
            for part in _split([str(c) for c in cores], parallel, "CPU cores")]


def _split(items: list[str], parallel: int, what: str) -> list[list[str]]:
    if parallel > len(items):
        raise UserError(f"--parallel={parallel}: this machine has {len(items)} {what}; pass "
                        f"--parallel={len(items)} or fewer")
    size = len(items) // parallel
    return [items[i * size:(i + 1) * size] for i in range(parallel)]


def _gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    if not shutil.which("nvidia-smi"):
        return []
    listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return [str(i) for i, line in enumerate(listing.stdout.splitlines()) if line.startswith("GPU")]


def _tpu_chips() -> list[str]:
    accel = sorted(pathlib.Path("/dev").glob("accel[0-9]*"))
    if accel:
        return [p.name.removeprefix("accel") for p in accel]
    vfio = [p for p in pathlib.Path("/dev/vfio").glob("[0-9]*")] \
        if pathlib.Path("/dev/vfio").is_dir() else []
    return [str(i) for i in range(len(vfio))]


# --- running ------------------------------------------------------------------

class Sweep:
    """Runs the plan; `describe` is what sweep.json says besides the runs."""

    def __init__(self, folder: pathlib.Path, runs: list[Run], describe: dict, args_of,
                 shares: list[Share], out=sys.stdout):
        self.folder, self.runs, self.describe = folder, runs, describe
        self.args_of, self.shares, self.out = args_of, shares, out
        self.stopping: signal.Signals | None = None

    def run(self) -> list[Run]:
        self.folder.mkdir(parents=True, exist_ok=True)
        timed = self._previous_seconds()
        for run in self.runs:
            if (self.folder / run.workdir / "results.json").is_file():
                run.status = "done"
                run.seconds = timed.get(run.workdir, 0.0)  # kept from the sweep that ran it
        skipped = sum(r.status == "done" for r in self.runs)
        self._say(f"{len(self.runs)} runs, {skipped} already finished (skipped); "
                  f"{len(self.shares)} at a time")
        self._write()
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._loop()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            self._write()
        return self.runs

    def _previous_seconds(self) -> dict[str, float]:
        """Each finished run's time from an earlier sweep.json in this folder, if any."""
        try:
            described = json.loads((self.folder / "sweep.json").read_text())
            return {r["workdir"]: float(r["seconds"]) for r in described["runs"]
                    if r.get("status") == "done"}
        except (OSError, ValueError, KeyError, TypeError):
            return {}  # none yet, or unreadable: the times are only a record

    def _stop(self, signum, frame):
        self.stopping = signal.Signals(signum)

    def _loop(self) -> None:
        pending = [r for r in self.runs if r.status != "done"]
        active: dict[int, tuple[Run, subprocess.Popen, float]] = {}
        while (pending and not self.stopping) or active:
            for slot, share in enumerate(self.shares):
                if slot not in active and pending and not self.stopping:
                    run = pending.pop(0)
                    active[slot] = (run, self._start(run, share), time.monotonic())
            time.sleep(POLL_SECONDS)
            if self.stopping:  # the runs checkpoint and stop; they resume on the next sweep
                for run, process, _ in active.values():
                    if process.poll() is None:
                        process.send_signal(signal.SIGTERM)
            for slot, (run, process, started) in list(active.items()):
                if process.poll() is None:
                    continue
                del active[slot]
                run.seconds = time.monotonic() - started
                self._finished(run, process.returncode)
        if self.stopping:
            self._say(f"stopped by {self.stopping.name}: rerun the same command to go on")

    def _start(self, run: Run, share: Share) -> subprocess.Popen:
        workdir = self.folder / run.workdir
        workdir.mkdir(parents=True, exist_ok=True)
        run.status, run.error = "running", ""
        self._write()
        self._say(f"start {run.label} ({share.label})")
        log = open(workdir / "sweep.log", "ab")
        log.write(f"{ATTEMPT} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        log.flush()
        preexec = (lambda: os.sched_setaffinity(0, share.cpus)) if share.cpus else None
        # Its own session: a Ctrl-C reaches the sweep, which stops the runs in order.
        process = subprocess.Popen(self.args_of(run), stdout=log, stderr=subprocess.STDOUT,
                                   env={**os.environ, **share.env}, preexec_fn=preexec,
                                   start_new_session=True)
        log.close()
        return process

    def _finished(self, run: Run, returncode: int) -> None:
        workdir = self.folder / run.workdir
        if returncode == 0 and (workdir / "results.json").is_file():
            run.status = "done"
            record = runs_lib.read_run(workdir, run.task, run.setting)
            metric = record.main_metric
            self._say(f"done {run.label}: {metric} {record.results[metric]:.4f} "
                      f"({run.seconds:.0f} s)")
        elif self.stopping:
            run.status = "interrupted"
        else:
            run.status, run.error = "failed", _last_error(workdir / "sweep.log", returncode)
            self._say(f"FAILED {run.label}: {run.error} (log: {workdir / 'sweep.log'})")
        self._write()
        self._summary()

    def _summary(self) -> None:
        counts = {s: sum(r.status == s for r in self.runs)
                  for s in ("done", "failed", "running", "pending", "interrupted")}
        line = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        finished = [r for r in (runs_lib.read_run(self.folder / run.workdir, run.task,
                                                  run.setting)
                                for run in self.runs if run.status == "done") if r]
        best = []
        for task, summary in runs_lib.select(finished).items():
            value = summary.settings[runs_lib.setting_label(summary.setting)].mean
            best.append(f"{task + ' ' if task else ''}{summary.main_metric} {value:.4f} "
                        f"({runs_lib.setting_label(summary.setting)}, {len(summary.runs)} runs)")
        self._say(f"[{line}] best so far: {'; '.join(best) or '-'}")

    def _write(self) -> None:
        write_json_atomic(self.folder / "sweep.json",
                          {**self.describe, "runs": [dataclasses.asdict(r) for r in self.runs]})

    def _say(self, text: str) -> None:
        print(f"[sweep {time.strftime('%H:%M:%S')}] {text}", file=self.out, flush=True)


def _last_error(log: pathlib.Path, returncode: int) -> str:
    """The run's own one-line error, or the last line it printed."""
    text = log.read_text(encoding="utf-8", errors="replace").rsplit(ATTEMPT, 1)[-1]
    lines = [line.strip() for line in text.splitlines()[1:] if line.strip()]
    errors = [line for line in lines if line.startswith(("error:", "stopped:"))]
    return (errors or lines or [f"exit status {returncode}"])[-1]
