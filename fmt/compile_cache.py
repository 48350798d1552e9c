"""JAX's persistent compilation cache for fmt runs, and what compiling cost them.

A run compiles its train step once per bucket length and its eval step once per
eval shape: about 100 s on CPU for a CoLA run, paid again by every run of a
sweep, every rerun and every resume. JAX can keep compiled executables on disk
(`jax_compilation_cache_dir`), keyed by the program, the jaxlib version, the
devices, XLA flags and compile options, so that a later process compiling the
same program loads it instead. XLA:CPU executables are cached too (jax 0.10).
Runs that differ in seed share entries; a new learning rate (the schedule's
constants are in the step), bucket, batch size, model, device count or XLA flag
compiles anew. In a multi-process run only process 0 writes, and on CPU the
other processes' keys differ, so they compile as before.

`enable(config.compilation_cache)` turns the cache on before the first compile;
`stats()` sums the compile seconds and counts cache hits (from `jax.monitoring`),
for the loop to log. The cache is trusted code: a folder that others can write
to lets them run code in your runs (JAX's own warning), hence a private default.
"""

import logging
import os
import pathlib
import tempfile
import threading

import jax

log = logging.getLogger("fmt")

OFF = ("none", "")
# Programs that compile faster than this are not written. JAX's default of 1 s
# would miss MiniLM's eval steps (0.3-1 s on CPU). 0 keeps the run's small helper
# jits too (5-50 ms each, 5 more files for a CoLA run): a warm CoLA run then
# spends 2.9 s in XLA instead of 3.3 s (cold: 16.8 s), nearly all of it loading
# the two train steps' executables (0.7-1.2 s each: XLA:CPU's C++ deserialisation;
# decompressing is 10 ms; experiments/results/bench_cpu.md).
MIN_COMPILE_SECONDS = 0.0
# jax events (jax/_src/dispatch.py, compiler.py): a backend compile's duration,
# which on a hit is the time to load the cached executable, and the cache's
# lookups and hits.
_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_LOOKUP_EVENT = "/jax/compilation_cache/compile_requests_use_cache"
_HIT_EVENT = "/jax/compilation_cache/cache_hits"


def enable(setting: str) -> str | None:
    """Point JAX's persistent cache at `setting`'s folder; the folder, or None if off.

    "auto": JAX_COMPILATION_CACHE_DIR when set, else $XDG_CACHE_HOME/fmt/jax or
    ~/.cache/fmt/jax; a path: that folder (gs://... and other remote paths go
    through etils.epath, as JAX does); "none" or "": no cache. A local folder
    that cannot be made or written costs a one-line warning, not the run.
    Call before anything compiles: JAX opens the cache once, at its first compile.
    """
    _STATS.start()
    setting = setting.strip()
    if setting.lower() in OFF:
        return _turn_off()
    folder = default_folder() if setting.lower() == "auto" else setting
    problem = _remote_problem(folder) if "://" in folder else _local_problem(folder)
    if problem:
        log.warning("--config.compilation_cache=%s: %s; this run compiles without the "
                    "cache", setting, problem)
        return _turn_off()
    if "://" not in folder:
        folder = str(pathlib.Path(folder).expanduser().resolve())
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
    # Size says little here (a train step's file can be smaller than a helper's);
    # -1: no minimum, and no filesystem-dependent override by JAX.
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return folder


def _turn_off() -> None:
    """No cache, even where JAX_COMPILATION_CACHE_DIR names a folder."""
    jax.config.update("jax_compilation_cache_dir", None)
    jax.config.update("jax_enable_compilation_cache", False)


def default_folder() -> str:
    """JAX's own JAX_COMPILATION_CACHE_DIR, else fmt's folder in the user's cache."""
    if jax.config.jax_compilation_cache_dir:
        return jax.config.jax_compilation_cache_dir
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.join(os.path.expanduser(root), "fmt", "jax")


def _local_problem(folder: str) -> str:
    """Why `folder` cannot hold the cache ("" when it can): made if missing, and
    written to, since permissions alone do not tell (root ignores them)."""
    path = pathlib.Path(folder).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".fmt-write-check-"):
            pass
    except OSError as error:
        return f"cannot write to {path} ({error.strerror or type(error).__name__})"
    return ""


def _remote_problem(folder: str) -> str:
    """Remote folders need etils.epath, as in JAX; they are not probed here (a
    network round trip at every start), and JAX warns if one later fails."""
    try:
        import etils.epath  # noqa: F401
    except ImportError:
        return f"a remote folder needs etils[epath] (pip install 'etils[epath]') for {folder}"
    return ""


class CompileStats:
    """Compile seconds and cache hits of this process, from jax.monitoring.

    `compile_s` is XLA's part (a hit counts its load time), the part the cache
    saves; tracing and lowering to StableHLO are paid on every run. Counts are
    since the process started counting, so a resumed run starts from zero.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._started = False
        self.compile_s = 0.0
        self.lookups = 0
        self.cache_hits = 0

    def start(self) -> None:
        """Listen to JAX's events, once per process (JAX has no public way to stop)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)

    def _on_duration(self, event: str, seconds: float, **kwargs) -> None:
        if event == _COMPILE_EVENT:
            with self._lock:
                self.compile_s += seconds

    def _on_event(self, event: str, **kwargs) -> None:
        if event in (_LOOKUP_EVENT, _HIT_EVENT):
            with self._lock:
                if event == _LOOKUP_EVENT:
                    self.lookups += 1
                else:
                    self.cache_hits += 1

    def as_dict(self) -> dict:
        """compile_s, cache_hits and cache_misses (looked up, not found; 0 when off).

        The number of compiles is left out: metrics.jsonl's `compilations` counts
        the train step's shapes, and this would count every helper jit too.
        """
        with self._lock:
            return {"compile_s": round(self.compile_s, 3), "cache_hits": self.cache_hits,
                    "cache_misses": self.lookups - self.cache_hits}


_STATS = CompileStats()


def stats() -> dict:
    """This process's compile figures so far (counting starts at `enable`)."""
    _STATS.start()
    return _STATS.as_dict()
