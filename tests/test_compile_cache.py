"""The persistent compilation cache (fmt.compile_cache): a second process loads
what the first compiled, "none" turns it off, a folder that cannot be written
costs a warning and not the run, and a rerun of finetune.py compiles little.

Each test points the cache at its own tmp_path; the processes are fresh ones,
since JAX opens its cache once per process, at the first compile.
"""

import json
import subprocess
import sys

import jax
import pytest

from conftest import ROOT, GLUE, device_env
from fmt import compile_cache

# Enables the cache (argv[1]), compiles a function that takes a while, prints stats.
COMPILE = """
import json, sys
import jax, jax.numpy as jnp
from fmt import compile_cache
folder = compile_cache.enable(sys.argv[1])
# Every compile is written: this function alone may compile under the threshold.
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

@jax.jit
def f(x):
    for _ in range(8):
        x = jnp.tanh(x @ x) + x
    return x.sum()

value = float(f(jnp.ones((16, 16)) * 0.01))
print(json.dumps(dict(compile_cache.stats(), folder=folder, value=value,
                      cache_dir=jax.config.jax_compilation_cache_dir)))
"""


def python(code: str, *args, env=None) -> tuple[dict, str]:
    """`code` in a fresh process: the JSON of its last stdout line, and its stderr."""
    result = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True,
                            text=True, cwd=ROOT, timeout=300, env=env or device_env(1))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_second_process_loads_what_the_first_compiled(tmp_path):
    folder = tmp_path / "cache"
    first, _ = python(COMPILE, folder)
    assert first["folder"] == str(folder) and first["cache_hits"] == 0
    entries = sorted(p.name for p in folder.iterdir() if p.name.endswith("-cache"))
    assert any(name.startswith("jit_f-") for name in entries), entries
    second, _ = python(COMPILE, folder)
    assert second["cache_hits"] >= 1 and second["value"] == first["value"]
    assert sorted(p.name for p in folder.iterdir() if p.name.endswith("-cache")) == entries


def test_none_turns_the_cache_off_even_with_jax_variable_set(tmp_path):
    env = dict(device_env(1), JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-env"))
    stats, _ = python(COMPILE, "none", env=env)
    assert stats["folder"] is None and stats["cache_dir"] is None
    assert stats["cache_hits"] == stats["cache_misses"] == 0 and stats["compile_s"] > 0
    assert not (tmp_path / "jax-env").exists()


def test_unwritable_folder_warns_once_and_the_run_goes_on(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a folder below a file cannot be made, even by root
    stats, stderr = python(COMPILE, blocker / "cache")
    assert stats["folder"] is None and stats["cache_dir"] is None and stats["value"] > 0
    warnings = [line for line in stderr.splitlines() if "compilation_cache" in line]
    assert len(warnings) == 1, stderr[-3000:]
    assert warnings[0].startswith(f"--config.compilation_cache={blocker / 'cache'}: cannot "
                                  "write to "), warnings
    assert "compiles without the cache" in warnings[0]


@pytest.fixture
def jax_cache_config():
    """enable() changes this process's JAX config: put it back afterwards."""
    names = ("jax_compilation_cache_dir", "jax_enable_compilation_cache",
             "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    saved = {name: getattr(jax.config, name) for name in names}
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def test_auto_is_jax_variable_else_the_user_cache(monkeypatch, tmp_path, jax_cache_config):
    jax.config.update("jax_compilation_cache_dir", None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.default_folder() == str(tmp_path / "xdg" / "fmt" / "jax")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compile_cache.default_folder() == str(tmp_path / "home" / ".cache" / "fmt" / "jax")
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "from-jax"))
    assert compile_cache.enable("auto") == str(tmp_path / "from-jax")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == \
        compile_cache.MIN_COMPILE_SECONDS


# finetune.py, printing compile_cache.stats() of its process when it exits.
FINETUNE = """
import atexit, json, runpy, sys
from fmt import compile_cache
atexit.register(lambda: print("STATS " + json.dumps(compile_cache.stats())))
sys.argv = ["experiments/finetune.py", *sys.argv[1:]]
runpy.run_path("experiments/finetune.py", run_name="__main__")
"""


def test_rerun_of_finetune_loads_its_steps(tmp_path, tiny_model):
    """The same small run twice, in fresh workdirs: the second loads the train and
    eval steps from the cache, compiles far less, and computes the same losses."""
    folder = tmp_path / "cache"
    args = ["--config=experiments/configs/glue.py:cola", f"--config.model={tiny_model}",
            f"--config.data_dir={GLUE}", "--config.max_train_examples=32",
            "--config.max_eval_examples=16", "--config.batch_size=8", "--config.max_steps=2",
            "--config.max_seq_length=32", "--config.bucket_lengths=32",
            "--config.export_model=false", "--config.progress_bar=false",
            f"--config.compilation_cache={folder}"]
    runs = []
    for name in ("cold", "warm"):
        result = subprocess.run([sys.executable, "-c", FINETUNE, *args,
                                 f"--workdir={tmp_path / name}"], capture_output=True,
                                text=True, cwd=ROOT, timeout=300, env=device_env(1))
        assert result.returncode == 0, result.stderr[-3000:]
        line = [line for line in result.stdout.splitlines() if line.startswith("STATS ")][-1]
        losses = [json.loads(line).get("train_loss") for line in
                  (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        runs.append((json.loads(line.removeprefix("STATS ")), losses))
    (cold, cold_losses), (warm, warm_losses) = runs
    entries = [p.name for p in folder.iterdir()]
    assert any(n.startswith("jit_train_step-") for n in entries), entries
    assert any(n.startswith("jit_eval_step-") for n in entries), entries
    assert cold["cache_hits"] == 0 and warm["cache_hits"] >= 2, (cold, warm)
    assert warm["compile_s"] < cold["compile_s"] / 2, (cold, warm)
    assert warm_losses == cold_losses
